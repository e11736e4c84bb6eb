"""Label-aware softmax losses on cosine similarity: NT-Xent (PML's NTXentLoss) and SupCon (PML's SupConLoss).
``temperature`` is a number or one per anchor ((B,) tensor: anchor i's logits are s_ij / τ_i)."""

import torch

from .._numerics import softplus
from .._reduction import count_parts, nonzero_parts, reduce
from ._common import masked_logsumexp, pair_masks, per_anchor


def ntxent_loss(x, labels, y, ref_labels, *, temperature, reduction, self_offset=None):
    """Per positive pair (i, p): −log(e^{s_ip/τ} / (e^{s_ip/τ} + Σ_{n∈N_i} e^{s_in/τ})), mean over pairs."""
    logits = x @ (x if y is None else y).T / per_anchor(temperature)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    neg_lse = masked_logsumexp(logits, neg)
    # −log(e^a / (e^a + e^b)) = softplus(b − a); an anchor without negatives has ratio 1, loss 0.
    pair_losses = torch.where(neg.any(1, keepdim=True), softplus(neg_lse[:, None] - logits), 0.0) * pos
    rows = pair_losses.sum(1)
    return reduce(rows, reduction, lambda: count_parts(rows, pos.sum()))


def supcon_loss(x, labels, y, ref_labels, *, temperature, reduction, self_offset=None):
    """L_i = −(1/|P_i|) Σ_{p∈P_i} (s_ip/τ − log Σ_{j∈P_i∪N_i} e^{s_ij/τ}), mean over the non-zero L_i."""
    logits = x @ (x if y is None else y).T / per_anchor(temperature)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    log_denominator = masked_logsumexp(logits, pos | neg)
    pos_count = pos.sum(1)
    mean_pos_logit = (logits * pos).sum(1) / pos_count.clamp_min(1)
    # PML returns 0 for a batch with no positive pair or no negative pair at all (e.g. a single class).
    counted = (pos_count > 0) & pos.any() & neg.any()
    rows = torch.where(counted, log_denominator - mean_pos_logit, 0.0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))
