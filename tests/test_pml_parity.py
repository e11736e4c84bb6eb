"""Parity with pytorch-metric-learning 2.9.0 for the six label losses, loss and gradients, in float64.

Each test draws 100 seeded random batches (sizes 1..130, 1..B classes, with and without ref_emb/ref_labels,
default and non-default hyper-parameters, some duplicate rows) and compares pairloss (backend="reference") with
PML on the same inputs, including gradients w.r.t. embeddings and ref_emb under grad_output = 0.37.

One deliberate difference is handled explicitly: PML's GenericPairLoss (MS, contrastive, circle, NT-Xent,
SupCon) returns 0 when each of its pair index tensors has length ≤ 1 (e.g. one positive and one negative pair).
pairloss returns the loss's value there; those cases assert that PML gives exactly 0 and that pairloss equals
PML's own formula evaluated without that early return.
"""

import math

import pytest
import torch

import pairloss

pytestmark = pytest.mark.usefixtures("single_thread")

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
lmu = pytest.importorskip("pytorch_metric_learning.utils.loss_and_miner_utils")
c_f = pytest.importorskip("pytorch_metric_learning.utils.common_functions")

CASES = 100
GRAD_OUTPUT = 0.37
LOSS_RTOL, LOSS_ATOL = 1e-9, 1e-11
GRAD_RTOL, GRAD_ATOL = 1e-7, 1e-10
STATS = {}  # variant -> statistics, printed with -s and reported


def random_case(index, seed):
    """One random float64 batch; the first cases are tiny (where PML's ≤1-pair rule bites)."""
    generator = torch.Generator().manual_seed(seed * 1000 + index)

    def randint(low, high):  # inclusive
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    def log_uniform(high):  # 1..high, small sizes as likely as large ones
        return max(1, min(high, int(math.exp(float(torch.rand((), generator=generator)) * math.log(high + 1)))))

    with_ref = index % 2 == 1
    if index < 12:  # tiny batches: B in 1..3, M in 1..3
        rows, refs = 1 + index // 4, 1 + index % 3
    else:
        rows, refs = log_uniform(130), log_uniform(130)
    if index >= CASES - 2:  # the largest batch, with and without references
        rows = refs = 130
    # Large batches keep at least B/4 classes: PML's NT-Xent builds a (positive pairs × negative pairs) matrix.
    classes = randint(1 if rows <= 64 else rows // 4, rows)
    dim = [2, 3, 5, 8, 16, 32][randint(0, 5)]
    embeddings = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    ref_emb = ref_labels = None
    if with_ref:
        ref_emb = torch.randn(refs, dim, generator=generator, dtype=torch.float64)
        ref_labels = torch.randint(0, classes + 1, (refs,), generator=generator)  # one class only in the refs
    if index % 7 == 3 and rows >= 4:  # exact duplicate rows with the same label
        embeddings[1] = embeddings[0]
        labels[1] = labels[0]
    non_default = index % 3 != 0
    return embeddings, labels, ref_emb, ref_labels, non_default, generator


def uniform(generator, low, high):
    return low + (high - low) * float(torch.rand((), generator=generator))


# Each variant: (pairloss function, options drawer, PML runner). A PML runner returns (loss, pml_pairs, unguarded)
# where pml_pairs are the pair index tensors GenericPairLoss saw (None for the triplet loss) and unguarded()
# evaluates PML's formula without GenericPairLoss's "≤ 1 pair" early return.


def _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels, indices_tuple=None):
    loss = loss_fn(embeddings, labels, indices_tuple, ref_emb, ref_labels)
    ref_emb_, ref_labels_ = c_f.set_ref_emb(embeddings, labels, ref_emb, ref_labels)
    pairs = lmu.convert_to_pairs(indices_tuple, labels, ref_labels_)

    def unguarded():
        mat = loss_fn.distance(embeddings, ref_emb_)
        return loss_fn.reducer(loss_fn.loss_method(mat, pairs), embeddings, labels)

    return loss, pairs, unguarded


def ms_options(generator, non_default, mining):
    if not non_default:
        return {"mining": mining}
    return {
        "alpha": uniform(generator, 0.5, 4.0),
        "beta": uniform(generator, 5.0, 60.0),
        "base": uniform(generator, -0.2, 0.8),
        "epsilon": uniform(generator, 0.0, 0.5),
        "mining": mining,
    }


def ms_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.MultiSimilarityLoss(
        alpha=options.get("alpha", 2.0), beta=options.get("beta", 50.0), base=options.get("base", 0.5)
    )
    indices = None
    if options["mining"]:
        miner = pml_miners.MultiSimilarityMiner(epsilon=options.get("epsilon", 0.1))
        indices = miner(embeddings, labels, ref_emb, ref_labels)
    return _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels, indices)


def triplet_options(generator, non_default, mining, soft):
    options = {"mining": mining, "soft": soft}
    if non_default:
        options["margin"] = uniform(generator, 0.0, 1.0)
    return options


