"""Numerical rules that every backend follows, so that backends agree where rounding would otherwise decide."""

import torch

# Distances come from the Gram form |x|² + |y|² − 2·x·y, whose rounding noise is a few ulps of |x|² + |y|²
# (about √D ulps for long rows). A squared distance below this many ulps of |x|² + |y|² cannot be told from 0
# and is taken as 0: identical rows are at distance exactly 0, with a zero (not infinite) distance gradient.
ZERO_DISTANCE_ULPS = 64


def distance_from_gram(squared, norms_sum, dtype):
    """L2 distance from squared distances computed through the Gram form in ``dtype``."""
    positive = squared > ZERO_DISTANCE_ULPS * torch.finfo(dtype).eps * norms_sum
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt(), 0.0)
