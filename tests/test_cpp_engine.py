"""The C++ engine (backend "cpp") against the reference oracles: every loss, loss and gradients, float64 and
float32, tile-boundary shapes, edge cases, the custom ops (opcheck, torch.compile), and CUDA when present."""

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import backends

from .backend_cases import LABEL_LOSSES, OPTIONS, all_case_ids, check_against_reference, make_case

_reason = backends.unavailable_reason("cpp", "cpu")
if _reason is not None:
    pytest.skip(f"backend 'cpp' unavailable: {_reason}", allow_module_level=True)

from pairloss.cpp_engine import CUDA_LOSSES, unavailable_reason

OPS = torch.ops.pairloss
TILE = 128  # csrc/cpu/engine.h kTile: shapes below straddle one and two tiles


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("loss_name,scenario,option", all_case_ids())
def test_cases_match_reference(loss_name, scenario, option, dtype):
    check_against_reference(loss_name, "cpp", **make_case(loss_name, scenario, option, dtype=dtype))


def _label_batch(rows, refs, dim, classes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (rows,), generator=generator)
    if refs is None:
        return {"embeddings": embeddings, "labels": labels, "ref_emb": None, "ref_labels": None}
    ref_emb = torch.randn(refs, dim, generator=generator, dtype=torch.float64)
    return {
        "embeddings": embeddings,
        "labels": labels,
        "ref_emb": ref_emb,
        "ref_labels": torch.randint(0, classes, (refs,)),
    }


SHAPES = [(1, None, 3), (7, None, 1), (33, None, 100), (130, None, 3), (300, None, 100), (7, 130, 3), (130, 33, 1)]


