"""torch.autograd.gradcheck (float64) of the public API with backend="reference", for every loss and option.

The label losses are piecewise smooth: mining thresholds, the hardest positive/negative and the hinges switch at
boundaries. Each test draws seeded random inputs until every pair is at least DELTA away from every such
boundary (``smooth_point``), so the finite differences (eps = 1e-6) never straddle one.

Circle loss detaches its self-paced weights [1 + m - s]₊ and [s + m]₊ (as the paper and PML do), so its
gradient is by design not the derivative of its value; it is checked against the gradient of the same formula
with the weights frozen at the point, which gradcheck then verifies numerically.
"""

import functools

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss.reference._common import l2_distance, pair_masks
from pairloss.reference.multi_similarity import mine_multi_similarity

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
DELTA = 2e-3  # smallest allowed distance of any pair to a mining / hinge boundary
REDUCTIONS = ("mean", "sum", "none")
gradcheck = functools.partial(torch.autograd.gradcheck, eps=1e-6, atol=1e-7, rtol=1e-5)


def _inputs(seed, with_ref, rows=7, refs=6, dim=3, classes=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=generator, dtype=F64)
    labels = torch.arange(rows) % classes
    ref_emb = ref_labels = None
    if with_ref:
        ref_emb = torch.randn(refs, dim, generator=generator, dtype=F64)
        ref_labels = torch.arange(refs) % classes
    return x, labels, ref_emb, ref_labels


def _geometry(x, labels, ref_emb, ref_labels):
    xn = F.normalize(x, dim=1)
    yn = xn if ref_emb is None else F.normalize(ref_emb, dim=1)
    pos, neg = pair_masks(labels, ref_labels)
    return xn @ yn.T, l2_distance(xn, yn), pos, neg


def _far(values, boundary):
    """Every value at least DELTA away from the boundary (tensor broadcasting)."""
    gap = (values - boundary).abs()
    return bool((gap[torch.isfinite(gap)] >= DELTA).all())


def _separated(values):
    """The extreme of ``values`` is unique by DELTA (so argmax/argmin are stable)."""
    if values.numel() < 2:
        return True
    top = values.sort(descending=True).values
    bottom = values.sort().values
    return float(top[0] - top[1]) >= DELTA and float(bottom[1] - bottom[0]) >= DELTA


def smooth_point(loss_name, options, x, labels, ref_emb, ref_labels):
    """True when no pair is within DELTA of a boundary where ``loss_name`` with ``options`` is not smooth."""
    sim, dist, pos, neg = _geometry(x, labels, ref_emb, ref_labels)
    off_diagonal = pos | neg
    if not bool((dist[off_diagonal] > DELTA).all()):  # the distance's kink at 0
        return False
    for i in range(sim.shape[0]):
        s_p, s_n, d_p, d_n = sim[i][pos[i]], sim[i][neg[i]], dist[i][pos[i]], dist[i][neg[i]]
        if loss_name == "multi_similarity_loss" and options.get("mining", True):
            epsilon = options.get("epsilon", 0.1)
            if len(s_n) and not _far(s_p - epsilon, s_n.max()):
                return False
            if len(s_p) and not _far(s_n + epsilon, s_p.min()):
                return False
        if loss_name == "triplet_margin_loss" and len(d_p) and len(d_n):
            margin = options.get("margin", 0.05)
            if options.get("mining", "batch_hard") == "batch_hard":
                if not (_separated(d_p) and _separated(d_n)):
                    return False
                violations = d_p.max() - d_n.min() + margin
            else:
                violations = d_p[:, None] - d_n[None, :] + margin
            if not options.get("soft", False) and not _far(violations, 0.0):
                return False
        if loss_name == "contrastive_loss" and not (
            _far(d_p, options.get("pos_margin", 0.0)) and _far(d_n, options.get("neg_margin", 1.0))
        ):
            return False
    return True


def _mining_matters(loss_name, options, x, labels, ref_emb, ref_labels):
    """For MS with mining: the miner keeps some pairs and drops others, so the check covers both."""
    if loss_name != "multi_similarity_loss" or not options.get("mining", True):
        return True
    sim, _, pos, neg = _geometry(x, labels, ref_emb, ref_labels)
    kept_pos, kept_neg = mine_multi_similarity(sim, pos, neg, options.get("epsilon", 0.1))
    kept, candidates = int(kept_pos.sum() + kept_neg.sum()), int(pos.sum() + neg.sum())
    return 0 < kept < candidates


def smooth_inputs(loss_name, options, with_ref):
    for seed in range(500):
        inputs = _inputs(seed, with_ref)
        if smooth_point(loss_name, options, *inputs) and _mining_matters(loss_name, options, *inputs):
            return inputs
    raise AssertionError(f"no smooth point found for {loss_name} {options}")


LABEL_CONFIGS = [
    ("multi_similarity_loss", {}),
    ("multi_similarity_loss", {"mining": False}),
    ("multi_similarity_loss", {"alpha": 3.0, "beta": 10.0, "base": 0.2, "epsilon": 0.3}),
    ("triplet_margin_loss", {"margin": 0.3}),
    ("triplet_margin_loss", {"margin": 0.3, "soft": True}),
    ("triplet_margin_loss", {"margin": 0.3, "mining": "all"}),
    ("triplet_margin_loss", {"margin": 0.3, "mining": "all", "soft": True}),
    ("contrastive_loss", {}),
    ("contrastive_loss", {"pos_margin": 0.3, "neg_margin": 1.2}),
    ("ntxent_loss", {}),
    ("ntxent_loss", {"temperature": 0.5}),
    ("supcon_loss", {}),
    ("supcon_loss", {"temperature": 0.5}),
]


