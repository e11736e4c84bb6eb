"""Contrastive (pair margin) loss on L2 distances of the (normalised) rows, as PML's ContrastiveLoss; each margin
is a number or one per anchor ((B,) tensor)."""

import torch
import torch.nn.functional as F

from .._reduction import nonzero_parts, reduce
from ._common import l2_distance, pair_masks, per_anchor


def contrastive_loss(x, labels, y, ref_labels, *, pos_margin, neg_margin, reduction, self_offset=None):
    dist = l2_distance(x, x if y is None else y)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    pos_terms = F.relu(dist - per_anchor(pos_margin)) * pos
    neg_terms = F.relu(per_anchor(neg_margin) - dist) * neg
    rows = pos_terms.sum(1) + neg_terms.sum(1)

    def parts():  # PML averages each kind over its own non-zero pairs, then adds the two averages
        (pos_sum, pos_count), (neg_sum, neg_count) = nonzero_parts(pos_terms), nonzero_parts(neg_terms)
        return torch.cat([pos_sum, neg_sum]), torch.cat([pos_count, neg_count])

    return reduce(rows, reduction, parts)
