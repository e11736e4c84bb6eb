"""The "cpp" backend: the C++/CUDA engine of csrc/ (extension pairloss._C, loaded on first use).

CPU: every loss, float32 and float64. CUDA: the losses in ``CUDA_LOSSES`` (others raise
BackendUnavailableError on CUDA tensors, so that callers pick another backend for them).
"""

from ._ops import CUDA_LOSSES, loss_unavailable_reason, unavailable_reason
from .losses import (
    circle_loss,
    clip_loss,
    contrastive_loss,
    decoupled_softmax_loss,
    multi_similarity_loss,
    mw_loss,
    ntxent_loss,
    siglip_loss,
    supcon_loss,
    triplet_margin_loss,
    uniformity_loss,
)

__all__ = [
    "CUDA_LOSSES",
    "circle_loss",
    "clip_loss",
    "contrastive_loss",
    "decoupled_softmax_loss",
    "loss_unavailable_reason",
    "multi_similarity_loss",
    "mw_loss",
    "ntxent_loss",
    "siglip_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "unavailable_reason",
    "uniformity_loss",
]
