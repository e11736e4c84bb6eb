"""Precision rules of pairloss._numerics on every backend: fp16/bf16 numerics follow the accumulation dtype (fp32),
not the inputs', and float64 is exact to rounding.

Each backend's loss and gradients on realistic clustered batches must stay within twice the error of plain
PyTorch in the same dtype against the fp64 truth on the same rounded inputs (``check_against_reference``), and
the defects found by running PML's own tests in half precision stay fixed: distances zeroed by a bf16/fp16
rounding threshold, fp16 sums overflowing, CPU half inputs refused, scalars rounded to the features' dtype, and
softplus cut off at 20 in float64.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import _numerics, backends, functional

from .backend_cases import (
    ALL_LOSSES,
    LABEL_LOSSES,
    OPTIONS,
    check_against_reference,
    clustered_case,
    require_backend,
    run_loss,
    soft_positives,
    split_case,
)
from .tolerances import assert_close

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BACKENDS = ("reference", "cpp", "triton")


@pytest.mark.parametrize("dtype", list(HALF.values()), ids=list(HALF))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("loss_name,option", [(name, k) for name in ALL_LOSSES for k in range(len(OPTIONS[name]))])
def test_clustered_batch_within_torch_error(loss_name, option, backend, dtype):
    """Under the interpreter Triton's ``tl.dot`` misreads bf16, so bf16 rows reach it as fp32 holding the bf16
    values (what the GPU's bf16 MMA computes); the GPU's own bf16 path is the ``cuda`` test below."""
    require_backend(backend, "cpu")
    options = OPTIONS[loss_name][option]
    case = {**clustered_case(loss_name, dtype, multi_hot=soft_positives(options)), **options}
    check_against_reference(loss_name, backend, **case)


@pytest.mark.skipif(backends.unavailable_reason("triton", "cpu") is not None, reason="needs Triton's interpreter")
@pytest.mark.parametrize("dtype", list(HALF.values()), ids=list(HALF))
@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_clustered_batch_with_the_gpu_tiles(monkeypatch, loss_name, dtype):
    """The Triton engine with the CUDA launch plan (PAIRLOSS_TRITON_TILES=cuda: 64-wide tiles) on 150 rows of
    D = 100, under the same rule."""
    monkeypatch.setenv("PAIRLOSS_TRITON_TILES", "cuda")
    check_against_reference(loss_name, "triton", **clustered_case(loss_name, dtype, rows=150, dim=100))


@pytest.mark.parametrize("dtype", list(HALF.values()), ids=list(HALF))
def test_normalised_rows_are_correctly_rounded(dtype):
    """The rows a tensor-core engine gets: normalised in fp32, then rounded once to the dtype (within half an ulp
    of the exact unit rows), never further off than plain ``F.normalize`` in that dtype."""
    x = clustered_case("supcon_loss", dtype, rows=256, dim=64)["embeddings"] * 3.7
    exact = F.normalize(x.double(), dim=1)
    ours = _numerics.unit_rows(x)
    assert ours.dtype == dtype
    error, plain_error = (ours.double() - exact).abs(), (F.normalize(x, dim=1).double() - exact).abs()
    assert float(error.max()) <= 0.5 * torch.finfo(dtype).eps * float(exact.abs().max()) * (1 + 1e-6)
    assert float(error.max()) <= float(plain_error.max()) and float(error.mean()) <= float(plain_error.mean())
    assert _numerics.unit_rows(x, torch.float32).dtype == torch.float32


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", list(HALF.values()), ids=list(HALF))
@pytest.mark.parametrize("backend", ["triton", "cpp"])
@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_clustered_batch_within_torch_error_cuda(loss_name, backend, dtype):
    """The GPU's tile sizes and tensor-core paths: 300 rows and D = 100 cross several 64-wide tiles."""
    require_backend(backend, "cuda")
    case = clustered_case(loss_name, dtype, device="cuda", rows=300, dim=100)
    check_against_reference(loss_name, backend, **case)


# ------------------------------------------------------------------------------------------ zero-distance rule


def _angles(degrees, dtype=torch.float64):
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], 1).to(dtype)


