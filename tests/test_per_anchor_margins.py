"""Per-anchor margins ((B,) tensors, constants): triplet's ``margin`` (both miners, hinge and softplus) and
contrastive's ``pos_margin``/``neg_margin``. The oracles against one anchor at a time with its own number and by
gradcheck; every engine against the oracles (X = Y, references, own copies, multi-hot labels, grad_output ≠ 1); a
constant tensor equal to the number; the argument checks."""

import pytest
import torch

import pairloss

from .backend_cases import check_against_reference, label_case
from .test_gradcheck import gradcheck, smooth_point
from .tolerances import assert_close

ENGINES = [name for name in ("reference", "cpp", "triton") if name in pairloss.available_backends("cpu")]
# (loss, options with each per-anchor margin as (low, high): the anchors' margins spread over that range)
CASES = [
    ("triplet_margin_loss", {"margin": (0.0, 0.6)}),
    ("triplet_margin_loss", {"margin": (0.1, 0.4), "mining": "all"}),
    ("triplet_margin_loss", {"margin": (0.0, 0.5), "mining": "all", "soft": True, "reduction": "none"}),
    ("contrastive_loss", {"pos_margin": (0.0, 0.4), "neg_margin": (0.6, 1.4)}),
    ("contrastive_loss", {"pos_margin": 0.2, "neg_margin": (0.5, 1.5), "reduction": "none"}),
]
IDS = [f"{name}-{k}" for k, (name, _) in enumerate(CASES)]


def _margins(options, rows, seed=0, dtype=torch.float32):
    """The options with each (low, high) replaced by one margin per anchor in that range (shuffled)."""
    generator = torch.Generator().manual_seed(seed)
    resolved = {}
    for name, value in options.items():
        if isinstance(value, tuple):
            low, high = value
            value = (low + (high - low) * torch.rand(rows, generator=generator, dtype=torch.float64)).to(dtype)
        resolved[name] = value
    return resolved


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scenario", ["odd", "odd_ref", "memory_bank", "single_class", "multi_hot_ref", "B1"])
@pytest.mark.parametrize("loss_name,options", CASES, ids=IDS)
def test_engines_match_the_oracle(engine, scenario, loss_name, options):
    case = label_case(scenario)
    case.update(_margins(options, case["embeddings"].shape[0]))
    check_against_reference(loss_name, engine, **case)


@pytest.mark.parametrize("loss_name,options", CASES, ids=IDS)
def test_each_anchor_uses_its_own_margin(loss_name, options):
    """Row i of the per-anchor loss ("none") is row i of the loss with anchor i's margins as numbers."""
    case = label_case("odd_ref", dtype=torch.float64)
    rows = case["embeddings"].shape[0]
    margins = _margins(options, rows, dtype=torch.float64)
    margins["reduction"] = "none"
    function = getattr(pairloss, loss_name)
    args = (case["embeddings"], case["labels"], case["ref_emb"], case["ref_labels"])
    per_anchor = function(*args, backend="reference", **margins)
    for i in range(rows):
        numbers = {k: float(v[i]) if isinstance(v, torch.Tensor) else v for k, v in margins.items()}
        assert_close(per_anchor[i], function(*args, backend="reference", **numbers)[i], msg=f"row {i}")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss_name,options", CASES, ids=IDS)
def test_a_constant_tensor_equals_the_number(engine, loss_name, options):
    case = label_case("odd")
    rows = case["embeddings"].shape[0]
    numbers = {k: (v[0] + v[1]) / 2 if isinstance(v, tuple) else v for k, v in options.items()}
    tensors = {k: torch.full((rows,), v) if isinstance(options[k], tuple) else v for k, v in numbers.items()}
    function = getattr(pairloss, loss_name)
    expected = function(case["embeddings"], case["labels"], backend=engine, **numbers)
    assert_close(function(case["embeddings"], case["labels"], backend=engine, **tensors), expected)


