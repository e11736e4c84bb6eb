"""Launchers: tile sizes, column splits, dtypes, strides, grids and output allocation around the kernels.

Forward and backward must see bitwise the same S: the forward's per-tile "has gradient" bytes are read by the
backward, and the mining decisions recomputed there compare the recomputed S with the forward's thresholds. So
every S-producing choice is made once and shared: tile sizes (feature chunk included) are fixed per device and
feature width, the warps are one constant for every kernel (pipeline stages change no product), never
autotuned apart, and the TF32 decision is taken by the forward and handed to the backward with its saved inputs
(``tf32`` of the ops), never re-read. Column splits only change which program computes a tile, not how.

``PAIRLOSS_DETERMINISTIC=1`` (read at every backward), or ``torch.use_deterministic_algorithms(True)``, selects
the atomic-free backward: the owner launches unsplit (a row-parallel dX kernel, and a column-parallel dY kernel
unless X = Y takes the mirrored one), each recomputing S.
"""

import os
from typing import NamedTuple

import torch
from triton.runtime.interpreter import InterpretedFunction

from ._ids import (
    CONTRASTIVE,
    JACCARD,
    LOSS_PASS,
    MULTI_HOT,
    MULTI_SIMILARITY,
    NTXENT,
    ROW_SLOTS,
    STATS_PASS,
    SUPCON,
    TRIPLET_ALL,
    UNIFORMITY,
)
from ._kernels import init_shared_kernel, merge_splits_kernel, pair_grad_kernel, pair_rows_kernel

INTERPRETED = isinstance(pair_rows_kernel, InterpretedFunction)


class LaunchConfig(NamedTuple):
    num_warps: int
    num_stages: int
    maxnreg: int | None = None  # ptxas's registers per thread at most (None: its own choice)


# The launch configuration of every kernel. Not autotuned: a forward and a backward tuned apart may compute S
# differently, and Triton's autotuner reruns a kernel while it benchmarks, resetting its outputs, which zeroed the
# dX that the deterministic backward's row launch had written before its column launch was tuned. 8 warps and 3
# stages: the sm_90 compile check's default variants compile without spills (a session of 2026-12-01 counted stack
# frames, before the kernels' current form: 8/3 3 of 96 kernels, 4/3 33, 4/2 31, 8/2 6). A GPU session tunes this
# constant, for forward and backward together.
LAUNCH_CONFIG = LaunchConfig(num_warps=8, num_stages=3)
# The backward launches that own resident rows (pair_grad_kernel's OWNED_D) run 1 stage. Their loop over S's
# feature chunks has one or two trips, nothing to pipeline, and with 3 stages the mirrored multi-similarity variants
# spilled 8–40 bytes per thread at 255 registers (1 stage: 232–246, sm_90 compile check). At 1 stage their operand
# loads are plain ld.global, which sm_90 caches in L1, where the pipelined cp.async.cg bypasses it: the blocks a
# tile reads again (the owned one, the streamed one for its product) may hit L1. Stages change how loads are
# buffered, not the products: the sm_90 PTX of S is the same eight m64n32k16 wgmma per tile at 1, 2 and 3 stages,
# as in the forward. The warps stay one for all: they set the MMA's shape.
RESIDENT_CONFIG = LAUNCH_CONFIG._replace(num_stages=1)


# What a launch may change of its config where its kernel still uses local memory (spills): how ptxas allocates
# registers or how loads are buffered, never the products (S stays the forward's). At 8 warps ptxas holds some
# kernels to 128 registers, for two CTAs per SM, and spills there: exact fp32 (FMA products), 20 kernels 4–28 bytes
# per thread under Triton 3.9 and 115 under 3.6. Capped at 255 (.maxnreg) those compile without a spill at 150–254
# registers, one CTA per SM; given to every exact-fp32 kernel, the cap made 17 others spill that take 181–198
# registers without it. A few kernels spill at 255 and not with fewer pipeline stages (uniformity's symmetric
# forward on padded fp32 rows at 1, fp16 SupCon's Jaccard-weighted mirrored backward at 2). Which kernels spill
# depends on the Triton and ptxas, so the choice is made per compiled kernel (``register_relief``): on the GPU from
# the driver's count of its local memory (``_relieved_config``), in _compile_check from ptxas's stack frame. That
# count also holds the few-byte local arrays of Triton's code generation, which it cannot tell from spills (under
# Triton 3.6 four NT-Xent forwards with an 8-byte one run at 1 stage): a GPU is to say which trade pays.
RELIEF = ({"maxnreg": 255}, {"num_stages": 2}, {"num_stages": 1})


