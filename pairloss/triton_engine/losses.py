"""The reference's losses on the fused engine (same names and arguments as ``pairloss.reference``).

Each loss runs its STATS pass if it has one (on detached inputs: thresholds, extremes and log-denominators are
not differentiated, or are differentiated through the LOSS pass's outputs), then its LOSS pass, and reduces the
O(B) per-row outputs in PyTorch exactly as the reference does, without host synchronisation (so that the
losses compile with ``torch.compile(fullgraph=True)``). fp64 inputs are computed in fp32.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._numerics import distance_from_gram
from . import _ops
from ._ids import (
    CIRCLE,
    CLIP,
    CONTRASTIVE,
    DIAGONAL,
    INDEX,
    LABELS,
    MULTI_SIMILARITY,
    MW,
    NTXENT,
    SIGLIP,
    SUPCON,
    TRIPLET_ALL,
    TRIPLET_HARDEST,
    UNIFORMITY,
)

INF = float("inf")


class EnginePass(NamedTuple):
    """The compile-time choices of one ``pairloss::pair_rows`` call (ids as ints, as the op takes them)."""

    loss: int
    stats_pass: bool
    mask: int
    self_pairs: bool


def _passes(loss, stats_passes=(False,), mask=LABELS, self_pairs=(True, False)):
    return {EnginePass(loss.value, s, mask.value, p) for s in stats_passes for p in self_pairs}


# Every pass the losses below run (the LOSS passes also run the backward): the kernel variants _compile_check
# compiles for GPUs. tests/test_triton_compile.py checks that the losses run exactly these.
ENGINE_PASSES = sorted(
    _passes(MULTI_SIMILARITY, stats_passes=(True, False))
    | _passes(TRIPLET_HARDEST, stats_passes=(True,))
    | _passes(TRIPLET_ALL)
    | _passes(CONTRASTIVE)
    | _passes(CIRCLE)
    | _passes(NTXENT, stats_passes=(True, False))
    | _passes(NTXENT, stats_passes=(True, False), mask=INDEX, self_pairs=(False,))
    | _passes(SUPCON)
    | _passes(CLIP, stats_passes=(True, False), mask=DIAGONAL, self_pairs=(False,))
    | set().union(*(_passes(loss, mask=DIAGONAL, self_pairs=(False,)) for loss in (SIGLIP, MW, UNIFORMITY)))
)


def _run(loss, x, y, *, stats_pass=False, row_labels=None, col_labels=None, positives=None, row_vec=None,
         col_vec=None, stats=None, scale=None, bias=None, mask=LABELS, self_pairs=False, params=()):  # fmt: skip
    """One engine pass; returns its (4, B) fp32 per-row outputs. Unused inputs get small placeholders."""
    if stats_pass:
        x, y = x.detach(), y.detach()
        scale = None if scale is None else scale.detach()
        row_vec = None if row_vec is None else row_vec.detach()
        col_vec = None if col_vec is None else col_vec.detach()
    rows, cols = x.shape[0], y.shape[0]
    no_labels = x.new_zeros((1,), dtype=torch.int64)
    values, _ = _ops.pair_rows(
        x,
        y,
        no_labels if row_labels is None else row_labels.to(torch.int64).contiguous(),
        no_labels if col_labels is None else col_labels.to(torch.int64).contiguous(),
        x.new_zeros((rows, 0), dtype=torch.int64) if positives is None else positives.to(torch.int64).contiguous(),
        x.new_zeros((rows,), dtype=torch.float32) if row_vec is None else row_vec.float().contiguous(),
        x.new_zeros((cols,), dtype=torch.float32) if col_vec is None else col_vec.float().contiguous(),
        x.new_zeros((4, rows), dtype=torch.float32) if stats is None else stats,
        x.new_ones((), dtype=torch.float32) if scale is None else scale.float().reshape(()),
        x.new_zeros((), dtype=torch.float32) if bias is None else bias.float().reshape(()),
        loss.value,
        stats_pass,
        mask.value,
        self_pairs,
        [float(p) for p in params] + [0.0] * (4 - len(params)),
    )
    return values


def _label_pairs(labels, y, ref_labels):
    """Keyword arguments of ``_run`` for a label loss; ``y is None`` means the anchors are the references."""
    if y is None:
        return {"row_labels": labels, "col_labels": labels, "self_pairs": True}
    return {"row_labels": labels, "col_labels": ref_labels, "self_pairs": False}


def _squared_norms(x, y):
    """Squared row norms of X and of Y (the same tensor when Y is X, so that both gradients reach it)."""
    x_norms = (x * x).sum(1)
    return x_norms, x_norms if y is None else (y * y).sum(1)


def _ratio(total, count):
    """total / count, or 0 (with a gradient path) when count is 0: a mean over a possibly empty set."""
    return torch.where(count > 0, total / count.clamp_min(1), total * 0)


def _mean_of_nonzero(terms):
    """PML's AvgNonZeroReducer without a host sync."""
    nonzero = terms > 0
    return _ratio((terms * nonzero).sum(), nonzero.sum())


