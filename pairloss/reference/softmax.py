"""Label-aware softmax losses on cosine similarity: NT-Xent (PML's NTXentLoss) and SupCon (PML's SupConLoss).
``temperature`` is a number or one per anchor ((B,) tensor: anchor i's logits are s_ij / τ_i);
``positive_weights`` weighs each positive pair: 1 ("uniform", PML's losses) or the Jaccard similarity of the
pair's multi-hot label sets ("jaccard")."""

import torch

from .._numerics import softplus
from .._reduction import count_parts, nonzero_parts, reduce
from ._common import masked_logsumexp, pair_masks, per_anchor
from ._common import positive_weights as weights_of


def ntxent_loss(x, labels, y, ref_labels, *, temperature, positive_weights="uniform", reduction, self_offset=None):
    """Per positive pair (i, p): w_ip · −log(e^{s_ip/τ} / (e^{s_ip/τ} + Σ_{n∈N_i} e^{s_in/τ})); the mean is over
    Σ w_ip (the number of positive pairs when uniform)."""
    logits = x @ (x if y is None else y).T / per_anchor(temperature)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    weights = weights_of(pos, labels, ref_labels, positive_weights, logits.dtype)
    neg_lse = masked_logsumexp(logits, neg)
    # −log(e^a / (e^a + e^b)) = softplus(b − a); an anchor without negatives has ratio 1, loss 0.
    pair_losses = torch.where(neg.any(1, keepdim=True), softplus(neg_lse[:, None] - logits), 0.0) * weights
    rows = pair_losses.sum(1)
    return reduce(rows, reduction, lambda: count_parts(rows, weights.sum(dtype=torch.float64)))


def supcon_loss(x, labels, y, ref_labels, *, temperature, positive_weights="uniform", reduction, self_offset=None):
    """L_i = −Σ_{p∈P_i} w_ip (s_ip/τ − log Σ_{j∈P_i∪N_i} e^{s_ij/τ}) / Σ_p w_ip, mean over the non-zero L_i."""
    logits = x @ (x if y is None else y).T / per_anchor(temperature)
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    weights = weights_of(pos, labels, ref_labels, positive_weights, logits.dtype)
    log_denominator = masked_logsumexp(logits, pos | neg)
    weight_sum = weights.sum(1)
    mean_pos_logit = (logits * weights).sum(1) / torch.where(weight_sum > 0, weight_sum, 1)
    # PML returns 0 for a batch with no positive pair or no negative pair at all (e.g. a single class). Soft
    # positives keep their loss without negatives: the weights still rank each row's positives.
    counted = pos.any(1) & ((pos.any() & neg.any()) | (positive_weights == "jaccard"))
    rows = torch.where(counted, log_denominator - mean_pos_logit, 0.0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))
