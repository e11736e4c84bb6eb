"""Per-loss epilogues of the shared tile loop, selected at compile time by ``LOSS``.

A loss is a few small jitted pieces:
- ``init``: its four fp32 per-row accumulators for a pass (STATS_PASS or LOSS_PASS);
- ``accumulate``: fold one similarity tile S into them, and say whether the tile holds a pair with a non-zero
  gradient (the backward skips the tiles without one, so this must never be 0 where the gradient is not);
- ``merge``: combine the accumulators of two column ranges (the forward splits the columns across programs);
  with ``init_shared`` and ``combine``: accumulators that programs fold into shared per-row state atomically
  (the symmetric forward, where a tile also feeds its columns' rows);
- ``finish``: the accumulators → the pass's four per-row outputs (the layout is listed per loss below);
- ``gradient``: G = ∂L/∂S for one tile, given the upstream gradient ``coefs`` of the LOSS outputs, and three
  more tiles whose sums give the gradients of the other inputs: ``g_vec`` (row sums → the per-row vector,
  column sums → the per-column vector), ``g_scale`` and ``g_bias`` (total sums → logit scale and bias).

``stats`` are the STATS outputs, ``values`` the LOSS outputs, each as four [BLOCK_M, 1] columns; ``params`` the
loss's scalar hyper-parameters. Output layouts (unused slots are 0):
- MULTI_SIMILARITY  STATS: max_N s, min_P s.  LOSS: log(1+Σ_P e^(−α(s−λ))), log(1+Σ_N e^(β(s−λ))) over mined pairs.
- TRIPLET_HARDEST   STATS: max_P d, its first column, min_N d, its first column (columns as fp32: exact < 2²⁴).
- CONTRASTIVE       LOSS: Σ_P [d−m_p]₊, Σ_N [m_n−d]₊, their numbers of non-zero terms (the margins per anchor, given
                    as the pass's ``stats``; the symmetric kernels' mirrored rows take them from ``params``).
- CIRCLE            LOSS: LSE_P of the positive logits, LSE_N of the negative logits, |P|>0, |N|>0.
- NTXENT            STATS: LSE_N s/τ, |N|>0.  LOSS: Σ_P w·softplus(LSE_N − s/τ), Σ_P w, Σ_P w·σ(LSE_N − s/τ).
- SUPCON            LOSS: LSE_{P∪N} s/τ, Σ_P w·s/τ, Σ_P w.
  (w: each positive's weight, 1 unless the JACCARD mask gives soft positives; Σ_P w = |P| when it is 1.)
- CLIP              STATS: LSE over all columns of scale·s.  LOSS: that LSE, and the column i's LSE over all rows
                    (given as the per-row vector, from the STATS pass on the transposed problem; B = M).
                    Both are differentiated from the same tile, the column one through ``col_coefs``.
- SIGLIP            LOSS: Σ softplus(−z·(scale·s + bias)), z = +1 on the row's own column, −1 elsewhere.
- MW                LOSS: Σ_N softplus((s − p)/τ), p = the row's positive score (the per-row vector).
- UNIFORMITY        LOSS: LSE_N −t·[d²]₊ (N = every other row; the per-row/column vectors are squared norms).
"""

import triton
import triton.language as tl

from ._ids import (
    CIRCLE,
    CLIP,
    CONTRASTIVE,
    MULTI_SIMILARITY,
    MW,
    NTXENT,
    SIGLIP,
    STATS_PASS,
    SUPCON,
    TRIPLET_HARDEST,
    UNIFORMITY,
)
from ._tiles import (
    INF,
    LOG2E,
    any_pair,
    count,
    finish_logsumexp,
    l2_distance,
    masked_exp2,
    merge_logsumexp,
    online_logsumexp,
    online_logsumexp_pair,
    softplus,
    softplus_and_sigmoid,
)

# ----------------------------------------------------------------------------------------------- building blocks


@triton.jit
def _earlier_wins(best, best_col, later_best, later_col):
    """Running (max, its column) updated with the best of columns further right: a tie keeps the earlier column,
    as torch.argmax."""
    better = later_best > best
    return tl.where(better, later_best, best), tl.where(better, later_col, best_col)