def _label_fn(loss_name, labels, ref_labels, options):
    function = getattr(pairloss, loss_name)

    def compute(*tensors):
        x, ref_emb = tensors if len(tensors) == 2 else (tensors[0], None)
        return function(x, labels, ref_emb, ref_labels, backend="reference", **options)

    return compute


def _config_id(config):
    name, options = config
    return name.replace("_loss", "") + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("config", LABEL_CONFIGS, ids=_config_id)
def test_gradcheck_label_losses(config, reduction, with_ref):
    loss_name, options = config
    x, labels, ref_emb, ref_labels = smooth_inputs(loss_name, options, with_ref)
    compute = _label_fn(loss_name, labels, ref_labels, {**options, "reduction": reduction})
    tensors = [x.requires_grad_()] + ([ref_emb.requires_grad_()] if with_ref else [])
    assert float(compute(*tensors).detach().abs().sum()) > 0, "a zero loss would make the check vacuous"
    assert gradcheck(compute, tuple(tensors))


def _circle_frozen(labels, ref_labels, m, gamma, reduction, x0, ref0):
    """Circle loss with its detached weights held at their values for (x0, ref0)."""
    sim0, _, pos, neg = _geometry(x0, labels, ref0, ref_labels)
    weight_p, weight_n = F.relu(1 + m - sim0), F.relu(sim0 + m)
    has_both = pos.any(1) & neg.any(1)

    def compute(*tensors):
        x, ref_emb = tensors if len(tensors) == 2 else (tensors[0], None)
        xn = F.normalize(x, dim=1)
        sim = xn @ (xn if ref_emb is None else F.normalize(ref_emb, dim=1)).T
        logit_p = (-gamma * weight_p * (sim - (1 - m))).masked_fill(~pos, float("-inf"))
        logit_n = (gamma * weight_n * (sim - m)).masked_fill(~neg, float("-inf"))
        lse = torch.logsumexp(logit_p.masked_fill(~has_both[:, None], 0), 1) + torch.logsumexp(
            logit_n.masked_fill(~has_both[:, None], 0), 1
        )
        rows = torch.where(has_both, torch.logaddexp(lse, torch.zeros_like(lse)), 0.0)  # softplus, no threshold
        if reduction == "none":
            return rows
        return rows.sum() if reduction == "sum" else rows[has_both].mean()

    return compute


@pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"m": 0.25, "gamma": 16.0}], ids=["defaults", "m0.25-gamma16"])
def test_gradcheck_circle(options, reduction, with_ref):
    x, labels, ref_emb, ref_labels = _inputs(3, with_ref)
    m, gamma = options.get("m", 0.4), options.get("gamma", 80.0)
    frozen = _circle_frozen(labels, ref_labels, m, gamma, reduction, x, ref_emb)
    compute = _label_fn("circle_loss", labels, ref_labels, {**options, "reduction": reduction})
    tensors = tuple([x.requires_grad_()] + ([ref_emb.requires_grad_()] if with_ref else []))
    torch.testing.assert_close(compute(*tensors), frozen(*tensors), rtol=1e-12, atol=1e-12)
    actual = torch.autograd.functional.jacobian(compute, tensors)
    expected = torch.autograd.functional.jacobian(frozen, tensors)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert gradcheck(frozen, tensors)


def _towers(seed, rows, other_rows=None, dim=4, normalise=False):
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn(rows, dim, generator=generator, dtype=F64)
    second = torch.randn(other_rows or rows, dim, generator=generator, dtype=F64)
    if normalise:
        first, second = F.normalize(first, dim=1), F.normalize(second, dim=1)
    return first.requires_grad_(), second.requires_grad_()


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_clip(reduction, rows):
    image, text = _towers(0, rows, normalise=True)
    scale = torch.tensor(3.7, dtype=F64, requires_grad=True)

    def compute(image, text, scale):
        return pairloss.clip_loss(image, text, scale, reduction=reduction, backend="reference")

    assert gradcheck(compute, (image, text, scale))


@pytest.mark.parametrize("rows", [1, 5])
def test_gradcheck_siglip(rows):
    image, text = _towers(1, rows, normalise=True)
    scale = torch.tensor(4.0, dtype=F64, requires_grad=True)
    bias = torch.tensor(-1.5, dtype=F64, requires_grad=True)

    def compute(image, text, scale, bias):
        return pairloss.siglip_loss(image, text, scale, bias, backend="reference")

    assert gradcheck(compute, (image, text, scale, bias))


@pytest.mark.parametrize("temperature", [0.05, 0.7])
def test_gradcheck_decoupled_softmax(temperature):
    queries, keys = _towers(2, 5, other_rows=8)
    positives = torch.tensor([[0, 3, -1], [1, -1, -1], [2, 2, 5], [-1, -1, -1], [7, 0, 1]])

    def compute(queries, keys):
        return pairloss.decoupled_softmax_loss(queries, keys, positives, temperature=temperature, backend="reference")

    assert gradcheck(compute, (queries, keys))


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_gradcheck_uniformity(t):
    (x, _) = _towers(3, 6)
    assert gradcheck(lambda x: pairloss.uniformity_loss(x, t=t, backend="reference"), (x,))


@pytest.mark.parametrize("extra_docs", [0, 3])
def test_gradcheck_mw(extra_docs):
    queries, docs = _towers(4, 5, other_rows=5 + extra_docs)
    assert gradcheck(lambda q, d: pairloss.mw_loss(q, d, temperature=0.3, backend="reference"), (queries, docs))
