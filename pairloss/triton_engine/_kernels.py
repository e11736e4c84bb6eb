"""The two kernels of the engine, shared by every loss (the loss is a compile-time ``LOSS`` epilogue).

``pair_rows_kernel`` (forward, one program per block of rows): streams column tiles, computes S = X·Yᵀ in fp32,
builds the pair masks in registers, folds each tile into four per-row accumulators (a STATS pass or the LOSS
pass), and in the LOSS pass writes one byte per tile: 1 if the tile holds a pair with a non-zero gradient.

``pair_grad_kernel`` (backward): recomputes the tiles whose byte is set, forms G = ∂L/∂S in registers and
accumulates dX = G·Y and dY = Gᵀ·X in fp32. ``OWN_ROWS``: one program per row block owns its dX rows (plain
read-add-write) and, with ``ATOMIC``, adds its dY and column sums atomically (the default, fastest). The
deterministic mode runs it twice without atomics: row-owner for dX, then column-owner (``OWN_ROWS=False``, one
program per column block looping over row tiles) for dY.

Nothing of size B×M is stored: the outputs are (4, B) row vectors, the tile bytes, and the gradients.
"""

import triton
import triton.language as tl

from . import _epilogues as epilogue
from . import _triplet_all as triplet_all
from ._ids import CLIP, LOSS_PASS, TRIPLET_ALL
from ._tiles import any_pair, gradient_operand, l2_distance, load_block, own_columns, pair_tile, row_slots


@triton.jit
def _store_row_slots(ptr, rows, row_mask, B, values):
    for slot in tl.static_range(4):
        tl.store(ptr + slot * B + rows, values[slot], mask=row_mask)


@triton.jit
def _add_block(ptr, rows, row_mask, features, D, block):
    """ptr[rows, features] += block on a contiguous fp32 (rows, D) buffer owned by this program."""
    offsets = rows[:, None] * D + features[None, :]
    mask = row_mask[:, None] & (features < D)[None, :]
    tl.store(ptr + offsets, tl.load(ptr + offsets, mask=mask, other=0.0) + block, mask=mask)


# The own-column offset changes with every batch of a memory bank: one compiled kernel for all its values.
@triton.jit(do_not_specialize=["own_offset"])
def pair_rows_kernel(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    scale_ptr, bias_ptr, out_ptr, tile_bits_ptr,
    B, M, D, num_positives, own_offset, stride_xr, stride_xd, stride_yr, stride_yd, p0, p1, p2, p3,
    LOSS: tl.constexpr, PASS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row_block = tl.program_id(0).to(tl.int64)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < B
    own_cols = own_columns(rows, own_offset, M)
    row_vec = tl.load(row_vec_ptr + rows, mask=row_mask, other=0.0)[:, None]
    stats = row_slots(stats_ptr, rows, row_mask, B)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    params = (p0, p1, p2, p3)
    num_col_blocks = tl.cdiv(M, BLOCK_N)
    acc = epilogue.init(LOSS, PASS, BLOCK_M)
    for col_block in range(num_col_blocks):
        cols = col_block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = cols < M
        s, pos, neg = pair_tile(
            x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask, own_cols,
            D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd, MASK, SELF_PAIRS, PRECISION,
            BLOCK_M, BLOCK_N, BLOCK_D,
        )  # fmt: skip
        col_vec = tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :]
        if LOSS == TRIPLET_ALL:
            _, distance, _ = l2_distance(s, row_vec, col_vec)
            acc = triplet_all.accumulate(
                x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
                row_vec, distance, pos, params, acc, M, D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd,
                MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
            )  # fmt: skip
            active = any_pair(pos | neg)  # conservative: which pairs sit in a non-zero triplet is not tracked
        else:
            acc, active = epilogue.accumulate(
                LOSS, PASS, s, pos, neg, cols, row_vec, col_vec, stats, scale, bias, params, acc
            )
        if PASS == LOSS_PASS:
            tl.store(tile_bits_ptr + row_block * num_col_blocks + col_block, active.to(tl.int8))
    _store_row_slots(out_ptr, rows, row_mask, B, epilogue.finish(LOSS, PASS, acc))


