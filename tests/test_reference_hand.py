"""The reference oracles on tiny hand-computed cases (DESIGN.md §1 formulas, worked by hand in the comments).

Most cases use four unit vectors in the plane, scaled by arbitrary factors (normalisation happens inside the loss):
    x0 = (1, 0), x1 = (0.6, 0.8), x2 = (0, 1), x3 = (-0.6, 0.8)
cosines s01 = 0.6, s02 = 0, s03 = -0.6, s12 = 0.8, s13 = -0.36 + 0.64 = 0.28, s23 = 0.8;
distances d = sqrt(2 - 2s): d01 = sqrt(0.8) = 0.894427191, d02 = sqrt(2) = 1.414213562, d03 = sqrt(3.2) =
1.788854382, d12 = d23 = sqrt(0.4) = 0.632455532, d13 = sqrt(1.44) = 1.2.
Notation: sp(z) = log(1 + e^z), lse(a, b, …) = log(e^a + e^b + …).
"""

import math

import pytest
import torch

import pairloss

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
RTOL = 1e-9


def four_points():
    unit = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.6, 0.8]], dtype=F64)
    return unit * torch.tensor([[1.0], [5.0], [0.5], [2.0]], dtype=F64)  # scaled rows: the loss normalises


def close(actual, expected):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=F64), rtol=RTOL, atol=1e-12)


REF = {"backend": "reference"}
LABELS_0011 = torch.tensor([0, 0, 1, 1])


# ---------------------------------------------------------------------------------------------- multi-similarity
def test_multi_similarity_mined():
    # α=2, β=50, λ=0.5, ε=0.1; labels 0 0 1 1.
    # anchor 0: P={1: .6}, N={2: 0, 3: -.6}; max_N = 0 -> keep positive only if .6 - .1 < 0: no;
    #   min_P = .6 -> keep a negative if s + .1 > .6: 0.1 no, -0.5 no. Both mined sets empty -> L0 = 0.
    # anchor 1: P={0: .6}, N={2: .8, 3: .28}; .5 < .8 keeps x0; .9 > .6 keeps x2, .38 > .6 drops x3.
    #   L1 = ½·log(1 + e^{-2(.6-.5)}) + (1/50)·log(1 + e^{50(.8-.5)}) = ½ log(1+e^-0.2) + 0.02 log(1+e^15)
    #      = 0.2990694347 + 0.3000000061 = 0.5990694408
    # anchor 2: P={3: .8}, N={0: 0, 1: .8}; .7 < .8 keeps x3; 0.1 > .8 no, .9 > .8 keeps x1.
    #   L2 = ½ log(1+e^{-0.6}) + 0.02 log(1+e^15) = 0.2187439752 + 0.3000000061 = 0.5187439814
    # anchor 3: P={2: .8}, N={0: -.6, 1: .28}; max_N = .28: .7 < .28 no; -.5 > .8 no, .38 > .8 no -> L3 = 0.
    x, y = four_points(), LABELS_0011
    close(
        pairloss.multi_similarity_loss(x, y, reduction="none", **REF), [0.0, 0.5990694408088414, 0.5187439813609883, 0]
    )
    close(pairloss.multi_similarity_loss(x, y, reduction="sum", **REF), 1.1178134221698297)
    close(pairloss.multi_similarity_loss(x, y, **REF), 1.1178134221698297 / 4)  # mean over all B = 4 anchors


def test_multi_similarity_unmined():
    # mining=False: every positive and negative pair.
    # L0 = ½ log(1+e^{-0.2}) + 0.02 log(1 + e^{50(0-.5)} + e^{50(-.6-.5)}) = 0.2990694347 + 0.02·log(1+e^-25+e^-55)
    # L1 = ½ log(1+e^{-0.2}) + 0.02 log(1 + e^{15} + e^{50(.28-.5)} = e^-11)
    # L2 = ½ log(1+e^{-0.6}) + 0.02 log(1 + e^{-25} + e^{15})
    # L3 = ½ log(1+e^{-0.6}) + 0.02 log(1 + e^{-55} + e^{-11})
    expected = [0.2990694346910737, 0.5990694408089436, 0.5187439813609883, 0.2187443092741692]
    x, y = four_points(), LABELS_0011
    close(pairloss.multi_similarity_loss(x, y, mining=False, reduction="none", **REF), expected)
    close(pairloss.multi_similarity_loss(x, y, mining=False, **REF), sum(expected) / 4)


