"""Per-row log-sum-exp of a product matrix A·Bᵀ, fused: the building block of losses whose partition function
spans several reference sets (CLIP on a ring of blocks, sentence-transformers' multi-direction ranking)."""

import torch

from ._numerics import accumulation_dtype, row_dots, widen


def row_logsumexp(ntxent, a, b, *, self_offset=None):
    """log Σ_j e^{a_i·b_j} for every row of ``a`` (fp32 at least), fused and differentiable; ``ntxent`` is an
    engine's NT-Xent. With ``self_offset``, column (self_offset + i) mod M is left out of row i's sum.

    The engines' label-aware InfoNCE with exactly one positive per row (column c) gives LSE_i − a_i·b_c; adding
    a_i·b_c back costs O(B·D). The positive is picked next to the left-out column, never on it."""
    rows, columns = a.shape[0], b.shape[0]
    index = torch.arange(rows, device=a.device)
    if self_offset is not None and columns == 1:  # the only column is left out: an empty sum
        return torch.full((rows,), float("-inf"), dtype=accumulation_dtype(a.dtype), device=a.device)
    picked = index % columns if self_offset is None else (self_offset + index + 1) % columns
    ids = torch.arange(columns, device=a.device)
    excess = ntxent(a, picked, b, ids, temperature=1.0, reduction="none", self_offset=self_offset)
    return widen(excess) + row_dots(a, b[picked])
