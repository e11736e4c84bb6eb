"""The "cpp" backend's loss functions: same names and arguments as pairloss.reference. Each runs one engine op
(per-anchor loss components and batch counters, no B×M tensor) and applies the loss's reduction."""

import math

import torch

from ._ops import kernel_name, pair_forward


def _reduce(rows, reduction, mean):
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return mean()


def _mean_of_nonzero(values):
    """PML's AvgNonZeroReducer (mean of the strictly positive entries, 0 if none), without a host sync."""
    nonzero = values > 0
    return (values * nonzero).sum() / nonzero.sum().clamp_min(1)


def _per_count(total, count):
    """``total / count``, and ``total`` (0: every term is 0) when the count is 0."""
    return total / count.clamp_min(1)


def multi_similarity_loss(x, labels, y, ref_labels, *, alpha, beta, base, epsilon, mining, reduction):
    params = (alpha, beta, base, epsilon, float(mining))
    rows = pair_forward("multi_similarity", x, y, labels, ref_labels, params=params)[0][:, 0]
    return _reduce(rows, reduction, rows.mean)


def triplet_margin_loss(x, labels, y, ref_labels, *, margin, mining, soft, reduction):
    name = kernel_name("triplet_margin_loss", {"mining": mining})
    rows, counts = pair_forward(name, x, y, labels, ref_labels, params=(margin, float(soft)))
    rows = rows[:, 0]
    if mining == "batch_hard":  # one term per anchor (0 without a triplet)
        return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows))
    return _reduce(rows, reduction, lambda: _per_count(rows.sum(), counts[0]))  # counts[0]: non-zero triplets


def contrastive_loss(x, labels, y, ref_labels, *, pos_margin, neg_margin, reduction):
    parts, counts = pair_forward("contrastive", x, y, labels, ref_labels, params=(pos_margin, neg_margin))
    sums = parts.sum(0)
    return _reduce(parts.sum(1), reduction, lambda: _per_count(sums[0], counts[0]) + _per_count(sums[1], counts[1]))


def circle_loss(x, labels, y, ref_labels, *, m, gamma, reduction):
    rows = pair_forward("circle", x, y, labels, ref_labels, params=(m, gamma))[0][:, 0]
    return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows))


def ntxent_loss(x, labels, y, ref_labels, *, temperature, reduction):
    rows, counts = pair_forward("ntxent", x, y, labels, ref_labels, params=(temperature,))
    rows = rows[:, 0]
    return _reduce(rows, reduction, lambda: _per_count(rows.sum(), counts[0]))  # mean over positive pairs


def supcon_loss(x, labels, y, ref_labels, *, temperature, reduction):
    rows, counts = pair_forward("supcon", x, y, labels, ref_labels, params=(temperature,))
    # PML: a batch without any positive pair or without any negative pair has loss 0.
    rows = rows[:, 0] * ((counts[0] > 0) & (counts[1] > 0))
    return _reduce(rows, reduction, lambda: _mean_of_nonzero(rows))


def clip_loss(image, text, logit_scale, *, reduction):
    scalars = logit_scale.reshape(1).to(image.dtype)
    rows = pair_forward("clip", image, text, scalars=scalars)[0][:, 0]
    return _reduce(rows, reduction, rows.mean)


def siglip_loss(image, text, logit_scale, logit_bias):
    scalars = torch.stack([logit_scale.reshape(()), logit_bias.reshape(())]).to(image.dtype)
    rows = pair_forward("siglip", image, text, scalars=scalars)[0][:, 0]
    return rows.sum() / image.shape[0]


def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    rows, counts = pair_forward("decoupled_softmax", queries, keys, positives, params=(temperature,))
    return _per_count(rows[:, 0].sum(), counts[0])  # mean over the distinct (query, positive) pairs


def uniformity_loss(x, *, t):
    rows = pair_forward("uniformity", x, params=(t,))[0][:, 0]  # each row's LSE of −t·|x_i − x_j|²
    pairs = x.shape[0] * (x.shape[0] - 1)
    return torch.logsumexp(rows, 0) - math.log(pairs)


def mw_loss(queries, docs, *, temperature):
    return pair_forward("mw", queries, docs, params=(temperature,))[0][:, 0].mean()