def test_multi_similarity_other_hyper_parameters():
    # Two rows of one class, s = .6: no negatives -> unmined, L_i = (1/α)·log(1 + e^{-α(s-λ)}).
    # α=1, λ=0.2: log(1 + e^{-0.4}) = 0.5130152524 for both anchors; mining drops everything (no negative).
    x = four_points()[:2]
    y = torch.tensor([3, 3])
    close(pairloss.multi_similarity_loss(x, y, alpha=1.0, base=0.2, mining=False, **REF), math.log1p(math.exp(-0.4)))
    close(pairloss.multi_similarity_loss(x, y, alpha=1.0, base=0.2, **REF), 0.0)


def test_multi_similarity_single_row_is_zero():
    loss = pairloss.multi_similarity_loss(torch.tensor([[1.0, 2.0]], dtype=F64), torch.tensor([0]), **REF)
    close(loss, 0.0)


# ------------------------------------------------------------------------------------------------------- triplet
def test_triplet_batch_hard():
    # margin 0.2; hardest positive = the only one; hardest negative = the nearest.
    # v0 = d01 - min(d02, d03) + .2 = .894427191 - 1.414213562 + .2 = -0.3197863714 -> 0
    # v1 = d01 - min(d12, d13) + .2 = .894427191 - .632455532 + .2 = 0.4619716590
    # v2 = d23 - min(d02, d12) + .2 = .632455532 - .632455532 + .2 = 0.2
    # v3 = d23 - min(d03, d13) + .2 = .632455532 - 1.2 + .2 = -0.3675444680 -> 0
    # mean over the non-zero: (0.4619716590 + 0.2)/2 = 0.3309858295
    x, y = four_points(), LABELS_0011
    close(pairloss.triplet_margin_loss(x, y, margin=0.2, **REF), 0.33098582948312)
    close(pairloss.triplet_margin_loss(x, y, margin=0.2, reduction="none", **REF), [0, 0.46197165896624, 0.2, 0])
    # margin 0.7: v = 0.1802136286, 0.9619716590, 0.7, 0.1324555320, all non-zero -> mean 0.4936602049
    close(pairloss.triplet_margin_loss(x, y, margin=0.7, **REF), 0.49366020490668405)


def test_triplet_soft():
    # softplus of the same v (margin 0.2): sp(-0.31979) = 0.5459828111, sp(0.46197) = 0.9505763334,
    # sp(0.2) = 0.7981388694, sp(-0.36754) = 0.5261668639; all > 0, mean = 0.7052162195
    x, y = four_points(), LABELS_0011
    close(pairloss.triplet_margin_loss(x, y, margin=0.2, soft=True, **REF), 0.7052162194508896)


def test_triplet_all():
    # margin 0.7, every (a, p, n): a0: d01-d02+.7 = 0.18021, d01-d03+.7 = -0.19443 -> 0;
    # a1: d01-d12+.7 = 0.96197, d01-d13+.7 = 0.39443; a2: d23-d02+.7 = -0.08176 -> 0, d23-d12+.7 = 0.7;
    # a3: d23-d03+.7 = -0.45640 -> 0, d23-d13+.7 = 0.13246. Mean of the 5 non-zero terms = 2.36906800/5
    x, y = four_points(), LABELS_0011
    close(pairloss.triplet_margin_loss(x, y, margin=0.7, mining="all", **REF), 0.4738136021253304)
    # per anchor: the sum of its terms
    rows = [0.18021362862682067, 0.9619716589662399 + 0.39442719099991586, 0.7, 0.13245553203367588]
    close(pairloss.triplet_margin_loss(x, y, margin=0.7, mining="all", reduction="none", **REF), rows)


def test_triplet_anchor_without_negatives_is_dropped():
    # One class only: no triplet at all -> 0.
    x = four_points()
    close(pairloss.triplet_margin_loss(x, torch.zeros(4, dtype=torch.long), margin=1.0, **REF), 0.0)


