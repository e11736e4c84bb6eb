"""Dense building blocks shared by the reference oracles.

Everything here materialises B×M matrices on purpose: the oracles are meant to be read next to the papers'
formulas, not to be fast. The fused engines must reproduce these numbers without any B×M tensor.
"""

import torch

from .._numerics import distance_from_gram


def pair_masks(labels, ref_labels):
    """Positive and negative pair masks (B×M).

    ``ref_labels is None`` means the references are the anchors themselves, so self-pairs are not positives.
    """
    if ref_labels is None:
        same = labels[:, None] == labels[None, :]
        self_pair = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return same & ~self_pair, ~same
    same = labels[:, None] == ref_labels[None, :]
    return same, ~same


def l2_distance(x, y):
    """Euclidean distance matrix from the Gram matrix, as PML's LpDistance (cdist) does for large batches.

    Squared distances below the Gram form's rounding noise are 0 (``pairloss._numerics``), so duplicate rows are
    at distance 0 with finite (zero) gradients.
    """
    x_norms, y_norms = (x * x).sum(1)[:, None], (y * y).sum(1)[None, :]
    return distance_from_gram(x_norms + y_norms - 2.0 * (x @ y.T), x_norms + y_norms, x.dtype)


def masked_logsumexp(z, mask, empty_value=0.0):
    """Row-wise log Σ_{mask} e^z; rows with an empty mask give ``empty_value`` with finite gradients."""
    empty = ~mask.any(1)
    z = z.masked_fill(~mask, float("-inf")).masked_fill(empty[:, None], 0.0)
    return torch.logsumexp(z, 1).masked_fill(empty, empty_value)


def log1p_sum_exp(z, mask):
    """Row-wise log(1 + Σ_{mask} e^z): the "add one" log-sum-exp of multi-similarity; 0 for empty rows."""
    zero_column = torch.zeros_like(z[:, :1])
    return torch.logsumexp(torch.cat([z.masked_fill(~mask, float("-inf")), zero_column], 1), 1)


def mean_of_nonzero(losses):
    """PML's AvgNonZeroReducer: the mean of the strictly positive entries, 0 (with a gradient path) if none.

    Written without a data-dependent branch, so that torch.compile traces it in one graph."""
    nonzero = losses > 0
    return (losses * nonzero).sum() / nonzero.sum().clamp_min(1)


def mean_or_zero(losses):
    """PML's MeanReducer, with an empty set of terms giving 0 instead of NaN."""
    if losses.numel() == 0:
        return losses.sum()
    return losses.mean()


def reduce_rows(row_losses, reduction, mean):
    """Apply ``reduction`` to per-anchor losses; ``mean`` is the loss-specific reducer for "mean"."""
    if reduction == "none":
        return row_losses
    if reduction == "sum":
        return row_losses.sum()
    return mean()
