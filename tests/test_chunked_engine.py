"""The chunked engine (csrc/chunked: the CUDA engine's host logic and sweeps) run on the CPU through the
cpp_chunked_* ops: the whole case suite against the reference oracles with chunks that cut the batch at odd
rows, and op-level agreement with the tiled CPU engine (statistics, active map, gradients)."""

import pytest
import torch
import torch.nn.functional as F

from pairloss import backends
from pairloss._numerics import accumulation_dtype

from .backend_cases import all_case_ids, check_against_reference, make_case

_reason = backends.unavailable_reason("cpp", "cpu")
if _reason is not None:
    pytest.skip(f"backend 'cpp' unavailable: {_reason}", allow_module_level=True)

from pairloss.cpp_engine import losses as cpp_losses

OPS = torch.ops.pairloss


def _budget(x, y, chunk_rows):
    """The budget (bytes) that makes chunks of ``chunk_rows`` anchor rows: S_c in the accumulation dtype, and on
    CUDA G_c's copy in a narrower operand dtype (the CPU widens fp16/bf16 operands first)."""
    cols = (x if y is None else y).shape[0]
    per_pair = accumulation_dtype(x.dtype).itemsize
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        per_pair += x.element_size()
    return chunk_rows * cols * per_pair


class _Chunked(torch.autograd.Function):
    """cpp_pair_forward's autograd formula, on the chunked ops."""

    @staticmethod
    def forward(ctx, loss, x, y, labels, ref_labels, scalars, params, own_offset, row_params, budget):
        rows, saved, counts, active = OPS.cpp_chunked_forward(
            loss, x, y, labels, ref_labels, scalars, params, own_offset, row_params, budget
        )
        ctx.args = (loss, params, own_offset, budget)
        ctx.save_for_backward(x, y, labels, ref_labels, scalars, saved, active, row_params)
        ctx.mark_non_differentiable(counts)
        return rows, counts

    @staticmethod
    def backward(ctx, grad_rows, _):
        loss, params, own_offset, budget = ctx.args
        x, y, labels, ref_labels, scalars, saved, active, row_params = ctx.saved_tensors
        dx, dy, dscalars = OPS.cpp_chunked_backward(
            loss, grad_rows.contiguous(), x, y, labels, ref_labels, scalars, params, own_offset, saved, active, 0,
            row_params, budget,
        )  # fmt: skip
        return (None, dx, None if y is None else dy, None, None, None if scalars is None else dscalars,
                None, None, None, None)  # fmt: skip


@pytest.fixture
def chunked_backend(monkeypatch):
    """Routes backend "cpp" through the chunked engine, with chunks of the height the test sets."""
    chunk = {"rows": 7}

    def pair_forward(loss, x, y=None, labels=None, ref_labels=None, scalars=None, params=(), own_offset=None,
                     row_params=None):  # fmt: skip
        own = -1 if own_offset is None else own_offset
        budget = _budget(x, y, chunk["rows"])
        return _Chunked.apply(loss, x, y, labels, ref_labels, scalars, list(params), own, row_params, budget)

    monkeypatch.setattr(cpp_losses, "pair_forward", pair_forward)
    return chunk


@pytest.mark.parametrize("loss_name,scenario,option", all_case_ids())
def test_cases_match_reference(chunked_backend, loss_name, scenario, option):
    """Chunks of 7 rows: every case's batch is cut inside a row block and, past 7 rows, several times."""
    check_against_reference(loss_name, "cpp", **make_case(loss_name, scenario, option, dtype=torch.float64))


def _cuda_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    return backends.unavailable_reason("cpp", "cuda")


FP16_SCENARIOS = ("odd", "odd_ref", "large_odd", "memory_bank", "multi_hot")


@pytest.mark.cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
@pytest.mark.parametrize(
    "loss_name,scenario,option,dtype",
    [(*case, torch.bfloat16) for case in all_case_ids()]
    + [(*case, torch.float16) for case in all_case_ids() if case[1] in FP16_SCENARIOS],
)
def test_cuda_cases_match_reference(chunked_backend, loss_name, scenario, option, dtype):
    """The CUDA kernels and cuBLAS chunks of 7 rows: every case in bf16 (G_c's bf16 operand copy), the main
    scenarios in fp16 (G_c scaled by a power of two); by the low-precision rule."""
    check_against_reference(loss_name, "cpp", **make_case(loss_name, scenario, option, dtype=dtype, device="cuda"))


@pytest.mark.parametrize("chunk_rows", [1, 128, 10_000])
@pytest.mark.parametrize("loss_name", ["multi_similarity_loss", "triplet_margin_loss", "clip_loss", "siglip_loss"])
def test_chunk_heights(chunked_backend, loss_name, chunk_rows):
    """One row per chunk, whole 128-row GEMM tiles, and the whole batch in one chunk."""
    chunked_backend["rows"] = chunk_rows
    scenario = "large_odd"
    check_against_reference(loss_name, "cpp", **make_case(loss_name, scenario, 0, dtype=torch.float64))