# --------------------------------------------------------------------------------------------------- contrastive
def test_contrastive_defaults():
    # m_p = 0, m_n = 1. Positive pairs (both orders): d01 = .894427191 (×2), d23 = .632455532 (×2), all non-zero:
    #   mean = (.894427191 + .632455532)/2 = 0.7634413615
    # negative pairs relu(1 - d): d02, d03, d13 >= 1 -> 0; d12 = .632455532 -> 0.3675444680 (×2): mean 0.3675444680
    # loss = 0.7634413615 + 0.3675444680 = 1.1309858295
    x, y = four_points(), LABELS_0011
    close(pairloss.contrastive_loss(x, y, **REF), 1.1309858294831199)
    # rows: a0 = d01; a1 = d01 + (1 - d12); a2 = d23 + (1 - d12) = 1 exactly; a3 = d23
    rows = [0.8944271909999159, 1.2619716589662398, 1.0, 0.6324555320336759]
    close(pairloss.contrastive_loss(x, y, reduction="none", **REF), rows)
    close(pairloss.contrastive_loss(x, y, reduction="sum", **REF), sum(rows))


def test_contrastive_margins():
    # m_p = 0.7: relu(d01 - .7) = 0.1944271910 (×2), relu(d23 - .7) = 0 -> positive mean 0.1944271910
    # m_n = 1.3: relu(1.3 - d02) = 0, relu(1.3 - d03) = 0, relu(1.3 - d12) = 0.6675444680, relu(1.3 - d13) = 0.1
    #   (each ×2) -> negative mean (0.6675444680 + 0.1)/2 = 0.3837722340; total 0.5781994250
    x, y = four_points(), LABELS_0011
    close(pairloss.contrastive_loss(x, y, pos_margin=0.7, neg_margin=1.3, **REF), 0.578199424983078)


# -------------------------------------------------------------------------------------------------------- circle
def test_circle_four_points():
    # m = .25, γ = 2: logit_p(s) = -2·[1.25 - s]₊·(s - .75), logit_n(s) = 2·[s + .25]₊·(s - .25)
    # logit_p(.6) = -2·.65·(-.15) = 0.195, logit_p(.8) = -2·.45·.05 = -0.045
    # logit_n(0) = 2·.25·(-.25) = -0.125, logit_n(-.6) = 2·0·(-.85) = 0 (zero weight, still a term e^0),
    # logit_n(.8) = 2·1.05·.55 = 1.155, logit_n(.28) = 2·.53·.03 = 0.0318
    # L0 = sp(.195 + lse(-.125, 0)) = 1.1902244780   L1 = sp(.195 + lse(1.155, .0318)) = 1.8102547812
    # L2 = sp(-.045 + lse(-.125, 1.155)) = 1.5847400581   L3 = sp(-.045 + lse(0, .0318)) = 1.0793901276
    rows = [1.1902244780367228, 1.8102547812092726, 1.5847400580915632, 1.0793901275895084]
    x, y = four_points(), LABELS_0011
    close(pairloss.circle_loss(x, y, m=0.25, gamma=2.0, reduction="none", **REF), rows)
    close(pairloss.circle_loss(x, y, m=0.25, gamma=2.0, **REF), sum(rows) / 4)


def test_circle_row_without_positives_is_zero():
    # Rows x0, x1, x2 with labels 0 0 1: a2 has no positive -> 0 and is left out of the mean.
    # L0 = sp(logit_p(.6) + logit_n(0)) = sp(.195 - .125) = sp(.07) = 0.7287595555
    # L1 = sp(.195 + logit_n(.8)) = sp(1.35) = 1.5805085714; mean of the non-zero = 1.1546340635
    x, y = four_points()[:3], torch.tensor([0, 0, 1])
    close(
        pairloss.circle_loss(x, y, m=0.25, gamma=2.0, reduction="none", **REF),
        [0.7287595555486972, 1.5805085713638756, 0],
    )
    close(pairloss.circle_loss(x, y, m=0.25, gamma=2.0, **REF), 1.1546340634562864)


