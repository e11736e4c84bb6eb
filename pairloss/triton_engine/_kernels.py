"""The kernels of the engine, shared by every loss (the loss is a compile-time ``LOSS`` epilogue).

``pair_rows_kernel`` (forward; program (row block, column split)): streams the column tiles of its split,
computes S = X·Yᵀ in fp32, builds the pair masks in registers, folds each tile into four per-row accumulators
(a STATS pass or the LOSS pass) and writes them as its split's partial state; in the LOSS pass it also writes one
byte per tile: 1 if the tile holds a pair with a non-zero gradient. ``merge_splits_kernel`` combines the splits'
states in column order (the epilogue's exact ``merge``) and finishes them into the pass's (4, B) outputs. Splits
exist to fill the GPU when row blocks alone would not (``_launch.column_splits``). ``ONE_CHUNK`` (the features
fit one BLOCK_D chunk): the program loads its row block once rather than once per tile. ``SYMMETRIC`` (X = Y):
the tiles on and right of the diagonal only, each also folded into its columns' rows, all rows' state combined
atomically (``epilogue.combine``) in a buffer that ``init_shared_kernel`` sets up.

``pair_grad_kernel`` (backward): recomputes the tiles whose byte is set, forms G = ∂L/∂S in registers and
accumulates dX = G·Y and dY = Gᵀ·X in fp32. A program owns a row block (``OWN_ROWS``: dX, streaming a split of its
column tiles) or a column block (dY, streaming a split of its row tiles), and with ``ATOMIC`` (splits) adds what it
owns atomically (relaxed: nothing is read back before the kernel ends); without, it is the owned rows' only
writer. A row-owner launch and a column-owner launch make the backward. ``OWNED_D`` (non-zero when a row's
features, padded to OWNED_D, are few enough): the owned block stays in registers across the tile loop and is added
once at the end. Wider rows: the owner holds the G of ``FLUSH_TILES`` tiles (as its products' operand) and adds
their summed products to its rows once per group, PRODUCT_D features at a time. ``STREAMED_GRADS`` (all-triplets,
atomic): the row owners alone, also adding the columns' dY and column sums per tile, so that the O(B·M²) triplet
sums that each launch recomputes run once. X = Y (the pair gradients of tile
(J, I) are those of tile (I, J) transposed): ``MIRROR`` streams every tile of its rows, G plus the mirror's, so that
dX_I = Σ_J (G_IJ + G_JIᵀ)·X_J and both roles' row sums are its own: one product per tile and nothing added to
another program's rows, in either mode. ``SYMMETRIC`` (the opt-out, ``_launch.mirrored_backward``) streams the tiles
on and right of the diagonal once each, adding both row blocks' dX atomically per tile.

Nothing of size B×M is stored: the outputs are per-row vectors (B × splits partial states), the tile bytes, and
the gradients.
"""

import triton
import triton.language as tl

from . import _epilogues as epilogue
from . import _triplet_all as triplet_all
from ._ids import CLIP, CONTRASTIVE, LOSS_PASS, SIGLIP, TRIPLET_ALL
from ._tiles import (
    add_product,
    any_pair,
    column_slots,
    gradient_operand,
    l2_distance,
    load_block,
    own_columns,
    pair_masks,
    pair_tile,
    row_slots,
    row_values,
    similarity_with_rows,
)


@triton.jit
def _store_row_slots(ptr, rows, row_mask, B, values):
    for slot in tl.static_range(4):
        tl.store(ptr + slot * B + rows, values[slot], mask=row_mask)


@triton.jit
def _add_block(ptr, rows, row_mask, features, D, block, ATOMIC: tl.constexpr):
    """ptr[rows, features] += block on a contiguous fp32 (rows, D) buffer: atomically, or (rows owned by this
    program alone) as a read-modify-write."""
    offsets = rows[:, None] * D + features[None, :]
    mask = row_mask[:, None] & (features < D)[None, :]
    if ATOMIC:
        tl.atomic_add(ptr + offsets, block, mask=mask, sem="relaxed")
    else:
        tl.store(ptr + offsets, tl.load(ptr + offsets, mask=mask, other=0.0) + block, mask=mask)