@pytest.mark.parametrize("rows,refs,dim", SHAPES, ids=[f"B{b}-M{m}-D{d}" for b, m, d in SHAPES])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_label_losses_across_tiles(loss_name, rows, refs, dim):
    batch = _label_batch(rows, refs, dim, classes=max(2, rows // 4))
    for options in OPTIONS[loss_name][:2] + [{"reduction": "none"}]:
        check_against_reference(loss_name, "cpp", **batch, **options)


def _unit(rows, dim, generator):
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1)


def _other_batch(loss_name, rows, dim):
    g = torch.Generator().manual_seed(rows * 1000 + dim)
    if loss_name in ("clip_loss", "siglip_loss"):
        scale = torch.tensor(13.0, dtype=torch.float64)
        batch = {"image_features": _unit(rows, dim, g), "text_features": _unit(rows, dim, g), "logit_scale": scale}
        if loss_name == "siglip_loss":
            batch["logit_bias"] = torch.tensor(-5.0, dtype=torch.float64)
        return batch
    if loss_name == "uniformity_loss":
        return {"embeddings": torch.randn(rows, dim, generator=g, dtype=torch.float64)}
    if loss_name == "mw_loss":
        return {"queries": _unit(rows, dim, g), "docs": _unit(rows + TILE + 3, dim, g)}
    keys = rows + TILE + 5
    positives = torch.randint(-1, keys, (rows, 5), generator=g)
    positives[:, 0] = torch.randint(0, keys, (rows,), generator=g)
    return {"queries": _unit(rows, dim, g), "keys": _unit(keys, dim, g), "positives": positives}


OTHER = ("clip_loss", "siglip_loss", "uniformity_loss", "mw_loss", "decoupled_softmax_loss")


@pytest.mark.parametrize("rows,dim", [(2, 1), (130, 3), (257, 100)])
@pytest.mark.parametrize("loss_name", OTHER)
def test_other_losses_across_tiles(loss_name, rows, dim):
    for options in OPTIONS[loss_name]:
        check_against_reference(loss_name, "cpp", **_other_batch(loss_name, rows, dim), **options)


def test_no_mined_pairs_and_single_class():
    # Far-apart classes: the miner keeps nothing, the loss and gradients are exactly 0.
    x = torch.tensor([[1.0, 0.0], [1.0, 1e-3], [-1.0, 0.0], [-1.0, 1e-3]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss = pairloss.multi_similarity_loss(x, labels, epsilon=0.0, backend="cpp")
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool((x.grad == 0).all())
    check_against_reference("multi_similarity_loss", "cpp", embeddings=x.detach(), labels=labels, ref_emb=None,
                            ref_labels=None, epsilon=0.0)  # fmt: skip
    single = {"embeddings": x.detach(), "labels": torch.zeros(4, dtype=torch.long), "ref_emb": None, "ref_labels": None}
    for loss_name in LABEL_LOSSES:
        check_against_reference(loss_name, "cpp", **single)


def test_deterministic():
    batch = _label_batch(300, None, 20, classes=40)
    x = batch["embeddings"].float().requires_grad_()
    grads = []
    for _ in range(2):
        pairloss.ntxent_loss(x, batch["labels"], backend="cpp").backward()
        grads.append(x.grad.clone())
        x.grad = None
    assert torch.equal(grads[0], grads[1])


def _op_args(loss, rows=9, refs=None, dim=5):
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)
    y = None if refs is None else F.normalize(torch.randn(refs, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 3, (rows,), generator=g)
    ref_labels = None if refs is None else torch.randint(0, 3, (refs,), generator=g)
    params = {"multi_similarity": [2.0, 50.0, 0.5, 0.1, 1.0], "triplet_hard": [0.05, 0.0], "triplet_all": [0.1, 1.0],
              "contrastive": [0.0, 1.0], "circle": [0.4, 80.0], "ntxent": [0.07], "supcon": [0.1]}  # fmt: skip
    if loss in params:
        return (loss, x.requires_grad_(), y, labels, ref_labels, None, params[loss])
    y = F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    if loss == "clip":
        return (loss, x.requires_grad_(), y, None, None, torch.tensor([10.0], dtype=torch.float64), [])
    if loss == "siglip":
        return (loss, x.requires_grad_(), y, None, None, torch.tensor([10.0, -3.0], dtype=torch.float64), [])
    if loss == "uniformity":
        return (loss, x.requires_grad_(), None, None, None, None, [2.0])
    if loss == "mw":
        return (loss, x.requires_grad_(), y, None, None, None, [1.0])
    positives = torch.randint(-1, rows, (rows, 3), generator=g)
    return (loss, x.requires_grad_(), y, positives, None, None, [0.05])


ENGINE_LOSSES = ["multi_similarity", "triplet_hard", "triplet_all", "contrastive", "circle", "ntxent", "supcon",
                 "clip", "siglip", "decoupled_softmax", "uniformity", "mw"]  # fmt: skip


@pytest.mark.parametrize("loss", ENGINE_LOSSES)
def test_opcheck(loss):
    args = _op_args(loss)
    if args[-2] is not None:
        args[-2].requires_grad_()
    # The backward op is checked through the forward op's autograd (test_autograd_registration).
    torch.library.opcheck(OPS.cpp_pair_forward.default, args)


def test_opcheck_with_references():
    torch.library.opcheck(OPS.cpp_pair_forward.default, _op_args("multi_similarity", rows=7, refs=11))
    rows, saved, _, active = OPS.cpp_pair_forward(*_op_args("ntxent", rows=7, refs=11))
    loss, x, y, labels, ref_labels, scalars, params = _op_args("ntxent", rows=7, refs=11)
    backward_args = (loss, torch.ones_like(rows), x.detach(), y, labels, ref_labels, scalars, params, saved, active)
    torch.library.opcheck(OPS.cpp_pair_backward.default, backward_args)


@pytest.mark.parametrize("loss_name", ["multi_similarity_loss", "supcon_loss", "triplet_margin_loss"])
def test_torch_compile_fullgraph(loss_name):
    # The public API end to end: argument checks, backend resolution and the custom ops in one graph.
    batch = _label_batch(33, None, 8, classes=5)
    x = batch["embeddings"].requires_grad_()
    function = getattr(pairloss, loss_name)

    def step(embeddings, labels):
        return function(embeddings, labels, backend="cpp")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, batch["labels"])
    (grad,) = torch.autograd.grad(loss, x)
    expected = step(x, batch["labels"])
    (expected_grad,) = torch.autograd.grad(expected, x)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_op_errors_are_clear():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="unknown loss 'nope'"):
        OPS.cpp_pair_forward("nope", x, None, None, None, None, [])
    with pytest.raises(RuntimeError, match="expected 5 params"):
        OPS.cpp_pair_forward("multi_similarity", x, None, torch.zeros(4, dtype=torch.long), None, None, [1.0])
    with pytest.raises(RuntimeError, match="labels must have 4 rows"):
        OPS.cpp_pair_forward("ntxent", x, None, torch.zeros(3, dtype=torch.long), None, None, [0.1])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        OPS.cpp_pair_forward("ntxent", x.half(), None, torch.zeros(4, dtype=torch.long), None, None, [0.1])


def test_availability():
    assert unavailable_reason("cpu") is None
    assert "no kernels for mps" in unavailable_reason("mps")
    assert "cpp" in pairloss.available_backends("cpu")


def _cuda_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    return unavailable_reason("cuda")


cuda = pytest.mark.cuda


@cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
@pytest.mark.parametrize("loss_name", sorted({"multi_similarity_loss", "triplet_margin_loss", "ntxent_loss",
                                               "supcon_loss", "clip_loss"}))  # fmt: skip
@pytest.mark.parametrize("scenario", ["odd", "odd_ref", "large_odd", "transposed", "single_class"])
def test_cuda_matches_reference(loss_name, scenario):
    if loss_name == "clip_loss" and scenario not in ("odd", "large_odd", "transposed"):
        pytest.skip("scenario is for label losses")
    case = make_case(loss_name, scenario, 0, dtype=torch.float32, device="cuda")
    check_against_reference(loss_name, "cpp", **case)


@cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_cuda_large_batch_and_gaps():
    batch = {k: (v.cuda() if v is not None else v) for k, v in _label_batch(300, 129, 40, classes=60).items()}
    for loss_name in ("multi_similarity_loss", "ntxent_loss", "supcon_loss", "triplet_margin_loss"):
        check_against_reference(loss_name, "cpp", **{k: (v.float() if k.endswith("emb") and v is not None else v)
                                                      for k, v in batch.items()})  # fmt: skip
    x = torch.randn(8, 4, device="cuda")
    with pytest.raises(pairloss.BackendUnavailableError, match="no CUDA kernel for circle"):
        pairloss.circle_loss(x, torch.zeros(8, dtype=torch.long, device="cuda"), backend="cpp")
    assert {"multi_similarity", "triplet_hard", "ntxent", "supcon", "clip"} == set(CUDA_LOSSES)
