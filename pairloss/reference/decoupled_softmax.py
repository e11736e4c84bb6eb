"""Decoupled softmax for multi-label retrieval (Gupta et al., "Dual-encoders for extreme multi-label
classification", ICLR 2024): each positive competes only with the query's negatives, not its other positives."""

import torch

from .._numerics import softplus
from ._common import masked_logsumexp, per_anchor


def positive_mask(positives, num_keys):
    """B×L mask from a B×P index tensor padded with −1; a repeated index counts once."""
    mask = torch.zeros(positives.shape[0], num_keys + 1, dtype=torch.bool, device=positives.device)
    mask.scatter_(1, torch.where(positives < 0, num_keys, positives), True)
    return mask[:, :num_keys]


def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    logits = queries @ keys.T / per_anchor(temperature)  # a number, or one per query
    pos = positive_mask(positives, keys.shape[0])
    neg = ~pos
    neg_lse = masked_logsumexp(logits, neg)
    pair_losses = torch.where(neg.any(1, keepdim=True), softplus(neg_lse[:, None] - logits), 0.0)
    terms = pair_losses[pos]
    return terms.mean() if terms.numel() else terms.sum()
