"""Tile-level building blocks shared by every kernel: operand loads, the similarity tile, pair masks, and the
numerically careful scalar functions (online log-sum-exp, softplus, L2 distance)."""

import triton
import triton.language as tl

from .._numerics import ZERO_DISTANCE_ULPS
from ._ids import DIAGONAL, INDEX, JACCARD, LABELS

INF = tl.constexpr(float("inf"))
# e^z = 2^(z·log2 e), and ex2 is the GPU's exponential: with log2 e folded into a scalar or per-row factor, an
# exponent costs one FMA per pair before ex2, where tl.exp(a·s − b) takes a multiply, a subtract and a multiply.
LOG2E = tl.constexpr(1.4426950408889634)
# ZERO_DISTANCE_ULPS ulps of fp32, the precision of every tile.
ZERO_DISTANCE_TOLERANCE = tl.constexpr(ZERO_DISTANCE_ULPS * 2.0**-23)


@triton.jit
def load_block(ptr, rows, row_mask, features, D, stride_row, stride_feature):
    """rows × features block of a (rows, D) matrix given by strides; out-of-range entries are 0."""
    offsets = rows[:, None] * stride_row + features[None, :] * stride_feature
    return tl.load(ptr + offsets, mask=row_mask[:, None] & (features < D)[None, :], other=0.0)


