"""pytorch-metric-learning's names and call signature on pairloss's fused losses.

    from pairloss.integrations import pml
    loss_func = pml.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    miner = pml.MultiSimilarityMiner(epsilon=0.1)
    loss = loss_func(embeddings, labels, miner(embeddings, labels))   # PML's usual three lines

The miners here return no indices: their result asks the loss to mine inside its fused kernels, with the same
semantics as PML's miner (MultiSimilarityMiner for MultiSimilarityLoss, BatchHardMiner for TripletMarginLoss).
What cannot be fused — arbitrary ``indices_tuple``, other distances, reducers, regularizers, ``swap`` — is
refused with an error saying what to use instead, never computed differently. PML itself is not needed.
"""

import dataclasses
from typing import ClassVar

import torch

from .. import _checks as checks
from .. import functional, memory

COSINE, LP = "CosineSimilarity", "LpDistance"


def _check_distance(owner, distance, default):
    """Accept ``distance`` only when it is PML's default for ``owner`` (normalised rows, p = 2, power 1)."""
    if distance is None:
        return
    name = type(distance).__name__
    same = (
        name == default
        and getattr(distance, "normalize_embeddings", False)
        and getattr(distance, "p", None) == 2
        and getattr(distance, "power", None) == 1
    )
    if not same:
        raise ValueError(
            f"{owner}: distance={name} is not supported; pairloss computes it on {default}() of normalised rows "
            "(drop the argument, or use pytorch-metric-learning's class for other distances)"
        )


def _refuse_extras(owner, kwargs, default_distance):
    """PML's base-class keywords: the default distance and no reducer or regularizer are what pairloss computes."""
    _check_distance(owner, kwargs.pop("distance", None), default_distance)
    for name in ("reducer", "embedding_regularizer"):
        if kwargs.pop(name, None) is not None:
            raise ValueError(
                f"{owner}: {name} is not supported; pairloss reduces as the loss's default PML reducer and adds no "
                "regularizer (use pytorch-metric-learning's class for custom ones)"
            )
    kwargs.pop("embedding_reg_weight", None)  # only weighs a regularizer
    kwargs.pop("collect_stats", None)  # PML's statistics recording; nothing to record in a fused kernel
    if kwargs:
        raise TypeError(f"{owner} got unexpected keyword arguments: {', '.join(sorted(kwargs))}")


@dataclasses.dataclass(frozen=True)
class FusedMining:
    """What a pairloss miner returns in place of PML's index tuples: the loss's options that make its fused
    kernel mine the pairs (or triplets) itself."""

    miner: str
    options: dict


class MultiSimilarityMiner:
    """PML's MultiSimilarityMiner(epsilon): for MultiSimilarityLoss (and CrossBatchMemory around it)."""

    def __init__(self, epsilon=0.1, **kwargs):
        checks.check_non_negative(epsilon=epsilon)
        _refuse_extras("MultiSimilarityMiner", kwargs, COSINE)
        self.epsilon = epsilon

    def __call__(self, embeddings=None, labels=None, ref_emb=None, ref_labels=None):
        return FusedMining("MultiSimilarityMiner", {"mining": True, "epsilon": self.epsilon})


class BatchHardMiner:
    """PML's BatchHardMiner: each anchor's farthest positive and closest negative, for TripletMarginLoss."""

    def __init__(self, **kwargs):
        _refuse_extras("BatchHardMiner", kwargs, LP)

    def __call__(self, embeddings=None, labels=None, ref_emb=None, ref_labels=None):
        return FusedMining("BatchHardMiner", {"mining": "batch_hard"})


