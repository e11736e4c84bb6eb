"""The fused Triton engine: backend "triton" of the registry.

One engine (``_kernels``) streams reference tiles, computes S = X·Yᵀ with ``tl.dot`` in fp32, builds the pair
masks from labels in registers and hands each tile to the loss's epilogue (``_epilogues``); a STATS pass (where
the loss needs row thresholds), a LOSS pass (per-row sums, O(B) outputs, one byte per tile saying whether any
pair there has a gradient) and a backward that recomputes only the flagged tiles and forms G = ∂L/∂S in
registers. No B×M tensor exists in any pass. ``_ops`` registers the kernels as ``pairloss::`` custom ops with
fake implementations and autograd; ``losses`` reduces the per-row outputs as the reference does.

Runs on CUDA tensors, or on CPU tensors through Triton's interpreter when ``TRITON_INTERPRET=1`` was set before
triton was imported. ``PAIRLOSS_DETERMINISTIC=1`` (or ``torch.use_deterministic_algorithms(True)``) selects the
atomic-free backward; see ``_launch``.
"""

import torch

from ._launch import INTERPRETED
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


def unavailable_reason(device_type):
    """None when the engine can run on ``device_type`` tensors, else a sentence saying why not."""
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is available"
    if device_type == "cpu":
        if INTERPRETED:
            return None
        return "triton on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
    return f"triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not on {device_type}"
