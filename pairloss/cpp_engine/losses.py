"""The "cpp" backend's loss functions: same names and arguments as pairloss.reference. Each runs one engine op
(per-anchor loss components and batch counters, no B×M tensor) and applies the loss's reduction."""

import math

import torch

from .._reduction import count_parts, nonzero_parts, ratio, reduce
from ._ops import kernel_name, pair_forward


def multi_similarity_loss(x, labels, y, ref_labels, *, alpha, beta, base, epsilon, mining, reduction, self_offset=None):
    params = (alpha, beta, base, epsilon, float(mining))
    rows = pair_forward("multi_similarity", x, y, labels, ref_labels, params=params, own_offset=self_offset)[0][:, 0]
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


def triplet_margin_loss(x, labels, y, ref_labels, *, margin, mining, soft, reduction, self_offset=None):
    name = kernel_name("triplet_margin_loss", {"mining": mining})
    rows, counts = pair_forward(name, x, y, labels, ref_labels, params=(margin, float(soft)), own_offset=self_offset)
    rows = rows[:, 0]
    if mining == "batch_hard":  # one term per anchor (0 without a triplet)
        return reduce(rows, reduction, lambda: nonzero_parts(rows))
    return reduce(rows, reduction, lambda: count_parts(rows, counts[0]))  # counts[0]: non-zero triplets


def contrastive_loss(x, labels, y, ref_labels, *, pos_margin, neg_margin, reduction, self_offset=None):
    params = (pos_margin, neg_margin)
    parts, counts = pair_forward("contrastive", x, y, labels, ref_labels, params=params, own_offset=self_offset)
    # Positive and negative terms are averaged apart, each over its non-zero terms (counts).
    return reduce(parts.sum(1), reduction, lambda: (parts.sum(0), counts))


def circle_loss(x, labels, y, ref_labels, *, m, gamma, reduction, self_offset=None):
    rows = pair_forward("circle", x, y, labels, ref_labels, params=(m, gamma), own_offset=self_offset)[0][:, 0]
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


def ntxent_loss(x, labels, y, ref_labels, *, temperature, reduction, self_offset=None):
    rows, counts = pair_forward("ntxent", x, y, labels, ref_labels, params=(temperature,), own_offset=self_offset)
    rows = rows[:, 0]
    return reduce(rows, reduction, lambda: count_parts(rows, counts[0]))  # mean over positive pairs


def supcon_loss(x, labels, y, ref_labels, *, temperature, reduction, self_offset=None):
    rows, counts = pair_forward("supcon", x, y, labels, ref_labels, params=(temperature,), own_offset=self_offset)
    # PML: a batch without any positive pair or without any negative pair has loss 0.
    rows = rows[:, 0] * ((counts[0] > 0) & (counts[1] > 0))
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


def clip_loss(image, text, logit_scale, *, reduction):
    scalars = logit_scale.reshape(1).to(image.dtype)
    rows = pair_forward("clip", image, text, scalars=scalars)[0][:, 0]
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


def siglip_loss(image, text, logit_scale, logit_bias, *, positive_offset=None):
    scalars = torch.stack([logit_scale.reshape(()), logit_bias.reshape(())]).to(image.dtype)
    rows = pair_forward("siglip", image, text, scalars=scalars, own_offset=positive_offset)[0][:, 0]
    return rows.sum() / image.shape[0]


def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    rows, counts = pair_forward("decoupled_softmax", queries, keys, positives, params=(temperature,))
    return ratio(rows[:, 0].sum(), counts[0])  # mean over the distinct (query, positive) pairs


def uniformity_loss(x, *, t):
    rows = pair_forward("uniformity", x, params=(t,))[0][:, 0]  # each row's LSE of −t·|x_i − x_j|²
    pairs = x.shape[0] * (x.shape[0] - 1)
    return torch.logsumexp(rows, 0) - math.log(pairs)


def mw_loss(queries, docs, *, temperature):
    return pair_forward("mw", queries, docs, params=(temperature,))[0][:, 0].mean()