@triton.jit
def _first_argmax(best, best_col, values, mask, cols):
    """Running (max, first column reaching it) over the masked entries of the next tile."""
    candidates = tl.where(mask, values, -INF)
    tile_best = tl.max(candidates, 1)
    tile_col = tl.min(tl.where(candidates == tile_best[:, None], cols.to(tl.float32)[None, :], INF), 1)
    return _earlier_wins(best, best_col, tile_best, tile_col)


@triton.jit
def _ms_mined(s, pos, neg, stats, epsilon):
    """PML's miner: positives less similar than the hardest negative + ε, negatives more similar than the
    hardest positive − ε. Without mining the thresholds are ±inf, which keeps every pair."""
    return pos & (s - epsilon < stats[0]), neg & (s + epsilon > stats[1])


@triton.jit
def _circle_logits(s, margin, gamma):
    """(positive logit, its ∂/∂s, negative logit, its ∂/∂s); the self-paced weights are constants (detached)."""
    pos_weight = gamma * tl.maximum(1.0 + margin - s, 0.0)
    neg_weight = gamma * tl.maximum(s + margin, 0.0)
    return -pos_weight * (s - (1.0 - margin)), -pos_weight, neg_weight * (s - margin), neg_weight


@triton.jit
def _siglip_logits(s, pos, scale, bias):
    """(−z·logit, −z) with z = +1 for the matching pair and −1 otherwise."""
    minus_z = tl.where(pos, -1.0, 1.0)
    return minus_z * (scale * s + bias), minus_z


# ------------------------------------------------------------------------------------------------------ dispatch


@triton.jit
def init(LOSS: tl.constexpr, PASS: tl.constexpr, BLOCK_M: tl.constexpr):
    zero = tl.zeros((BLOCK_M,), tl.float32)
    if LOSS == MULTI_SIMILARITY:
        if PASS == STATS_PASS:
            acc = (zero - INF, zero + INF, zero, zero)
        else:
            # Two online log-sum-exps; finish() adds the "1 +" term (once, whatever the column splits).
            acc = (zero - INF, zero, zero - INF, zero)
    elif LOSS == TRIPLET_HARDEST or LOSS == CIRCLE:
        acc = (zero - INF, zero, zero - INF, zero)
    elif LOSS == SUPCON or LOSS == CLIP or LOSS == UNIFORMITY or (LOSS == NTXENT and PASS == STATS_PASS):
        acc = (zero - INF, zero, zero, zero)
    else:
        acc = (zero, zero, zero, zero)
    return acc


@triton.jit
def init_shared(LOSS: tl.constexpr, PASS: tl.constexpr, BLOCK_M: tl.constexpr, params):
    """``init`` for accumulators that several programs combine atomically (the symmetric forward, ``combine``).
    Log-sums take a fixed shift instead of a running max, the largest exponent unit rows allow plus 1 (which
    absorbs |s| rounding above 1): multi-similarity α(1 + λ) + 1 and β(1 − λ) + 1, NT-Xent's negatives and
    SupCon's pairs 1/τ + 1, uniformity 1. ``_launch.shared_forward`` keeps the shifts where nothing that matters
    flushes."""
    acc = init(LOSS, PASS, BLOCK_M)
    zero = tl.zeros((BLOCK_M,), tl.float32)
    if LOSS == MULTI_SIMILARITY and PASS != STATS_PASS:
        alpha, beta, base, _ = params
        acc = (zero + (alpha * (1.0 + base) + 1.0), zero, zero + (beta * (1.0 - base) + 1.0), zero)
    elif (LOSS == NTXENT and PASS == STATS_PASS) or LOSS == SUPCON:
        acc = (zero + (1.0 / params[0] + 1.0), zero, zero, zero)
    elif LOSS == UNIFORMITY:
        acc = (zero + 1.0, zero, zero, zero)
    return acc