@triton.jit
def similarity_tile(
    x_ptr, y_ptr, rows, cols, row_mask, col_mask, D, stride_xr, stride_xd, stride_yr, stride_yd,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """S = X[rows] · Y[cols]ᵀ accumulated in fp32 over feature chunks."""
    s = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for start in range(0, D, BLOCK_D):
        features = start + tl.arange(0, BLOCK_D).to(tl.int64)
        x = load_block(x_ptr, rows, row_mask, features, D, stride_xr, stride_xd)
        y = load_block(y_ptr, cols, col_mask, features, D, stride_yr, stride_yd)
        s = tl.dot(x, tl.trans(y), s, input_precision=PRECISION)
    return s


@triton.jit
def similarity_with_rows(x, y_ptr, cols, col_mask, D, stride_yr, stride_yd, PRECISION: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """``similarity_tile`` for features that fit one chunk, with the row block ``x`` (BLOCK_M × BLOCK_D) already
    loaded: the same product on the same operands, so the same S."""
    features = tl.arange(0, BLOCK_D).to(tl.int64)
    y = load_block(y_ptr, cols, col_mask, features, D, stride_yr, stride_yd)
    return tl.dot(x, tl.trans(y), tl.zeros((x.shape[0], BLOCK_N), tl.float32), input_precision=PRECISION)


@triton.jit
def gradient_operand(g, dtype: tl.constexpr):
    """(G as an MMA operand of ``dtype``, the factor that undoes its scaling) for the gradient products G·Y and
    Gᵀ·X. fp16: G is scaled by the power of two that puts the tile's largest |G| in [2^14, 2^15), so that pair
    gradients of large batches (∝ 1/B² under a mean) do not flush to zero below fp16's range, nor overflow it;
    the power of two makes the scaling exact (its exponent stops at 100: a tile whose largest |G| is below ~1e-26
    keeps a finite scale and flushes). bf16 and fp32 keep fp32's exponent range: unscaled."""
    if dtype == tl.float16:
        largest = tl.max(tl.max(tl.abs(g), 1), 0)
        exponent = tl.minimum(14.0 - tl.floor(tl.log2(tl.maximum(largest, 1e-30))), 100.0)
        return (g * tl.exp2(exponent)).to(dtype), tl.exp2(-exponent)
    return g.to(dtype), 1.0


@triton.jit
def add_product(acc, g_op, g_unscale, operand, PRECISION: tl.constexpr):
    """acc + G·operand for a ``gradient_operand`` G: unscaled G accumulates in the MMA's own accumulator (no
    second block of registers for the product); fp16's scaled G needs its product rescaled first."""
    if g_op.dtype == tl.float16:
        return acc + tl.dot(g_op, operand, input_precision=PRECISION) * g_unscale
    return tl.dot(g_op, operand, acc, input_precision=PRECISION)


@triton.jit
def own_columns(rows, own_offset, M):
    """The own column of each row, (i + own_offset) mod M (int64): its positive under the DIAGONAL mask, the
    pair left out under ``SELF_PAIRS``. With Y = X and offset 0 it is the diagonal."""
    return (rows + own_offset) % M


@triton.jit
def popcount(words):
    """Set bits of each int32 entry (SWAR: bit counts of pairs, nibbles, bytes, then the bytes summed by a
    multiply). Every right shift is masked, so the sign bit's arithmetic shift never leaks into a count."""
    words = words - ((words >> 1) & 0x55555555)
    words = (words & 0x33333333) + ((words >> 2) & 0x33333333)
    words = (words + (words >> 4)) & 0x0F0F0F0F
    return (words * 0x01010101) >> 24


@triton.jit
def false_like(s):
    """An all-False tile computed from ``s``, so that it takes ``s``'s register layout (a constant has none)."""
    return s < s  # noqa: PLR0124 (False for every value, NaN included)


@triton.jit
def pair_masks(
    s, rows, cols, row_mask, col_mask, own_cols, row_labels_ptr, col_labels_ptr, positives_ptr, label_width,
    MASK: tl.constexpr, SELF_PAIRS: tl.constexpr,
):  # fmt: skip
    """(positive, negative, positive weight) tiles; ``SELF_PAIRS`` leaves each row's own column out of both (the
    anchor itself, or its copy among the references). ``label_width``: the entries per row of the index list
    (INDEX) or the 32-bit words per multi-hot row (MULTI_HOT, JACCARD: the packed int64 words viewed as int32, so
    that a pair's AND is one register, not two). The weight is JACCARD's |a ∩ b| / |a ∪ b|, else 1 (read only by
    the losses with soft positives). ``s``: the tile's similarities; the tiles that the label loops carry start
    from it, and the class-id test is OR-ed with it (``false_like``), so that they take its register layout (2 rows
    per thread at 8 warps). Built from constants and label vectors alone, Triton lays them out with 16 rows per
    thread and converts the result: most multi-hot and index-list kernels, and NT-Xent's symmetric loss forward,
    spilled on sm_90."""
    valid = row_mask[:, None] & col_mask[None, :]
    own = own_cols[:, None] == cols[None, :]
    if SELF_PAIRS:
        valid = valid & ~own
    weight = tl.full(own.shape, 1.0, tl.float32)
    if MASK == LABELS:
        row_labels = tl.load(row_labels_ptr + rows, mask=row_mask, other=0)
        col_labels = tl.load(col_labels_ptr + cols, mask=col_mask, other=0)
        same = (row_labels[:, None] == col_labels[None, :]) | false_like(s)
    elif MASK == DIAGONAL:
        same = own
    elif MASK == INDEX:
        # Membership of each column in the row's −1 padded index list; a repeated index counts once.
        same = false_like(s)
        for slot in range(label_width):
            index = tl.load(positives_ptr + rows * label_width + slot, mask=row_mask, other=-1)
            same = same | (index[:, None] == cols[None, :])
    else:  # MULTI_HOT, JACCARD: one AND per word and pair, in registers
        # The shared bits of each pair, OR-ed (MULTI_HOT) or, JACCARD, counted: |a ∩ b| per pair, |a| per row and
        # |b| per column (|a ∪ b| = |a| + |b| − |a ∩ b|). One int32 tile carried through the words.
        common = false_like(s).to(tl.int32)
        row_counts = (rows * 0).to(tl.int32)
        col_counts = (cols * 0).to(tl.int32)
        for word in range(label_width):
            row_words = tl.load(row_labels_ptr + rows * label_width + word, mask=row_mask, other=0)
            col_words = tl.load(col_labels_ptr + cols * label_width + word, mask=col_mask, other=0)
            both = row_words[:, None] & col_words[None, :]
            if MASK == JACCARD:
                common += popcount(both)
                row_counts += popcount(row_words)
                col_counts += popcount(col_words)
            else:
                common = common | both
        same = common != 0
        if MASK == JACCARD:
            union = row_counts[:, None] + col_counts[None, :] - common
            weight = common.to(tl.float32) / tl.maximum(union, 1).to(tl.float32)
    return valid & same, valid & ~same, weight


@triton.jit
def pair_tile(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask, own_cols,
    D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
    MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """(S, positive, negative, positive weight) tiles: what every pass starts from."""
    s = similarity_tile(
        x_ptr, y_ptr, rows, cols, row_mask, col_mask, D, stride_xr, stride_xd, stride_yr, stride_yd,
        PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    pos, neg, weight = pair_masks(
        s, rows, cols, row_mask, col_mask, own_cols, row_labels_ptr, col_labels_ptr, positives_ptr, label_width,
        MASK, SELF_PAIRS,
    )  # fmt: skip
    return s, pos, neg, weight


@triton.jit
def online_logsumexp(running_max, running_sum, z, mask, FIXED: tl.constexpr = False):
    """Fold the masked entries of tile ``z`` into a per-row (max, Σ e^(z − max)) pair. ``FIXED``: the "max" is a
    fixed shift no entry exceeds (the symmetric forward's ``init_shared``): no max to track, no rescaling."""
    if FIXED:
        return running_max, running_sum + tl.sum(masked_exp2(z * LOG2E - (running_max * LOG2E)[:, None], mask), 1)
    z = tl.where(mask, z, -INF)
    new_max = tl.maximum(running_max, tl.max(z, 1))
    # A row that has seen nothing yet keeps max = −inf; shift by 0 there so that no −inf − (−inf) appears.
    shift = tl.where(new_max == -INF, 0.0, new_max)
    terms = tl.exp2(z * LOG2E - (shift * LOG2E)[:, None])
    running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(terms, 1)
    return new_max, running_sum


@triton.jit
def online_logsumexp_pair(first, second, z_first, z_second, in_first, in_second, takes_first,
                          FIXED: tl.constexpr = False):  # fmt: skip
    """``online_logsumexp`` of two disjoint masked sets of one tile (running (max, sum) pairs ``first`` and
    ``second``), with one exponential per entry: entry (i, j) belongs to the first set's z where ``takes_first``."""
    if FIXED:
        shift = tl.where(takes_first, (first[0] * LOG2E)[:, None], (second[0] * LOG2E)[:, None])
        e = masked_exp2(tl.where(takes_first, z_first, z_second) * LOG2E - shift, in_first | in_second)
        return (first[0], first[1] + tl.sum(tl.where(in_first, e, 0.0), 1)), (
            second[0],
            second[1] + tl.sum(tl.where(in_second, e, 0.0), 1),
        )
    first_max = tl.maximum(first[0], tl.max(tl.where(in_first, z_first, -INF), 1))
    second_max = tl.maximum(second[0], tl.max(tl.where(in_second, z_second, -INF), 1))
    first_shift = tl.where(first_max == -INF, 0.0, first_max)
    second_shift = tl.where(second_max == -INF, 0.0, second_max)
    shift = tl.where(takes_first, (first_shift * LOG2E)[:, None], (second_shift * LOG2E)[:, None])
    e = masked_exp2(tl.where(takes_first, z_first, z_second) * LOG2E - shift, in_first | in_second)
    first_sum = first[1] * tl.exp(first[0] - first_shift) + tl.sum(tl.where(in_first, e, 0.0), 1)
    second_sum = second[1] * tl.exp(second[0] - second_shift) + tl.sum(tl.where(in_second, e, 0.0), 1)
    return (first_max, first_sum), (second_max, second_sum)


@triton.jit
def merge_logsumexp(max_a, sum_a, max_b, sum_b):
    """Two per-row (max, Σ e^(z − max)) pairs of disjoint sets → the pair of their union (−inf max: empty)."""
    new_max = tl.maximum(max_a, max_b)
    shift = tl.where(new_max == -INF, 0.0, new_max)
    return new_max, sum_a * tl.exp(max_a - shift) + sum_b * tl.exp(max_b - shift)


@triton.jit
def masked_exp2(z2, mask):
    """2^z2 on the mask, 0 elsewhere, without evaluating (possibly overflowing) exponents off the mask: e^z of an
    exponent given in log2 units (z2 = z·log2 e, ``LOG2E`` folded into its factors)."""
    return tl.exp2(tl.where(mask, z2, -INF))


@triton.jit
def finish_logsumexp(running_max, running_sum):
    """log Σ e^z from the (max or fixed shift, Σ e^(z − it)) pair; 0 for a row without any entry (like the
    reference's empty value). Empty is a zero sum: a running max contributes e^0, a fixed shift flushes nothing
    (``_launch.shared_forward``)."""
    empty = running_sum == 0
    return tl.where(empty, 0.0, running_max + tl.log(tl.where(empty, 1.0, running_sum)))


@triton.jit
def log1p(u):
    """log(1 + u) for u ≥ 0, accurate for tiny u (Goldberg's trick; tl has no log1p on every target)."""
    one_plus = 1.0 + u
    tiny = one_plus == 1.0
    return tl.where(tiny, u, tl.log(one_plus) * (u / tl.where(tiny, 1.0, one_plus - 1.0)))


@triton.jit
def softplus(z):
    return tl.maximum(z, 0.0) + log1p(tl.exp(-tl.abs(z)))


@triton.jit
def softplus_and_sigmoid(z):
    """(softplus(z), σ(z)) from one exponential, e^(−|z|)."""
    e = tl.exp(-tl.abs(z))
    return tl.maximum(z, 0.0) + log1p(e), tl.where(z >= 0, 1.0, e) / (1.0 + e)


@triton.jit
def l2_distance(s, row_sq_norms, col_sq_norms):
    """(squared distance, distance, ∂distance/∂squared) from the Gram entry and squared norms, as the reference:
    the square root and its derivative are 0 where the squared distance is below the Gram form's fp32 rounding
    noise (duplicate rows; the rule of ``pairloss._numerics``)."""
    squared = row_sq_norms + col_sq_norms - 2.0 * s  # [BLOCK_M, 1] + [1, BLOCK_N] − tile
    positive = squared > (row_sq_norms + col_sq_norms) * ZERO_DISTANCE_TOLERANCE  # tensor × constexpr (3.8 interpreter)
    distance = tl.where(positive, tl.sqrt_rn(tl.where(positive, squared, 1.0)), 0.0)
    return squared, distance, tl.where(positive, 0.5 / tl.where(positive, distance, 1.0), 0.0)


@triton.jit
def row_values(ptr, rows, row_mask, B):
    """The four per-row values of a (4, B) fp32 tensor, as [BLOCK_M] vectors."""
    return (
        tl.load(ptr + rows, mask=row_mask, other=0.0),
        tl.load(ptr + B + rows, mask=row_mask, other=0.0),
        tl.load(ptr + 2 * B + rows, mask=row_mask, other=0.0),
        tl.load(ptr + 3 * B + rows, mask=row_mask, other=0.0),
    )


@triton.jit
def row_slots(ptr, rows, row_mask, B):
    """The four per-row values of a (4, B) fp32 tensor, as [BLOCK_M, 1] columns ready to broadcast."""
    values = row_values(ptr, rows, row_mask, B)
    return values[0][:, None], values[1][:, None], values[2][:, None], values[3][:, None]


@triton.jit
def column_slots(ptr, rows, row_mask, B):
    """The four per-row values of a (4, B) fp32 tensor, as [1, BLOCK] rows: those rows seen as a tile's columns."""
    values = row_values(ptr, rows, row_mask, B)
    return values[0][None, :], values[1][None, :], values[2][None, :], values[3][None, :]


@triton.jit
def any_pair(mask):
    """1 if any entry of the boolean tile is set, else 0 (an int32 scalar)."""
    return tl.max(tl.max(mask.to(tl.int32), 1), 0)


@triton.jit
def count(mask):
    """Per-row number of set entries, as fp32."""
    return tl.sum(mask.to(tl.float32), 1)