def triplet_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.TripletMarginLoss(margin=options.get("margin", 0.05), smooth_loss=options["soft"])
    indices = None
    if options["mining"] == "batch_hard":
        indices = pml_miners.BatchHardMiner()(embeddings, labels, ref_emb, ref_labels)
    return loss_fn(embeddings, labels, indices, ref_emb, ref_labels), None, None


def contrastive_options(generator, non_default):
    if not non_default:
        return {}
    return {"pos_margin": uniform(generator, 0.0, 0.6), "neg_margin": uniform(generator, 0.4, 1.6)}


def contrastive_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.ContrastiveLoss(
        pos_margin=options.get("pos_margin", 0), neg_margin=options.get("neg_margin", 1)
    )
    return _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels)


def circle_options(generator, non_default):
    return {"m": uniform(generator, 0.1, 0.5), "gamma": uniform(generator, 16.0, 256.0)} if non_default else {}


def circle_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.CircleLoss(m=options.get("m", 0.4), gamma=options.get("gamma", 80))
    return _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels)


def temperature_options(generator, non_default):
    return {"temperature": uniform(generator, 0.03, 1.0)} if non_default else {}


def ntxent_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.NTXentLoss(temperature=options.get("temperature", 0.07))
    return _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels)


def supcon_pml(embeddings, labels, ref_emb, ref_labels, options):
    loss_fn = pml_losses.SupConLoss(temperature=options.get("temperature", 0.1))
    return _pml_pair_loss(loss_fn, embeddings, labels, ref_emb, ref_labels)


VARIANTS = {
    "ms_mined": (pairloss.multi_similarity_loss, lambda g, nd: ms_options(g, nd, True), ms_pml),
    "ms_unmined": (pairloss.multi_similarity_loss, lambda g, nd: ms_options(g, nd, False), ms_pml),
    "triplet_batch_hard": (
        pairloss.triplet_margin_loss,
        lambda g, nd: triplet_options(g, nd, "batch_hard", False),
        triplet_pml,
    ),
    "triplet_batch_hard_soft": (
        pairloss.triplet_margin_loss,
        lambda g, nd: triplet_options(g, nd, "batch_hard", True),
        triplet_pml,
    ),
    "triplet_all": (pairloss.triplet_margin_loss, lambda g, nd: triplet_options(g, nd, "all", False), triplet_pml),
    "triplet_all_soft": (pairloss.triplet_margin_loss, lambda g, nd: triplet_options(g, nd, "all", True), triplet_pml),
    "contrastive": (pairloss.contrastive_loss, contrastive_options, contrastive_pml),
    "circle": (pairloss.circle_loss, circle_options, circle_pml),
    "ntxent": (pairloss.ntxent_loss, temperature_options, ntxent_pml),
    "supcon": (pairloss.supcon_loss, temperature_options, supcon_pml),
}


def _leaf(tensor):
    return None if tensor is None else tensor.detach().clone().requires_grad_(True)


def _loss_and_grads(compute, embeddings, ref_emb):
    """compute(emb_leaf, ref_leaf) -> loss; returns (loss, [grad embeddings, grad ref_emb or None])."""
    emb, ref = _leaf(embeddings), _leaf(ref_emb)
    loss = compute(emb, ref)
    leaves = [t for t in (emb, ref) if t is not None]
    if loss.requires_grad:
        grads = torch.autograd.grad(loss * GRAD_OUTPUT, leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
    else:
        grads = [torch.zeros_like(t) for t in leaves]
    return loss.detach(), grads


def _diff(actual, expected):
    abs_diff = float((actual - expected).abs().max()) if actual.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    return abs_diff, abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else math.inf)


def _record(stats, key, actual, expected):
    abs_diff, rel_diff = _diff(actual, expected)
    stats[f"{key}_abs"] = max(stats.get(f"{key}_abs", 0.0), abs_diff)
    stats[f"{key}_rel"] = max(stats.get(f"{key}_rel", 0.0), rel_diff)


def _is_pair_quirk(pairs):
    """PML's GenericPairLoss returns 0 when every pair index tensor has ≤ 1 entry; 0 pairs gives 0 anyway."""
    return pairs is not None and all(len(x) <= 1 for x in pairs) and any(len(x) == 1 for x in pairs)


def _assert_close(actual, expected, rtol, atol, where):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}")