@triton.jit
def combine(LOSS: tl.constexpr, PASS: tl.constexpr, ptr, rows, row_mask, B, acc):
    """Fold accumulators into the (4, B) ``init_shared`` state at ``ptr`` with relaxed atomics: extremes by
    atomic max/min, counts and sums (fixed-shift log-sums included) by atomic adds; shifts stay."""
    if LOSS == MULTI_SIMILARITY and PASS == STATS_PASS:
        tl.atomic_max(ptr + rows, acc[0], mask=row_mask, sem="relaxed")
        tl.atomic_min(ptr + B + rows, acc[1], mask=row_mask, sem="relaxed")
    else:
        # The slots where init_shared put a fixed shift stay; the others add.
        shift_0: tl.constexpr = (
            LOSS == MULTI_SIMILARITY or LOSS == UNIFORMITY or LOSS == SUPCON or (LOSS == NTXENT and PASS == STATS_PASS)
        )
        shift_2: tl.constexpr = LOSS == MULTI_SIMILARITY
        for slot in tl.static_range(4):
            if not ((slot == 0 and shift_0) or (slot == 2 and shift_2)):
                tl.atomic_add(ptr + slot * B + rows, acc[slot], mask=row_mask, sem="relaxed")


@triton.jit
def accumulate(
    LOSS: tl.constexpr, PASS: tl.constexpr, s, pos, neg, weight, cols, row_vec, col_vec, stats, scale, bias, params,
    acc, SHARED: tl.constexpr = False,
):  # fmt: skip
    """Fold the tile into ``acc``; returns (acc, 1 if the tile has a pair with a non-zero gradient else 0).
    ``weight``: each positive pair's weight (NT-Xent, SupCon). ``SHARED``: ``acc`` comes from ``init_shared``,
    its log-sums with fixed shifts."""
    if LOSS == MULTI_SIMILARITY:
        alpha, beta, base, epsilon = params
        if PASS == STATS_PASS:
            max_neg = tl.maximum(acc[0], tl.max(tl.where(neg, s, -INF), 1))
            min_pos = tl.minimum(acc[1], tl.min(tl.where(pos, s, INF), 1))
            acc = (max_neg, min_pos, acc[2], acc[3])
            active = 0
        else:
            mined_pos, mined_neg = _ms_mined(s, pos, neg, stats, epsilon)
            # (Not unpacked as nested tuples: triton 3.6, the GPU machines' version, fails to hash such targets.)
            pos_state, neg_state = online_logsumexp_pair(
                (acc[0], acc[1]), (acc[2], acc[3]), -alpha * (s - base), beta * (s - base), mined_pos, mined_neg, pos,
                SHARED,
            )  # fmt: skip
            acc = (pos_state[0], pos_state[1], neg_state[0], neg_state[1])
            active = any_pair(mined_pos | mined_neg)
    elif LOSS == TRIPLET_HARDEST:
        _, distance, _ = l2_distance(s, row_vec, col_vec)
        far_pos, far_pos_col = _first_argmax(acc[0], acc[1], distance, pos, cols)
        # The closest negative is the first argmax of −d; finish() flips the sign back.
        near_neg, near_neg_col = _first_argmax(acc[2], acc[3], -distance, neg, cols)
        acc = (far_pos, far_pos_col, near_neg, near_neg_col)
        active = 0
    elif LOSS == CONTRASTIVE:
        pos_margin, neg_margin = stats[0], stats[1]  # per anchor
        _, distance, _ = l2_distance(s, row_vec, col_vec)
        pos_terms = tl.where(pos, tl.maximum(distance - pos_margin, 0.0), 0.0)
        neg_terms = tl.where(neg, tl.maximum(neg_margin - distance, 0.0), 0.0)
        acc = (
            acc[0] + tl.sum(pos_terms, 1),
            acc[1] + tl.sum(neg_terms, 1),
            acc[2] + count(pos_terms > 0),
            acc[3] + count(neg_terms > 0),
        )
        active = any_pair((pos_terms > 0) | (neg_terms > 0))
    elif LOSS == CIRCLE:
        margin, gamma, _, _ = params
        pos_logits, pos_slope, neg_logits, neg_slope = _circle_logits(s, margin, gamma)
        pos_state, neg_state = online_logsumexp_pair(
            (acc[0], acc[1]), (acc[2], acc[3]), pos_logits, neg_logits, pos, neg, pos
        )
        acc = (pos_state[0], pos_state[1], neg_state[0], neg_state[1])
        active = any_pair((pos & (pos_slope != 0)) | (neg & (neg_slope != 0)))
    elif LOSS == NTXENT:
        logits = s * (1.0 / params[0])  # one reciprocal per tile, not a division per pair
        if PASS == STATS_PASS:
            neg_max, neg_sum = online_logsumexp(acc[0], acc[1], logits, neg, SHARED)
            acc = (neg_max, neg_sum, acc[2], acc[3])
            active = 0
        else:
            has_neg = stats[1] > 0
            counted = pos & has_neg
            acc = (acc[0], acc[1] + tl.sum(tl.where(pos, weight, 0.0), 1), acc[2], acc[3])
            # softplus and σ (3 SFU operations per pair) only in the tiles holding a counted positive: with one
            # positive per anchor (its other view) that is one or two of a row block's column tiles.
            if any_pair(counted) != 0:
                terms, slopes = softplus_and_sigmoid(stats[0] - logits)
                acc = (
                    acc[0] + tl.sum(tl.where(counted, weight * terms, 0.0), 1),
                    acc[1],
                    acc[2] + tl.sum(tl.where(counted, weight * slopes, 0.0), 1),
                    acc[3],
                )
            active = any_pair((pos | neg) & has_neg)
    elif LOSS == SUPCON:
        logits = s * (1.0 / params[0])
        all_max, all_sum = online_logsumexp(acc[0], acc[1], logits, pos | neg, SHARED)
        acc = (
            all_max,
            all_sum,
            acc[2] + tl.sum(tl.where(pos, weight * logits, 0.0), 1),
            acc[3] + tl.sum(tl.where(pos, weight, 0.0), 1),
        )
        active = any_pair(pos | neg)
    elif LOSS == CLIP:
        row_max, row_sum = online_logsumexp(acc[0], acc[1], scale * s, pos | neg)
        column_lse = acc[2]
        if PASS != STATS_PASS:
            # The given column LSE passes through as an output, so that its gradient comes to this op's backward.
            column_lse = tl.sum(row_vec, 1)  # [BLOCK_M, 1] → [BLOCK_M]
        acc = (row_max, row_sum, column_lse, acc[3])
        active = any_pair(pos | neg)
    elif LOSS == SIGLIP:
        signed_logits, _ = _siglip_logits(s, pos, scale, bias)
        acc = (acc[0] + tl.sum(tl.where(pos | neg, softplus(signed_logits), 0.0), 1), acc[1], acc[2], acc[3])
        active = any_pair(pos | neg)
    elif LOSS == MW:
        gaps = (s - row_vec) * (1.0 / params[0])
        acc = (acc[0] + tl.sum(tl.where(neg, softplus(gaps), 0.0), 1), acc[1], acc[2], acc[3])
        active = any_pair(neg)
    elif LOSS == UNIFORMITY:
        squared, _, _ = l2_distance(s, row_vec, col_vec)
        row_max, row_sum = online_logsumexp(acc[0], acc[1], -params[0] * tl.maximum(squared, 0.0), neg, SHARED)
        acc = (row_max, row_sum, acc[2], acc[3])
        active = any_pair(neg)
    return acc, active