@triton.jit
def _tile_gradient(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    values_ptr, coefs_ptr, rows, cols, row_mask, col_mask, own_cols, scale, bias, params,
    B, M, D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd,
    LOSS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Recompute one tile and return the epilogue's gradient tiles (G, g_vec, g_scale, g_bias)."""
    s, pos, neg = pair_tile(
        x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask, own_cols,
        D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd, MASK, SELF_PAIRS, PRECISION,
        BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    row_vec = tl.load(row_vec_ptr + rows, mask=row_mask, other=0.0)[:, None]
    col_vec = tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :]
    coefs = row_slots(coefs_ptr, rows, row_mask, B)
    if LOSS == TRIPLET_ALL:
        _, distance, d_distance = l2_distance(s, row_vec, col_vec)
        coefficient = triplet_all.pair_coefficients(
            x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
            row_vec, distance, pos, neg, params, M, D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd,
            MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
        )  # fmt: skip
        g_vec = coefs[0] * coefficient * d_distance  # ∂L/∂(squared distance)
        zero = tl.zeros_like(s)
        grads = (-2.0 * g_vec, g_vec, zero, zero)
    else:
        col_coefs = tl.zeros((1, BLOCK_N), tl.float32)
        if LOSS == CLIP:
            col_coefs = tl.load(coefs_ptr + B + cols, mask=col_mask, other=0.0)[None, :]  # slot 1 by column (B = M)
        grads = epilogue.gradient(
            LOSS, s, pos, neg, row_vec, col_vec, row_slots(stats_ptr, rows, row_mask, B),
            row_slots(values_ptr, rows, row_mask, B), coefs, col_coefs, scale, bias, params,
        )  # fmt: skip
    return grads


@triton.jit(do_not_specialize=["own_offset"])
def pair_grad_kernel(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    values_ptr, coefs_ptr, scale_ptr, bias_ptr, tile_bits_ptr, dx_ptr, dy_ptr, row_grads_ptr, col_grad_ptr,
    B, M, D, num_positives, own_offset, stride_xr, stride_xd, stride_yr, stride_yd, p0, p1, p2, p3,
    LOSS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    OWN_ROWS: tl.constexpr, ATOMIC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    owner = tl.program_id(0).to(tl.int64)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    params = (p0, p1, p2, p3)
    num_col_blocks = tl.cdiv(M, BLOCK_N)
    if OWN_ROWS:
        num_tiles = num_col_blocks
        rows = owner * BLOCK_M + tl.arange(0, BLOCK_M)
        own_cols = own_columns(rows, own_offset, M)
        # Row sums of g_vec, g_scale, g_bias.
        vec_sum = tl.zeros((BLOCK_M,), tl.float32)
        scale_sum = tl.zeros((BLOCK_M,), tl.float32)
        bias_sum = tl.zeros((BLOCK_M,), tl.float32)
    else:
        num_tiles = tl.cdiv(B, BLOCK_M)
        cols = owner * BLOCK_N + tl.arange(0, BLOCK_N)
        col_vec_sum = tl.zeros((BLOCK_N,), tl.float32)
    for tile in range(num_tiles):
        if OWN_ROWS:
            cols = tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
            tile_bit = tl.load(tile_bits_ptr + owner * num_col_blocks + tile)
        else:
            rows = tile * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
            own_cols = own_columns(rows, own_offset, M)
            tile_bit = tl.load(tile_bits_ptr + tile * num_col_blocks + owner)
        row_mask = rows < B
        col_mask = cols < M
        # Exact skip: the forward saw no pair with a non-zero gradient in this tile.
        if tile_bit != 0:
            g_s, g_vec, g_scale, g_bias = _tile_gradient(
                x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
                values_ptr, coefs_ptr, rows, cols, row_mask, col_mask, own_cols, scale, bias, params,
                B, M, D, num_positives, stride_xr, stride_xd, stride_yr, stride_yd,
                LOSS, MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
            )  # fmt: skip
            if OWN_ROWS:
                vec_sum += tl.sum(g_vec, 1)
                scale_sum += tl.sum(g_scale, 1)
                bias_sum += tl.sum(g_bias, 1)
                if ATOMIC:
                    tl.atomic_add(col_grad_ptr + cols, tl.sum(g_vec, 0), mask=col_mask)
            else:
                col_vec_sum += tl.sum(g_vec, 0)
            # Lanes outside the batch may hold NaN (0/0 in an epilogue): harmless in the products (their rows are
            # not stored), but not in the tile's largest |G| that scales fp16's.
            g_s = tl.where(row_mask[:, None] & col_mask[None, :], g_s, 0.0)
            g_op, g_unscale = gradient_operand(g_s, x_ptr.dtype.element_ty)
            for start in range(0, D, BLOCK_D):
                features = start + tl.arange(0, BLOCK_D).to(tl.int64)
                if OWN_ROWS:
                    y = load_block(y_ptr, cols, col_mask, features, D, stride_yr, stride_yd)
                    _add_block(dx_ptr, rows, row_mask, features, D,
                               tl.dot(g_op, y, input_precision=PRECISION) * g_unscale)  # fmt: skip
                    if ATOMIC:
                        x = load_block(x_ptr, rows, row_mask, features, D, stride_xr, stride_xd)
                        tl.atomic_add(
                            dy_ptr + cols[:, None] * D + features[None, :],
                            tl.dot(tl.trans(g_op), x, input_precision=PRECISION) * g_unscale,
                            mask=col_mask[:, None] & (features < D)[None, :],
                        )
                else:
                    x = load_block(x_ptr, rows, row_mask, features, D, stride_xr, stride_xd)
                    _add_block(dy_ptr, cols, col_mask, features, D,
                               tl.dot(tl.trans(g_op), x, input_precision=PRECISION) * g_unscale)  # fmt: skip
    if OWN_ROWS:
        row_mask = rows < B
        tl.store(row_grads_ptr + rows, vec_sum, mask=row_mask)
        tl.store(row_grads_ptr + B + rows, scale_sum, mask=row_mask)
        tl.store(row_grads_ptr + 2 * B + rows, bias_sum, mask=row_mask)
    else:
        tl.store(col_grad_ptr + cols, col_vec_sum, mask=cols < M)
