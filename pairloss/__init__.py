"""pairloss: fused pairwise losses for metric learning and contrastive training, without B×B matrices."""

from . import distributed
from .backends import BackendUnavailableError, available_backends
from .functional import (
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
from .memory import CrossBatchMemory
from .modules import (
    CircleLoss,
    ClipLoss,
    ContrastiveLoss,
    DecoupledSoftmaxLoss,
    MultiSimilarityLoss,
    MWLoss,
    NTXentLoss,
    SigLipLoss,
    SupConLoss,
    TripletMarginLoss,
    UniformityLoss,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CircleLoss",
    "ClipLoss",
    "ContrastiveLoss",
    "CrossBatchMemory",
    "DecoupledSoftmaxLoss",
    "MWLoss",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "SigLipLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "UniformityLoss",
    "available_backends",
    "circle_loss",
    "clip_loss",
    "contrastive_loss",
    "decoupled_softmax_loss",
    "distributed",
    "multi_similarity_loss",
    "mw_loss",
    "ntxent_loss",
    "siglip_loss",
    "supcon_loss",
    "triplet_margin_loss",
    "uniformity_loss",
]
