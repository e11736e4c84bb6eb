"""The reductions every backend applies to its per-anchor losses, written once.

A loss's "mean" (PML's reducer for that loss) is Σ_k sums_k / counts_k over the loss's parts: sums of terms and
the number of terms they average over (anchors, non-zero terms, positive pairs, …). Backends return those
parts for ``reduction="parts"``: ``pairloss.distributed`` all-reduces the counts to get the exact mean of a global
batch from each rank's local rows.

Sums and divisions accumulate in fp32 at least (an fp16 sum of per-anchor losses overflows long before their
mean does); ``reduce`` returns the per-anchor losses' dtype, except for the parts, which stay wide so that they
can be added across batches or ranks without rounding.
"""

import torch

from ._numerics import widen


def ratio(total, count):
    """total / count, and 0 (with a gradient path) where count is 0: a mean over a possibly empty set."""
    return torch.where(count > 0, total / count.clamp_min(1), total * 0)


def mean_of_parts(sums, counts):
    """The loss's "mean" from its parts: Σ_k sums_k / counts_k (an empty part contributes 0), in the wider of
    fp32 and the sums' dtype (a count of pairs overflows fp16)."""
    sums = widen(sums)
    return ratio(sums, counts.to(sums.dtype)).sum()


def count_parts(terms, count):
    """Parts of a mean of ``terms`` over ``count`` of them (an int or a count tensor): (Σ terms, count)."""
    return widen(terms).sum().reshape(1), torch.as_tensor(count, device=terms.device).reshape(1)


def nonzero_parts(terms):
    """Parts of PML's AvgNonZeroReducer over ``terms``: (Σ terms, number of strictly positive terms)."""
    return widen(terms).sum().reshape(1), (terms > 0).sum().reshape(1)


def reduce(rows, reduction, parts):
    """Apply ``reduction`` to the per-anchor losses ``rows``; ``parts()`` gives (sums, counts) of the mean.

    "none", "sum" and "mean" come back in ``rows.dtype``; "parts" as (sums in fp32 or wider, float64 counts)."""
    if reduction == "none":
        return rows
    if reduction == "sum":
        return widen(rows).sum().to(rows.dtype)
    sums, counts = parts()
    if reduction == "parts":
        return widen(sums), counts.detach().to(torch.float64)
    return mean_of_parts(sums, counts).to(rows.dtype)