@triton.jit
def finish(LOSS: tl.constexpr, PASS: tl.constexpr, acc):
    if LOSS == MULTI_SIMILARITY and PASS != STATS_PASS:
        # log(1 + Σ …): the "1" joins each sum as e^0, so the result is never empty.
        one_max = tl.zeros_like(acc[0])
        one_sum = one_max + 1.0
        pos_max, pos_sum = merge_logsumexp(acc[0], acc[1], one_max, one_sum)
        neg_max, neg_sum = merge_logsumexp(acc[2], acc[3], one_max, one_sum)
        out = (pos_max + tl.log(pos_sum), neg_max + tl.log(neg_sum), one_max, one_max)
    elif LOSS == TRIPLET_HARDEST:
        out = (acc[0], acc[1], -acc[2], acc[3])
    elif LOSS == CIRCLE:
        has_pos = (acc[0] > -INF).to(tl.float32)
        has_neg = (acc[2] > -INF).to(tl.float32)
        out = (finish_logsumexp(acc[0], acc[1]), finish_logsumexp(acc[2], acc[3]), has_pos, has_neg)
    elif LOSS == NTXENT and PASS == STATS_PASS:
        out = (finish_logsumexp(acc[0], acc[1]), (acc[1] > 0).to(tl.float32), acc[2], acc[3])
    elif LOSS == SUPCON or LOSS == CLIP or LOSS == UNIFORMITY:
        out = (finish_logsumexp(acc[0], acc[1]), acc[2], acc[3], acc[3] * 0)
    else:
        out = acc
    return out


