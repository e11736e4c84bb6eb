"""The C++ engine (backend "cpp") against the reference oracles: every loss, loss and gradients, float64 and
float32, tile-boundary shapes, edge cases, the custom ops (opcheck, torch.compile), and CUDA when present."""

import inspect

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import backends
from pairloss import reference as oracle
from pairloss._labels import engine_labels

from .backend_cases import LABEL_LOSSES, OPTIONS, all_case_ids, check_against_reference, make_case
from .tolerances import assert_close

_reason = backends.unavailable_reason("cpp", "cpu")
if _reason is not None:
    pytest.skip(f"backend 'cpp' unavailable: {_reason}", allow_module_level=True)

from pairloss import cpp_engine
from pairloss.cpp_engine import unavailable_reason

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


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_clip_columns_in_the_row_sweep(threads):
    # One forward sweep takes the row LSEs (image→text) and, through per-thread column accumulators merged at the
    # end, the column LSEs (text→image): 300 rows are 3 row blocks, split over 1 to 3 threads.
    batch = _other_batch("clip_loss", 300, 16)
    image, text, scale = batch["image_features"], batch["text_features"], batch["logit_scale"]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows, saved, _, _ = OPS.cpp_pair_forward("clip", image, text, None, None, scale.reshape(1), [])
        check_against_reference("clip_loss", "cpp", **batch)
    finally:
        torch.set_num_threads(previous)
    logits = scale * image @ text.T
    lse_row, lse_col, diag = logits.logsumexp(1), logits.logsumexp(0), logits.diagonal()
    torch.testing.assert_close(saved[:, :3], torch.stack([lse_row, lse_col, diag], 1))  # the backward's inputs
    torch.testing.assert_close(rows[:, 0], ((lse_row - diag) + (lse_col - diag)) / 2)


@pytest.mark.parametrize(
    "loss_name,options",
    [("clip_loss", {"logit_scale": 100.0}), ("siglip_loss", {"logit_scale": 100.0, "logit_bias": -10.0}),
     ("siglip_loss", {"logit_scale": 30.0, "logit_bias": 10.0}), ("mw_loss", {"temperature": 0.005})],
    ids=["clip-scale100", "siglip-bias-10", "siglip-bias+10", "mw-tau0.005"],
)  # fmt: skip
def test_vectorized_two_tower_epilogues_at_extreme_logits(loss_name, options):
    """The fp32 tile epilogues (csrc/cpu/tile_epilogues.h: polynomial exp, log1p) with logits of several hundred,
    past the exp polynomial's clamp, over 130 × 257 pairs (tiles of 128 with a ragged edge)."""
    batch = _other_batch(loss_name, 130, 24)
    batch = {k: v.float() for k, v in batch.items() if k not in ("logit_scale", "logit_bias")}
    for name, value in options.items():
        batch[name] = torch.tensor(value) if name.startswith("logit") else value
    check_against_reference(loss_name, "cpp", **batch)


def _backend_options(loss_name, options):
    """``options`` completed with the public function's defaults (backend functions take every option)."""
    parameters = inspect.signature(getattr(pairloss, loss_name)).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    return {**{k: v for k, v in defaults.items() if k not in ("backend", "self_offset")}, **options}


