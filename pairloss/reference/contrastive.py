"""Contrastive (pair margin) loss on L2 distances of the (normalised) rows, as PML's ContrastiveLoss."""

import torch.nn.functional as F

from ._common import l2_distance, mean_of_nonzero, pair_masks, reduce_rows


def contrastive_loss(x, labels, y, ref_labels, *, pos_margin, neg_margin, reduction):
    dist = l2_distance(x, x if y is None else y)
    pos, neg = pair_masks(labels, ref_labels)
    pos_terms = F.relu(dist - pos_margin) * pos
    neg_terms = F.relu(neg_margin - dist) * neg
    rows = pos_terms.sum(1) + neg_terms.sum(1)
    # PML averages each kind over its own non-zero pairs, then adds the two averages.
    return reduce_rows(rows, reduction, lambda: mean_of_nonzero(pos_terms[pos]) + mean_of_nonzero(neg_terms[neg]))