def _reduce(rows, reduction, mean, dtype):
    if reduction == "none":
        return rows.to(dtype)
    if reduction == "sum":
        return rows.sum().to(dtype)
    return mean().to(dtype)


def _l2_rows(a, b):
    """Row-wise L2 distance through the Gram formula, as the reference's distance matrix computes it."""
    norms_sum = (a * a).sum(1) + (b * b).sum(1)
    return distance_from_gram(norms_sum - 2.0 * (a * b).sum(1), norms_sum, a.dtype)


def multi_similarity_loss(x, labels, y, ref_labels, *, alpha, beta, base, epsilon, mining, reduction):
    pairs = _label_pairs(labels, y, ref_labels)
    refs = x if y is None else y
    params = (alpha, beta, base, epsilon)
    if mining:
        stats = _run(MULTI_SIMILARITY, x, refs, stats_pass=True, params=params, **pairs)
    else:
        # Thresholds that keep every pair: s − ε < +inf and s + ε > −inf.
        stats = torch.tensor([INF, -INF, 0.0, 0.0], device=x.device)[:, None].expand(4, x.shape[0]).contiguous()
    values = _run(MULTI_SIMILARITY, x, refs, stats=stats, params=params, **pairs)
    rows = values[0] / alpha + values[1] / beta
    return _reduce(rows, reduction, rows.mean, x.dtype)


def triplet_margin_loss(x, labels, y, ref_labels, *, margin, mining, soft, reduction):
    refs = x if y is None else y
    x_norms, ref_norms = _squared_norms(x, y)
    if mining == "all":
        values = _run(TRIPLET_ALL, x, refs, row_vec=x_norms, col_vec=ref_norms, params=(margin, float(soft)),
                      **_label_pairs(labels, y, ref_labels))  # fmt: skip
        rows = values[0]
        # The mean is over the non-zero triplet terms (PML's AvgNonZeroReducer over triplets, not anchors).
        return _reduce(rows, reduction, lambda: _ratio(rows.sum(), values[1].detach().sum()), x.dtype)
    stats = _run(TRIPLET_HARDEST, x, refs, stats_pass=True, row_vec=x_norms, col_vec=ref_norms,
                 **_label_pairs(labels, y, ref_labels))  # fmt: skip
    has_triplet = (stats[0] > -INF) & (stats[2] < INF)
    # The kernel only picks the hardest columns; the distances there are recomputed with autograd (O(B·D)),
    # so the gradient reaches exactly one positive and one negative per anchor, as in PML.
    far_pos = _l2_rows(x, refs[stats[1].long()])
    near_neg = _l2_rows(x, refs[stats[3].long()])
    hinge = F.softplus if soft else F.relu
    rows = torch.where(has_triplet, hinge(far_pos - near_neg + margin), 0.0)
    return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows), x.dtype)


def contrastive_loss(x, labels, y, ref_labels, *, pos_margin, neg_margin, reduction):
    x_norms, ref_norms = _squared_norms(x, y)
    values = _run(CONTRASTIVE, x, x if y is None else y, row_vec=x_norms, col_vec=ref_norms,
                  params=(pos_margin, neg_margin), **_label_pairs(labels, y, ref_labels))  # fmt: skip
    rows = values[0] + values[1]
    # PML averages each kind over its own non-zero pairs, then adds the two averages.
    return _reduce(
        rows,
        reduction,
        lambda: _ratio(values[0].sum(), values[2].detach().sum()) + _ratio(values[1].sum(), values[3].detach().sum()),
        x.dtype,
    )


