"""Triplet loss over all (anchor, positive, negative) triplets without a B×M×M (or B×M) tensor.

For a block of anchors and an outer column tile j, an inner loop over every column tile k recomputes the
distances d_ik and forms the BLOCK_M × BLOCK_N × BLOCK_N triplet tile in registers. Forward (j as the positive):
Σ_{p∈j, n∈k} h(d_ip − d_in + m) and the number of non-zero terms. Backward: the coefficient of pair (i, j) is
Σ_n h'(d_ij − d_in + m) when j is a positive of i and −Σ_p h'(d_ip − d_ij + m) when j is a negative, each summed
over all tiles k; G = ∂L/∂S follows through the distance. h is relu, or softplus when ``soft`` (``params[1]``); m
is the anchor's margin (slot 0 of the pass's per-row inputs).
The work is O(B·M²·(D/BLOCK_N + 1)), the price of the exact all-triplets loss.
"""

import triton
import triton.language as tl

from ._tiles import count, l2_distance, pair_tile, softplus


@triton.jit
def _distances(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols, row_vec,
    tile, M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
    MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """(distance, positive, negative) tiles of the anchors against column tile ``tile``."""
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    col_mask = cols < M
    s, pos, neg, _ = pair_tile(
        x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, rows, cols, row_mask, col_mask, own_cols,
        D, label_width, stride_xr, stride_xd, stride_yr, stride_yd, MASK, SELF_PAIRS, PRECISION,
        BLOCK_M, BLOCK_N, BLOCK_D,
    )  # fmt: skip
    _, distance, _ = l2_distance(s, row_vec, tl.load(col_vec_ptr + cols, mask=col_mask, other=0.0)[None, :])
    return distance, pos, neg


@triton.jit
def _hinge(violation, soft):
    return tl.where(soft != 0, softplus(violation), tl.maximum(violation, 0.0))


@triton.jit
def _hinge_slope(violation, soft):
    """h'(v): 1[v > 0] for relu (torch's relu'(0) = 0), σ(v) for softplus."""
    return tl.where(soft != 0, tl.sigmoid(violation), tl.where(violation > 0, 1.0, 0.0))


@triton.jit
def accumulate(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols, row_vec,
    distance, pos, margins, params, acc,
    M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
    MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Fold the triplets whose positive is in the outer tile into (Σ terms, # non-zero terms, ·, ·);
    ``margins``: each anchor's, [BLOCK_M, 1]."""
    margin, soft = margins[:, :, None], params[1]
    term_sum = acc[0]
    nonzero = acc[1]
    for tile in range(tl.cdiv(M, BLOCK_N)):
        inner, _, inner_neg = _distances(
            x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
            row_vec, tile, M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
            MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
        )  # fmt: skip
        valid = pos[:, :, None] & inner_neg[:, None, :]
        terms = tl.where(valid, _hinge(distance[:, :, None] - inner[:, None, :] + margin, soft), 0.0)
        term_sum += tl.sum(tl.sum(terms, 2), 1)
        nonzero += tl.sum(count(terms > 0), 1)
    return (term_sum, nonzero, acc[2], acc[3])


@triton.jit
def pair_coefficients(
    x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols, row_vec,
    distance, pos, neg, margins, params,
    M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
    MASK: tl.constexpr, SELF_PAIRS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """∂(Σ_triplets h)/∂d for the outer tile's pairs: + over its role as a positive, − as a negative."""
    margin, soft = margins[:, :, None], params[1]
    coefficient = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for tile in range(tl.cdiv(M, BLOCK_N)):
        inner, inner_pos, inner_neg = _distances(
            x_ptr, y_ptr, row_labels_ptr, col_labels_ptr, positives_ptr, col_vec_ptr, rows, row_mask, own_cols,
            row_vec, tile, M, D, label_width, stride_xr, stride_xd, stride_yr, stride_yd,
            MASK, SELF_PAIRS, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D,
        )  # fmt: skip
        as_positive = _hinge_slope(distance[:, :, None] - inner[:, None, :] + margin, soft)
        coefficient += tl.sum(tl.where(pos[:, :, None] & inner_neg[:, None, :], as_positive, 0.0), 2)
        as_negative = _hinge_slope(inner[:, None, :] - distance[:, :, None] + margin, soft)
        coefficient -= tl.sum(tl.where(neg[:, :, None] & inner_pos[:, None, :], as_negative, 0.0), 2)
    return coefficient
