"""The Triton engine (backend "triton") against the reference oracles.

On a machine without CUDA the kernels run on CPU tensors through Triton's interpreter (conftest.py sets
TRITON_INTERPRET=1), whose tiles are 16×16 so that the small odd batches here cross tile boundaries. Tests
marked ``cuda`` (low precision, large batches, torch.compile) need a GPU and are skipped without one.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import backends

from .backend_cases import (
    LABEL_LOSSES,
    OTHER_LOSSES,
    SPECS,
    all_case_ids,
    check_against_reference,
    clustered_case,
    make_case,
    random_multi_hot,
    run_loss,
    split_case,
)
from .tolerances import assert_within_torch_error

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
from pairloss.triton_engine._tiles import gradient_operand  # after the skip: triton is optional

CPU_REASON = backends.unavailable_reason("triton", "cpu")
CUDA_REASON = backends.unavailable_reason("triton", "cuda")
# The device the engine runs on here: CPU under the interpreter, else the GPU.
DEVICE = "cpu" if CPU_REASON is None else "cuda"
pytestmark = pytest.mark.skipif(
    CPU_REASON is not None and CUDA_REASON is not None,
    reason=f"triton backend unavailable: {CPU_REASON}; {CUDA_REASON}",
)
needs_cuda = pytest.mark.skipif(
    CUDA_REASON is not None or not torch.cuda.is_available(), reason=f"needs CUDA ({CUDA_REASON})"
)


def check_within_fp32_error(loss_name, **case):
    """Loss and gradients within twice the reference's own fp32 error against its fp64 result (plus atol).

    Used on the larger batches, where the gradients of sharp losses (circle's γ = 80, small temperatures)
    amplify fp32 rounding of S beyond the fixed fp32 tolerance even for the reference itself."""
    tensors, options, _ = split_case(loss_name, case)
    loss, grads = run_loss(loss_name, "triton", tensors, options)
    torch_loss, torch_grads = run_loss(loss_name, "reference", tensors, options)
    truth_loss, truth_grads = run_loss(loss_name, "reference", tensors, options, dtype=torch.float64)
    assert_within_torch_error(loss, torch_loss, truth_loss, torch.float32, "loss", msg=f"{loss_name} loss")
    assert grads.keys() == truth_grads.keys()
    for name, grad in grads.items():
        assert_within_torch_error(grad, torch_grads[name], truth_grads[name], torch.float32, "grad", msg=name)


def _label_case(rows, refs, dim, classes, seed=0, device=DEVICE, dtype=torch.float32, **options):
    generator = torch.Generator().manual_seed(seed)

    def embeddings(count):
        # Unit rows: with D = 1 the exact gradient through the normalisation is 0 and what is left is rounding
        # noise ∝ 1/|x|, which near-zero random rows would blow up.
        return F.normalize(torch.randn(count, dim, generator=generator), dim=1).to(device, dtype)

    def labels(count):
        return torch.randint(0, classes, (count,), generator=generator).to(device)

    ref_emb, ref_labels = (None, None) if refs is None else (embeddings(refs), labels(refs))
    return dict(embeddings=embeddings(rows), labels=labels(rows), ref_emb=ref_emb, ref_labels=ref_labels, **options)


@pytest.mark.parametrize("loss_name,scenario,option", all_case_ids())
def test_matches_reference(loss_name, scenario, option):
    """Every loss, option and edge-case batch of the shared cases (B = 1 … 67, odd, single class, all-distinct
    labels, duplicate rows, non-contiguous inputs, every reduction), loss and gradients, fp32."""
    check_against_reference(loss_name, "triton", **make_case(loss_name, scenario, option, device=DEVICE))


@pytest.mark.parametrize(
    "rows,refs,dim",
    [(130, None, 100), (33, 7, 1), (7, 130, 3)],
    ids=["B130_D100", "B33_refs7_D1", "B7_refs130_D3"],
)
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_label_losses_across_tiles(loss_name, rows, refs, dim):
    """Batches spanning many 16-wide tiles, a feature chunk loop (D = 100 > 32), and D = 1."""
    if loss_name == "triplet_margin_loss" and rows * (refs or rows) ** 2 > 10**5:
        options = {}  # all-triplets on 130³ is too slow for the interpreter; batch-hard covers the shape
    else:
        options = {"mining": "all"} if loss_name == "triplet_margin_loss" else {"reduction": "none"}
    check_within_fp32_error(loss_name, **_label_case(rows, refs, dim, classes=5, **options))


@pytest.mark.parametrize("temperature", [0.025, 0.03], ids=["every_tile", "half_the_tiles"])
@pytest.mark.parametrize("loss_name", ["supcon_loss", "ntxent_loss"])
def test_softmax_losses_forward_over_either_tile_set(monkeypatch, loss_name, temperature):
    """X = Y: SupCon's loss sweep takes the symmetric forward (half the tiles, a fixed log-sum shift) while
    2/τ + 1 ≤ 80, and every tile below τ ≈ 0.0253; NT-Xent's statistics likewise (its loss sweep is always
    symmetric). Both sides of the switch against the oracle, at temperatures whose 1/τ amplifies S's rounding.

    With the symmetric backward, which recomputes each pair's S in the tile the half-tile forward took it from. The
    mirrored backward also computes the tiles below the diagonal, and relies on S_JI = S_IJᵀ bit for bit, which the
    interpreter's products (numpy's, blocked by BLAS) do not give: an ulp of S times 1/τ, here ~1.5 times the
    gradient error (SupCon at τ = 0.03: 1.75e-4 against 1.2e-4, numpy 2.4). On a GPU test_triton_similarity checks
    that the tensor cores give it."""
    from pairloss.triton_engine import _ids, _launch

    monkeypatch.setenv("PAIRLOSS_MIRRORED_BACKWARD", "0")
    assert _launch.shared_forward(_ids.SUPCON.value, False, (temperature,)) == (temperature > 0.0255)
    check_within_fp32_error(loss_name, **_label_case(130, None, 20, classes=5, temperature=temperature,
                                                     reduction="none"))  # fmt: skip


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("dim", [100, 300])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES + OTHER_LOSSES)
def test_cuda_tile_sizes_under_the_interpreter(monkeypatch, loss_name, dim):
    """PAIRLOSS_TRITON_TILES=cuda: the interpreter runs the CUDA launch plan (64-wide tiles, 16-row all-triplets
    tiles, exact fp32's 16-wide feature chunks, 32 for all-triplets) on batches crossing several tiles, with
    partial ones at each edge."""
    from pairloss.triton_engine import _ids, _launch

    monkeypatch.setenv("PAIRLOSS_TRITON_TILES", "cuda")
    assert _launch.tile_sizes("cpu", _ids.MULTI_SIMILARITY.value) == (64, 64, 64)
    if loss_name in LABEL_LOSSES:
        options = {"mining": "all"} if loss_name == "triplet_margin_loss" else {"reduction": "none"}
        rows, refs = (40, 70) if loss_name == "triplet_margin_loss" else (150, None)
        check_within_fp32_error(loss_name, **_label_case(rows, refs, dim, classes=9, **options))
        if loss_name != "triplet_margin_loss":
            check_within_fp32_error(loss_name, **_label_case(70, 200, dim, classes=9))
        return
    case = make_case(loss_name, "odd", device=DEVICE)
    generator = torch.Generator().manual_seed(dim)
    for name in SPECS[loss_name].tensors:
        value = case.get(name)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 2:
            rows = 130 if name in ("embeddings", "image_features", "text_features", "queries") else 150
            case[name] = F.normalize(torch.randn(rows, dim, generator=generator), dim=1).to(DEVICE)
    if loss_name == "decoupled_softmax_loss":
        case["positives"] = torch.randint(-1, 150, (130, 3), generator=generator).to(DEVICE)
    check_within_fp32_error(loss_name, **case)


MULTI_HOT_CASES = [
    ("multi_similarity_loss", {}),
    ("triplet_margin_loss", {}),
    ("contrastive_loss", {}),
    ("circle_loss", {"reduction": "none"}),
    ("ntxent_loss", {"positive_weights": "jaccard"}),
    ("supcon_loss", {"positive_weights": "jaccard", "reduction": "none"}),
]


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("refs", [None, 90], ids=["self", "refs"])
@pytest.mark.parametrize("loss_name,options", MULTI_HOT_CASES, ids=[name for name, _ in MULTI_HOT_CASES])
def test_multi_hot_labels_at_cuda_tile_sizes(monkeypatch, loss_name, options, refs):
    """The CUDA launch plan on 1000 labels (16 words per row, the words' loop and the Jaccard popcounts) across
    several 64-wide tiles."""
    monkeypatch.setenv("PAIRLOSS_TRITON_TILES", "cuda")
    generator = torch.Generator().manual_seed(7)

    def rows(count):
        return F.normalize(torch.randn(count, 100, generator=generator), dim=1)

    case = {"embeddings": rows(150), "labels": random_multi_hot(generator, 150, 1000, 12, 0.2)}
    if refs is not None:
        case.update(ref_emb=rows(refs), ref_labels=random_multi_hot(generator, refs, 1000, 12, 0.2))
    check_within_fp32_error(loss_name, **case, **options)


def test_column_splits_fill_the_gpu_at_training_batch_sizes(monkeypatch):
    """The CUDA plan splits each row block's columns until the grid has ~4 programs per SM (two waves at two
    resident programs per SM): B = 1024 and 4096 no longer leave most of 132 SMs idle (1024 has 256 tiles in all:
    one per program), and splits stop once the
    row blocks fill the GPU alone. Every split streams at least one tile."""
    from pairloss.triton_engine import _ids, _launch

    monkeypatch.delenv("PAIRLOSS_SM_COUNT", raising=False)
    sms = _launch.sm_count("cuda")
    assert sms == (torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132)
    for rows in (1024, 4096, 16384, 65536):
        row_blocks, col_blocks = _launch.tile_grid(rows, rows, "cuda", _ids.MULTI_SIMILARITY.value)
        splits = _launch.column_splits(row_blocks, col_blocks, "cuda")
        assert row_blocks * splits.count >= min(2 * sms, row_blocks * col_blocks), rows  # 1024: 256 tiles in all
        assert (splits.count - 1) * splits.tiles < col_blocks <= splits.count * splits.tiles, rows
        assert (splits.count == 1) == (row_blocks >= _launch.TARGET_PROGRAMS_PER_SM * sms), rows


@pytest.mark.parametrize("sm_count", ["1", "1000"], ids=["unsplit", "one_tile_per_split"])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES + OTHER_LOSSES)
def test_column_splits_merge_exactly(monkeypatch, loss_name, sm_count):
    """The forward's split partial states (log-sum-exps, extremes, first argmaxes, sums and counts) merge into
    what one program streaming every column computes, and the split backward adds up: with the columns unsplit,
    and split down to one tile per program (the rest of the suite runs with the interpreter's 4 SMs)."""
    monkeypatch.setenv("PAIRLOSS_SM_COUNT", sm_count)
    check_against_reference(loss_name, "triton", **make_case(loss_name, "large_odd", device=DEVICE))


@pytest.mark.parametrize("sm_count", ["1", "1000"], ids=["unsplit", "one_tile_per_split"])
def test_hardest_pairs_tie_to_the_first_column_across_splits(monkeypatch, sm_count):
    """Rows 40…69 copy rows 0…29: each copied anchor's hardest positive and negative tie between a column and
    its copy three tiles later, in another split. The first column wins, as torch.argmax (the gradient goes to
    that row only)."""
    monkeypatch.setenv("PAIRLOSS_SM_COUNT", sm_count)
    generator = torch.Generator().manual_seed(5)
    rows = F.normalize(torch.randn(40, 6, generator=generator), dim=1)
    labels = torch.arange(40) % 5
    case = {
        "embeddings": torch.cat([rows, rows[:30]]).to(DEVICE),
        "labels": torch.cat([labels, labels[:30]]).to(DEVICE),
    }
    check_against_reference("triplet_margin_loss", "triton", **case)


@pytest.mark.parametrize("deterministic", ["0", "1"])
def test_fp16_gradient_products_keep_tiny_pair_gradients(monkeypatch, deterministic):
    """The gradient MMAs take G in fp16: pair gradients of large batches (∝ 1/B² under a mean) fall below fp16's
    range and flushed to 0. Scaled per tile by a power of two, a 2^-40 smaller upstream gradient gives exactly a
    2^-40 smaller dX and dY (the op's fp32 outputs)."""
    from pairloss.triton_engine import _ids, _ops, losses

    monkeypatch.setenv("PAIRLOSS_DETERMINISTIC", deterministic)
    x, y = (t.half() for t in _towers(40, 50, 16, device=DEVICE))
    labels, ref_labels = torch.arange(40, device=DEVICE) % 5, torch.arange(50, device=DEVICE) % 5
    inputs = losses.pair_rows_inputs(_ids.SUPCON, x, y, tf32=False, row_labels=labels, col_labels=ref_labels,
                                     params=(0.1,))  # fmt: skip
    values, tile_bits = _ops.pair_rows(*inputs)
    coefs = torch.zeros(4, 40, device=DEVICE)
    coefs[0], coefs[1] = 1.0, -0.5
    dx, dy, _, _ = _ops.pair_grad(*losses.grad_inputs(inputs, values, coefs, tile_bits))
    tiny_dx, tiny_dy, _, _ = _ops.pair_grad(*losses.grad_inputs(inputs, values, coefs * 2.0**-40, tile_bits))
    assert float(dx.abs().max()) > 0.1
    torch.testing.assert_close(tiny_dx * 2.0**40, dx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiny_dy * 2.0**40, dy, rtol=1e-5, atol=1e-6)


@triton.jit
def _gradient_product(g_ptr, y_ptr, out_ptr, N: tl.constexpr):
    """out = G·Y for one N × N tile through ``gradient_operand``."""
    offsets = tl.arange(0, N)[:, None] * N + tl.arange(0, N)[None, :]
    y = tl.load(y_ptr + offsets)
    g_op, g_unscale = gradient_operand(tl.load(g_ptr + offsets), y_ptr.dtype.element_ty)
    tl.store(out_ptr + offsets, tl.dot(g_op, y) * g_unscale)


@pytest.mark.skipif(CPU_REASON is not None, reason="a kernel on CPU tensors under the interpreter")
@pytest.mark.parametrize("largest", [0.0, 1e-40, 1e-20, 3e-7, 1.0, 700.0, 1e5])
def test_fp16_gradient_operand_at_every_magnitude(largest):
    """G·Y with G scaled into fp16's range: finite and within fp16 rounding of the exact product, from a zero tile
    to |G| beyond fp16's largest value; below ~1e-26 the tile keeps a finite scale and flushes to 0."""
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(16, 16, generator=generator, dtype=torch.float64)
    g = (g / g.abs().max() * largest).float()
    y = torch.randn(16, 16, generator=generator).half()
    out = torch.empty(16, 16)
    _gradient_product[(1,)](g, y, out, N=16)
    exact = g.double() @ y.double()
    assert bool(torch.isfinite(out).all())
    if largest < 1e-26:
        assert float(out.abs().max()) <= 1e-30
    else:
        assert float((out.double() - exact).abs().max()) <= 4e-3 * largest * 16


def _memory_bank_case(rows, refs, offset, dim=5, classes=4, **options):
    """Anchors and references holding their copies at rows (offset + i) % refs, wrapping around the end (a ring
    buffer memory bank); with fewer references than anchors the references stay random."""
    case = _label_case(rows, refs, dim, classes, **options)
    if rows <= refs:
        own = (torch.arange(rows) + offset) % refs
        case["ref_emb"][own.to(DEVICE)] = case["embeddings"]
        case["ref_labels"][own.to(DEVICE)] = case["labels"]
    return dict(case, self_offset=offset)


@pytest.mark.parametrize("rows,refs,offset", [(37, 53, 41), (40, 23, 9)], ids=["bank_wraps", "fewer_refs"])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_own_copies_across_tiles(loss_name, rows, refs, offset):
    """``self_offset`` on batches spanning 16-wide tiles: a row block's own columns straddle column tiles and
    wrap around the references' end; with fewer references several anchors share one own column."""
    options = {"mining": "all"} if loss_name == "triplet_margin_loss" else {"reduction": "none"}
    check_within_fp32_error(loss_name, **_memory_bank_case(rows, refs, offset, **options))


def _towers(rows, cols, dim, seed=0, device=DEVICE):
    generator = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, dim, generator=generator), dim=1).to(device) for n in (rows, cols)]


