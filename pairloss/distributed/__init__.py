"""Exact global-batch losses on torch.distributed: the pairloss losses with ``group=None, strategy="gather"``
(all label losses, CLIP, SigLIP) or ``strategy="ring"`` (the same except the all-triplets variant, the label
losses on the C++ engine for CPU tensors and on Triton elsewhere; see ``_ring``).

Each rank passes its local rows (local batch sizes may differ); labels are global, so positives may sit on
other ranks. The value each rank returns is W × its rows' share of the loss of the concatenated batch: their
mean over the ranks equals the single-process loss, and under DDP's gradient averaging the parameters get the
exact global gradient (see ``_losses`` for the convention). A world of one rank makes no collective call.

    loss = pairloss.distributed.multi_similarity_loss(embeddings, labels)  # inside a DDP training step
"""

import functools
import inspect

from .. import functional
from ._losses import STRATEGIES, clip_loss, label_loss, siglip_loss


def _distributed(public_function):
    """The label loss ``public_function`` on the global batch: its keywords, minus ref_emb/ref_labels/self_offset
    (the references are the global batch), plus ``group`` and ``strategy``."""

    @functools.wraps(public_function)
    def loss(embeddings, labels, *, group=None, strategy="gather", **options):
        return label_loss(public_function, embeddings, labels, group=group, strategy=strategy, **options)

    signature = inspect.signature(public_function)
    kept = [p for name, p in signature.parameters.items() if name not in ("ref_emb", "ref_labels", "self_offset")]
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d) for n, d in (("group", None),
             ("strategy", "gather"))]  # fmt: skip
    loss.__signature__ = signature.replace(parameters=kept + extra)
    loss.__doc__ = f"Global-batch form of :func:`pairloss.{public_function.__name__}` (module docstring).\n\n" + (
        public_function.__doc__ or ""
    )
    return loss


multi_similarity_loss = _distributed(functional.multi_similarity_loss)
triplet_margin_loss = _distributed(functional.triplet_margin_loss)
contrastive_loss = _distributed(functional.contrastive_loss)
circle_loss = _distributed(functional.circle_loss)
ntxent_loss = _distributed(functional.ntxent_loss)
supcon_loss = _distributed(functional.supcon_loss)

__all__ = [
    "STRATEGIES",
    "circle_loss",
    "clip_loss",
    "contrastive_loss",
    "multi_similarity_loss",
    "ntxent_loss",
    "siglip_loss",
    "supcon_loss",
    "triplet_margin_loss",
]