def register_relief(config, local_memory):
    """``config``, or the alternative of RELIEF (each applied to ``config``) whose kernel uses the least local
    memory, ``local_memory(config)`` compiling it; alternatives are tried in turn until one uses none, and replace
    ``config`` only where they use less."""
    best, least = config, local_memory(config)
    for change in RELIEF:
        alternative = config._replace(**change)
        if least == 0 or alternative == config:
            continue
        used = local_memory(alternative)
        if used < least:
            best, least = alternative, used
    return best


def _specialisation(launch):
    """What decides the kernel Triton compiles for a launch, at least as finely as the JIT's own key: the kernel, its
    constexprs and config, and per argument its dtype and 16-byte alignment (tensors), whether it is 1, divisible by
    16 or wider than 32 bits (ints), or its type. Cheap beside compiling, or Triton's warmup."""

    def argument(value):
        if isinstance(value, torch.Tensor):
            return str(value.dtype), value.data_ptr() % 16 == 0
        if isinstance(value, int) and not isinstance(value, bool):
            return value == 1, value % 16 == 0, -(2**31) <= value < 2**31
        return type(value).__name__

    constexprs = tuple(sorted(launch.constexprs.items()))
    return launch.kernel, constexprs, launch.config, tuple(argument(value) for value in launch.args)


# A launch's ``_specialisation`` → the config it runs with.
_RELIEVED = {}


def _relieved_config(launch):
    """The config of a CUDA launch after ``register_relief``, chosen once per specialisation: the first launch of
    each compiles its alternatives with Triton's warmup (the driver's count of their local memory), later launches
    look it up without asking Triton (a warmup per launch would double the host's launch overhead)."""
    key = _specialisation(launch)
    if key not in _RELIEVED:

        def local_memory(config):
            kernel = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.constexprs, **config._asdict())
            kernel._init_handles()  # loads it: the driver's count of its local memory (n_spills, in 4-byte words)
            return kernel.n_spills

        _RELIEVED[key] = register_relief(launch.config, local_memory)
    return _RELIEVED[key]


def planned_for_cuda(device):
    """Whether launches on ``device`` take the CUDA tile sizes and code paths: on CUDA, and on the interpreter
    when ``PAIRLOSS_TRITON_TILES=cuda`` (so that CPU tests run exactly the GPU's tiles; read at every call)."""
    return torch.device(device).type == "cuda" or os.environ.get("PAIRLOSS_TRITON_TILES") == "cuda"


def tile_sizes(device, loss):
    """(BLOCK_M, BLOCK_N, BLOCK_D): small under the interpreter so that small test batches cross tiles (unless
    ``planned_for_cuda``); on CUDA the all-triplets loss holds a BLOCK_M × BLOCK_N × BLOCK_N tile in registers,
    hence its smaller tiles (at BLOCK_N = 32 ptxas spills kilobytes per thread). BLOCK_D: the feature chunk of
    the products, unless the rows are one chunk (``row_chunk``)."""
    if not planned_for_cuda(device):
        return 16, 16, 32
    if loss == TRIPLET_ALL.value:
        return 16, 16, 64
    return 64, 64, 64


# The bytes of operand row in each of the backward's per-tile products that go to global memory (atomically, or as
# a read-modify-write): 32 bf16/fp16 features, 16 fp32 ones, a 64 × 32 (64 × 16) fp32 block and its addresses at a
# time. With the whole row (64 × 128) the atomic backward spills in the sm_90 compile check; with 32 fp32 features
# TF32 contrastive backwards spill 24–48 bytes per thread (the G operand is twice as wide as bf16's). The products'
# FLOPs are the same either way. Exact fp32's symmetric backward (two FMA products per tile) takes half: at 64 its
# multi-hot, Jaccard and contrastive variants spilled 12–32 bytes at 255 registers, at 32 none reaches 200; with
# 32 more of the other exact-fp32 backwards spill at ptxas's 128 registers (before RELIEF), not fewer.
PRODUCT_CHUNK_BYTES = 64