# ---------------------------------------------------------------------------------------------- NT-Xent, SupCon
LABELS_0001 = torch.tensor([0, 0, 0, 1])
# τ = 0.5: logits s/τ: l01 = 1.2, l02 = 0, l03 = -1.2, l12 = 1.6, l13 = 0.56, l23 = 1.6


def test_ntxent():
    # per positive pair sp(lse_N - l_p); each anchor of class 0 has N = {x3}:
    # a0: sp(-1.2 - 1.2) = 0.0868361522, sp(-1.2 - 0) = 0.2632824673
    # a1: sp(.56 - 1.2) = 0.4234965102, sp(.56 - 1.6) = 0.3026603474
    # a2: sp(1.6 - 0) = 1.7839007409, sp(1.6 - 1.6) = log 2 = 0.6931471806; a3: no positive.
    # mean over the 6 positive pairs = 0.5922205664
    x = four_points()
    close(pairloss.ntxent_loss(x, LABELS_0001, temperature=0.5, **REF), 0.5922205664267564)
    rows = [0.3501186194919809, 0.726156857620273, 2.477047921448284, 0.0]
    close(pairloss.ntxent_loss(x, LABELS_0001, temperature=0.5, reduction="none", **REF), rows)


def test_supcon():
    # L_i = lse_{j≠i} l_ij - mean_{p∈P_i} l_ip
    # a0: lse(1.2, 0, -1.2) - (1.2 + 0)/2 = 0.9306784602; a1: lse(1.2, 1.6, .56) - 1.4 = 0.9049644448
    # a2: lse(0, 1.6, 1.6) - 0.8 = 1.5893190426; a3: no positive -> 0. Mean of the non-zero = 1.1416539826
    x = four_points()
    close(pairloss.supcon_loss(x, LABELS_0001, temperature=0.5, **REF), 1.1416539825620344)
    rows = [0.9306784602098735, 0.904964444832856, 1.5893190426433736, 0.0]
    close(pairloss.supcon_loss(x, LABELS_0001, temperature=0.5, reduction="none", **REF), rows)


@pytest.mark.parametrize("loss", [pairloss.ntxent_loss, pairloss.supcon_loss])
def test_softmax_losses_zero_without_positives_or_negatives(loss):
    x = four_points()
    # single class: no negative pair at all (SupCon: PML's rule gives 0 although LSE - mean > 0 per row)
    close(loss(x, torch.zeros(4, dtype=torch.long), temperature=0.5, **REF), 0.0)
    close(loss(x, torch.zeros(4, dtype=torch.long), temperature=0.5, reduction="none", **REF), [0.0] * 4)
    # all labels distinct: no positive pair
    close(loss(x, torch.arange(4), temperature=0.5, **REF), 0.0)
    # one row
    close(loss(x[:1], torch.tensor([0]), temperature=0.5, **REF), 0.0)


def test_anchor_with_positives_but_no_negatives():
    # anchors a0 = (1, 0) class 0, a1 = (0, 1) class 1; references r0 = (1, 0), r1 = (0.6, 0.8), both class 0.
    # τ = 0.5: a0's logits 2 (r0), 1.2 (r1), both positives, no negative; a1 has no positive.
    # SupCon: L_a0 = lse(2, 1.2) - (2 + 1.2)/2 = 0.7711006659 (the batch has negatives, so no PML zero rule)
    # NT-Xent: each of a0's pairs is -log(e^l/e^l) = 0 (no negative in its denominator), mean over 2 pairs = 0
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    refs = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64)
    y, ref_y = torch.tensor([0, 1]), torch.tensor([0, 0])
    close(pairloss.supcon_loss(x, y, refs, ref_y, temperature=0.5, **REF), 0.7711006659477775)
    close(pairloss.supcon_loss(x, y, refs, ref_y, temperature=0.5, reduction="none", **REF), [0.7711006659477775, 0])
    close(pairloss.ntxent_loss(x, y, refs, ref_y, temperature=0.5, **REF), 0.0)


# ------------------------------------------------------------------------------------------------- CLIP, SigLIP
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
TEXTS = torch.tensor([[0.6, 0.8], [0.0, 1.0]], dtype=F64)
# dot products: I0·T0 = .6, I0·T1 = 0, I1·T0 = .8, I1·T1 = 1