class _Loss(torch.nn.Module):
    """PML's loss call: ``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``."""

    function = None  # the pairloss loss
    default_distance = None
    miners = ()  # the names of the miners whose pairs the loss mines itself
    unmined: ClassVar[dict] = {}  # the options without a miner (PML: every pair / every triplet)

    def __init__(self, options, kwargs):
        super().__init__()
        _refuse_extras(type(self).__name__, kwargs, self.default_distance)
        self.options = options
        self.backend = "auto"

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None, *,
                 self_offset=None):  # fmt: skip
        if labels is None:
            raise ValueError(f"{type(self).__name__}: labels is required (pairloss's losses take labels, not pairs)")
        options = dict(self.options, **self._mining(indices_tuple))
        return type(self).function(
            embeddings, labels, ref_emb, ref_labels, self_offset=self_offset, backend=self.backend, **options
        )

    def _mining(self, indices_tuple):
        name = type(self).__name__
        if indices_tuple is None:
            return self.unmined
        if isinstance(indices_tuple, FusedMining) and indices_tuple.miner in self.miners:
            return indices_tuple.options
        accepted = " or ".join(f"pairloss.integrations.pml.{miner}" for miner in self.miners) or "no miner"
        raise TypeError(
            f"{name}: indices_tuple must come from {accepted} (pairloss mines inside its fused kernels and takes no "
            "explicit pair or triplet indices); use pytorch-metric-learning's loss for other miners"
        )

    def extra_repr(self):
        return ", ".join(f"{name}={value!r}" for name, value in self.options.items())


class MultiSimilarityLoss(_Loss):
    function = staticmethod(functional.multi_similarity_loss)
    default_distance = COSINE
    miners = ("MultiSimilarityMiner",)
    unmined: ClassVar[dict] = {"mining": False}

    def __init__(self, alpha=2, beta=50, base=0.5, **kwargs):
        super().__init__({"alpha": alpha, "beta": beta, "base": base}, kwargs)


class TripletMarginLoss(_Loss):
    function = staticmethod(functional.triplet_margin_loss)
    default_distance = LP
    miners = ("BatchHardMiner",)
    unmined: ClassVar[dict] = {"mining": "all"}

    def __init__(self, margin=0.05, swap=False, smooth_loss=False, triplets_per_anchor="all", **kwargs):
        if swap:
            raise ValueError("TripletMarginLoss: swap=True is not supported by pairloss's fused triplet loss")
        if triplets_per_anchor != "all":
            raise ValueError(
                f"TripletMarginLoss: triplets_per_anchor={triplets_per_anchor!r} is not supported (random triplet "
                "sampling); pairloss uses every triplet, or the batch-hard ones with BatchHardMiner"
            )
        super().__init__({"margin": margin, "soft": bool(smooth_loss)}, kwargs)


class ContrastiveLoss(_Loss):
    function = staticmethod(functional.contrastive_loss)
    default_distance = LP

    def __init__(self, pos_margin=0, neg_margin=1, **kwargs):
        super().__init__({"pos_margin": pos_margin, "neg_margin": neg_margin}, kwargs)


class CircleLoss(_Loss):
    function = staticmethod(functional.circle_loss)
    default_distance = COSINE

    def __init__(self, m=0.4, gamma=80, **kwargs):
        super().__init__({"m": m, "gamma": gamma}, kwargs)


class NTXentLoss(_Loss):
    function = staticmethod(functional.ntxent_loss)
    default_distance = COSINE

    def __init__(self, temperature=0.07, **kwargs):
        super().__init__({"temperature": temperature}, kwargs)


class SupConLoss(_Loss):
    function = staticmethod(functional.supcon_loss)
    default_distance = COSINE

    def __init__(self, temperature=0.1, **kwargs):
        super().__init__({"temperature": temperature}, kwargs)


class CrossBatchMemory(memory.CrossBatchMemory):
    """PML's CrossBatchMemory(loss, embedding_size, memory_size, miner): ``loss`` one of this module's losses,
    ``miner`` None (every pair with the memory) or a pairloss miner the loss accepts. Same buffers
    (``embedding_memory``, ``label_memory``, ``reset_queue()``) and semantics as pairloss's CrossBatchMemory."""

    def __init__(self, loss, embedding_size, memory_size=1024, miner=None):
        if not isinstance(loss, _Loss):
            raise TypeError(f"loss must be a loss of pairloss.integrations.pml, got {type(loss).__name__}")
        if miner is not None:
            loss._mining(miner())  # refuses a miner the loss cannot fuse, now rather than at the first batch
        super().__init__(loss, embedding_size, memory_size)
        self.miner = miner

    def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
        if indices_tuple is not None:
            raise TypeError("CrossBatchMemory: indices_tuple is not supported; pass a pairloss miner as miner=")
        return super().forward(embeddings, labels, enqueue_mask)

    def _loss(self, embeddings, labels, ref_emb, ref_labels, self_offset):
        mined = None if self.miner is None else self.miner()
        return self.loss(embeddings, labels, mined, ref_emb, ref_labels, self_offset=self_offset)
