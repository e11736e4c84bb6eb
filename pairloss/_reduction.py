"""The reductions every backend applies to its per-anchor losses, written once.

A loss's "mean" (PML's reducer for that loss) is Σ_k sums_k / counts_k over the loss's parts: sums of terms and
the number of terms they average over (anchors, non-zero terms, positive pairs, …). Backends return those
parts for ``reduction="parts"`` (internal, not accepted by the public API): ``pairloss.distributed`` all-reduces
the counts to get the exact mean of a global batch from each rank's local rows.
"""

import torch


def ratio(total, count):
    """total / count, and 0 (with a gradient path) where count is 0: a mean over a possibly empty set."""
    return torch.where(count > 0, total / count.clamp_min(1), total * 0)


def mean_of_parts(sums, counts):
    """The loss's "mean" from its parts: Σ_k sums_k / counts_k (an empty part contributes 0).

    Divided in at least fp32: a count of pairs overflows fp16."""
    wide = torch.promote_types(sums.dtype, torch.float32)
    return ratio(sums.to(wide), counts.to(wide)).sum().to(sums.dtype)


def count_parts(terms, count):
    """Parts of a mean of ``terms`` over ``count`` of them (an int or a count tensor): (Σ terms, count)."""
    return terms.sum().reshape(1), torch.as_tensor(count, device=terms.device).reshape(1)


def nonzero_parts(terms):
    """Parts of PML's AvgNonZeroReducer over ``terms``: (Σ terms, number of strictly positive terms)."""
    return terms.sum().reshape(1), (terms > 0).sum().reshape(1)


def reduce(rows, reduction, parts):
    """Apply ``reduction`` to the per-anchor losses ``rows``; ``parts()`` gives (sums, counts) of the mean."""
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    sums, counts = parts()
    if reduction == "parts":
        return sums, counts.detach().to(torch.float64)
    return mean_of_parts(sums, counts)