@triton.jit
def _add_owned_block(ptr, rows, row_mask, features, D, block, ATOMIC: tl.constexpr):
    """An owner's resident block into the zeroed (rows, D) buffer: added atomically by the programs that split its
    tiles, else stored (its only writer)."""
    if ATOMIC:
        _add_block(ptr, rows, row_mask, features, D, block, True)
    else:
        mask = row_mask[:, None] & (features < D)[None, :]
        tl.store(ptr + rows[:, None] * D + features[None, :], block, mask=mask)


@triton.jit
def _add_rows(ptr, rows, row_mask, values, ATOMIC: tl.constexpr):
    if ATOMIC:
        tl.atomic_add(ptr + rows, values, mask=row_mask, sem="relaxed")
    else:
        tl.store(ptr + rows, values, mask=row_mask)


@triton.jit
def _mirror_stats(stats_ptr, cols, col_mask, B, params, LOSS: tl.constexpr, AS_COLUMNS: tl.constexpr):
    """The per-row inputs of the mirrored tile's rows (this tile's columns), as [1, BLOCK_N] (``AS_COLUMNS``) or
    [BLOCK_N, 1]. Contrastive runs symmetric only with one pair of margins for every anchor, read from ``params``
    (splats, not loads): per-column loads took registers, and its symmetric backward spilled with them."""
    if LOSS == CONTRASTIVE:
        zero = tl.zeros(cols.shape, tl.float32)
        pos_margin, neg_margin = zero + params[0], zero + params[1]
        if AS_COLUMNS:
            slots = (pos_margin[None, :], neg_margin[None, :], zero[None, :], zero[None, :])
        else:
            slots = (pos_margin[:, None], neg_margin[:, None], zero[:, None], zero[:, None])
    elif AS_COLUMNS:
        slots = column_slots(stats_ptr, cols, col_mask, B)
    else:
        slots = row_slots(stats_ptr, cols, col_mask, B)
    return slots


@triton.jit
def _split_range(split, tiles_per_split, num_tiles):
    """[first, last) of the tiles that column split ``split`` streams."""
    first = split * tiles_per_split
    return first, tl.minimum(first + tiles_per_split, num_tiles)


