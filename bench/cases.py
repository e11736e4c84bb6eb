"""What is benchmarked: the losses (inputs, FLOP model) and the implementations compared on them."""

import contextlib
import functools
import os
from dataclasses import dataclass, field
from unittest import mock

import torch

import pairloss

# Multi-label batches: each row holds this many of MULTI_LABELS labels (drawn at random, so rows share some).
MULTI_LABELS, LABELS_PER_ROW = 1000, 3


@dataclass(frozen=True)
class Loss:
    name: str
    function: object  # the pairloss function
    towers: int  # 1: anchors are the references (X=Y); 2: two towers
    options: dict = field(default_factory=dict)
    multi_hot: bool = False  # labels: a (B, MULTI_LABELS) bool matrix instead of B class ids

    def make_inputs(self, rows, dim, dtype, device, seed=0):
        """Leaf tensors that need gradients, plus the rest of the positional arguments."""
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def features():
            x = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1)
            return x.to(device=device, dtype=dtype).requires_grad_()

        if self.multi_hot:
            labels = torch.zeros(rows, MULTI_LABELS, dtype=torch.bool)
            labels.scatter_(1, torch.randint(0, MULTI_LABELS, (rows, LABELS_PER_ROW), generator=gen), True)
            return [features()], [labels.to(device)]
        if self.towers == 1 and self.name != "uniformity":
            labels = torch.randint(0, max(rows // 4, 1), (rows,), generator=gen).to(device)
            return [features()], [labels]
        if self.name == "uniformity":
            return [features()], []
        first, second = features(), features()
        if self.name == "clip":
            return [first, second, torch.tensor(1 / 0.07, device=device, dtype=dtype).requires_grad_()], []
        if self.name == "siglip":
            scale = torch.tensor(10.0, device=device, dtype=dtype).requires_grad_()
            bias = torch.tensor(-10.0, device=device, dtype=dtype).requires_grad_()
            return [first, second, scale, bias], []
        if self.name == "decoupled_softmax":
            return [first, second], [torch.arange(rows, device=device)[:, None]]
        return [first, second], []

    def call(self, leaves, rest, backend):
        if self.towers == 1 and rest:
            return self.function(leaves[0], *rest, backend=backend, **self.options)
        return self.function(*leaves, *rest, backend=backend, **self.options)

    def gemm_flops(self, rows, dim):
        """FLOPs of the matrix products a fused fwd+bwd cannot avoid: the forward similarity pass, its recompute
        in the backward and the gradient pass (X=Y: dX = (G+Gᵀ)·X is one product; two towers need dX and dY).
        Dense implementations keep S and skip the recompute, so their share of the roofline can pass 100%."""
        passes = 3 if self.towers == 1 else 4
        return passes * 2 * rows * rows * dim


LOSSES = {
    loss.name: loss
    for loss in [
        Loss("multi_similarity", pairloss.multi_similarity_loss, 1),
        Loss("triplet", pairloss.triplet_margin_loss, 1),
        Loss("contrastive", pairloss.contrastive_loss, 1),
        Loss("circle", pairloss.circle_loss, 1),
        Loss("ntxent", pairloss.ntxent_loss, 1),
        Loss("supcon", pairloss.supcon_loss, 1),
        Loss("supcon_multi_label", pairloss.supcon_loss, 1, multi_hot=True),
        Loss("supcon_jaccard", pairloss.supcon_loss, 1, {"positive_weights": "jaccard"}, multi_hot=True),
        Loss("clip", pairloss.clip_loss, 2),
        Loss("siglip", pairloss.siglip_loss, 2),
        Loss("decoupled_softmax", pairloss.decoupled_softmax_loss, 2),
        Loss("mw", pairloss.mw_loss, 2),
        Loss("uniformity", pairloss.uniformity_loss, 1),
    ]
}


# The losses pytorch-metric-learning has (with class-id labels only).
PML_LOSSES = ("multi_similarity", "triplet", "contrastive", "circle", "ntxent", "supcon")


def _pml_loss(loss_name):
    """pytorch-metric-learning's equivalent of a label loss (with the same miner), or None."""
    if loss_name not in PML_LOSSES:
        return None
    try:
        from pytorch_metric_learning import losses, miners
    except ImportError:
        return None
    pairs = {
        "multi_similarity": (losses.MultiSimilarityLoss, miners.MultiSimilarityMiner),
        "triplet": (lambda: losses.TripletMarginLoss(margin=0.05), miners.BatchHardMiner),
        "contrastive": (losses.ContrastiveLoss, None),
        "circle": (losses.CircleLoss, None),
        "ntxent": (losses.NTXentLoss, None),
        "supcon": (losses.SupConLoss, None),
    }
    make_loss, make_miner = pairs[loss_name]
    loss_fn, miner = make_loss(), (make_miner() if make_miner else None)

    def run(leaves, rest):
        embeddings, labels = leaves[0], rest[0]
        mined = miner(embeddings, labels) if miner is not None else None
        return loss_fn(embeddings, labels, mined)

    return run


@dataclass(frozen=True)
class Implementation:
    name: str
    run: object  # (leaves, rest) -> loss
    dense: bool  # materialises B×B matrices (memory grows with B²)
    setting: object = contextlib.nullcontext  # () -> context manager held over the whole case (its backward too)


# PAIRLOSS_DETERMINISTIC=1 while held (restored after): the Triton engine's atomic-free backward (two launches,
# each recomputing S; X = Y the mirrored launch) unsplit, instead of the atomic one (the same owners split, adding to
# their rows atomically).
_deterministic_backward = functools.partial(mock.patch.dict, os.environ, {"PAIRLOSS_DETERMINISTIC": "1"})
# PAIRLOSS_MIRRORED_BACKWARD=0 while held: X = Y, the symmetric backward (half the tiles, both row blocks' dX added
# atomically per tile) instead of the mirrored one (every tile, no atomic per tile).
_symmetric_backward = functools.partial(mock.patch.dict, os.environ, {"PAIRLOSS_MIRRORED_BACKWARD": "0"})


def implementations(loss, device, wanted=None):
    """The implementations of ``loss`` on ``device``: (available ones, {name: why missing})."""
    found, missing = [], {}
    for backend in pairloss.backends.BACKEND_NAMES:
        name = f"pairloss-{backend}"
        reason = pairloss.backends.unavailable_reason(backend, device.type)
        if reason is None and not hasattr(pairloss.backends._load(backend)[0], loss.function.__name__):
            reason = f"{backend} does not implement {loss.function.__name__}"
        if reason:
            missing[name] = reason
        else:
            found.append(Implementation(name, lambda lv, r, b=backend: loss.call(lv, r, b), backend == "reference"))
            if backend == "triton" and device.type == "cuda":
                # Which backward is faster on a GPU is open. Two towers: the owners split across programs or not.
                # X = Y: the mirrored one (both modes) does 2 GEMM-passes with no atomics, the symmetric one 1.5 with
                # both dX blocks added atomically per tile.
                run = found[-1].run
                found.append(Implementation(f"{name}-deterministic", run, False, _deterministic_backward))
                if loss.towers == 1:
                    found.append(Implementation(f"{name}-symmetric", run, False, _symmetric_backward))
    pml = _pml_loss(loss.name)
    if pml is not None:
        found.append(Implementation("pml", pml, True))
    elif loss.name in PML_LOSSES:
        missing["pml"] = "pytorch-metric-learning is not installed (pip install '.[bench]')"
    compiled = torch.compile(lambda lv, r: loss.call(lv, r, "reference"), dynamic=False)
    found.append(Implementation("torch.compile-dense", compiled, True))
    if loss.name == "clip" and device.type == "cuda":
        infcl = _infcl_clip()
        if infcl is None:
            missing["inf-cl"] = "inf-cl is not installed (pip install inf-cl)"
        else:
            found.append(Implementation("inf-cl", infcl, False))
    if wanted:
        found = [impl for impl in found if impl.name in wanted or impl.name.removeprefix("pairloss-") in wanted]
    return found, missing


def _infcl_clip():
    try:
        from inf_cl import cal_inf_loss
    except ImportError:
        return None

    def run(leaves, rest):
        # Inf-CL computes one direction; CLIP's loss is the mean of image→text and text→image.
        image, text, scale = leaves
        return (cal_inf_loss(image, text, scale=scale) + cal_inf_loss(text, image, scale=scale)) / 2

    return run