@triton.jit
def merge(LOSS: tl.constexpr, PASS: tl.constexpr, acc, later):
    """The accumulators of one row block over two disjoint column ranges (``later`` right of ``acc``) → those of
    their union, exactly as if one program had streamed both: log-sum-exps merge their (max, sum) pairs, extremes
    and first argmaxes compare, counts and sums add."""
    if LOSS == MULTI_SIMILARITY and PASS == STATS_PASS:
        out = (tl.maximum(acc[0], later[0]), tl.minimum(acc[1], later[1]), acc[2], acc[3])
    elif LOSS == TRIPLET_HARDEST:
        far_pos, far_pos_col = _earlier_wins(acc[0], acc[1], later[0], later[1])
        near_neg, near_neg_col = _earlier_wins(acc[2], acc[3], later[2], later[3])
        out = (far_pos, far_pos_col, near_neg, near_neg_col)
    elif LOSS == MULTI_SIMILARITY or LOSS == CIRCLE:
        pos_max, pos_sum = merge_logsumexp(acc[0], acc[1], later[0], later[1])
        neg_max, neg_sum = merge_logsumexp(acc[2], acc[3], later[2], later[3])
        out = (pos_max, pos_sum, neg_max, neg_sum)
    elif LOSS == SUPCON or LOSS == CLIP or LOSS == UNIFORMITY or (LOSS == NTXENT and PASS == STATS_PASS):
        lse_max, lse_sum = merge_logsumexp(acc[0], acc[1], later[0], later[1])
        # CLIP's slot 2 is the given column LSE, passed through by every range alike.
        third = acc[2] if LOSS == CLIP else acc[2] + later[2]
        out = (lse_max, lse_sum, third, acc[3] + later[3])
    else:
        out = (acc[0] + later[0], acc[1] + later[1], acc[2] + later[2], acc[3] + later[3])
    return out