def test_clip():
    # scale 2: logits [[1.2, 0], [1.6, 2]]; image→text CE: row0 lse(1.2, 0) - 1.2 = log(1+e^-1.2),
    # row1 log(1+e^-0.4); text→image (columns): col0 lse(1.2, 1.6) - 1.2 = log(1+e^0.4), col1 log(1+e^-2)
    # mean = (0.2632824673 + 0.5130152524 + 0.9130152524 + 0.1269280110)/4 = 0.4540602458
    # per pair i: (row_i + col_i)/2 = 0.5881488599, 0.3199716317
    scale = torch.tensor(2.0, dtype=F64)
    close(pairloss.clip_loss(IMAGES, TEXTS, scale, **REF), 0.4540602457952273)
    close(pairloss.clip_loss(IMAGES, TEXTS, scale, reduction="none", **REF), [0.5881488598689919, 0.3199716317214626])
    close(pairloss.clip_loss(IMAGES, TEXTS, 2.0, reduction="sum", **REF), 0.5881488598689919 + 0.3199716317214626)


def test_siglip():
    # scale 2, bias -1: logits [[0.2, -1], [0.6, 1]]; z = [[1, -1], [-1, 1]]; -logsigmoid(z·l) = sp(-z·l):
    # sp(-0.2) + sp(-1) + sp(0.6) + sp(-1) = 0.5981388694 + 0.3132616875 + 1.0374879504 + 0.3132616875, / B=2
    close(pairloss.siglip_loss(IMAGES, TEXTS, 2.0, -1.0, **REF), 1.1310750974519617)


# ----------------------------------------------------------------------------------- decoupled, uniformity, MW
def test_decoupled_softmax():
    # queries q0 = (1, 0), q1 = (0, 1); keys k0 = (1, 0), k1 = (.6, .8), k2 = (0, 1); τ = .5
    # q0 logits [2, 1.2, 0], positives {k0, k1}, negatives {k2}: sp(0 - 2) = 0.1269280110, sp(0 - 1.2) = 0.2632824673
    # q1 logits [0, 1.6, 2], positive {k2}, negatives {k0, k1}: sp(lse(0, 1.6) - 2) = 0.5909235892
    # mean over the 3 (query, positive) pairs = 0.3270446892
    queries = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)
    keys = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=F64)
    positives = torch.tensor([[0, 1], [2, -1]])
    close(pairloss.decoupled_softmax_loss(queries, keys, positives, temperature=0.5, **REF), 0.32704468919434665)
    # a repeated index counts once
    repeated = torch.tensor([[0, 1, 1], [2, 2, -1]])
    close(pairloss.decoupled_softmax_loss(queries, keys, repeated, temperature=0.5, **REF), 0.32704468919434665)


def test_uniformity():
    # rows used as given: (1, 0), (0, 1), (-1, 0); squared distances 2, 4, 2 (each pair twice), t = 2:
    # log((2e^-4 + 2e^-8 + 2e^-4)/6) = log((4e^-4 + 2e^-8)/6) = -4.3963489672
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    close(pairloss.uniformity_loss(x, t=2.0, **REF), -4.396348967229015)
    # t = 1, two rows at squared distance 2: log(e^-2) = -2
    close(pairloss.uniformity_loss(x[:2], t=1.0, **REF), -2.0)


def test_mw():
    # queries q0 = (1, 0), q1 = (0, 1); docs d0 = (.6, .8), d1 = (0, 1), d2 = (-1, 0) (an extra negative); τ = .5
    # q0: s/τ = [1.2, 0, -2], positive d0: (sp(0 - 1.2) + sp(-2 - 1.2))/2 = (0.2632824673 + 0.0400533331)/2
    # q1: s/τ = [1.6, 2, 0], positive d1: (sp(1.6 - 2) + sp(0 - 2))/2 = (0.5130152524 + 0.1269280110)/2
    # mean over queries = 0.2357947660
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    docs = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], dtype=F64)
    close(pairloss.mw_loss(queries, docs, temperature=0.5, **REF), 0.23579476598584667)
