"""Drop-in OpenCLIP losses computed by pairloss's fused engines: ``ClipLoss`` and ``SigLipLoss`` with OpenCLIP's
constructors and forward signatures, the same values and the same per-rank gradients (on torch.distributed),
and no B×B logits.

    from pairloss.integrations.open_clip import ClipLoss
    loss = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)

OpenCLIP itself is not needed. Both classes use torch.distributed's default process group when
``world_size > 1`` (checked against ``rank`` and ``world_size``); ``use_horovod=True`` is refused.
"""

import torch
import torch.distributed as dist

from .. import _checks as checks
from .. import distributed, functional
from .._numerics import widen
from ..backends import resolve
from ..distributed._gather import all_gather_padded, gather_rows, rank_offsets, rank_sizes
from ..distributed._losses import clip_rows

# OpenCLIP's SigLIP exchange patterns -> the pairloss strategy with the same result (neighbour exchanges visit
# every rank's texts like the ring; all-reduce and all-gather deliver them all at once).
SIGLIP_STRATEGIES = {"bidir": "ring", "shift": "ring", "reduce": "gather", "gather": "gather"}


def _check_world(rank, world_size):
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world_size={world_size} needs an initialised torch.distributed process group")
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"rank={rank}, world_size={world_size} disagree with the process group (rank {dist.get_rank()} of "
            f"{dist.get_world_size()})"
        )


def _output(loss, output_dict):
    return {"contrastive_loss": loss} if output_dict else loss


class _SumGradOverRanks(torch.autograd.Function):
    """Identity; the backward sums the gradient over the ranks and divides it by ``divisor``: gives a scalar
    parameter the gradient of the global loss on every rank, as when every rank computes the whole loss."""

    @staticmethod
    def forward(ctx, value, divisor):
        ctx.divisor = divisor
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad / ctx.divisor, None


class ClipLoss(torch.nn.Module):
    """OpenCLIP's ClipLoss: the symmetric cross-entropy of ``logit_scale · I·Tᵀ`` (row i matches column i).

    On W ranks (equal local batches, as OpenCLIP requires), as OpenCLIP: ``local_loss=True`` gives each rank the
    mean over its own rows against every rank's features, ``local_loss=False`` the loss of the whole global
    batch; ``gather_with_grad`` decides whether the gathered features carry gradients back to their ranks. Every
    rank's value and gradients equal OpenCLIP's, but each rank computes only its own rows' pairs. ``logit_bias``
    shifts every logit equally, which no softmax sees: it gets a zero gradient, as in OpenCLIP.
    """

    def __init__(self, local_loss=False, gather_with_grad=False, cache_labels=False, rank=0, world_size=1,
                 use_horovod=False, *, backend="auto"):  # fmt: skip
        super().__init__()
        if use_horovod:
            raise ValueError("use_horovod=True is not supported: pairloss gathers with torch.distributed")
        checks.check_positive_int(world_size=world_size)
        self.local_loss, self.gather_with_grad, self.cache_labels = local_loss, gather_with_grad, cache_labels
        self.rank, self.world_size, self.use_horovod, self.backend = rank, world_size, use_horovod, backend

    def forward(self, image_features, text_features, logit_scale, logit_bias=None, output_dict=False):
        if self.world_size == 1:
            loss = functional.clip_loss(image_features, text_features, logit_scale, backend=self.backend)
        else:
            checks.check_clip_inputs(image_features, text_features, logit_scale)
            _check_world(self.rank, self.world_size)
            loss = self._global_batch(image_features, text_features, logit_scale)
        if isinstance(logit_bias, torch.Tensor):
            loss = loss + logit_bias.sum() * 0
        return _output(loss, output_dict)

    def _global_batch(self, image, text, logit_scale):
        scale = functional._as_scalar_tensor(logit_scale, image)
        sizes = rank_sizes(image.shape[0], image.device, None)
        offset, total = rank_offsets(sizes)[self.rank], sum(sizes)
        ntxent = resolve(self.backend, image.device, "ntxent_loss")
        if self.local_loss:
            # OpenCLIP's own loss on this rank's rows; without gather_with_grad the gathered copies are constants.
            if self.gather_with_grad:
                images, texts = gather_rows(image, sizes, None), gather_rows(text, sizes, None)
            else:
                images, texts = (all_gather_padded(rows.detach(), sizes, None) for rows in (image, text))
            return clip_rows(ntxent, image, text, images, texts, offset, scale).mean().to(image.dtype)
        # The global loss, each rank computing its own rows' share: the gathered copies carry their gradients
        # back, which gives every row its exact global gradient (W times it under gather_with_grad, where each of
        # OpenCLIP's W identical losses sends one); the logit scale gets the global loss's gradient on every rank.
        factor = self.world_size if self.gather_with_grad else 1
        if scale.requires_grad:
            scale = _SumGradOverRanks.apply(scale, factor)
        images, texts = gather_rows(image, sizes, None), gather_rows(text, sizes, None)
        share = widen(clip_rows(ntxent, image, text, images, texts, offset, scale)).sum() / total
        value = share.detach().clone()
        dist.all_reduce(value)
        objective = share * factor
        return (objective + (value - objective).detach()).to(image.dtype)


class SigLipLoss(torch.nn.Module):
    """OpenCLIP's SigLipLoss: Σ over this rank's images × every rank's texts of −log σ(z·(scale·s + bias)),
    divided by the local batch size (equal on every rank, as OpenCLIP requires). ``dist_impl`` "bidir"/"shift"
    run pairloss's ring, "reduce"/"gather" its all-gather; the results are the same."""

    def __init__(self, cache_labels=False, rank=0, world_size=1, dist_impl=None, *, backend="auto"):
        super().__init__()
        dist_impl = dist_impl or "bidir"
        checks.check_choice("dist_impl", dist_impl, tuple(SIGLIP_STRATEGIES))
        checks.check_positive_int(world_size=world_size)
        self.cache_labels, self.rank, self.world_size, self.dist_impl = cache_labels, rank, world_size, dist_impl
        self.backend = backend

    def forward(self, image_features, text_features, logit_scale, logit_bias, output_dict=False):
        if self.world_size == 1:
            loss = functional.siglip_loss(image_features, text_features, logit_scale, logit_bias, backend=self.backend)
        else:
            checks.check_siglip_inputs(image_features, text_features, logit_scale, logit_bias)
            _check_world(self.rank, self.world_size)
            loss = distributed.siglip_loss(
                image_features, text_features, logit_scale, logit_bias, backend=self.backend,
                strategy=SIGLIP_STRATEGIES[self.dist_impl],
            )  # fmt: skip
        return _output(loss, output_dict)
