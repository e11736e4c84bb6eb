"""Dense pure-PyTorch oracles: the definition of every loss, and the "reference" backend.

Each function takes rows that are already normalised where the loss is on cosine similarity (the public API
does that), so that every backend receives the same inputs. ``y is None`` means the references are the anchors.
"""

from .circle import circle_loss
from .contrastive import contrastive_loss
from .decoupled_softmax import decoupled_softmax_loss
from .multi_similarity import multi_similarity_loss
from .softmax import ntxent_loss, supcon_loss
from .triplet import triplet_margin_loss
from .two_tower import clip_loss, mw_loss, siglip_loss
from .uniformity import uniformity_loss


def unavailable_reason(device_type):
    """None: the dense oracles run wherever PyTorch does, whatever ``device_type``."""


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
