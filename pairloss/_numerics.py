"""Numerical rules that every backend follows, so that backends agree where rounding would otherwise decide.

Precision follows the **accumulation**, not the input: fp16/bf16 rows are GEMM operands whose products are summed
in fp32 (tensor cores, BLAS), and everything after the GEMM — side terms, epilogues, reductions, scalars — is
fp32. Float64 stays float64.
"""

import torch

# Distances come from the Gram form |x|² + |y|² − 2·x·y, whose rounding noise is a few ulps of |x|² + |y|² in
# the dtype it is accumulated in (about √D ulps for long rows). A squared distance below this many ulps of
# |x|² + |y|² cannot be told from 0 and is taken as 0: identical rows are at distance exactly 0, with a zero (not
# infinite) distance gradient.
ZERO_DISTANCE_ULPS = 64


def accumulation_dtype(dtype):
    """The dtype a Gram form of ``dtype`` operands is accumulated in, and the rest of a loss computed in:
    float32 for fp16/bf16 (and float32), float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def widen(tensor):
    """``tensor`` in its accumulation dtype (no copy when it already is)."""
    return tensor.to(accumulation_dtype(tensor.dtype))


def squared_norms(rows):
    """|x_i|² of every row, accumulated in fp32 (at least) from the rows as stored: a side term of the Gram
    form, which must carry the same precision as the GEMM's fp32 accumulator."""
    wide = widen(rows)
    return (wide * wide).sum(1)


def row_dots(a, b):
    """a_i · b_i for every row pair (matching logits, positive scores), accumulated in fp32 (at least)."""
    return (widen(a) * widen(b)).sum(1)


def distance_from_gram(squared, norms_sum, dtype):
    """L2 distance from squared distances of a Gram form whose operands are ``dtype`` (the zero-distance rule
    takes the ulps of its accumulation dtype: fp32 for fp16/bf16 operands)."""
    eps = torch.finfo(accumulation_dtype(dtype)).eps
    positive = squared > ZERO_DISTANCE_ULPS * eps * norms_sum
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)


def softplus(z):
    """log(1 + e^z) without F.softplus's threshold (which returns z for z > 20, off by up to 2e-9): exact to the
    last bit in float64, with the gradient σ(z) everywhere."""
    return torch.logaddexp(z, torch.zeros_like(z))


def unit_rows(rows, dtype=None):
    """Rows scaled to unit L2 norm (cosine-similarity losses), computed in fp32 (at least) and stored in ``dtype``
    (default: the rows' own), the dtype of the engine's GEMM operands; the gradient through the normalisation is
    computed in fp32 too."""
    return torch.nn.functional.normalize(widen(rows), dim=1).to(rows.dtype if dtype is None else dtype)
