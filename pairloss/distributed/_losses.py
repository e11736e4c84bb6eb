"""The losses of a global batch spread over the ranks of a process group.

"gather": each rank passes its local rows; the references are every rank's rows, all-gathered once
(differentiable: their gradients are summed back onto their owners in the backward). The fused engines compute
the local anchors against the global references, leaving each anchor's own copy out through ``self_offset`` (the
rank's offset in the global batch), so nothing B×N is built and the result is exact. "ring": every rank's block
of rows visits each rank in turn, never more than two blocks held at once (``_ring_labels`` for the label losses,
``_ring_two_tower`` for CLIP and SigLIP, ``_ring_groups`` for their positives given by ``labels``).

Value and gradient convention (DDP's): each rank returns W × (its anchors' share of the global loss), so the mean
over ranks is the loss of the concatenated batch and DDP's gradient averaging yields the exact global gradient;
embedding gradients on each rank are W × the exact global gradient of its rows, scalar parameters (CLIP's logit
scale, SigLIP's bias) get their local partials. ``reduction="none"`` returns the local rows' per-anchor losses
with their exact gradients (no W factor). All ranks must call the loss and its backward together.
"""

import torch
import torch.distributed as dist

from .. import _checks as checks
from .. import _multi_positive as multi_positive
from .. import functional
from .._labels import is_multi_hot
from .._numerics import row_dots, widen
from .._reduction import mean_of_parts
from ..backends import resolve
from ._gather import gather_rows, rank_offsets, rank_sizes
from ._ring_groups import RingGroupSums
from ._ring_labels import check_ring, ring_label_loss
from ._ring_two_tower import RingClip, RingSigLip

STRATEGIES = ("gather", "ring")


def _world(group, strategy):
    checks.check_choice("strategy", strategy, STRATEGIES)
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("pairloss.distributed needs an initialised torch.distributed process group")
    return dist.get_world_size(group), dist.get_rank(group)


def global_rows(tensors, group):
    """Gather each of ``tensors`` (local rows) from every rank; also returns this rank's offset and the total."""
    sizes = rank_sizes(tensors[0].shape[0], tensors[0].device, group)
    offset = rank_offsets(sizes)[dist.get_rank(group)]
    return [gather_rows(t, sizes, group) for t in tensors], offset, sum(sizes)


def _scale_to_global(local_sum, world, total):
    """W · (local part of a global sum) / N: the per-rank value of a mean over the N rows of the global batch."""
    return local_sum * (world / total)


def label_loss(public_function, embeddings, labels, *, group=None, strategy="gather", reduction="mean", **options):
    """``public_function`` (a pairloss label loss) on the global batch; see the module docstring."""
    checks.check_label_loss_inputs(embeddings, labels, None, None)  # locally, before any collective
    checks.check_positive_weights(options.get("positive_weights", "uniform"), labels)
    checks.check_reduction(reduction)
    checks.check_choice("strategy", strategy, STRATEGIES)
    # A ring call the engine cannot run is refused at once, whatever the world size.
    ring_call = check_ring(public_function, embeddings, labels, options) if strategy == "ring" else None
    world, _ = _world(group, strategy)
    if world == 1:
        return public_function(embeddings, labels, reduction=reduction, **options)
    local_reduction = "parts" if reduction == "mean" else reduction
    if strategy == "ring":
        local = ring_label_loss(public_function.__name__, embeddings, labels, local_reduction, group, ring_call)
    else:
        # Class ids travel as int64, multi-hot rows as uint8 (the collectives' types), made bool again.
        multi_hot = is_multi_hot(labels)
        wire = labels.to(torch.uint8 if multi_hot else torch.int64)
        (refs, ref_labels), offset, _ = global_rows([embeddings, wire], group)
        ref_labels = ref_labels.bool() if multi_hot else ref_labels
        local = public_function(
            embeddings, labels, refs, ref_labels, self_offset=offset, reduction=local_reduction, **options
        )
    if reduction == "none":
        return local.to(embeddings.dtype)
    if reduction == "sum":
        return (local * world).to(embeddings.dtype)
    sums, counts = local
    dist.all_reduce(counts, group=group)  # the global number of terms each part averages over
    return (mean_of_parts(sums, counts) * world).to(embeddings.dtype)


def clip_rows(ntxent, image_features, text_features, images, texts, offset, scale):
    """(image cross-entropy + text cross-entropy) / 2 of each local pair against the global towers ``images``,
    ``texts`` (where the local rows sit from row ``offset`` on); ``ntxent`` is an engine's NT-Xent.

    Each direction's cross-entropy is label-aware InfoNCE with the global row index as the label (one positive
    per row) on logits (scale·a)·b: NT-Xent at temperature 1, the scale's gradient through autograd."""
    local_ids = torch.arange(offset, offset + image_features.shape[0], device=image_features.device)
    global_ids = torch.arange(texts.shape[0], device=image_features.device)

    def cross_entropy(anchors, references):
        return ntxent(scale * anchors, local_ids, references, global_ids, temperature=1.0, reduction="none")

    return (cross_entropy(image_features, texts) + cross_entropy(text_features, images)) / 2