# Not specialised on (by default the JIT compiles other code for an int equal to 1 or divisible by 16): the
# own-column offset, which changes with every batch of a memory bank, and the tiles per split, which change with the
# batch size, so that the GPU check's ahead-of-time compile (_compile_check) covers the benchmarks' batches.
@triton.jit(do_not_specialize=["own_offset", "tiles_per_split"])
def pair_rows_kernel(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    scale_ptr, bias_ptr, partials_ptr, tile_bits_ptr,
    B, M, D, label_width, own_offset, tiles_per_split, stride_xr, stride_xd, stride_yr, stride_yd,
    p0, p1, p2, p3,
    LOSS: tl.constexpr, PASS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, SYMMETRIC: tl.constexpr,
    PRECISION: tl.constexpr, ONE_CHUNK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    row_block = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    rows = row_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < B
    own_cols = own_columns(rows, own_offset, M)
    row_vec = tl.load(row_vec_ptr + rows, mask=row_mask, other=0.0)[:, None]
    stats = row_slots(stats_ptr, rows, row_mask, B)
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    params = (p0, p1, p2, p3)
    num_col_blocks = tl.cdiv(M, BLOCK_N)
    first, last = _split_range(split, tiles_per_split, num_col_blocks)
    acc = epilogue.init(LOSS, PASS, BLOCK_M)
    if SYMMETRIC:
        # The tiles on and right of the diagonal, split as a whole row would be (as the symmetric backward).
        first, last = _split_range(split, tiles_per_split, num_col_blocks - row_block)
        first += row_block
        last += row_block
        acc = epilogue.init_shared(LOSS, PASS, BLOCK_M, params)
    if ONE_CHUNK:
        # The features fit one chunk: the row block is loaded once, not once per tile.
        x = load_block(x_ptr, rows, row_mask, tl.arange(0, BLOCK_D).to(tl.int64), D, stride_xr, stride_xd)
    for col_block in range(first, last):
        cols = col_block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = cols < M
        if ONE_CHUNK:
            s = similarity_with_rows(x, y_ptr, cols, col_mask, D, stride_yr, stride_yd, PRECISION, BLOCK_N, BLOCK_D)
            pos, neg, weight = pair_masks(
                s, rows, cols, row_mask, col_mask, own_cols, row_labels_ptr, col_labels_ptr, positives_ptr,
                label_width, MASK, SELF_PAIRS,
            )  # fmt: skip
        else:
            s, pos, neg, weight = pair_tile(
                x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask,
                own_cols, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd, MASK, SELF_PAIRS, PRECISION,
                BLOCK_M, BLOCK_N, BLOCK_D,
            )  # fmt: skip
        col_vec = tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :]
        if LOSS == TRIPLET_ALL:
            _, distance, _ = l2_distance(s, row_vec, col_vec)
            acc = triplet_all.accumulate(
                x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
                row_vec, distance, pos, stats[0], params, acc, M, D, label_width, stride_xr, stride_xd, stride_yr,
                stride_yd,
                MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
            )  # fmt: skip
            active = any_pair(pos | neg)  # conservative: which pairs sit in a non-zero triplet is not tracked
        else:
            acc, active = epilogue.accumulate(
                LOSS, PASS, s, pos, neg, weight, cols, row_vec, col_vec, stats, scale, bias, params, acc, SYMMETRIC
            )
        if PASS == LOSS_PASS:
            tl.store(tile_bits_ptr + row_block * num_col_blocks + col_block, active.to(tl.int8))
        if SYMMETRIC:
            # X = Y: the mirrored tile (J, I) is this one transposed; its rows' accumulators go out atomically. None
            # on the diagonal tile, whose pairs the rows above already hold.
            mirror_acc, mirror_active = epilogue.accumulate(
                LOSS, PASS, tl.trans(s), tl.trans(pos), tl.trans(neg), tl.trans(weight), rows,
                col_vec.reshape(BLOCK_N, 1), row_vec.reshape(1, BLOCK_M),
                _mirror_stats(stats_ptr, cols, col_mask, B, params, LOSS, False), scale, bias, params,
                epilogue.init_shared(LOSS, PASS, BLOCK_N, params), True,
            )  # fmt: skip
            mirrored = col_mask & (cols // BLOCK_N != row_block)
            epilogue.combine(LOSS, PASS, partials_ptr, cols, mirrored, B, mirror_acc)
            if PASS == LOSS_PASS:
                # The diagonal tile's byte is the rows' own, stored above.
                bits = tile_bits_ptr + col_block * num_col_blocks + row_block
                tl.store(bits, tl.where(col_block != row_block, mirror_active, active).to(tl.int8))
    if SYMMETRIC:
        epilogue.combine(LOSS, PASS, partials_ptr, rows, row_mask, B, acc)
    else:
        _store_row_slots(partials_ptr + split * 4 * B, rows, row_mask, B, acc)


@triton.jit
def init_shared_kernel(partials_ptr, B, p0, p1, p2, p3, LOSS: tl.constexpr, PASS: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
    """The symmetric forward's shared (4, B) state, before its programs ``combine`` into it."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    _store_row_slots(partials_ptr, rows, rows < B, B, epilogue.init_shared(LOSS, PASS, BLOCK, (p0, p1, p2, p3)))


@triton.jit(do_not_specialize=["splits"])  # (as pair_rows_kernel's tiles per split)
def merge_splits_kernel(partials_ptr, out_ptr, B, splits, LOSS: tl.constexpr, PASS: tl.constexpr,
                        BLOCK: tl.constexpr):  # fmt: skip
    """out = finish(merge of the splits' partial states, in column order) for a block of rows."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    row_mask = rows < B
    acc = row_values(partials_ptr, rows, row_mask, B)
    for split in range(1, splits):
        acc = epilogue.merge(LOSS, PASS, acc, row_values(partials_ptr + split * 4 * B, rows, row_mask, B))
    _store_row_slots(out_ptr, rows, row_mask, B, epilogue.finish(LOSS, PASS, acc))


@triton.jit
def _tile_gradient(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    values_ptr, coefs_ptr, s, pos, neg, weight, rows, cols, row_mask, col_mask, own_cols, scale, bias, params,
    B, M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
    LOSS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """The epilogue's gradient tiles (G, g_vec, g_scale, g_bias) of one recomputed tile."""
    row_vec = tl.load(row_vec_ptr + rows, mask=row_mask, other=0.0)[:, None]
    col_vec = tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :]
    coefs = row_slots(coefs_ptr, rows, row_mask, B)
    if LOSS == TRIPLET_ALL:
        _, distance, d_distance = l2_distance(s, row_vec, col_vec)
        coefficient = triplet_all.pair_coefficients(
            x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
            row_vec, distance, pos, neg, row_slots(stats_ptr, rows, row_mask, B)[0], params, M, D, label_width,
            stride_xr, stride_xd, stride_yr, stride_yd,
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
            LOSS, s, pos, neg, weight, row_vec, col_vec, row_slots(stats_ptr, rows, row_mask, B),
            row_slots(values_ptr, rows, row_mask, B), coefs, col_coefs, scale, bias, params,
        )  # fmt: skip
    return grads


@triton.jit
def _mirror_gradient(
    row_vec_ptr, col_vec_ptr, stats_ptr, values_ptr, coefs_ptr, s, pos, neg, weight, rows, cols, row_mask,
    col_mask, scale, bias, params, B, LOSS: tl.constexpr,
):  # fmt: skip
    """The gradient of tile (J, I) from this tile (I, J)'s S and masks, transposed (equal to (J, I)'s when X = Y):
    (its G in this tile's orientation, its g_vec summed over I for the J rows and over J for the I rows; the
    mirrored losses have no logit scale or bias). The J rows' per-row inputs broadcast along this tile's columns.
    Their row vector is read as this tile's column vector, and the I rows' column vector as its row vector (X = Y
    passes get one vector for both, ``losses.pair_rows_inputs``): the same loads as ``_tile_gradient``'s, so that
    the compiler computes what the two gradients share once (contrastive's distance: its square root and
    reciprocal: 2 SFU operations per pair in the mirrored backward instead of 4, by the sm_90 compile report)."""
    m_s, m_vec, _, _ = epilogue.gradient(
        LOSS, s, pos, neg, weight, tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :],
        tl.load(row_vec_ptr + rows, mask=row_mask, other=0.0)[:, None],
        _mirror_stats(stats_ptr, cols, col_mask, B, params, LOSS, True), column_slots(values_ptr, cols, col_mask, B),
        column_slots(coefs_ptr, cols, col_mask, B), 0.0, scale, bias, params,
    )  # fmt: skip
    return m_s, tl.sum(m_vec, 0), tl.sum(m_vec, 1)


@triton.jit
def _add_products(out_ptr, out_rows, out_mask, g_op, g_unscale, operand_ptr, operand_rows, operand_mask, D,
                  stride_row, stride_feature, PRECISION: tl.constexpr, BLOCK_D: tl.constexpr,
                  ATOMIC: tl.constexpr):  # fmt: skip
    """out[out_rows] += G·operand[operand_rows], BLOCK_D features at a time (one chunk's product held at once)."""
    for start in range(0, D, BLOCK_D):
        features = start + tl.arange(0, BLOCK_D).to(tl.int64)
        operand = load_block(operand_ptr, operand_rows, operand_mask, features, D, stride_row, stride_feature)
        product = tl.dot(g_op, operand, input_precision=PRECISION) * g_unscale
        _add_block(out_ptr, out_rows, out_mask, features, D, product, ATOMIC)


@triton.jit
def _add_held_products(out_ptr, out_rows, out_mask, held, start, operand_ptr, operand_count, D, stride_row,
                       stride_feature, PRECISION: tl.constexpr, BLOCK: tl.constexpr, PRODUCT_D: tl.constexpr,
                       ATOMIC: tl.constexpr):  # fmt: skip
    """out[out_rows] += Σ_k G_k·operand[rows of tile start + k] over a group of held tiles (``held``: (G_k, its
    unscale, whether it has one), k = 0, 1, …), PRODUCT_D features at a time: the group's products meet in one fp32
    block per chunk, added once to the owned rows. A group whose tiles have no gradient adds nothing."""
    live = held[0][2]
    for step in tl.static_range(1, len(held)):
        live = live | held[step][2]
    if live:
        for first_feature in range(0, D, PRODUCT_D):
            features = first_feature + tl.arange(0, PRODUCT_D).to(tl.int64)
            block = tl.zeros((out_rows.shape[0], PRODUCT_D), tl.float32)
            for step in tl.static_range(len(held)):
                g_op, g_unscale, has_gradient = held[step]
                if has_gradient:
                    operand_rows = (start + step) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
                    operand = load_block(operand_ptr, operand_rows, operand_rows < operand_count, features, D,
                                         stride_row, stride_feature)  # fmt: skip
                    block = add_product(block, g_op, g_unscale, operand, PRECISION)
            _add_block(out_ptr, out_rows, out_mask, features, D, block, ATOMIC)


@triton.jit(do_not_specialize=["own_offset", "tiles_per_split"])  # (as pair_rows_kernel)
def pair_grad_kernel(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr, stats_ptr,
    values_ptr, coefs_ptr, scale_ptr, bias_ptr, tile_bits_ptr, dx_ptr, dy_ptr, row_grads_ptr, col_grad_ptr,
    B, M, D, label_width, own_offset, tiles_per_split, stride_xr, stride_xd, stride_yr, stride_yd,
    p0, p1, p2, p3,
    LOSS: tl.constexpr, MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    OWN_ROWS: tl.constexpr, ATOMIC: tl.constexpr, STREAMED_GRADS: tl.constexpr, SYMMETRIC: tl.constexpr,
    MIRROR: tl.constexpr, OWNED_D: tl.constexpr, FLUSH_TILES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRODUCT_D: tl.constexpr,
):  # fmt: skip
    owner = tl.program_id(0).to(tl.int64)
    # The losses whose logit scale and bias have gradients (the others' g_scale and g_bias are zero).
    LOGIT_GRADS: tl.constexpr = LOSS == CLIP or LOSS == SIGLIP
    # Owners of rows too wide to keep in registers hold their tiles' G and add the products per FLUSH_TILES tiles.
    FLUSH: tl.constexpr = not OWNED_D and not SYMMETRIC
    scale = tl.load(scale_ptr).to(tl.float32)
    bias = tl.load(bias_ptr).to(tl.float32)
    params = (p0, p1, p2, p3)
    num_col_blocks = tl.cdiv(M, BLOCK_N)
    owned_features = tl.arange(0, max(OWNED_D, 1)).to(tl.int64)
    if OWN_ROWS:
        first, last = _split_range(tl.program_id(1), tiles_per_split, num_col_blocks)
        if SYMMETRIC:
            # The tiles on and right of the diagonal (BLOCK_M = BLOCK_N), split as a whole row would be.
            first, last = _split_range(tl.program_id(1), tiles_per_split, num_col_blocks - owner)
            first += owner
            last += owner
        rows = owner * BLOCK_M + tl.arange(0, BLOCK_M)
        own_cols = own_columns(rows, own_offset, M)
        # Row sums of g_vec, g_scale, g_bias; the dX block when resident; SYMMETRIC, MIRROR: the column-vector
        # gradient of these rows from the mirrored tiles.
        vec_sum = tl.zeros((BLOCK_M,), tl.float32)
        scale_sum = tl.zeros((BLOCK_M,), tl.float32)
        bias_sum = tl.zeros((BLOCK_M,), tl.float32)
        mirror_vec_sum = tl.zeros((BLOCK_M,), tl.float32)
        owned = tl.zeros((BLOCK_M, max(OWNED_D, 1)), tl.float32)
    else:
        first, last = _split_range(tl.program_id(1), tiles_per_split, tl.cdiv(B, BLOCK_M))
        cols = owner * BLOCK_N + tl.arange(0, BLOCK_N)
        col_vec_sum = tl.zeros((BLOCK_N,), tl.float32)
        owned = tl.zeros((BLOCK_N, max(OWNED_D, 1)), tl.float32)
    for start in range(first, last, FLUSH_TILES):
        held = ()  # FLUSH: per tile of the group (G as its product's operand, its unscale, whether it has one)
        for step in tl.static_range(FLUSH_TILES):
            tile = start + step
            in_split = tile < last
            if OWN_ROWS:
                cols = tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
                tile_bit = tl.load(tile_bits_ptr + owner * num_col_blocks + tile, mask=in_split, other=0)
                if SYMMETRIC or MIRROR:
                    tile_bit |= tl.load(tile_bits_ptr + tile * num_col_blocks + owner, mask=in_split, other=0)
            else:
                rows = tile * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
                own_cols = own_columns(rows, own_offset, M)
                tile_bit = tl.load(tile_bits_ptr + tile * num_col_blocks + owner, mask=in_split, other=0)
            row_mask = rows < B
            col_mask = cols < M
            g_held = tl.zeros((BLOCK_M, BLOCK_N) if OWN_ROWS else (BLOCK_N, BLOCK_M), x_ptr.dtype.element_ty)
            g_held_unscale = tl.full((), 1.0, tl.float32)
            # Exact skip: the forward saw no pair with a non-zero gradient in this tile (nor, SYMMETRIC, MIRROR, its
            # mirror).
            if tile_bit != 0:
                s, pos, neg, weight = pair_tile(
                    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask,
                    own_cols, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd, MASK, SELF_PAIRS,
                    PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
                )  # fmt: skip
                g_s, g_vec, g_scale, g_bias = _tile_gradient(
                    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, row_vec_ptr, col_vec_ptr,
                    stats_ptr, values_ptr, coefs_ptr, s, pos, neg, weight, rows, cols, row_mask, col_mask, own_cols,
                    scale, bias, params, B, M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
                    LOSS, MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
                )  # fmt: skip
                if OWN_ROWS:
                    vec_sum += tl.sum(g_vec, 1)
                    if LOGIT_GRADS:
                        scale_sum += tl.sum(g_scale, 1)
                        bias_sum += tl.sum(g_bias, 1)
                    if STREAMED_GRADS or SYMMETRIC:
                        tl.atomic_add(col_grad_ptr + cols, tl.sum(g_vec, 0), mask=col_mask, sem="relaxed")
                    if SYMMETRIC or MIRROR:
                        # X = Y: this tile also stands for tile (J, I), whose pair gradients join G (on the diagonal
                        # tile they are G's transpose: dX += (G + Gᵀ)·X there). SYMMETRIC skips tile (J, I); MIRROR
                        # computes it too, as its owner's tile, and takes only the I rows' share here.
                        m_s, m_vec_cols, m_vec_rows = _mirror_gradient(
                            row_vec_ptr, col_vec_ptr, stats_ptr, values_ptr, coefs_ptr, s, pos, neg, weight, rows,
                            cols, row_mask, col_mask, scale, bias, params, B, LOSS,
                        )  # fmt: skip
                        g_s += m_s
                        if MIRROR:
                            mirror_vec_sum += m_vec_rows
                        else:
                            # The diagonal tile is its own mirror: its per-row sums above already hold every pair
                            # once.
                            mirrored = col_mask & (cols // BLOCK_N != owner)  # the J rows, none on the diagonal
                            off_diagonal = (tile != owner).to(tl.float32)
                            tl.atomic_add(row_grads_ptr + cols, m_vec_cols * off_diagonal, mask=col_mask,
                                          sem="relaxed")  # fmt: skip
                            mirror_vec_sum += m_vec_rows * off_diagonal
                else:
                    col_vec_sum += tl.sum(g_vec, 0)
                # Lanes outside the batch may hold NaN (0/0 in an epilogue): harmless in the products (their rows
                # are not stored), but not in the tile's largest |G| that scales fp16's.
                g_s = tl.where(row_mask[:, None] & col_mask[None, :], g_s, 0.0)
                g_op, g_unscale = gradient_operand(g_s, x_ptr.dtype.element_ty)
                if SYMMETRIC:
                    # dX_I += H·X_J and dX_J += Hᵀ·X_I with H = G + mirror: the J rows get the mirrored tile's dX
                    # and this tile's dY (Y = X); none on the diagonal tile, whose dX_I += (G + Gᵀ)·X_I is all.
                    _add_products(dx_ptr, rows, row_mask, g_op, g_unscale, y_ptr, cols, col_mask, D, stride_yr,
                                  stride_yd, PRECISION, PRODUCT_D, True)  # fmt: skip
                    _add_products(dx_ptr, cols, mirrored, tl.trans(g_op), g_unscale, x_ptr, rows, row_mask, D,
                                  stride_xr, stride_xd, PRECISION, PRODUCT_D, True)  # fmt: skip
                else:
                    if STREAMED_GRADS:
                        _add_products(dy_ptr, cols, col_mask, tl.trans(g_op), g_unscale, x_ptr, rows, row_mask, D,
                                      stride_xr, stride_xd, PRECISION, PRODUCT_D, True)  # fmt: skip
                    if OWNED_D and OWN_ROWS:  # (MIRROR: dX_I = Σ_J H·X_J is all of X's gradient; its dY is none)
                        y = load_block(y_ptr, cols, col_mask, owned_features, D, stride_yr, stride_yd)
                        owned = add_product(owned, g_op, g_unscale, y, PRECISION)
                    elif OWNED_D:
                        x = load_block(x_ptr, rows, row_mask, owned_features, D, stride_xr, stride_xd)
                        owned = add_product(owned, tl.trans(g_op), g_unscale, x, PRECISION)
                    else:
                        g_held = g_op if OWN_ROWS else tl.trans(g_op)
                        g_held_unscale = g_held_unscale * g_unscale  # (a tensor for every dtype: bf16's is 1.0)
            held = held + ((g_held, g_held_unscale, tile_bit != 0),)
        if FLUSH:
            # The group's products, summed before they are added to the owned rows: one global addition of the
            # owned block per FLUSH_TILES tiles.
            if OWN_ROWS:
                _add_held_products(dx_ptr, rows, rows < B, held, start, y_ptr, M, D, stride_yr, stride_yd,
                                   PRECISION, BLOCK_N, PRODUCT_D, ATOMIC)  # fmt: skip
            else:
                _add_held_products(dy_ptr, cols, cols < M, held, start, x_ptr, B, D, stride_xr, stride_xd,
                                   PRECISION, BLOCK_M, PRODUCT_D, ATOMIC)  # fmt: skip
    if OWN_ROWS:
        row_mask = rows < B
        if OWNED_D:
            _add_owned_block(dx_ptr, rows, row_mask, owned_features, D, owned, ATOMIC)
        _add_rows(row_grads_ptr, rows, row_mask, vec_sum, ATOMIC)
        if LOGIT_GRADS:
            _add_rows(row_grads_ptr + B, rows, row_mask, scale_sum, ATOMIC)
            _add_rows(row_grads_ptr + 2 * B, rows, row_mask, bias_sum, ATOMIC)
        if SYMMETRIC or MIRROR:
            _add_rows(col_grad_ptr, rows, row_mask, mirror_vec_sum, ATOMIC)
    else:
        if OWNED_D:
            _add_owned_block(dy_ptr, cols, cols < M, owned_features, D, owned, ATOMIC)
        _add_rows(col_grad_ptr, cols, cols < M, col_vec_sum, ATOMIC)
