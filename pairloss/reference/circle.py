"""Circle loss (Sun et al., CVPR 2020) on cosine similarity, as PML's CircleLoss."""

import torch
import torch.nn.functional as F

from .._numerics import softplus
from .._reduction import nonzero_parts, reduce
from ._common import masked_logsumexp, pair_masks


def circle_loss(x, labels, y, ref_labels, *, m, gamma, reduction, self_offset=None):
    sim = x @ (x if y is None else y).T
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    # The self-paced weights [1 + m - s]₊ and [s + m]₊ are constants for the gradient, as in the paper.
    pos_logits = -gamma * F.relu(1 + m - sim.detach()) * (sim - (1 - m))
    neg_logits = gamma * F.relu(sim.detach() + m) * (sim - m)
    lse = masked_logsumexp(pos_logits, pos) + masked_logsumexp(neg_logits, neg)
    rows = torch.where(pos.any(1) & neg.any(1), softplus(lse), 0.0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))