@pytest.mark.parametrize("dim", [1, 100])
def test_other_losses_across_tiles(dim):
    rows = 67 if dim > 1 else 33
    image, text = _towers(rows, rows, dim)
    scale = torch.tensor(20.0, device=DEVICE)
    check_within_fp32_error("clip_loss", image_features=image, text_features=text, logit_scale=scale)
    bias = torch.tensor(-5.0, device=DEVICE)
    check_within_fp32_error("siglip_loss", image_features=image, text_features=text, logit_scale=scale, logit_bias=bias)
    for image_rows, text_rows, offset in [(rows, rows // 2 + 3, rows // 2), (rows // 3, rows, rows - 2)]:
        image, text = _towers(image_rows, text_rows, dim, seed=3)
        check_within_fp32_error(
            "siglip_loss", image_features=image, text_features=text, logit_scale=scale, logit_bias=bias,
            positive_offset=offset,
        )  # fmt: skip
    queries, docs = _towers(rows // 3, rows, dim, seed=1)
    check_within_fp32_error("mw_loss", queries=queries, docs=docs)
    check_within_fp32_error("uniformity_loss", embeddings=docs * 1.5)
    positives = torch.randint(-1, rows, (rows // 3, 5), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    check_within_fp32_error("decoupled_softmax_loss", queries=queries, keys=docs, positives=positives)


def _gradients(loss_name, case):
    tensors, options, _ = split_case(loss_name, case)
    return run_loss(loss_name, "triton", tensors, options)[1]


@pytest.mark.parametrize(
    "loss_name,case",
    [
        ("multi_similarity_loss", _label_case(37, 21, 9, classes=3)),
        ("multi_similarity_loss", _label_case(37, None, 100, classes=3)),  # dX and dY blocks not in registers
        ("contrastive_loss", _label_case(37, None, 9, classes=3)),
        ("supcon_loss", _label_case(37, None, 9, classes=3)),
        ("ntxent_loss", _label_case(37, None, 9, classes=3)),
        ("triplet_margin_loss", _label_case(19, 23, 5, classes=3, mining="all")),
        ("siglip_loss", make_case("siglip_loss", "large_odd", device=DEVICE)),
        ("contrastive_loss", _memory_bank_case(37, 45, 30, classes=3)),
        ("triplet_margin_loss", _memory_bank_case(19, 23, 17, classes=3, mining="all")),
        ("clip_loss", make_case("clip_loss", "large_odd", device=DEVICE)),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_deterministic_backward(monkeypatch, loss_name, case):
    """PAIRLOSS_DETERMINISTIC=1: atomic-free backward, bitwise reproducible, equal to the atomic one."""
    atomic = _gradients(loss_name, case)
    monkeypatch.setenv("PAIRLOSS_DETERMINISTIC", "1")
    first, second = _gradients(loss_name, case), _gradients(loss_name, case)
    for name, grad in atomic.items():
        assert torch.equal(first[name], second[name]), name
        torch.testing.assert_close(first[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def _tile_bits(monkeypatch, loss_name, **case):
    """The per-tile "has a gradient" bytes of the loss pass, caught on their way out of the custom op."""
    from pairloss.triton_engine import _ops

    captured = []
    original = _ops.pair_rows

    def spy(*args):
        values, bits = original(*args)
        captured.append(bits)
        return values, bits

    monkeypatch.setattr(_ops, "pair_rows", spy)
    tensors, options, _ = split_case(loss_name, case)
    getattr(pairloss, loss_name)(*tensors.values(), backend="triton", **options)
    return captured[-1]


def test_no_mined_pair_gives_no_active_tile_and_zero_gradient(monkeypatch):
    """Two far-apart classes: the miner keeps nothing, every tile is skipped, loss and gradient are 0."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(2, 6)
    labels = torch.arange(40) % 2
    embeddings = (centers[labels] + 0.01 * torch.randn(40, 6, generator=generator)).to(DEVICE)
    case = {"embeddings": embeddings, "labels": labels.to(DEVICE)}
    bits = _tile_bits(monkeypatch, "multi_similarity_loss", **case)
    assert bits.shape == (3, 3) and int(bits.sum()) == 0
    loss, grads = check_against_reference("multi_similarity_loss", "triton", **case)
    assert float(loss) == 0.0 and not bool(grads["embeddings"].any())


def test_tile_skip_is_exact_on_partly_active_batches(monkeypatch):
    """Hinge terms that vanish on whole tiles: those tiles are skipped and the gradient is still exact."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(64) // 16  # one class per 16-row tile
    embeddings = torch.eye(4, 8)[labels] + 0.3 * torch.randn(64, 8, generator=generator)
    case = {"embeddings": embeddings.to(DEVICE), "labels": labels.to(DEVICE), "pos_margin": 0.4, "neg_margin": 0.9}
    bits = _tile_bits(monkeypatch, "contrastive_loss", **case)
    assert 0 < int(bits.sum()) < bits.numel()
    check_against_reference("contrastive_loss", "triton", **case)


def _op_args(loss, rows=19, cols=21, dim=5, device=DEVICE):
    from pairloss.triton_engine import _ids

    x, y = _towers(rows, cols, dim, device=device)
    labels = torch.randint(0, 3, (rows,), generator=torch.Generator().manual_seed(0)).to(device)
    ref_labels = torch.randint(0, 3, (cols,), generator=torch.Generator().manual_seed(1)).to(device)

    def leaf(t):
        return t.detach().clone().requires_grad_()

    if loss == "contrastive":
        params, row_vec, col_vec = [0.1, 0.9, 0.0, 0.0], leaf((x * x).sum(1)), leaf((y * y).sum(1))
        scale, bias = torch.tensor(1.0, device=device), torch.tensor(0.0, device=device)
    else:
        params, row_vec, col_vec = [0.0] * 4, torch.zeros(rows, device=device), torch.zeros(cols, device=device)
        scale, bias = leaf(torch.tensor(7.0, device=device)), leaf(torch.tensor(-2.0, device=device))
    # Label pairs leaving out a memory bank's own copies; SigLIP on rectangular towers with shifted positives.
    ids = {"contrastive": (_ids.CONTRASTIVE, _ids.LABELS, True), "siglip": (_ids.SIGLIP, _ids.DIAGONAL, False)}[loss]
    return (
        leaf(x), leaf(y), labels, ref_labels, torch.zeros(rows, 0, dtype=torch.int64, device=device),
        row_vec, col_vec, torch.zeros(4, rows, device=device), scale, bias,
        ids[0].value, False, ids[1].value, ids[2], 7, params, False, False,
    )  # fmt: skip


@pytest.mark.parametrize("dim", [6, 100], ids=["resident_rows", "wide_rows"])
@pytest.mark.parametrize("deterministic", [True, False])
def test_every_launch_is_the_kernel_itself_with_its_launch_config(monkeypatch, deterministic, dim):
    """No autotuner between the launchers and the kernels: an autotuner reruns a kernel while it benchmarks and
    resets its outputs, and on the deterministic backward's column launch it zeroed the dX the row launch had
    written. Every kernel launches with LAUNCH_CONFIG but the backward on resident rows (RESIDENT_CONFIG: its stages
    alone differ). Default mode, X = Y: both forward passes run over half the tiles into an atomically combined state.
    The backward, X = Y: one mirrored launch in either mode, on rows that fit a resident block (fp32 D = 6 under the
    interpreter) and on wider ones (D = 100), which hold their tiles' G instead."""
    from pairloss.triton_engine import _ids, _launch

    launches = []

    class Recorder:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                config = (kwargs["num_warps"], kwargs["num_stages"], kwargs["maxnreg"])
                launches.append((self.name, kwargs.get("OWN_ROWS"), *config))
                return self.kernel[grid](*args, **kwargs)

            return launch

    for name in ("init_shared_kernel", "pair_rows_kernel", "merge_splits_kernel", "pair_grad_kernel"):
        monkeypatch.setattr(_launch, name, Recorder(name, getattr(_launch, name)))
    monkeypatch.setenv("PAIRLOSS_DETERMINISTIC", "1" if deterministic else "0")
    x, labels = _towers(20, 20, dim, device=DEVICE)[0].requires_grad_(), torch.arange(20, device=DEVICE) % 4
    pairloss.multi_similarity_loss(x, labels, backend="triton").backward()
    config, resident_config = tuple(_launch.LAUNCH_CONFIG), tuple(_launch.RESIDENT_CONFIG)
    assert resident_config == (config[0], 1, None)
    forward_pass = [("pair_rows_kernel", None, *config), ("merge_splits_kernel", None, *config)]
    if not deterministic:
        forward_pass.insert(0, ("init_shared_kernel", None, *config))
    resident = _launch.row_chunk(torch.float32, dim, DEVICE, _ids.MULTI_SIMILARITY.value, "ieee")
    backward = [("pair_grad_kernel", True, *(resident_config if resident else config))]
    assert launches == forward_pass * 2 + backward  # the miner's STATS pass, the LOSS pass, the backward


def test_a_symmetric_pass_takes_one_vector_for_anchors_and_references():
    """X = Y: the mirrored tiles read the J rows' row vector where the tile's column vector is (``_mirror_gradient``),
    so a symmetric pass takes one tensor for both; two are refused, even equal ones."""
    from pairloss.triton_engine import _ids, losses

    x = torch.randn(5, 3)
    norms = (x * x).sum(1)
    options = {"tf32": False, "row_vec": norms, "mask": _ids.DIAGONAL, "params": (2.0,), "symmetric": True}
    with pytest.raises(ValueError, match="with their vectors"):
        losses.pair_rows_inputs(_ids.UNIFORMITY, x, x, col_vec=norms.clone(), **options)
    assert losses.pair_rows_inputs(_ids.UNIFORMITY, x, x, col_vec=norms, **options)[-1]


def test_register_relief_takes_the_config_that_spills_least():
    """A kernel that uses local memory with its config launches with the first RELIEF alternative that uses none (or
    the least); one that uses none keeps its config, untried alternatives included; stages and register caps only,
    never the warps (they set the MMA's shape, hence S)."""
    from pairloss.triton_engine import _launch

    config = _launch.LAUNCH_CONFIG
    assert all(set(change) <= {"maxnreg", "num_stages"} for change in _launch.RELIEF)
    tried = []

    def local_memory(used):
        def count(candidate):
            tried.append(candidate)
            return used[candidate]

        return count

    capped, two_stages, one_stage = (config._replace(**change) for change in _launch.RELIEF)
    assert _launch.register_relief(config, local_memory({config: 0})) == config and tried == [config]
    tried.clear()
    assert _launch.register_relief(config, local_memory({config: 7, capped: 0})) == capped
    assert tried == [config, capped]  # none used: no further compile
    used = {config: 7, capped: 9, two_stages: 3, one_stage: 5}
    assert _launch.register_relief(config, local_memory(used)) == two_stages
    used = {config: 2, capped: 2, two_stages: 4, one_stage: 3}
    assert _launch.register_relief(config, local_memory(used)) == config  # only less replaces it
    resident = _launch.RESIDENT_CONFIG  # 1 stage already: that alternative is itself, not compiled again
    tried.clear()
    _launch.register_relief(
        resident, local_memory({resident: 1, **{resident._replace(**c): 1 for c in _launch.RELIEF}})
    )
    assert len(tried) == 3


def test_cuda_launches_choose_their_config_once_per_specialisation(monkeypatch):
    """On CUDA the first launch of a specialisation compiles (Triton's warmup, no launch) with its config, and for a
    kernel that spills, with the RELIEF alternatives; the choice is remembered, later launches of it (arguments that
    differ only where the JIT does not specialise) run with it without a warmup, and a differently aligned argument
    or another loss chooses anew."""
    from pairloss.triton_engine import _launch

    class Compiled:
        def __init__(self, n_spills):
            self.n_spills, self.loaded = None, n_spills

        def _init_handles(self):
            self.n_spills = self.loaded

    class Kernel:
        def __init__(self):
            self.warmups = []
            self.launched = []

        def warmup(self, *args, grid, **options):
            self.warmups.append((options["LOSS"], options["maxnreg"], options["num_stages"]))
            return Compiled(6 if options["LOSS"] == "spills" and options["maxnreg"] is None else 0)

        def __getitem__(self, grid):
            return lambda *args, **options: self.launched.append((options["LOSS"], options["maxnreg"]))

    kernel = Kernel()
    monkeypatch.setattr(_launch, "_RELIEVED", {})
    rows = torch.zeros(64)
    calls = [("spills", (rows, 32)), ("fits", (rows, 32)), ("spills", (rows, 48)), ("spills", (rows[1:], 48)),
             ("spills", (rows, 33))]  # fmt: skip
    launches = [_launch.Launch(kernel, (1,), args, {"LOSS": loss}) for loss, args in calls]
    monkeypatch.setattr(_launch, "INTERPRETED", False)
    _launch._run(launches)
    assert kernel.launched == [("spills", 255), ("fits", None), ("spills", 255), ("spills", 255), ("spills", 255)]
    # spills: its config, then capped at 255 (no spill: no other alternative), for each of 3 specialisations
    assert kernel.warmups == [("spills", None, 3), ("spills", 255, 3), ("fits", None, 3)] + 2 * [
        ("spills", None, 3),
        ("spills", 255, 3),
    ]
    assert len(_launch._RELIEVED) == 4


def _kernel_launches(variant):
    """(the tile loop of the forward, the backward's launches) that a _compile_check variant plans, after checking
    that the forward ends with the merge of its row states."""
    from pairloss.triton_engine import _compile_check

    launches = _compile_check.launches(variant)
    names = [launch.kernel.fn.__name__ for launch in launches]
    forward_end = names.index("merge_splits_kernel")
    assert names[:forward_end] in (["pair_rows_kernel"], ["init_shared_kernel", "pair_rows_kernel"]), names
    return launches[forward_end - 1], launches[forward_end + 1 :]


@pytest.mark.parametrize("operands", ["bf16", "fp16", "fp32", "tf32"])
def test_forward_and_backward_launch_plans_compute_the_same_similarity(operands):
    """The CUDA launch plans (built here without a GPU) of every engine pass: the backward recomputes S with the
    forward's tile sizes and precision, so that mining decisions and tile bytes see the same S."""
    from pairloss.triton_engine import _compile_check, losses

    same_s = ("BLOCK_M", "BLOCK_N", "BLOCK_D", "PRECISION")
    for engine_pass, layout in itertools.product(losses.ENGINE_PASSES, ["odd", "wide"]):
        if engine_pass.stats_pass:
            continue
        variant = _compile_check.Variant(engine_pass, operands, layout, 90)
        forward, backward = _kernel_launches(variant)
        assert {launch.constexprs["ATOMIC"] for launch in backward} == {True, False}, variant
        for launch in backward:
            assert {k: launch.constexprs[k] for k in same_s} == {k: forward.constexprs[k] for k in same_s}, variant


@pytest.mark.parametrize(
    "operands,layout,owned",
    [("bf16", "aligned", 128), ("fp16", "aligned", 128), ("bf16", "odd", 64), ("bf16", "wide", 0),
     ("tf32", "aligned", 0), ("fp32", "aligned", 0)],
)  # fmt: skip
@pytest.mark.parametrize("symmetric", [True, False], ids=["anchors_as_references", "memory_bank"])
def test_cuda_backward_plan(operands, layout, owned, symmetric):
    """The CUDA plan of the multi-similarity backward: owner launches. The owned block stays in registers for rows
    of at most 256 bytes (bf16 D ≤ 128), 1 stage; wider rows (and fp32, D = 128 here) hold 32 KB of G, 4
    half-precision tiles or 2 TF32 ones (X = Y: half), and add their products to the owned rows once per group;
    exact fp32 (FMA products) holds 1. Row owners (dX), then column owners (dY); X = Y the row owners alone,
    mirrored. Atomic launches split their owners' tiles (the row owners as the forward's grid), deterministic ones
    do not."""
    from pairloss.triton_engine import _compile_check, _ids, _launch, losses

    engine_pass = losses.EnginePass(_ids.MULTI_SIMILARITY.value, False, _ids.LABELS.value, True, symmetric)
    variant = _compile_check.Variant(engine_pass, operands, layout, 90)
    forward, backward = _kernel_launches(variant)
    assert forward.constexprs["SYMMETRIC"] == symmetric  # the forward over half the tiles too
    atomic = [launch for launch in backward if launch.constexprs["ATOMIC"]]
    deterministic = [launch for launch in backward if not launch.constexprs["ATOMIC"]]
    assert atomic[0].grid == forward.grid and forward.grid[1] > 1
    assert all(launch.grid[1] > 1 for launch in atomic) and all(launch.grid[1] == 1 for launch in deterministic)
    owners = [True] if symmetric else [True, False]  # dX, and unless mirrored dY
    for launches in (atomic, deterministic):
        assert [launch.constexprs["OWN_ROWS"] for launch in launches] == owners
    held = 1 if owned or operands == "fp32" else {"tf32": 2, "fp16": 2}.get(operands, 4) // (2 if symmetric else 1)
    for launch in backward:
        c = launch.constexprs
        assert c["MIRROR"] == symmetric and not c["SYMMETRIC"]
        assert c["OWNED_D"] == owned and c["FLUSH_TILES"] == held
        assert launch.config == (_launch.RESIDENT_CONFIG if owned else _launch.LAUNCH_CONFIG)
    # Features per product added to global memory: 64 bytes of row, within BLOCK_D.
    assert atomic[0].constexprs["PRODUCT_D"] == {"bf16": 32, "fp16": 32, "tf32": 16, "fp32": 16}[operands]


def test_symmetric_backward_plan():
    """X = Y with ``PAIRLOSS_MIRRORED_BACKWARD=0`` (bench's triton-symmetric): atomic mode streams the tiles on and
    right of the diagonal once each, adding both row blocks' dX per tile, with no resident block; exact fp32's two
    FMA products take 32 bytes of row at a time. The deterministic mode runs the row and column owners."""
    from pairloss.triton_engine import _compile_check, _ids, losses

    engine_pass = losses.EnginePass(_ids.MULTI_SIMILARITY.value, False, _ids.LABELS.value, True, True)
    for operands, product_d in (("bf16", 32), ("fp32", 8)):
        variant = _compile_check.Variant(engine_pass, operands, "aligned", 90)
        backward = [launch for launch in _compile_check.launches(variant, mirrored=(False,))
                    if launch.kernel.fn.__name__ == "pair_grad_kernel"]  # fmt: skip
        plans = [(c["ATOMIC"], c["OWN_ROWS"], c["SYMMETRIC"], c["MIRROR"]) for c in (x.constexprs for x in backward)]
        assert plans == [(True, True, True, False), (False, True, False, False), (False, False, False, False)]
        assert backward[0].constexprs["OWNED_D"] == 0 and backward[0].constexprs["PRODUCT_D"] == product_d


def test_all_triplets_backward_plan():
    """All-triplets' backward recomputes its O(B·M²) triplet sums in every launch: atomic, its row owners alone (its
    passes are never symmetric: no mirrored launch), adding the columns' dY per tile; deterministic, the row and
    column owners. One tile held (the triplet tile takes the registers)."""
    from pairloss.triton_engine import _compile_check, _ids, losses

    passes = [p for p in losses.ENGINE_PASSES if p.loss == _ids.TRIPLET_ALL.value and not p.stats_pass]
    assert passes and not any(engine_pass.symmetric for engine_pass in passes)
    for engine_pass in passes:
        _, backward = _kernel_launches(_compile_check.Variant(engine_pass, "bf16", "wide", 90))
        plans = [(c["ATOMIC"], c["OWN_ROWS"], c["STREAMED_GRADS"], c["FLUSH_TILES"])
                 for c in (launch.constexprs for launch in backward)]  # fmt: skip
        assert plans == [(True, True, True, 1), (False, True, False, 1), (False, False, False, 1)], engine_pass


@pytest.mark.parametrize(
    "operands,layout,loss,chunk",
    [("bf16", "aligned", "MULTI_SIMILARITY", 128), ("bf16", "odd", "MULTI_SIMILARITY", 64),
     ("bf16", "wide", "MULTI_SIMILARITY", 64), ("tf32", "aligned", "CONTRASTIVE", 32),
     ("tf32", "odd", "CONTRASTIVE", 32), ("fp32", "odd", "CONTRASTIVE", 16), ("fp32", "aligned", "TRIPLET_ALL", 32),
     ("tf32", "aligned", "TRIPLET_ALL", 32)],
)  # fmt: skip
def test_cuda_feature_chunks(operands, layout, loss, chunk):
    """The CUDA plan's feature chunk of S (BLOCK_D), which the sm_90 compile check chose: bf16 rows of at most 256
    bytes in one chunk, else 64 features; TF32 32 (128 bytes) even where the rows fit one 64-wide chunk, their dX
    block still resident (``OWNED_D``; with 64-wide chunks the own-copies contrastive backward spilled); exact fp32
    16, all-triplets 32."""
    from pairloss.triton_engine import _compile_check, _ids, losses

    engine_pass = losses.EnginePass(getattr(_ids, loss).value, False, _ids.LABELS.value, True, False)
    variant = _compile_check.Variant(engine_pass, operands, layout, 90)
    forward, (atomic, *_) = _kernel_launches(variant)
    assert forward.constexprs["BLOCK_D"] == atomic.constexprs["BLOCK_D"] == chunk
    if (operands, layout, loss) == ("tf32", "odd", "CONTRASTIVE"):  # 33 features, padded to 48: resident as 64
        assert atomic.constexprs["OWNED_D"] == 64 and not forward.constexprs["ONE_CHUNK"]


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("refs", [None, 70], ids=["self", "refs"])
@pytest.mark.parametrize("loss_name", ["contrastive_loss", "multi_similarity_loss", "supcon_loss"])
def test_tf32_plan_under_the_interpreter(monkeypatch, loss_name, refs):
    """The CUDA TF32 plan (32-wide chunks of S on rows of 48 features) against the oracle: with references the
    backward keeps its dX block resident as 64 features wide, with X = Y it runs the symmetric backward. The
    interpreter multiplies TF32 operands in fp32, so this checks the plan's code paths, not TF32's rounding."""
    from pairloss.triton_engine import _launch

    monkeypatch.setenv("PAIRLOSS_TRITON_TILES", "cuda")
    monkeypatch.setattr(_launch, "tf32_allowed", lambda: True)
    options = {} if loss_name == "supcon_loss" else {"reduction": "none"}
    check_within_fp32_error(loss_name, **_label_case(150, refs, 48, classes=7, **options))


MIRRORED_LOSSES = ("multi_similarity_loss", "contrastive_loss", "circle_loss", "ntxent_loss", "supcon_loss",
                   "uniformity_loss")  # fmt: skip


def _record_tf32_backward_plans(monkeypatch, deterministic):
    """Set up the CUDA plan with TF32 under the interpreter in the given mode (``PAIRLOSS_DETERMINISTIC``), and
    return the list that each backward's launches are recorded into, as (constexprs, grid) pairs."""
    from pairloss.triton_engine import _launch

    monkeypatch.setenv("PAIRLOSS_TRITON_TILES", "cuda")
    monkeypatch.setenv("PAIRLOSS_DETERMINISTIC", deterministic)
    monkeypatch.setattr(_launch, "tf32_allowed", lambda: True)
    planned = []
    grad_launches = _launch.grad_launches

    def recording(*args, **kwargs):
        outputs, launches = grad_launches(*args, **kwargs)
        planned.extend((launch.constexprs, launch.grid) for launch in launches)
        return outputs, launches

    monkeypatch.setattr(_launch, "grad_launches", recording)
    return planned


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("deterministic", ["0", "1"], ids=["split", "unsplit"])
@pytest.mark.parametrize("loss_name", MIRRORED_LOSSES)
def test_mirrored_backward_at_cuda_tile_sizes(monkeypatch, loss_name, deterministic):
    """X = Y with rows that fit the resident block, on the CUDA plan: the mirrored backward (each row block's
    program streams every 64-wide tile, adding the mirrored tile's pair gradients, so that dX and both roles' row
    sums are its own) against the oracle, with its columns split across programs (atomic mode) and unsplit
    (deterministic). TF32's plan keeps rows of 48 fp32 features resident as 64; the interpreter multiplies them in
    fp32, so this checks the plan's code path, not TF32's rounding."""
    planned = _record_tf32_backward_plans(monkeypatch, deterministic)
    if loss_name == "uniformity_loss":
        case = {"embeddings": F.normalize(torch.randn(150, 48, generator=torch.Generator().manual_seed(3)), dim=1)}
    else:
        case = _label_case(150, None, 48, classes=7, **({} if loss_name == "supcon_loss" else {"reduction": "none"}))
    check_within_fp32_error(loss_name, **case)
    splits = 1 if deterministic == "1" else 3  # 3 row blocks, their 3 column tiles split
    assert [(launch["MIRROR"], grid[1]) for launch, grid in planned] == [(True, splits)]


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("deterministic", ["0", "1"], ids=["split", "unsplit"])
@pytest.mark.parametrize("loss_name", ["clip_loss", "siglip_loss"])
def test_owner_launches_at_cuda_tile_sizes(monkeypatch, loss_name, deterministic):
    """Two towers with rows that fit the resident block, on the CUDA plan: a row-owner launch (dX, row sums, logit
    scale and bias) and a column-owner launch (dY, column sums) against the oracle, each owner's tiles split across
    programs that add their blocks atomically at the end (atomic mode), and unsplit (deterministic). Rows of 48
    fp32 features under TF32's plan, as in ``test_mirrored_backward_at_cuda_tile_sizes``."""
    planned = _record_tf32_backward_plans(monkeypatch, deterministic)
    image, text = _towers(150, 150, 48)
    case = {"image_features": image, "text_features": text, "logit_scale": torch.tensor(10.0, device=DEVICE)}
    if loss_name == "siglip_loss":
        case["logit_bias"] = torch.tensor(-5.0, device=DEVICE)
    check_within_fp32_error(loss_name, **case)
    splits = 1 if deterministic == "1" else 3  # 3 blocks of 64 rows (and columns), their 3 tiles split
    assert [(launch["OWN_ROWS"], grid) for launch, grid in planned] == [(True, (3, splits)), (False, (3, splits))]


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
@pytest.mark.parametrize("deterministic", ["0", "1"], ids=["split", "unsplit"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("loss_name", ["multi_similarity_loss", "clip_loss"])
def test_wide_rows_add_their_products_per_group_of_tiles(monkeypatch, loss_name, dtype, deterministic):
    """Rows too wide for a resident block (300 half-precision features) on the CUDA plan: each owner holds the G of
    4 bf16 tiles or 2 fp16 ones (X = Y, mirrored: half) and adds their summed products to its rows once per group
    (fp16: each tile's G scaled by its own power of two), against the oracle under the half-precision rule. 300 rows
    are 5 blocks of 64: groups of 4 + 1 or 2 + 2 + 1 unsplit (deterministic); split (atomic) into ranges of 2, 2 and
    1 tiles, groups that run past their range's end."""
    planned = _record_tf32_backward_plans(monkeypatch, deterministic)
    check_against_reference(loss_name, "triton", **clustered_case(loss_name, dtype, rows=300, dim=300))
    splits = 1 if deterministic == "1" else 3
    mirrored = loss_name == "multi_similarity_loss"
    held = (4 if dtype == torch.bfloat16 else 2) // (2 if mirrored else 1)
    owners = [True] if mirrored else [True, False]
    assert [(launch["OWN_ROWS"], launch["FLUSH_TILES"], grid[1]) for launch, grid in planned] == [
        (own_rows, held, splits) for own_rows in owners
    ]
    assert not any(launch["OWNED_D"] for launch, _ in planned)


@pytest.mark.skipif(CPU_REASON is not None, reason="runs the GPU's tiles under the interpreter")
def test_multi_hot_wide_rows_hold_one_tile_fewer(monkeypatch):
    """Multi-hot labels (their bitset tests take registers) on wide bf16 rows: the owners of the X = Y backward
    without mirroring (``PAIRLOSS_MIRRORED_BACKWARD=0``, deterministic: row owners, then column owners) hold 3
    tiles, not 4, so 5 blocks of 64 rows make groups of 3 + 2; against the oracle."""
    planned = _record_tf32_backward_plans(monkeypatch, "1")
    monkeypatch.setenv("PAIRLOSS_MIRRORED_BACKWARD", "0")
    case = clustered_case("contrastive_loss", torch.bfloat16, rows=300, dim=300, multi_hot=True)
    check_against_reference("contrastive_loss", "triton", **case)
    assert [(launch["OWN_ROWS"], launch["FLUSH_TILES"], grid[1]) for launch, grid in planned] == [
        (True, 3, 1),
        (False, 3, 1),
    ]


@pytest.mark.parametrize("layout", ["odd", "aligned"])
def test_rows_reach_the_kernels_aligned(layout):
    """Odd-sized, transposed and misaligned rows reach every kernel contiguous, 16-byte aligned and with their
    features padded by zeros to a multiple of 16 (what the JIT must prove to vectorise their loads: without it the
    backward spills); aligned rows go as they are, and anchors that are the references as one tensor."""
    from pairloss.triton_engine import _compile_check, _ids, losses
    from pairloss.triton_engine._kernels import pair_grad_kernel, pair_rows_kernel

    features = _compile_check.LAYOUTS[layout][2]
    for symmetric in (True, False):
        engine_pass = losses.EnginePass(_ids.MULTI_SIMILARITY.value, False, _ids.LABELS.value, True, symmetric)
        variant = _compile_check.Variant(engine_pass, "bf16", layout, 90)
        for launch in _compile_check.launches(variant):
            if launch.kernel not in (pair_rows_kernel, pair_grad_kernel):
                continue
            x, y = launch.args[:2]
            assert (x is y) == symmetric
            for rows in (x, y):
                assert rows.stride(1) == 1 and rows.stride(0) % 16 == 0 and rows.data_ptr() % 16 == 0
                assert rows.shape[1] == -(-features // 16) * 16 and not rows[:, features:].any()


def test_backward_keeps_the_forwards_tf32_decision(monkeypatch):
    """The precision is decided once by the forward and saved with it: flipping allow_tf32 before backward()
    does not change the backward's."""
    from pairloss.triton_engine import _launch

    decisions = []
    original = _launch.grad_launches

    def spy(*args, **kwargs):
        decisions.append(args[-1])  # tf32, the argument before the keyword atomic
        return original(*args, **kwargs)

    monkeypatch.setattr(_launch, "grad_launches", spy)
    x, labels = _towers(20, 20, 6, device=DEVICE)[0].requires_grad_(), torch.arange(20, device=DEVICE) % 4
    for flag in (True, False):  # what torch.backends.cuda.matmul.allow_tf32 says, before and after the forward
        monkeypatch.setattr(_launch, "tf32_allowed", lambda flag=flag: flag)
        loss = pairloss.supcon_loss(x, labels, backend="triton")
        monkeypatch.setattr(_launch, "tf32_allowed", lambda flag=flag: not flag)
        loss.backward()
    assert decisions == [True, False]


@pytest.mark.parametrize("loss", ["contrastive", "siglip"])
def test_opcheck(loss):
    """Schema, fake tensor, autograd registration and AOT dispatch of the custom ops (under the interpreter
    on CPU: the ops are opaque to the checks, so they work there too)."""
    torch.library.opcheck(torch.ops.pairloss.pair_rows.default, _op_args(loss))


def test_unavailable_reason_is_a_sentence_off_its_devices():
    from pairloss import triton_engine

    reason = triton_engine.unavailable_reason("mps")
    assert isinstance(reason, str) and "mps" in reason
    assert triton_engine.unavailable_reason(DEVICE) is None


# ------------------------------------------------------------------------------------------------- GPU only


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss_name,scenario,option", all_case_ids()[::7])
def test_low_precision_within_torch_error(dtype, loss_name, scenario, option):
    """fp16/bf16: error vs the fp64 truth within twice PyTorch's own error in that dtype (DESIGN.md §3)."""
    check_against_reference(loss_name, "triton", **make_case(loss_name, scenario, option, dtype=dtype, device="cuda"))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("loss_name", ["multi_similarity_loss", "supcon_loss", "contrastive_loss"])
def test_large_batch_fp32(loss_name):
    case = _label_case(4099, None, 128, classes=700, device="cuda")
    check_against_reference(loss_name, "triton", **case)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("loss", ["contrastive", "siglip"])
def test_opcheck_cuda(loss):
    torch.library.opcheck(torch.ops.pairloss.pair_rows.default, _op_args(loss, device="cuda"))


def _compiled_step_matches_eager(device, compile_backend):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 8).to(device)
    data, labels = torch.randn(40, 16, device=device), torch.randint(0, 5, (40,), device=device)
    scale = torch.tensor(5.0, device=device)

    def loss_fn(inputs):
        embeddings = model(inputs)
        return pairloss.multi_similarity_loss(embeddings, labels, backend="triton") + pairloss.clip_loss(
            embeddings, model(2 * inputs), scale, backend="triton"
        )

    eager = loss_fn(data)
    eager.backward()
    eager_grad, model.weight.grad = model.weight.grad.clone(), None
    compiled = torch.compile(loss_fn, fullgraph=True, backend=compile_backend)(data)
    compiled.backward()
    torch.testing.assert_close(compiled.detach(), eager.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.weight.grad, eager_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(DEVICE != "cpu", reason="the CUDA variant below compiles with inductor")
def test_compiles_in_one_graph_on_cpu():
    """torch.compile(fullgraph=True) traces the custom ops without a graph break (aot_eager: no C++ codegen)."""
    _compiled_step_matches_eager("cpu", "aot_eager")


@pytest.mark.cuda
@needs_cuda
def test_compiled_training_step():
    """A model + loss training step under torch.compile(fullgraph=True) (inductor) matches eager."""
    _compiled_step_matches_eager("cuda", "inductor")