def clip_loss(image_features, text_features, logit_scale, *, labels=None, reduction="mean", backend="auto",
              group=None, strategy="gather"):  # fmt: skip
    """OpenCLIP's ClipLoss on the global batch: each local image against every rank's texts and vice versa.
    ``labels`` (ids consistent across ranks): the multi-positive form of ``pairloss.clip_loss``."""
    checks.check_clip_inputs(image_features, text_features, logit_scale)  # locally, before any collective
    checks.check_reduction(reduction)
    checks.check_backend(backend)
    if labels is not None:
        checks.check_labels("labels", labels, image_features.shape[0], "image_features")
    world, _ = _world(group, strategy)
    if world == 1:
        return functional.clip_loss(
            image_features, text_features, logit_scale, labels=labels, reduction=reduction, backend=backend
        )
    scale = functional._as_scalar_tensor(logit_scale, image_features)
    ntxent = resolve(backend, image_features.device, "ntxent_loss")
    if strategy == "ring":
        sizes = rank_sizes(image_features.shape[0], image_features.device, group)
        total = sum(sizes)
        half_lse = RingClip.apply(image_features, text_features, scale, sizes, group, ntxent)
        if labels is None:
            rows = half_lse - scale * row_dots(image_features, text_features)
        else:  # each direction's mean positive logit, from the per-label sums of the other tower's global rows
            ids = labels.to(torch.int64)
            text_sums, image_sums, counts = RingGroupSums.apply(ids, ids, sizes, group, text_features, image_features)
            positive = row_dots(image_features, text_sums) + row_dots(text_features, image_sums)
            rows = half_lse - widen(scale) * positive / (2 * counts)
    elif labels is None:
        (images, texts), offset, total = global_rows([image_features, text_features], group)
        rows = clip_rows(ntxent, image_features, text_features, images, texts, offset, scale)
    else:
        (images, texts, all_labels), _, total = global_rows(
            [image_features, text_features, labels.to(torch.int64)], group
        )
        rows = multi_positive.clip_rows(ntxent, image_features, text_features, images, texts, labels, all_labels, scale)
    rows = functional._with_guard(widen(rows), image_features, text_features)
    if reduction == "none":
        return rows.to(image_features.dtype)
    loss = rows.sum() * world if reduction == "sum" else _scale_to_global(rows.sum(), world, total)
    return loss.to(image_features.dtype)


def siglip_loss(image_features, text_features, logit_scale, logit_bias, *, labels=None, backend="auto", group=None,
                strategy="gather"):  # fmt: skip
    """OpenCLIP's SigLipLoss on the global batch: every (image, text) pair once, local images × global texts.
    ``labels`` (ids consistent across ranks, one per image–text pair): z = +1 iff the ids match."""
    checks.check_siglip_inputs(image_features, text_features, logit_scale, logit_bias)
    checks.check_backend(backend)
    if labels is not None:
        checks.check_labels("labels", labels, image_features.shape[0], "image_features")
    world, _ = _world(group, strategy)
    if world == 1:
        return functional.siglip_loss(
            image_features, text_features, logit_scale, logit_bias, labels=labels, backend=backend
        )
    scale = functional._as_scalar_tensor(logit_scale, image_features)
    bias = functional._as_scalar_tensor(logit_bias, image_features)
    if strategy == "ring":
        sizes = rank_sizes(image_features.shape[0], image_features.device, group)
        siglip = resolve(backend, image_features.device, "siglip_loss")
        local_sum, total = (
            RingSigLip.apply(image_features, text_features, scale, bias, sizes, group, siglip),
            sum(sizes),
        )
        if labels is not None:  # the diagonal positives back to negatives, then the pairs with matching labels
            ids = labels.to(torch.int64)
            text_sums, counts = RingGroupSums.apply(ids, ids, sizes, group, text_features)
            local_sum = local_sum + multi_positive.picked_logit_sum(image_features, text_features, scale, bias)
            local_sum = local_sum - (
                widen(scale) * row_dots(image_features, text_sums).sum() + widen(bias) * counts.sum()
            )
    elif labels is not None:
        (texts, text_labels), _, total = global_rows([text_features, labels.to(torch.int64)], group)
        siglip = resolve(backend, image_features.device, "siglip_loss")
        local_sum = multi_positive.siglip_sum(siglip, image_features, texts, scale, bias, labels, text_labels)
    else:
        (texts,), offset, total = global_rows([text_features], group)
        # Σ over the local images' pairs / local rows
        local_mean = functional.siglip_loss(image_features, texts, scale, bias, positive_offset=offset, backend=backend)
        local_sum = local_mean * image_features.shape[0]
    local_sum = functional._with_guard(widen(local_sum), image_features, text_features)
    return _scale_to_global(local_sum, world, total).to(image_features.dtype)