# The G a backward owner of wide rows (no resident block) holds, as its products' operand, before it adds their
# products to its rows (an atomic add, or its own read-modify-write): the global addition of its 64 × D fp32 block,
# 8·64·D bytes of L2 traffic against 4·64·64·D FLOPs of S and product per tile, happens once per that many tiles
# (``held_tiles``). 32 KB is 4 bf16 64 × 64 tiles (8 registers per thread each at 8 warps) or 2 TF32 ones; with 4 TF32
# tiles the multi-hot row owners spilled 60–100 bytes (sm_90 compile check). Mirrored launches (two gradients per
# tile) hold half: with 4 bf16 tiles the multi-similarity one spilled at 255 registers. fp16 holds half again: its
# per-tile scaling takes registers (with 4 tiles Triton 3.6's multi-hot contrastive row owner spilled 16 bytes at 255,
# and several fp16 contrastive owners took 255 only at fewer stages). Multi-hot label masks (their per-tile bitset
# tests) hold one tile fewer: with 4 bf16 tiles Triton 3.6's multi-hot contrastive row owner spilled 16 bytes at 255
# registers (3.9: 248), with 3 it takes 252. At most 4 tiles (the tile loop's body is unrolled as many times); exact
# fp32 (FMA products) holds 1: with more it spilled up to 2.8 KB. All-triplets holds 1 too: its 16 × 16 tiles'
# registers go to the triplet tile (with 4 held its kernels compiled at 254–255 registers, ~30 s each), and its
# O(B·M²) triplet sums, not these adds, bound it.
HELD_G_BYTES = 32 * 1024
MAX_HELD_TILES = 4