def _memory_bank(rows, refs, dim, offset, seed):
    """Anchors and references where the even anchors' copies (and labels) sit at (offset + i) mod refs; the odd
    anchors' own columns hold other rows, so some of them carry another label (not a positive to discount)."""
    g = torch.Generator().manual_seed(seed)
    classes = max(2, rows // 4)
    x, y = (_unit(n, dim, g) for n in (rows, refs))
    labels = torch.randint(0, classes, (rows,), generator=g)
    ref_labels = torch.randint(0, classes, (refs,), generator=g)
    own = (torch.arange(rows) + offset) % refs
    even = own[::2]
    y[even], ref_labels[even] = x[::2], labels[::2]
    return x, labels, y, ref_labels


# (B, M, D, self_offset): no wrap, wrap across a tile boundary, offset ≥ M, more anchors than references (anchors
# share own columns), a single reference.
OFFSET_SHAPES = [(7, 11, 3, 2), (130, 200, 5, 150), (9, 5, 4, 13), (200, 130, 3, 100), (3, 1, 2, 0)]
OFFSET_IDS = [f"B{b}-M{m}-off{o}" for b, m, _, o in OFFSET_SHAPES]


@pytest.mark.parametrize("rows,refs,dim,offset", OFFSET_SHAPES, ids=OFFSET_IDS)
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_self_offset_matches_reference(loss_name, rows, refs, dim, offset):
    x, labels, y, ref_labels = _memory_bank(rows, refs, dim, offset, seed=rows + refs)
    weights = torch.linspace(0.3, 1.7, rows, dtype=x.dtype)
    for options in OPTIONS[loss_name][:4]:
        for reduction in ("mean", "none", "parts"):
            kwargs = _backend_options(loss_name, {**options, "reduction": reduction})
            results = []
            for function in (getattr(cpp_engine, loss_name), getattr(oracle, loss_name)):
                leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
                loss = function(leaves[0], labels, leaves[1], ref_labels, self_offset=offset, **kwargs)
                value = loss[0].sum() if reduction == "parts" else (loss * weights if reduction == "none" else loss)
                grads = torch.autograd.grad(value.sum(), leaves, allow_unused=True)
                loss = tuple(t.detach() for t in loss) if reduction == "parts" else loss.detach()
                results.append((loss, [torch.zeros_like(x) if g is None else g for g in grads]))
            (loss, grads), (expected, expected_grads) = results
            msg = f"{loss_name} {kwargs}"
            if reduction == "parts":
                assert torch.equal(loss[1], expected[1]), f"{msg}: counts {loss[1]} vs {expected[1]}"
                loss, expected = loss[0], expected[0]
            assert_close(loss, expected, msg=msg)
            for grad, expected_grad in zip(grads, expected_grads):
                assert_close(grad, expected_grad, kind="grad", msg=msg)


@pytest.mark.parametrize("rows,refs,offset", [(130, 300, 290), (200, 70, 13), (5, 5, None)])
def test_siglip_positive_offset_across_tiles(rows, refs, offset):
    g = torch.Generator().manual_seed(rows)
    inputs = [_unit(rows, 6, g), _unit(refs, 6, g), torch.tensor(10.0, dtype=torch.float64),
              torch.tensor(-4.0, dtype=torch.float64)]  # fmt: skip
    results = []
    for function in (cpp_engine.siglip_loss, oracle.siglip_loss):
        leaves = [t.clone().requires_grad_() for t in inputs]
        loss = function(*leaves, positive_offset=offset)
        results.append((loss.detach(), torch.autograd.grad(loss, leaves)))
    (loss, grads), (expected, expected_grads) = results
    assert_close(loss, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad")


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
              "contrastive": [0.0, 1.0], "circle": [0.4, 80.0], "ntxent": [0.07, 0.0], "supcon": [0.1, 0.0]}  # fmt: skip
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("loss", ["multi_similarity", "triplet_hard", "clip"])
def test_opcheck_half_inputs(loss, dtype):
    """fp16/bf16 rows are computed in fp32 by the CPU engine: rows and dscalars come back fp32 (as the fakes say),
    dX and dY in the inputs' dtype."""
    name, x, y, labels, ref_labels, scalars, params = _op_args(loss, refs=None if loss == "clip" else 6)
    x, y = (t.detach().to(dtype).requires_grad_() for t in (x, y))
    scalars = None if scalars is None else scalars.float().requires_grad_()
    args = (name, x, y, labels, ref_labels, scalars, params)
    torch.library.opcheck(OPS.cpp_pair_forward.default, args)
    rows, saved, _, active = OPS.cpp_pair_forward(*args)
    assert rows.dtype == torch.float32
    scalars = None if scalars is None else scalars.detach()
    backward_args = (name, torch.ones_like(rows), x.detach(), y.detach(), labels, ref_labels, scalars, params, -1,
                     saved, active)  # fmt: skip
    torch.library.opcheck(OPS.cpp_pair_backward.default, backward_args)
    dx, dy, dscalars = OPS.cpp_pair_backward(*backward_args)
    assert dx.dtype == dy.dtype == dtype and dscalars.dtype == torch.float32


@pytest.mark.parametrize("loss", ["ntxent", "supcon", "triplet_all"])
def test_opcheck_multi_hot_labels(loss):
    """Multi-hot rows packed into int64 words (two words: 70 labels); NT-Xent and SupCon with Jaccard weights."""
    name, x, y, _, _, scalars, params = _op_args(loss, rows=7, refs=11)
    g = torch.Generator().manual_seed(1)
    labels, ref_labels = (engine_labels(torch.rand(n, 70, generator=g) < 0.1) for n in (7, 11))
    params = params[:1] + [1.0] if loss != "triplet_all" else params
    torch.library.opcheck(OPS.cpp_pair_forward.default, (name, x, y, labels, ref_labels, scalars, params))


def test_opcheck_with_references():
    torch.library.opcheck(OPS.cpp_pair_forward.default, _op_args("multi_similarity", rows=7, refs=11))
    rows, saved, _, active = OPS.cpp_pair_forward(*_op_args("ntxent", rows=7, refs=11))
    loss, x, y, labels, ref_labels, scalars, params = _op_args("ntxent", rows=7, refs=11)
    backward_args = (loss, torch.ones_like(rows), x.detach(), y, labels, ref_labels, scalars, params, -1, saved, active)
    torch.library.opcheck(OPS.cpp_pair_backward.default, backward_args)


@pytest.mark.parametrize("loss", ["multi_similarity", "triplet_all", "supcon", "siglip"])
def test_opcheck_own_offset(loss):
    args = _op_args(loss, rows=9, refs=None if loss == "siglip" else 5)
    torch.library.opcheck(OPS.cpp_pair_forward.default, (*args, 7))
    rows, saved, _, active = OPS.cpp_pair_forward(*args, 7)
    name, x, y, labels, ref_labels, scalars, params = args
    backward_args = (name, torch.ones_like(rows), x.detach(), y.detach(), labels, ref_labels, scalars, params, 7,
                     saved, active)  # fmt: skip
    torch.library.opcheck(OPS.cpp_pair_backward.default, backward_args)


def test_torch_compile_self_offset_parts():
    x, labels, y, ref_labels = _memory_bank(33, 50, 8, offset=40, seed=1)
    x.requires_grad_()

    def step(x, y, offset):
        return cpp_engine.ntxent_loss(x, labels, y, ref_labels, self_offset=offset, temperature=0.1, reduction="parts")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for offset in (40, 45):
        (sums, counts), (expected_sums, expected_counts) = compiled(x, y, offset), step(x, y, offset)
        torch.testing.assert_close(sums, expected_sums)
        assert torch.equal(counts, expected_counts)
        torch.testing.assert_close(torch.autograd.grad(sums.sum(), x), torch.autograd.grad(expected_sums.sum(), x))


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


def test_torch_compile_fullgraph_under_bf16_autocast():
    """A bf16 autocast training step (linear embedder + loss) in one graph: the loss turns autocast off inside and
    hands its CPU engine fp32 unit rows."""
    torch.manual_seed(0)
    model = torch.nn.Linear(12, 8)
    data, labels = torch.randn(40, 12), torch.arange(40) % 5

    def step(inputs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return pairloss.supcon_loss(model(inputs), labels, backend="cpp")

    loss = torch.compile(step, fullgraph=True, backend="aot_eager")(data)
    (grad,) = torch.autograd.grad(loss, model.weight)
    expected = step(data)
    (expected_grad,) = torch.autograd.grad(expected, model.weight)
    assert loss.dtype == torch.bfloat16
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_op_errors_are_clear():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="unknown loss 'nope'"):
        OPS.cpp_pair_forward("nope", x, None, None, None, None, [])
    with pytest.raises(RuntimeError, match="expected 5 params"):
        OPS.cpp_pair_forward("multi_similarity", x, None, torch.zeros(4, dtype=torch.long), None, None, [1.0])
    with pytest.raises(RuntimeError, match="labels must have 4 rows"):
        OPS.cpp_pair_forward("ntxent", x, None, torch.zeros(3, dtype=torch.long), None, None, [0.1, 0.0])
    with pytest.raises(RuntimeError, match="takes float64, float32, float16 or bfloat16, got Float8"):
        OPS.cpp_pair_forward(
            "ntxent", x.to(torch.float8_e4m3fn), None, torch.zeros(4, dtype=torch.long), None, None, [0.1, 0.0]
        )
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="own_offset is only for the label losses and siglip, with y given"):
        OPS.cpp_pair_forward("ntxent", x, None, labels, None, None, [0.1, 0.0], 2)
    with pytest.raises(RuntimeError, match="own_offset is only"):
        OPS.cpp_pair_forward("clip", x, x, None, None, torch.ones(1), [], 0)
    with pytest.raises(RuntimeError, match="own_offset must be ≥ 0"):
        OPS.cpp_pair_forward("ntxent", x, x, labels, labels, None, [0.1, 0.0], -2)
    words = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="Jaccard positive weights need multi-hot labels"):
        OPS.cpp_pair_forward("supcon", x, None, labels, None, None, [0.1, 1.0])
    with pytest.raises(RuntimeError, match="in the form of labels"):
        OPS.cpp_pair_forward("supcon", x, x, words, words[:, :1], None, [0.1, 0.0])
    with pytest.raises(RuntimeError, match="in the form of labels"):
        OPS.cpp_pair_forward("supcon", x, x, words, labels, None, [0.1, 0.0])
    with pytest.raises(RuntimeError, match="2-D int64 packed multi-hot words"):
        OPS.cpp_pair_forward("supcon", x, None, words.int(), None, None, [0.1, 0.0])
    with pytest.raises(RuntimeError, match="same number of rows without a positive offset"):
        OPS.cpp_pair_forward("siglip", x, x[:3], None, None, torch.ones(2), [])