def _check_case(variant, index, stats):
    function, draw_options, run_pml = VARIANTS[variant]
    embeddings, labels, ref_emb, ref_labels, non_default, generator = random_case(index, seed=1)
    options = draw_options(generator, non_default)
    refs = None if ref_labels is None else len(ref_labels)
    where = f"{variant} case {index}: B={len(labels)}, M={refs}, {options}"

    def ours_fn(e, r):
        return function(e, labels, r, ref_labels, backend="reference", **options)

    found = {}

    def pml_fn(e, r):
        loss, pairs, _ = run_pml(e, labels, r, ref_labels, options)
        found.update(pairs=pairs)
        return loss

    def formula_fn(e, r):  # PML's formula without GenericPairLoss's "≤ 1 pair" early return
        return run_pml(e, labels, r, ref_labels, options)[2]()

    ours, our_grads = _loss_and_grads(ours_fn, embeddings, ref_emb)
    theirs, their_grads = _loss_and_grads(pml_fn, embeddings, ref_emb)
    stats["cases"] += 1

    if _is_pair_quirk(found["pairs"]):
        # The deliberate difference: PML gives exactly 0 (and no gradient); pairloss gives the formula.
        stats["quirk_cases"] += 1
        stats["quirk_nonzero"] += int(float(ours) != 0.0)
        assert float(theirs) == 0.0, f"{where}: PML's ≤1-pair rule should give 0, got {float(theirs)}"
        assert all(float(g.abs().max()) == 0.0 for g in their_grads), where
        formula, formula_grads = _loss_and_grads(formula_fn, embeddings, ref_emb)
        _assert_close(ours, formula, LOSS_RTOL, LOSS_ATOL, f"{where}: loss vs PML's formula")
        for mine, expected in zip(our_grads, formula_grads):
            _assert_close(mine, expected, GRAD_RTOL, GRAD_ATOL, f"{where}: gradient vs PML's formula")
        return

    _record(stats, "loss", ours, theirs)
    _assert_close(ours, theirs, LOSS_RTOL, LOSS_ATOL, f"{where}: loss")
    for name, mine, expected in zip(("embeddings", "ref_emb"), our_grads, their_grads):
        _record(stats, f"grad_{name}", mine, expected)
        _assert_close(mine, expected, GRAD_RTOL, GRAD_ATOL, f"{where}: d/d{name}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_pml(variant):
    stats = STATS.setdefault(variant, {"cases": 0, "quirk_cases": 0, "quirk_nonzero": 0})
    for index in range(CASES):
        _check_case(variant, index, stats)
    print(f"\nPML parity {variant}: {stats}")
    if not variant.startswith("triplet"):  # TripletMarginLoss is not a GenericPairLoss
        assert stats["quirk_cases"] > 0, "the tiny cases should exercise PML's ≤1-pair rule"


PAIR_VARIANTS = ("ms_mined", "ms_unmined", "contrastive", "circle", "ntxent", "supcon")


@pytest.mark.parametrize("variant", PAIR_VARIANTS)
def test_single_pair_quirk_explicitly(variant):
    """One anchor, references = one positive and one negative: PML returns 0, pairloss the loss's value."""
    function, _, run_pml = VARIANTS[variant]
    options = {"mining": variant == "ms_mined"} if variant.startswith("ms") else {}
    embeddings = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ref_emb = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)  # s = 0.6 (positive), 0.8 (negative)
    labels, ref_labels = torch.tensor([0]), torch.tensor([0, 1])
    ours = function(embeddings, labels, ref_emb, ref_labels, backend="reference", **options)
    theirs, pairs, unguarded = run_pml(embeddings, labels, ref_emb, ref_labels, options)
    assert [len(x) for x in pairs] == [1, 1, 1, 1]
    assert float(theirs) == 0.0
    assert float(ours) > 0.0
    torch.testing.assert_close(ours, unguarded(), rtol=LOSS_RTOL, atol=LOSS_ATOL)


def test_reference_rows_are_never_self_pairs():
    """Another PML difference: PML decides whether the references are the anchors by object identity
    (``ref_labels is labels``), so passing ``ref_emb=x, ref_labels=y`` silently excludes the diagonal. pairloss
    decides by ``ref_emb is None``: explicit references are always separate rows, identical object or not."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ours = pairloss.supcon_loss(x, y, x, y, backend="reference")
    pml = pml_losses.SupConLoss()
    torch.testing.assert_close(ours, pml(x, y, ref_emb=x.clone(), ref_labels=y.clone()), rtol=LOSS_RTOL, atol=0)
    assert not torch.allclose(ours, pml(x, y, ref_emb=x, ref_labels=y))  # PML: same objects = no references
    torch.testing.assert_close(pml(x, y, ref_emb=x, ref_labels=y), pairloss.supcon_loss(x, y, backend="reference"))


def test_contrastive_duplicate_rows_match_pml():
    # Identical rows are at distance exactly 0 (squared distances below the Gram form's rounding noise are 0),
    # as PML's exact cdist gives for ≤ 25 rows; counting a 2e-8 "distance" would change the non-zero average.
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for seed in range(20):
        x = torch.randn(6, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x[1] = x[0]  # rows 0 and 1 identical, same class: a positive pair at distance 0
        ours = pairloss.contrastive_loss(x, y, backend="reference")
        torch.testing.assert_close(ours, pml_losses.ContrastiveLoss()(x, y), rtol=LOSS_RTOL, atol=LOSS_ATOL)


def test_duplicate_rows_are_at_distance_zero_in_large_batches():
    # Above 25 rows PML's cdist switches to the Gram form and reports rounding noise for identical rows;
    # pairloss keeps them at exactly 0, so the duplicated positive pair costs nothing and is not averaged.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=gen, dtype=torch.float64)
    x[1] = x[0]
    labels = torch.arange(40) // 2
    rows = pairloss.contrastive_loss(x, labels, neg_margin=0.0, reduction="none", backend="reference")
    assert rows[0].item() == 0.0 and rows[1].item() == 0.0  # their only positive is the duplicate
    assert (rows[2:] > 0).all()  # distinct positive pairs still count