def _op_args(loss, rows, refs, dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)
    y = None if refs is None else F.normalize(torch.randn(refs, dim, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, max(2, rows // 8), (rows,), generator=g)
    ref_labels = None if refs is None else torch.randint(0, max(2, rows // 8), (refs,), generator=g)
    params = {"multi_similarity": [2.0, 50.0, 0.5, 0.1, 1.0], "triplet_all": [0.1, 0.0], "circle": [0.4, 80.0],
              "supcon": [0.1, 0.0]}  # fmt: skip
    if loss in params:
        return (loss, x, y, labels, ref_labels, None, params[loss], -1, None)
    y = F.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)
    scalars = torch.tensor([10.0, -3.0] if loss == "siglip" else [10.0], dtype=torch.float64)
    return (loss, x, y, None, None, scalars, [], -1, None)


@pytest.mark.parametrize("rows,refs", [(300, None), (130, 290)], ids=["self-B300", "B130-M290"])
@pytest.mark.parametrize("loss", ["multi_similarity", "triplet_all", "circle", "supcon", "clip", "siglip"])
def test_ops_agree_with_the_tiled_engine(loss, rows, refs):
    """Rows, saved statistics, counters and the active-tile map as the tiled engine's; gradients from one
    grad_rows, chunks of 50 rows (not a multiple of the 128-row active tiles)."""
    args = _op_args(loss, rows, refs, dim=20)
    x, y = args[1], args[2]
    budget = _budget(x, y, 50)
    tiled = OPS.cpp_pair_forward(*args)
    chunked = OPS.cpp_chunked_forward(*args, budget)
    for name, expected, actual in zip(("rows", "saved", "counts", "active"), tiled, chunked):
        torch.testing.assert_close(
            actual, expected, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{loss} {name}: {m}"
        )
    grad_rows = torch.randn(rows, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss_name, _, _, labels, ref_labels, scalars, params, own, row_params = args
    _, saved, _, active = tiled
    common = (loss_name, grad_rows, x, y, labels, ref_labels, scalars, params, own, saved, active, 0, row_params)
    for name, expected, actual in zip(
        ("dx", "dy", "dscalars"), OPS.cpp_pair_backward(*common), OPS.cpp_chunked_backward(*common, budget)
    ):
        torch.testing.assert_close(
            actual, expected, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{loss} {name}: {m}"
        )


def test_budget_errors():
    args = _op_args("supcon", 9, None, 4)
    with pytest.raises(RuntimeError, match="chunk budget must be positive"):
        OPS.cpp_chunked_forward(*args, 0)


RING_PARAMS = {"multi_similarity": [2.0, 50.0, 0.5, 0.1, 1.0], "triplet_hard": [0.05, 0.0], "contrastive": [0.0, 1.0],
               "circle": [0.4, 80.0], "ntxent": [0.07, 0.0], "supcon": [0.1, 0.0]}  # fmt: skip


def _ring_emulated(loss, device):
    """cpp_ring_* over three uneven blocks of a batch (one process playing rank 1 of a ring) against
    cpp_pair_forward of the whole batch."""
    g = torch.Generator().manual_seed(5)
    sizes = [70, 131, 45]
    batch = F.normalize(torch.randn(sum(sizes), 12, generator=g, dtype=torch.float64), dim=1).to(device)
    labels = torch.randint(0, 20, (sum(sizes),), generator=g).to(device)
    offsets = [0, sizes[0], sizes[0] + sizes[1]]
    rank = 1
    anchors = batch[offsets[rank] : offsets[rank] + sizes[rank]]
    anchor_labels = labels[offsets[rank] : offsets[rank] + sizes[rank]]
    params = RING_PARAMS[loss]
    statistics_sweep, loss_sweep = OPS.cpp_ring_sweeps(loss, params)
    blocks = [(owner, batch[o : o + n], labels[o : o + n]) for owner, (o, n) in enumerate(zip(offsets, sizes))]
    stats, accs = OPS.cpp_ring_begin(loss, anchors, anchor_labels, params), None
    for owner, y, y_labels in blocks if statistics_sweep else ():
        own = 0 if owner == rank else -1
        stats = OPS.cpp_ring_stats(loss, anchors, y, anchor_labels, y_labels, params, own, offsets[owner], stats)
    for owner, y, y_labels in blocks if loss_sweep else ():
        own = 0 if owner == rank else -1
        accs, _ = OPS.cpp_ring_accumulate(
            loss, anchors, y, anchor_labels, y_labels, params, own, offsets[owner], stats, accs
        )
    rows, saved, counts = OPS.cpp_ring_finish(loss, anchors, anchor_labels, params, stats, accs)
    expected = OPS.cpp_pair_forward(loss, anchors, batch, anchor_labels, labels, None, params, offsets[rank])
    for name, want, got in zip(("rows", "saved", "counts"), expected, (rows, saved, counts)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda m, name=name: f"{loss} {name}: {m}")


@pytest.mark.parametrize("loss", list(RING_PARAMS))
def test_ring_ops_match_one_call(loss):
    _ring_emulated(loss, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
@pytest.mark.parametrize("loss", list(RING_PARAMS))
def test_cuda_ring_ops_match_one_call(loss):
    """The chunked engine's carried sweeps (Engine::sweep_block), block by block."""
    _ring_emulated(loss, "cuda")