def test_availability():
    assert unavailable_reason("cpu") is None
    assert "no kernels for mps" in unavailable_reason("mps")
    assert "cpp" in pairloss.available_backends("cpu")


def _cuda_reason():
    if not torch.cuda.is_available():
        return "no CUDA device"
    return unavailable_reason("cuda")


cuda = pytest.mark.cuda


CUDA_DTYPES = {"fp64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CUDA_SCENARIOS = ["odd", "odd_ref", "large_odd", "transposed", "single_class", "multi_hot"]


@cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
@pytest.mark.parametrize("dtype", list(CUDA_DTYPES.values()), ids=list(CUDA_DTYPES))
@pytest.mark.parametrize("loss_name,scenario,option", [case for case in all_case_ids() if case[1] in CUDA_SCENARIOS
                                                       or case[0] not in LABEL_LOSSES])  # fmt: skip
def test_cuda_matches_reference(loss_name, scenario, option, dtype):
    """Every loss on the chunked CUDA engine (cuBLAS chunks + epilogue kernels); fp16/bf16 by the low-precision
    rule (error vs the fp64 truth within twice the reference's own error in that dtype)."""
    check_against_reference(loss_name, "cpp", **make_case(loss_name, scenario, option, dtype=dtype, device="cuda"))


@cuda
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_cuda_fp16_gradients_survive_a_large_mean():
    """SupCon's mean over 4096 rows makes ∂L/∂s about 1/B² ≈ 6e-8, fp16's smallest subnormal, while dX is a normal
    fp16 number: the power-of-two scaling of G keeps the gradient GEMMs from flushing it."""
    generator = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(4096, 64, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 512, (4096,), generator=generator).cuda()
    x16 = x.to("cuda", torch.float16).requires_grad_()
    pairloss.supcon_loss(x16, labels, backend="cpp").backward()
    x64 = x16.detach().double().requires_grad_()
    pairloss.supcon_loss(x64, labels, backend="reference").backward()
    error = (x16.grad.double() - x64.grad).norm() / x64.grad.norm()
    assert error < 1e-2, f"fp16 gradient off by {error:.2e} (relative norm)"


@cuda
@pytest.mark.slow
@pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
def test_cuda_more_than_2_31_elements():
    """x with B·D > 2³¹ elements (int64 offsets in the GEMM operands and the gradient accumulators)."""
    rows, refs, dim = (1 << 22) + 3, 64, 520
    generator = torch.Generator(device="cuda").manual_seed(0)
    x = F.normalize(torch.randn(rows, dim, device="cuda", dtype=torch.bfloat16, generator=generator), dim=1)
    y = F.normalize(torch.randn(refs, dim, device="cuda", dtype=torch.bfloat16, generator=generator), dim=1)
    labels = torch.randint(0, 8, (rows,), device="cuda", generator=generator)
    ref_labels = torch.randint(0, 8, (refs,), device="cuda", generator=generator)
    x.requires_grad_()
    loss = pairloss.supcon_loss(x, labels, y, ref_labels, backend="cpp")
    loss.backward()
    x64 = x.detach().double().requires_grad_()
    expected = pairloss.supcon_loss(x64, labels, y.double(), ref_labels, backend="reference")
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(x.grad.double()[-5:], x64.grad[-5:], rtol=5e-2, atol=1e-6)