def test_the_zero_distance_rule_takes_the_accumulation_ulps():
    # d = 0.3 between unit rows: squared 0.09, far above 64 ulps of fp32 (a bf16 ulp rule would take d < 1 as 0).
    squared, norms_sum = torch.tensor([0.09, 1e-7]), torch.tensor([2.0, 2.0])
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        distance = _numerics.distance_from_gram(squared.to(dtype), norms_sum.to(dtype), dtype)
        assert float(distance[0]) == pytest.approx(0.3, rel=1e-2) and float(distance[1]) == 0.0
    assert _numerics.accumulation_dtype(torch.bfloat16) == torch.float32
    assert _numerics.accumulation_dtype(torch.float64) == torch.float64


@pytest.mark.parametrize("dtype", list(HALF.values()), ids=list(HALF))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("loss_name", ["triplet_margin_loss", "contrastive_loss"])
def test_neighbours_0_35_apart_keep_their_distance(loss_name, backend, dtype):
    """PML's batch-hard test inputs: unit rows 20° (d = 0.347) apart. A bf16/fp16 rounding threshold took every
    such distance as 0 (triplet in fp16: 1.1768 instead of 0.9601)."""
    require_backend(backend, "cpu")
    embeddings = _angles([0, 20, 40, 60, 80, 100, 120, 140, 160])
    labels = torch.tensor([0, 0, 1, 1, 0, 2, 1, 1, 1])
    rounded = embeddings.to(dtype)
    tensors = split_case(loss_name, {"embeddings": rounded, "labels": labels})[0]
    loss, grads = run_loss(loss_name, backend, tensors, {})
    truth, truth_grads = run_loss(loss_name, "reference", tensors, {}, dtype=torch.float64)
    assert float(truth) > 0.5
    assert_close(loss, truth, dtype, "loss", msg=f"{loss_name} [{backend}]")
    assert_close(grads["embeddings"], truth_grads["embeddings"], dtype, "grad", msg=f"{loss_name} [{backend}]")


# ------------------------------------------------------------------------------------------- fp32 reductions


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_pml_fp16_overflow_case_has_a_finite_mean(backend):
    """PML's CircleLoss overflow test: 180 unit rows one degree apart, 10 classes, m = 0.4, γ = 300. The per-anchor
    losses are ~900 each: their fp16 sum (~1.7e5) overflows, their mean does not."""
    require_backend(backend, "cpu")
    embeddings = _angles(list(range(180)))
    labels = torch.randint(0, 10, (180,), generator=torch.Generator().manual_seed(0))
    options = {"m": 0.4, "gamma": 300.0}
    rounded = embeddings.half().requires_grad_()
    loss = pairloss.circle_loss(rounded, labels, backend=backend, **options)
    loss.backward()
    truth = pairloss.circle_loss(rounded.detach().double(), labels, backend="reference", **options)
    assert loss.dtype == torch.float16 and bool(torch.isfinite(rounded.grad).all())
    assert float(truth) * 180 > torch.finfo(torch.float16).max
    assert_close(loss, truth, torch.float16, "loss", msg=backend)
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    pml_loss = pml.CircleLoss(**options)(rounded.detach().float(), labels)
    assert_close(loss, pml_loss.double(), torch.float16, "loss", msg=f"{backend} vs PML in fp32")


def test_fp16_rows_whose_sum_overflows_give_a_finite_loss():
    # 300 × 512 entries near 1 sum to ~1.5e5 > 65504: the non-finite guard must not sum them in fp16.
    generator = torch.Generator().manual_seed(0)
    embeddings = (1 + 0.1 * torch.randn(300, 512, generator=generator)).half()
    labels = torch.arange(300) % 30
    for backend in pairloss.available_backends("cpu"):
        assert bool(torch.isfinite(pairloss.supcon_loss(embeddings, labels, backend=backend))), backend
    assert bool(torch.isnan(pairloss.supcon_loss(embeddings.clone().index_fill_(0, torch.tensor([3]), math.inf),
                                                 labels)))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_reductions_accumulate_in_fp32_and_return_the_inputs_dtype(dtype):
    x, labels = clustered_case("ntxent_loss", dtype)["embeddings"], torch.arange(96) % 12
    for reduction in ("mean", "sum", "none"):
        assert pairloss.ntxent_loss(x, labels, reduction=reduction).dtype == dtype
    sums, counts = pairloss.ntxent_loss(x, labels, x, labels, self_offset=0, reduction="parts")
    assert sums.dtype == _numerics.accumulation_dtype(dtype) and counts.dtype == torch.float64