@pytest.mark.parametrize("loss_name,options", [c for c in CASES if not c[1].get("soft")], ids=IDS[:2] + IDS[3:])
def test_oracles_gradcheck(loss_name, options):
    for seed in range(500):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(7, 3, generator=generator, dtype=torch.float64)
        labels = torch.arange(7) % 3
        margins = _margins(options, 7, seed, torch.float64)
        # Smooth for the loss at every anchor's margin: the hinges' kinks are away from the point.
        scalars = [{k: float(v[i]) if isinstance(v, torch.Tensor) else v for k, v in margins.items()} for i in range(7)]
        if all(smooth_point(loss_name, s, x, labels, None, None) for s in scalars):
            break
    function = getattr(pairloss, loss_name)
    gradcheck(lambda a: function(a, labels, backend="reference", **margins), (x.requires_grad_(),))


@pytest.mark.parametrize(
    "keyword,value,error,match",
    [
        ("margin", torch.full((4,), 0.1), ValueError, r"margin must be a number or one value per row of embeddings"),
        ("margin", torch.tensor([0.1, 0.2, -0.1, 0.0, 0.3]), ValueError, r"every entry of margin must be non-negative"),
        ("margin", torch.full((5,), float("nan")), ValueError, r"every entry of margin must be non-negative"),
        ("margin", torch.zeros(5, dtype=torch.int64), TypeError, r"margin must be a number or a floating-point"),
        ("margin", torch.zeros(5, requires_grad=True), ValueError, r"margin per anchor is a constant"),
        ("margin", torch.zeros(5, device="meta"), ValueError, r"margin is on meta but embeddings on cpu"),
    ],
)
def test_argument_checks(keyword, value, error, match):
    embeddings, labels = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    with pytest.raises(error, match=match):
        pairloss.triplet_margin_loss(embeddings, labels, **{keyword: value})
    with pytest.raises(error, match=match.replace("margin", "neg_margin")):
        pairloss.contrastive_loss(embeddings, labels, **{"neg_" + keyword: value})


def test_the_ring_checks_per_anchor_margins_before_any_collective():
    with pytest.raises(ValueError, match=r"every entry of pos_margin must be non-negative"):
        pairloss.distributed.contrastive_loss(
            torch.randn(5, 4), torch.arange(5), pos_margin=-torch.ones(5), strategy="ring"
        )


@pytest.mark.skipif("triton" not in ENGINES, reason="the Triton engine is not available here")
def test_triton_contrastive_mirrors_tiles_only_with_one_pair_of_margins(monkeypatch):
    """With X = Y the Triton engine's symmetric contrastive kernels take the mirrored rows' margins from the pass's
    parameters (one pair for every anchor): per-anchor margins run over every tile, with their per-row inputs."""
    from pairloss.triton_engine import _ops

    seen = []
    pair_rows = _ops.pair_rows

    def record(*inputs):
        seen.append((inputs[-1], inputs[-3][:2]))  # (symmetric, the first two parameters)
        return pair_rows(*inputs)

    monkeypatch.setattr(_ops, "pair_rows", record)
    case = label_case("odd")
    labels, per_anchor = case["labels"], torch.full((case["embeddings"].shape[0],), 0.25)
    losses, grads = [], []
    for pos_margin in (0.25, per_anchor):
        x = case["embeddings"].detach().clone().requires_grad_()
        losses.append(pairloss.contrastive_loss(x, labels, pos_margin=pos_margin, neg_margin=0.75, backend="triton"))
        grads.append(torch.autograd.grad(losses[-1] * 1.5, x)[0])
    assert seen == [(True, [0.25, 0.75]), (False, [0.0, 0.0])]
    assert_close(losses[1].detach(), losses[0].detach())
    assert_close(grads[1], grads[0])


@pytest.mark.skipif("triton" not in ENGINES, reason="the Triton engine is not available here")
def test_a_symmetric_contrastive_pass_needs_its_margins_as_parameters():
    from pairloss.triton_engine._ids import CONTRASTIVE
    from pairloss.triton_engine.losses import pair_rows_inputs

    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="params must hold the margins"):
        pair_rows_inputs(CONTRASTIVE, x, x, tf32=False, symmetric=True)
    assert pair_rows_inputs(CONTRASTIVE, x, x, tf32=False, symmetric=True, params=(0.1, 0.9))[-1]
