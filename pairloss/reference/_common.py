"""Dense building blocks shared by the reference oracles.

Everything here materialises B×M matrices on purpose: the oracles are meant to be read next to the papers'
formulas, not to be fast. The fused engines must reproduce these numbers without any B×M tensor.
"""

import torch

from .._labels import jaccard, shared_label
from .._numerics import distance_from_gram


def per_anchor(value):
    """A hyper-parameter as given (a number) or, per anchor ((B,) tensor), as a column over each row's pairs."""
    return value[:, None] if isinstance(value, torch.Tensor) else value


def own_columns(rows, cols, offset, device):
    """B×M mask of each anchor's own copy among the references: column (offset + i) mod M for row i."""
    own = (torch.arange(rows, device=device) + offset) % cols
    return own[:, None] == torch.arange(cols, device=device)[None, :]


def pair_masks(labels, ref_labels, self_offset=None):
    """Positive and negative pair masks (B×M); an anchor's own copy is neither. Labels are class ids (positive:
    equal) or multi-hot rows (positive: at least one label shared).

    ``ref_labels is None`` means the references are the anchors themselves (own copy: the diagonal);
    ``self_offset`` says that anchor i's own copy is reference row (self_offset + i) mod M (a memory bank or a
    gathered batch holding the anchors).
    """
    if ref_labels is None:
        ref_labels, self_offset = labels, 0
    same = shared_label(labels, ref_labels)
    if self_offset is None:
        return same, ~same
    kept = ~own_columns(len(labels), len(ref_labels), self_offset, labels.device)
    return same & kept, ~same & kept


def positive_weights(pos, labels, ref_labels, weighting, dtype):
    """Each positive pair's weight (B×M in ``dtype``, 0 off the positives): 1 ("uniform"), or the Jaccard
    similarity of the pair's label sets ("jaccard")."""
    if weighting == "uniform":
        return pos.to(dtype)
    return (jaccard(labels, labels if ref_labels is None else ref_labels) * pos).to(dtype)


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