# ------------------------------------------------------------------------------------------- every backend, auto


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_auto_computes_every_loss_in_every_dtype_on_cpu(loss_name, dtype):
    """``backend="auto"`` picks a backend that takes the inputs (before: cpp, which refused fp16/bf16)."""
    tensors = split_case(loss_name, clustered_case(loss_name, dtype, rows=24, dim=8))[0]
    loss, grads = run_loss(loss_name, "auto", tensors, {})
    expected, expected_grads = run_loss(loss_name, "reference", tensors, {})
    assert loss.dtype == dtype
    assert_close(loss, expected, dtype, "loss", msg=loss_name)
    for name, grad in grads.items():
        assert grad.dtype == tensors[name].dtype, f"{loss_name} d/d{name}"
        assert_close(grad, expected_grads[name], dtype, "grad", msg=f"{loss_name} d/d{name}")


# --------------------------------------------------------------------------------------------- fp32 scalars


def test_python_scalars_become_fp32_tensors_for_half_features():
    features = torch.zeros(2, 3, dtype=torch.bfloat16)
    assert functional._as_scalar_tensor(14.3, features).dtype == torch.float32
    assert functional._as_scalar_tensor(14.3, features.double()).dtype == torch.float64


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_cpp_op_keeps_the_logit_scale_in_fp32(loss):
    """14.3 is 14.3125 in bf16: a rounded scale moves each row's CLIP loss by ~1e-2, far above fp32 noise."""
    pytest.importorskip("pairloss._C")
    case = clustered_case(f"{loss}_loss", torch.bfloat16, rows=16, dim=8)
    image, text = case["image_features"], case["text_features"]
    scalars = torch.tensor([14.3, -4.0]) if loss == "siglip" else torch.tensor([14.3])
    rows = torch.ops.pairloss.cpp_pair_forward(loss, image, text, None, None, scalars, [])[0]
    assert rows.dtype == torch.float32
    exact = torch.ops.pairloss.cpp_pair_forward(loss, image.double(), text.double(), None, None, scalars.double(), [])
    torch.testing.assert_close(rows.double(), exact[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- float64 is exact


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_ntxent_is_exact_in_float64_where_softplus_passes_20(backend):
    """A far positive (cos −0.5) and a near negative (cos 0.6) at τ = 0.05: the pair term is softplus(22), which
    F.softplus's threshold returns as 22 (relative error 1e-11); its exact value is 22 + log1p(e^−22)."""
    require_backend(backend, "cpu")
    rows = _angles([0.0, 120.0, math.degrees(math.acos(0.6))])
    labels = torch.tensor([0, 0, 1])
    loss = pairloss.ntxent_loss(rows, labels, temperature=0.05, backend=backend)
    unit = F.normalize(rows, dim=1).tolist()

    def logit(i, j):
        return sum(a * b for a, b in zip(unit[i], unit[j])) / 0.05

    def softplus(z):
        return z + math.log1p(math.exp(-z))

    # Pairs (0, 1) and (1, 0), each against its one negative (row 2).
    expected = (softplus(logit(0, 2) - logit(0, 1)) + softplus(logit(1, 2) - logit(1, 0))) / 2
    assert logit(0, 2) - logit(0, 1) > 20
    assert abs(float(loss) - expected) <= 4e-16 * expected


# ------------------------------------------------------------------------------------------------- autocast


def _loss_of(loss_name, embeddings, other, labels, backend="auto"):
    """``loss_name`` on a batch of model outputs (two towers: ``embeddings`` and ``other``)."""
    if loss_name in LABEL_LOSSES:
        return getattr(pairloss, loss_name)(embeddings, labels, backend=backend)
    if loss_name == "uniformity_loss":
        return pairloss.uniformity_loss(embeddings, backend=backend)
    if loss_name == "clip_loss":
        return pairloss.clip_loss(embeddings, other, 10.0, backend=backend)
    if loss_name == "siglip_loss":
        return pairloss.siglip_loss(embeddings, other, 10.0, -5.0, backend=backend)
    if loss_name == "decoupled_softmax_loss":
        return pairloss.decoupled_softmax_loss(embeddings, other, labels[:, None], backend=backend)
    return pairloss.mw_loss(embeddings, other, backend=backend)


def _autocast_step(loss_name, autocast):
    """One SGD step of a small MLP embedder under CPU bf16 autocast (or in fp32): the loss, the model outputs with
    their gradients, and the first layer's weight gradient."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    second = torch.nn.Linear(20, 16)
    data = torch.randn(48, 20, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(48) % 6
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = [model(data), second(data)]
        if loss_name not in LABEL_LOSSES + ("decoupled_softmax_loss", "mw_loss"):  # unit rows, as CLIP models give
            outputs = [F.normalize(output, dim=1) for output in outputs]
        for output in outputs:
            output.retain_grad()
        loss = _loss_of(loss_name, *outputs, labels)
    loss.backward()
    gradient = model[0].weight.grad.clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return loss, outputs, labels, gradient


@pytest.mark.skipif(backends.unavailable_reason("triton", "cpu") is not None, reason="needs Triton's interpreter")
def test_fp32_rows_under_autocast_reach_the_tensor_cores_in_autocast_dtype(monkeypatch):
    """fp32 embeddings under autocast (e.g. after a LayerNorm, which autocast keeps in fp32): the tensor-core engine
    gets bf16 unit rows, as autocast would give a matmul; the loss keeps the inputs' dtype."""
    from pairloss.triton_engine import _ops

    seen = []
    original = _ops.pair_rows

    def spy(x, *args):
        seen.append(x.dtype)
        return original(x, *args)

    monkeypatch.setattr(_ops, "pair_rows", spy)
    embeddings, labels = clustered_case("supcon_loss", torch.float32, rows=24, dim=8)["embeddings"], torch.arange(24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pairloss.supcon_loss(embeddings, labels % 4, backend="triton")
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32
    pairloss.supcon_loss(embeddings, labels % 4, backend="triton")
    assert seen[-1] == torch.float32


@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_bf16_autocast_training_step_on_cpu(loss_name):
    """Under ``torch.autocast("cpu", bfloat16)`` the model's outputs are bf16: every loss runs with backend="auto",
    its gradient w.r.t. those outputs matches the fp64 truth on them to bf16 precision, and the step is close to the
    fp32 step (which also differs by autocast's bf16 layers)."""
    loss, outputs, labels, gradient = _autocast_step(loss_name, autocast=True)
    fp32_loss, _, _, fp32_gradient = _autocast_step(loss_name, autocast=False)
    assert loss.dtype == torch.bfloat16 and outputs[0].dtype == torch.bfloat16
    leaves = [output.detach().double().requires_grad_() for output in outputs]
    truth = _loss_of(loss_name, *leaves, labels, backend="reference")
    truth.backward()
    assert_close(loss, truth.detach(), torch.bfloat16, "loss", msg=loss_name)
    # Batch-hard mining picks among near-tied distances of an untrained model: the bf16 rounding of the normalised
    # rows legitimately changes some picks (the clustered batches above check its precision).
    for output, leaf in zip(outputs, leaves):
        if output.grad is not None and loss_name != "triplet_margin_loss":
            assert_close(output.grad, leaf.grad, torch.bfloat16, "grad", msg=f"{loss_name} d/d(outputs)")
    torch.testing.assert_close(loss.float(), fp32_loss, rtol=5e-2, atol=5e-2)
    assert float((gradient - fp32_gradient).norm() / fp32_gradient.norm()) < 0.25
