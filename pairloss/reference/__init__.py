"""Dense pure-PyTorch oracles: the definition of every loss, and the "reference" backend.

Each function takes rows that are already normalised where the loss is on cosine similarity (the public API
does that), so that every backend receives the same inputs. ``y is None`` means the references are the anchors.

``ORACLES`` are the dense formulas evaluated in whatever dtype they are given: in float64 they are the truth the
tests measure against, in fp16/bf16 they are "plain PyTorch in that dtype", the yardstick of the low-precision
rule. The backend functions below run the same formulas on fp16/bf16 inputs in fp32 (the engines' accumulation
dtype) and return the inputs' dtype.
"""

from .._precision import backend_loss
from .circle import circle_loss as _circle
from .contrastive import contrastive_loss as _contrastive
from .decoupled_softmax import decoupled_softmax_loss as _decoupled_softmax
from .multi_similarity import multi_similarity_loss as _multi_similarity
from .softmax import ntxent_loss as _ntxent
from .softmax import supcon_loss as _supcon
from .triplet import triplet_margin_loss as _triplet_margin
from .two_tower import clip_loss as _clip
from .two_tower import mw_loss as _mw
from .two_tower import siglip_loss as _siglip
from .uniformity import uniformity_loss as _uniformity

ORACLES = {
    "circle_loss": _circle,
    "clip_loss": _clip,
    "contrastive_loss": _contrastive,
    "decoupled_softmax_loss": _decoupled_softmax,
    "multi_similarity_loss": _multi_similarity,
    "mw_loss": _mw,
    "ntxent_loss": _ntxent,
    "siglip_loss": _siglip,
    "supcon_loss": _supcon,
    "triplet_margin_loss": _triplet_margin,
    "uniformity_loss": _uniformity,
}


def unavailable_reason(device_type):
    """None: the dense oracles run wherever PyTorch does, whatever ``device_type``."""


def _backend(name):
    return backend_loss(ORACLES[name], widen_inputs=True)


circle_loss = _backend("circle_loss")
clip_loss = _backend("clip_loss")
contrastive_loss = _backend("contrastive_loss")
decoupled_softmax_loss = _backend("decoupled_softmax_loss")
multi_similarity_loss = _backend("multi_similarity_loss")
mw_loss = _backend("mw_loss")
ntxent_loss = _backend("ntxent_loss")
siglip_loss = _backend("siglip_loss")
supcon_loss = _backend("supcon_loss")
triplet_margin_loss = _backend("triplet_margin_loss")
uniformity_loss = _backend("uniformity_loss")

__all__ = [
    "ORACLES",
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