def held_tiles(loss, mask, tile, dtype, device, precision, mirror):
    """The tiles whose G an owner of wide rows holds (``tile``: BLOCK_M × BLOCK_N)."""
    if _fma_fp32(dtype, device, precision) or loss == TRIPLET_ALL.value:
        return 1
    budget = HELD_G_BYTES // (2 if mirror else 1) // (2 if _gpu_dtype(dtype) == torch.float16 else 1)
    most = MAX_HELD_TILES - (mask in (MULTI_HOT.value, JACCARD.value))
    return max(1, min(most, budget // (tile[0] * tile[1] * _gpu_dtype(dtype).itemsize)))


# Rows of up to this many bytes (features padded to a power of two) are one chunk (``row_chunk``): the backward's
# owned dX (or dY) block is then 64 × 128 fp32 at most for bf16 rows (32 registers per thread at 8 warps). 256 bytes
# is the most that compiles without spills for sm_90 (python -m pairloss.triton_engine._compile_check).
RESIDENT_ROW_BYTES = 256


def tile_grid(rows, cols, device, loss):
    """Shape of the per-tile byte map: (row blocks, column blocks)."""
    block_m, block_n, _ = tile_sizes(device, loss)
    return (rows + block_m - 1) // block_m, (cols + block_n - 1) // block_n


def sm_count(device):
    """The GPU's multiprocessor count, which column splits fill: ``PAIRLOSS_SM_COUNT`` if set (read at every
    call), else the device's (an H100/H200's 132 when planning CUDA launches without a GPU, as _compile_check
    does); under the interpreter 4, so that the tests' small batches split their columns."""
    if "PAIRLOSS_SM_COUNT" in os.environ:
        return int(os.environ["PAIRLOSS_SM_COUNT"])
    if torch.device(device).type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count if torch.cuda.is_available() else 132


class ColumnSplits(NamedTuple):
    count: int  # programs per row block, each streaming its own range of column tiles
    tiles: int  # column tiles per split (the last may have fewer, none has 0)


# Split until the grid has this many programs per SM: two waves at the two resident programs per SM that most
# forward kernels have at 8 warps (python -m pairloss.triton_engine._compile_check --report), four at the
# backward's one. A split costs a (4, BLOCK_M) partial state (and in the backward one atomic owned block), small beside
# even one 64 × 64 × D tile.
TARGET_PROGRAMS_PER_SM = 4


def column_splits(row_blocks, col_blocks, device):
    """How the forward and the atomic backward split each row block's column tiles across programs
    (flash-decoding style): none when the row blocks alone fill the target. The backward's column owners split
    their row tiles alike (``column_splits(col_blocks, row_blocks, …)``)."""
    wanted = -(-TARGET_PROGRAMS_PER_SM * sm_count(device) // row_blocks)
    tiles = -(-col_blocks // max(1, min(wanted, col_blocks)))
    return ColumnSplits(-(-col_blocks // tiles), tiles)


def deterministic():
    return os.environ.get("PAIRLOSS_DETERMINISTIC", "0") == "1" or torch.are_deterministic_algorithms_enabled()


def mirrored_backward():
    """Whether an X = Y backward takes the mirrored launch (``PAIRLOSS_MIRRORED_BACKWARD``, default 1, read at every
    backward). 0 selects the symmetric one instead (the deterministic mode: a dX and a dY launch):
    which is faster depends on the GPU's L2 rates, for a GPU to time (``bench``'s triton-symmetric)."""
    return os.environ.get("PAIRLOSS_MIRRORED_BACKWARD", "1") == "1"


def _gpu_dtype(dtype):
    """The dtype rows of ``dtype`` reach a GPU's tensor cores in: fp16/bf16/fp32 as they are, fp64 as fp32."""
    return torch.float32 if dtype == torch.float64 else dtype


# Rows reach the kernels with their features padded (with zeros) to a multiple of this, contiguous and 16-byte
# aligned, as the JIT can prove of its arguments (divisible by 16) so that it vectorises the loads. Odd, strided or
# misaligned rows otherwise spill up to ~1 KB per thread in the backward (sm_90 compile check, fp32 and TF32).
# Zero features change no product, so S is the same; the copy is O(B·D), and most batches need none.
FEATURE_ALIGNMENT = 16


def _operand(t):
    """The rows as the kernels take them: ``_gpu_dtype``, except that under the interpreter bf16 goes in as fp32:
    its ``tl.dot`` misreads bf16 operands (garbage, seen with triton 3.9), and fp32 operands holding bf16 values
    compute what the GPU's bf16 MMA does (exact products, fp32 sums). The launch plan follows ``_gpu_dtype``.
    Features padded to FEATURE_ALIGNMENT where the rows are not so laid out already."""
    t = t.float() if t.dtype == torch.bfloat16 and INTERPRETED else t.to(_gpu_dtype(t.dtype))
    rows, features = t.shape
    aligned = t.stride(1) == 1 and t.stride(0) % FEATURE_ALIGNMENT == 0 and t.data_ptr() % 16 == 0
    if aligned and features % FEATURE_ALIGNMENT == 0:
        return t
    padded = t.new_zeros((rows, -(-features // FEATURE_ALIGNMENT) * FEATURE_ALIGNMENT))
    padded[:, :features] = t
    return padded


def _operands(x, y):
    """``_operand`` of the anchors and of the references (one copy when they are the same tensor)."""
    x_operand = _operand(x)
    return x_operand, x_operand if y is x else _operand(y)


def _cuda_fp32(dtype, device):
    """Whether rows of ``dtype`` reach the tensor cores (or, exact, the FMAs) of a planned CUDA launch as fp32."""
    return _gpu_dtype(dtype) == torch.float32 and planned_for_cuda(device)


def _fma_fp32(dtype, device, precision):
    """Whether a planned CUDA launch multiplies rows of ``dtype`` on FMAs: exact fp32, no TF32."""
    return _cuda_fp32(dtype, device) and precision == "ieee"


def _constexprs(dtype, features, device, tf32, **selectors):
    """The kernels' compile-time arguments for rows of ``dtype`` and ``features`` on ``device``: ``selectors``
    (LOSS, MASK, …) plus the tile sizes and precision. Forward and backward get the same ones (the same S)."""
    block_m, block_n, block_d = tile_sizes(device, selectors["LOSS"])
    cuda_fp32 = _cuda_fp32(dtype, device)
    precision = "tf32" if cuda_fp32 and tf32 else "ieee"
    if cuda_fp32 and (tf32 or selectors["LOSS"] == TRIPLET_ALL.value):
        # TF32, and exact fp32 all-triplets (16 × 16 tiles): 32-wide chunks, 128 bytes of fp32 row as bf16's 64.
        # With TF32's 64 (or resident rows' 64-wide chunk) the own-copies contrastive backward spilled 48 bytes per
        # thread and all-triplets 16–36; exact fp32 all-triplets spilled 8–36 bytes in 11 kernels with 16, in 2
        # with 32 (sm_90, python -m pairloss.triton_engine._compile_check --all).
        block_d = 32
    elif cuda_fp32:
        # Exact fp32 runs tl.dot on FMAs: with 64-wide feature chunks ptxas spills kilobytes per thread in the
        # backward, with 16 at most 48 bytes (the README's account); 8 spills more kernels, not fewer.
        block_d = 16
    chunk = row_chunk(dtype, features, device, selectors["LOSS"], precision)
    if chunk and planned_for_cuda(device):  # (the interpreter keeps its small chunks, to test the loops)
        block_d = min(block_d, chunk) if cuda_fp32 else chunk  # TF32 rows of ≤ 16 features: one 16-wide chunk
    return {"PRECISION": precision, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d, **selectors}


def row_chunk(dtype, features, device, loss, precision):
    """The padded feature width of rows of ``dtype`` that are one chunk, else 0. One chunk: the forward loads its
    row block once (``ONE_CHUNK``) and the backward keeps its owned dX (dY) block in registers (``OWNED_D``)
    instead of an atomic add or read-modify-write per tile. Not for rows wider than RESIDENT_ROW_BYTES, the
    all-triplets loss (its registers go to the triplet tile), nor exact fp32 on CUDA (FMA products spill)."""
    padded = max(16, 1 << (features - 1).bit_length())
    fits = padded * _gpu_dtype(dtype).itemsize <= RESIDENT_ROW_BYTES
    return padded if fits and loss != TRIPLET_ALL.value and not _fma_fp32(dtype, device, precision) else 0


def tf32_allowed():
    """The TF32 decision of a forward (fp32 operands on CUDA): read once per loss call and passed on."""
    return torch.backends.cuda.matmul.allow_tf32


class Launch(NamedTuple):
    """One kernel launch as data, so that _compile_check can compile exactly what the launchers run, for a GPU it
    does not have."""

    kernel: object
    grid: tuple
    args: tuple
    constexprs: dict
    config: LaunchConfig = LAUNCH_CONFIG


MERGE_BLOCK = 256  # rows per program of merge_splits_kernel


# The symmetric forward's fixed log-sum shifts (epilogue.init_shared). Multi-similarity's stay at most
# SHARED_SHIFT_LIMIT: a term flushed below the shift weighs < e^(40 − 87) beside the "1 +" of its log-sums. The
# other log-sums have no "1 +": the span from the shift down to the smallest exponent unit rows allow stays at
# most SHARED_SPAN_LIMIT, so that no term flushes (e^−80 is a normal fp32).
SHARED_SHIFT_LIMIT = 40.0
SHARED_SPAN_LIMIT = 80.0


def shared_forward(loss, stats_pass, params):
    """Whether an X = Y pass of ``loss`` runs its forward over half the tiles, each also feeding its columns'
    rows through atomics (``epilogue.combine``): passes whose row state is extremes and sums, log-sums with a fixed
    shift where that is exact enough; never in the deterministic mode (atomic sums are order-dependent)."""
    if deterministic():
        return False
    if loss == CONTRASTIVE.value or (loss == NTXENT.value and not stats_pass):  # sums only
        return True
    if loss == MULTI_SIMILARITY.value:
        alpha, beta, base, _ = params
        return stats_pass or max(alpha * (1 + base), beta * (1 - base)) + 1 <= SHARED_SHIFT_LIMIT
    if loss in (NTXENT.value, SUPCON.value):  # NT-Xent's STATS pass, SupCon: logits s/τ in [−1/τ, 1/τ]
        return 2 / params[0] + 1 <= SHARED_SPAN_LIMIT
    if loss == UNIFORMITY.value:  # exponents −t·d², d² in [0, 4]
        return 4 * params[0] + 1 <= SHARED_SPAN_LIMIT
    return False


def _label_width(row_labels, positives):
    """The kernels' ``label_width``: words per multi-hot row (2-D labels), else entries per index-list row."""
    return row_labels.shape[1] if row_labels.dim() == 2 else positives.shape[1]


def rows_launches(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass,
                  mask, self_pairs, own_offset, params, device, tf32, symmetric=False):  # fmt: skip
    """((values, tile_bits) outputs, launches) of one forward pass for tensors that will run on ``device``: the
    split tile loop writing partial states, then their merge into the (4, B) values. ``symmetric`` (X = Y) and
    ``shared_forward``: the tile loop covers the tiles on and right of the diagonal, feeding both row sets into one
    atomically combined state (set up by a first launch)."""
    dtype = x.dtype
    x, y = _operands(x, y)
    (B, D), M = x.shape, y.shape[0]
    row_blocks, col_blocks = tile_grid(B, M, device, loss)
    splits = column_splits(row_blocks, col_blocks, device)
    shared = symmetric and shared_forward(loss, stats_pass, params)
    partials = torch.empty((1 if shared else splits.count, ROW_SLOTS, B), dtype=torch.float32, device=x.device)
    values = torch.empty((ROW_SLOTS, B), dtype=torch.float32, device=x.device)
    tile_bits = torch.zeros((row_blocks, col_blocks), dtype=torch.int8, device=x.device)
    args = (
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, partials, tile_bits,
        B, M, D, _label_width(row_labels, positives), own_offset, splits.tiles, x.stride(0), x.stride(1),
        y.stride(0), y.stride(1), *params,
    )  # fmt: skip
    pass_id = (STATS_PASS if stats_pass else LOSS_PASS).value
    constexprs = _constexprs(dtype, D, device, tf32, LOSS=loss, PASS=pass_id, MASK=mask, SELF_PAIRS=self_pairs,
                             SYMMETRIC=shared)  # fmt: skip
    constexprs["ONE_CHUNK"] = constexprs["BLOCK_D"] >= D
    row_grid = (-(-B // MERGE_BLOCK),)
    per_row = {"LOSS": loss, "PASS": pass_id, "BLOCK": MERGE_BLOCK}
    launches = [
        Launch(pair_rows_kernel, (row_blocks, splits.count), args, constexprs),
        Launch(merge_splits_kernel, row_grid, (partials, values, B, partials.shape[0]), per_row),
    ]
    if shared:
        launches.insert(0, Launch(init_shared_kernel, row_grid, (partials, B, *params), per_row))
    return (values, tile_bits), launches


def _run(launches):
    for launch in launches:
        config = launch.config if INTERPRETED else _relieved_config(launch)
        launch.kernel[launch.grid](*launch.args, **launch.constexprs, **config._asdict())


def pair_rows(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
              self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
    outputs, launches = rows_launches(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
        self_pairs, own_offset, params, x.device, tf32, symmetric,
    )  # fmt: skip
    _run(launches)
    return outputs


def grad_launches(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
                  tile_bits, loss, mask, self_pairs, own_offset, params, device, tf32, *, symmetric, atomic,
                  mirrored=True):  # fmt: skip
    """((dx, dy, row_grads, col_grad) outputs, launches) of the backward.

    Owner launches: a row-owner launch (dX) over its column tiles, then a column-owner launch (dY) over its row
    tiles; X = Y (``symmetric``), the row owners are the whole backward (``MIRROR``: every tile, each adding its
    mirrored tile's pair gradients). Rows whose features fit one resident block (``row_chunk``) keep it in
    registers, added once; wider ones add their products once per FLUSH_TILES tiles (``held_tiles``; where that is
    1, exact fp32 and TF32's mirrored launch, per tile). Atomic mode splits each owner's tiles across programs
    (``column_splits``), which add to their owned rows atomically; the deterministic mode runs them unsplit. Atomic
    exceptions: X = Y not ``mirrored``, the tiles on and right of the diagonal once each, adding both row blocks'
    dX per tile (``SYMMETRIC``); all-triplets, its row owners alone, adding dY per tile (``STREAMED_GRADS``)."""
    dtype = x.dtype
    x, y = _operands(x, y)
    (B, D), M = x.shape, y.shape[0]
    outputs = (
        torch.zeros((B, D), dtype=torch.float32, device=x.device),
        torch.zeros((M, D), dtype=torch.float32, device=x.device),
        torch.zeros((3, B), dtype=torch.float32, device=x.device),
        torch.zeros((M,), dtype=torch.float32, device=x.device),
    )
    row_blocks, col_blocks = tile_bits.shape
    tiles = _constexprs(dtype, D, device, tf32, LOSS=loss, MASK=mask, SELF_PAIRS=self_pairs)
    owned_d = row_chunk(dtype, D, device, loss, tiles["PRECISION"])
    mirror = symmetric and mirrored
    half_tiles = symmetric and atomic and not mirror
    if half_tiles:
        owned_d = 0  # its registers go to the mirrored gradient and the second product (ptxas spills with both)
    # Features per product added to global memory: exact fp32's symmetric backward (two FMA products) takes half.
    fma = _fma_fp32(dtype, device, tiles["PRECISION"])
    product_bytes = PRODUCT_CHUNK_BYTES // 2 if half_tiles and fma else PRODUCT_CHUNK_BYTES
    # All-triplets' gradient recomputes O(B·M²) triplet sums per launch: atomic, its row owners add dY per tile too.
    streamed_grads = atomic and loss == TRIPLET_ALL.value
    tile = (tiles["BLOCK_M"], tiles["BLOCK_N"])
    owned_only = not (owned_d or half_tiles or streamed_grads)
    held = held_tiles(loss, mask, tile, dtype, device, tiles["PRECISION"], mirror) if owned_only else 1
    constexprs = {
        **tiles, "ATOMIC": atomic, "STREAMED_GRADS": streamed_grads, "SYMMETRIC": half_tiles, "MIRROR": mirror,
        "OWNED_D": owned_d, "FLUSH_TILES": held,
        "PRODUCT_D": min(tiles["BLOCK_D"], product_bytes // _gpu_dtype(dtype).itemsize),
    }  # fmt: skip

    def launch(own_rows):
        owners, streamed = (row_blocks, col_blocks) if own_rows else (col_blocks, row_blocks)
        splits = column_splits(owners, streamed, device) if atomic else ColumnSplits(1, streamed)
        args = (
            x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
            *outputs, B, M, D, _label_width(row_labels, positives), own_offset, splits.tiles, x.stride(0),
            x.stride(1), y.stride(0), y.stride(1), *params,
        )  # fmt: skip
        config = RESIDENT_CONFIG if owned_d else LAUNCH_CONFIG
        return Launch(pair_grad_kernel, (owners, splits.count), args, {**constexprs, "OWN_ROWS": own_rows}, config)

    row_owners = [launch(True)]
    return outputs, row_owners if mirror or half_tiles or streamed_grads else row_owners + [launch(False)]


def pair_grad(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
              tile_bits, loss, mask, self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
    """The backward of the ``pair_rows`` call with these inputs; ``tf32`` is that forward's decision."""
    outputs, launches = grad_launches(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
        loss, mask, self_pairs, own_offset, params, x.device, tf32, symmetric=symmetric, atomic=not deterministic(),
        mirrored=mirrored_backward(),
    )  # fmt: skip
    _run(launches)
    dx, dy, row_grads, col_grad = outputs
    if dx.shape[1] != x.shape[1]:  # padded features (``_operand``): their gradients are 0, and dropped
        dx, dy = dx[:, : x.shape[1]].contiguous(), dy[:, : x.shape[1]].contiguous()
    return dx, dy, row_grads, col_grad