@triton.jit
def gradient(LOSS: tl.constexpr, s, pos, neg, weight, row_vec, col_vec, stats, values, coefs, col_coefs, scale, bias,
             params):  # fmt: skip
    """(∂L/∂S, g_vec, g_scale, g_bias) tiles for one tile of pairs; ``weight`` as in ``accumulate``;
    ``col_coefs`` is the upstream gradient of output slot 1 at the tile's columns, [1, BLOCK_N] (CLIP only, else
    0)."""
    zero = tl.zeros_like(s)
    g_vec = zero
    g_scale = zero
    g_bias = zero
    if LOSS == MULTI_SIMILARITY:
        alpha, beta, base, epsilon = params
        mined_pos, mined_neg = _ms_mined(s, pos, neg, stats, epsilon)
        # One exponential per pair: a pair is a positive or a negative, never both. (s − λ) first: β·s − β·λ
        # would cancel digits at β = 50. log2 e folded into the rate and the row's log-sum: one FMA.
        rate = tl.where(pos, -alpha * LOG2E, beta * LOG2E)
        shift = tl.where(pos, values[0] * LOG2E, values[1] * LOG2E)
        slope = tl.where(pos, -alpha * coefs[0], beta * coefs[1])
        g_s = slope * masked_exp2((s - base) * rate - shift, mined_pos | mined_neg)
    elif LOSS == CONTRASTIVE:
        pos_margin, neg_margin = stats[0], stats[1]
        _, distance, d_distance = l2_distance(s, row_vec, col_vec)
        g_distance = tl.where(pos & (distance > pos_margin), coefs[0], 0.0)
        g_distance -= tl.where(neg & (distance < neg_margin), coefs[1], 0.0)
        g_vec = g_distance * d_distance  # ∂L/∂(squared distance); squared = |x|² + |y|² − 2s
        g_s = -2.0 * g_vec
    elif LOSS == CIRCLE:
        margin, gamma, _, _ = params
        pos_logits, pos_slope, neg_logits, neg_slope = _circle_logits(s, margin, gamma)
        # One exponential per pair. Its logits reach ~4γ: log2 e is applied after the log-sum is subtracted, since
        # folded into both (each product rounded alone) the exponent would lose ~|logit|·2⁻²⁴.
        exponent = tl.where(pos, pos_logits - values[0], neg_logits - values[1])
        g_s = tl.where(pos, coefs[0] * pos_slope, coefs[1] * neg_slope) * masked_exp2(exponent * LOG2E, pos | neg)
    elif LOSS == NTXENT:
        inverse_temperature = 1.0 / params[0]
        has_neg = stats[1] > 0
        # A positive's term softplus(LSE_N − l) pulls its own logit down by σ(LSE_N − l) = 1 / (1 + e^(l − LSE_N))
        # and every negative up through LSE_N: one exponential per pair (+inf for a positive far above LSE_N).
        counted = (pos | neg) & has_neg
        e = masked_exp2(s * (inverse_temperature * LOG2E) - stats[0] * LOG2E, counted)
        g_logits = tl.where(counted, coefs[0] * tl.where(pos, -weight / (1.0 + e), values[2] * e), 0.0)
        g_s = g_logits * inverse_temperature
    elif LOSS == SUPCON:
        inverse_temperature = 1.0 / params[0]
        e = masked_exp2(s * (inverse_temperature * LOG2E) - values[0] * LOG2E, pos | neg)
        g_logits = coefs[0] * e + tl.where(pos, coefs[1] * weight, 0.0)
        g_s = g_logits * inverse_temperature
    elif LOSS == CLIP:
        # Row softmax (image → text) and column softmax (text → image) of the same logits.
        valid = pos | neg
        logits2 = s * (scale * LOG2E)  # in log2 units
        g_logits = coefs[0] * masked_exp2(logits2 - values[0] * LOG2E, valid) + col_coefs * masked_exp2(
            logits2 - col_vec * LOG2E, valid
        )
        g_s = scale * g_logits
        g_scale = g_logits * s
    elif LOSS == SIGLIP:
        signed_logits, minus_z = _siglip_logits(s, pos, scale, bias)
        g_bias = tl.where(pos | neg, coefs[0] * minus_z * tl.sigmoid(signed_logits), 0.0)
        g_s = scale * g_bias
        g_scale = g_bias * s
    elif LOSS == MW:
        inverse_temperature = 1.0 / params[0]
        g_s = tl.where(neg, coefs[0] * tl.sigmoid((s - row_vec) * inverse_temperature) * inverse_temperature, 0.0)
        g_vec = -g_s  # the positive score p enters as (s − p)
    elif LOSS == UNIFORMITY:
        t = params[0]
        squared, _, _ = l2_distance(s, row_vec, col_vec)
        potentials2 = tl.maximum(squared, 0.0) * (-t * LOG2E)  # in log2 units
        # clamp_min(0) passes the gradient at exactly 0, as torch does.
        g_vec = -t * coefs[0] * masked_exp2(potentials2 - values[0] * LOG2E, neg & (squared >= 0))
        g_s = -2.0 * g_vec
    return g_s, g_vec, g_scale, g_bias
