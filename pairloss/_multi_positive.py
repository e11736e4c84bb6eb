"""CLIP and SigLIP with label-defined positives (several captions of one image, duplicates in a batch), fused on
any engine: the softmax denominators are the engine's per-row log-sum-exps and every positive-pair term comes
from per-label sums of rows, O((B+M)·D) memory, no B×M tensor and no host synchronisation.

The definitions are ``reference.two_tower.multi_positive_clip_loss`` and ``multi_positive_siglip_loss``.
"""

from typing import NamedTuple

import torch

from ._logsumexp import row_logsumexp
from ._numerics import row_dots, widen


class LabelGroups(NamedTuple):
    """Each row's group (rows with equal labels share one, across both label sets), and the number of slots."""

    first: torch.Tensor
    second: torch.Tensor
    slots: int


def label_groups(first_labels, second_labels):
    """Dense group ids for two label sets, equal ids for equal labels: by sorting, so without a host sync."""
    labels = torch.cat([first_labels, second_labels])
    ordered, order = labels.sort()
    starts = torch.ones_like(ordered, dtype=torch.int64)
    starts[1:] = (ordered[1:] != ordered[:-1]).long()
    groups = torch.empty_like(order)
    groups[order] = starts.cumsum(0) - 1
    return LabelGroups(groups[: len(first_labels)], groups[len(first_labels) :], len(labels))


def group_sums(rows, groups, slots):
    """Per group, the sum of its ``rows`` (fp32 at least); unused slots are zero."""
    wide = widen(rows)
    return wide.new_zeros((slots, *rows.shape[1:])).index_add(0, groups, wide)


def group_counts(groups, slots):
    return torch.zeros(slots, dtype=torch.float32, device=groups.device).index_add(
        0, groups, torch.ones_like(groups, dtype=torch.float32)
    )


def clip_rows(ntxent, image, text, images, texts, labels, ref_labels, scale):
    """Per local pair (image row + text row) / 2: each row's log-sum-exp over the other tower (``images``,
    ``texts``: every pair, the local ones included) minus the mean logit of its positives (same label in
    ``ref_labels``). ``ntxent`` is an engine's NT-Xent."""
    groups = label_groups(labels, ref_labels)
    counts = group_counts(groups.second, groups.slots).clamp_min(1)[:, None]
    mean_text = group_sums(texts, groups.second, groups.slots) / counts
    mean_image = group_sums(images, groups.second, groups.slots) / counts
    image_rows = row_logsumexp(ntxent, scale * image, texts) - widen(scale) * row_dots(image, mean_text[groups.first])
    text_rows = row_logsumexp(ntxent, scale * text, images) - widen(scale) * row_dots(text, mean_image[groups.first])
    return (image_rows + text_rows) / 2


def picked_logit_sum(image, text, scale, bias):
    """Σ_i (scale·image_i·text_{i mod M} + bias): the logits of the pairs the engines' SigLIP (positive_offset=0)
    takes as positives."""
    picked = torch.arange(image.shape[0], device=image.device) % text.shape[0]
    return (widen(scale) * row_dots(image, text[picked]) + widen(bias)).sum()


def siglip_pair_sum(siglip, image, text, scale, bias, diagonal_positive):
    """Σ over the (image, text) pairs of −log σ(z·logit) with the positives at column i mod M, or with
    ``diagonal_positive=False`` every pair a negative: Σ softplus(logit), the positives' logits added back
    (softplus(l) − softplus(−l) = l). ``siglip`` is an engine's SigLIP."""
    total = widen(siglip(image, text, scale, bias, positive_offset=0)) * image.shape[0]
    return total if diagonal_positive else total + picked_logit_sum(image, text, scale, bias)


def siglip_sum(siglip, image, text, scale, bias, labels, text_labels):
    """Σ over the (image, text) pairs of −log σ(z·(scale·s + bias)), z = +1 iff the labels match: Σ softplus(logit)
    over every pair minus the matching pairs' logits, Σ over labels of scale·(Σ images)·(Σ texts) + bias·(count ×
    count)."""
    every_pair = siglip_pair_sum(siglip, image, text, scale, bias, diagonal_positive=False)
    groups = label_groups(labels, text_labels)
    matched_dots = (group_sums(image, groups.first, groups.slots) * group_sums(text, groups.second, groups.slots)).sum()
    matched_count = (group_counts(groups.first, groups.slots) * group_counts(groups.second, groups.slots)).sum()
    return every_pair - (widen(scale) * matched_dots + widen(bias) * matched_count)
