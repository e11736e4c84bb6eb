"""Triplet margin loss on L2 distances of the (normalised) rows, as PML's TripletMarginLoss.

``mining="batch_hard"`` pairs each anchor with its farthest positive and closest negative (PML's
BatchHardMiner); ``mining="all"`` uses every valid (anchor, positive, negative) triplet. ``margin``: a number or
one per anchor ((B,) tensor).
"""

import torch
import torch.nn.functional as F

from .._numerics import softplus
from .._reduction import nonzero_parts, reduce
from ._common import l2_distance, pair_masks, per_anchor


def _hinge(violation, soft):
    return softplus(violation) if soft else F.relu(violation)


def _batch_hard(dist, pos, neg, margin, soft):
    # Pick the hardest indices without gradient, then read the distances there, so that (like PML) the gradient
    # reaches exactly one positive and one negative per anchor even when distances tie.
    hardest_pos = dist.detach().masked_fill(~pos, float("-inf")).argmax(1, keepdim=True)
    hardest_neg = dist.detach().masked_fill(~neg, float("inf")).argmin(1, keepdim=True)
    violation = dist.gather(1, hardest_pos) - dist.gather(1, hardest_neg) + per_anchor(margin)
    has_triplet = pos.any(1) & neg.any(1)
    rows = torch.where(has_triplet, _hinge(violation.squeeze(1), soft), 0.0)
    return rows, rows[has_triplet]


def _all_triplets(dist, pos, neg, margin, soft):
    # One anchor at a time: a B×M×M tensor would not fit for the batch sizes the benchmarks use.
    rows, terms = [], []
    for i in range(dist.shape[0]):
        d_pos, d_neg = dist[i][pos[i]], dist[i][neg[i]]
        anchor_margin = margin[i] if isinstance(margin, torch.Tensor) else margin
        anchor_terms = _hinge(d_pos[:, None] - d_neg[None, :] + anchor_margin, soft).flatten()
        rows.append(anchor_terms.sum())
        terms.append(anchor_terms)
    return torch.stack(rows), torch.cat(terms)


def triplet_margin_loss(x, labels, y, ref_labels, *, margin, mining, soft, reduction, self_offset=None):
    dist = l2_distance(x, x if y is None else y)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    mine = _batch_hard if mining == "batch_hard" else _all_triplets
    rows, terms = mine(dist, pos, neg, margin, soft)
    return reduce(rows, reduction, lambda: nonzero_parts(terms))