def circle_loss(x, labels, y, ref_labels, *, m, gamma, reduction):
    values = _run(CIRCLE, x, x if y is None else y, params=(m, gamma), **_label_pairs(labels, y, ref_labels))
    has_both = (values[2] > 0) & (values[3] > 0)
    rows = torch.where(has_both, F.softplus(values[0] + values[1]), 0.0)
    return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows), x.dtype)


def _ntxent_rows(x, refs, params, **pairs):
    """(Σ over each row's positives of the pair loss, number of positives) of label-aware InfoNCE."""
    stats = _run(NTXENT, x, refs, stats_pass=True, params=params, **pairs)
    values = _run(NTXENT, x, refs, stats=stats, params=params, **pairs)
    return values[0], values[1].detach()


def ntxent_loss(x, labels, y, ref_labels, *, temperature, reduction):
    rows, positives = _ntxent_rows(x, x if y is None else y, (temperature,), **_label_pairs(labels, y, ref_labels))
    return _reduce(rows, reduction, lambda: _ratio(rows.sum(), positives.sum()), x.dtype)


def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    rows, counts = _ntxent_rows(queries, keys, (temperature,), positives=positives, mask=INDEX)
    return _ratio(rows.sum(), counts.sum()).to(queries.dtype)


def _has_negative_pair(labels, ref_labels):
    """Whether any (anchor, reference) pair has different labels, in O(B) and without a host sync."""
    if ref_labels is None:
        return (labels != labels[0]).any()
    return (labels != ref_labels[0]).any() | (ref_labels != ref_labels[0]).any()


def supcon_loss(x, labels, y, ref_labels, *, temperature, reduction):
    values = _run(SUPCON, x, x if y is None else y, params=(temperature,), **_label_pairs(labels, y, ref_labels))
    log_denominator, positive_logits, positives = values[0], values[1], values[2].detach()
    rows = torch.where(positives > 0, log_denominator - positive_logits / positives.clamp_min(1), 0.0)
    # PML returns 0 for a batch with no positive pair or no negative pair at all (e.g. a single class).
    rows = torch.where((positives.sum() > 0) & _has_negative_pair(labels, ref_labels), rows, rows * 0)
    return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows), x.dtype)


def clip_loss(image, text, logit_scale, *, reduction):
    # The column log-sum-exps are the row ones of the transposed problem (a STATS pass); the LOSS pass returns
    # them beside the row ones and differentiates both from each recomputed tile (one backward, not one per side).
    text_lse = _run(CLIP, text, image, stats_pass=True, scale=logit_scale, mask=DIAGONAL)[0]
    values = _run(CLIP, image, text, row_vec=text_lse, col_vec=text_lse, scale=logit_scale, mask=DIAGONAL)
    image_lse, text_lse = values[0], values[1]
    matching = logit_scale * (image * text).sum(1)
    rows = (image_lse + text_lse) / 2 - matching
    return _reduce(rows, reduction, rows.mean, image.dtype)


def siglip_loss(image, text, logit_scale, logit_bias):
    rows = _run(SIGLIP, image, text, scale=logit_scale, bias=logit_bias, mask=DIAGONAL)[0]
    return (rows.sum() / image.shape[0]).to(image.dtype)


def mw_loss(queries, docs, *, temperature):
    positive_scores = (queries * docs[: queries.shape[0]]).sum(1)
    rows = _run(MW, queries, docs, row_vec=positive_scores, mask=DIAGONAL, params=(temperature,))[0]
    return (rows / max(docs.shape[0] - 1, 1)).mean().to(queries.dtype)


def uniformity_loss(x, *, t):
    norms = (x * x).sum(1)
    row_lse = _run(UNIFORMITY, x, x, row_vec=norms, col_vec=norms, mask=DIAGONAL, params=(t,))[0]
    pairs = x.shape[0] * (x.shape[0] - 1)
    return (torch.logsumexp(row_lse, 0) - math.log(pairs)).to(x.dtype)
