"""The "cpp" backend: the C++/CUDA engine of csrc/ (extension pairloss._C, loaded on first use).

Every loss on CPU (the tiled engine) and CUDA (the chunked engine: cuBLAS on row chunks and fused epilogue kernels);
float64, float32, and float16/bfloat16 (widened to float32 on the CPU, tensor-core GEMM operands on CUDA).
"""

from ._ops import unavailable_reason
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
    "circle_loss",
    "clip_loss",
    "contrastive_loss",
    "decoupled_softmax_loss",
    "multi_similarity_loss",
    "mw_loss",
    "ntxent_loss",
    "siglip_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "unavailable_reason",
    "uniformity_loss",
]
