"""CLIP and SigLIP with the ring strategy (see ``_ring``): the other ranks' towers visit each rank block by
block; only the local rows and per-row log-sum-exps are saved for the backward, which recomputes every block."""

import torch
import torch.distributed as dist

from .._logsumexp import row_logsumexp
from .._multi_positive import siglip_pair_sum
from .._numerics import accumulation_dtype, widen
from ._ring import ring


class RingClip(torch.autograd.Function):
    """(LSE over all texts of the local images' logits + LSE over all images of the local texts') / 2."""

    @staticmethod
    def forward(ctx, image, text, scale, sizes, group, ntxent):
        lse = [image.new_full((image.shape[0],), float("-inf"), dtype=accumulation_dtype(image.dtype)) for _ in "it"]

        def visit(owner, blocks):
            images, texts = blocks
            lse[0] = torch.logaddexp(lse[0], row_logsumexp(ntxent, scale * image, texts))
            lse[1] = torch.logaddexp(lse[1], row_logsumexp(ntxent, scale * text, images))

        ring([image, text], sizes, group, visit)
        ctx.save_for_backward(image, text, scale, *lse)
        ctx.sizes, ctx.group, ctx.ntxent = sizes, group, ntxent
        return (lse[0] + lse[1]) / 2  # fp32 for fp16/bf16 towers: the caller casts the loss

    @staticmethod
    def backward(ctx, grad):
        image, text, scale, image_lse, text_lse = ctx.saved_tensors
        local = [torch.zeros_like(widen(image)), torch.zeros_like(widen(text)), 0.0]

        def visit(owner, blocks):
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(True) for t in (image, text, scale, *blocks)]
                image_, text_, scale_, images, texts = leaves
                partial_image = row_logsumexp(ctx.ntxent, scale_ * image_, texts)
                partial_text = row_logsumexp(ctx.ntxent, scale_ * text_, images)
                # ∂LSE/∂(a block's LSE) = e^{block LSE − LSE}: the block's share of the softmax mass.
                image_weight = grad / 2 * torch.exp(partial_image.detach() - image_lse)
                text_weight = grad / 2 * torch.exp(partial_text.detach() - text_lse)
                objective = (image_weight * partial_image).sum() + (text_weight * partial_text).sum()
                grads = torch.autograd.grad(objective, leaves)
            local[0] += grads[0]
            local[1] += grads[1]
            local[2] += grads[2]
            return [widen(grads[3]), widen(grads[4])]

        travelled = ring([image, text], ctx.sizes, ctx.group, visit)
        d_image = (local[0] + travelled[0]).to(image.dtype)
        d_text = (local[1] + travelled[1]).to(text.dtype)
        return d_image, d_text, local[2], None, None, None


class RingSigLip(torch.autograd.Function):
    """Σ over the local images × every rank's texts of SigLIP's pair terms."""

    @staticmethod
    def forward(ctx, image, text, scale, bias, sizes, group, siglip):
        rank = dist.get_rank(group)
        total = [image.new_zeros((), dtype=accumulation_dtype(image.dtype))]

        def visit(owner, blocks):
            total[0] = total[0] + siglip_pair_sum(siglip, image, blocks[0], scale, bias, owner == rank)

        ring([text], sizes, group, visit)
        ctx.save_for_backward(image, text, scale, bias)
        ctx.sizes, ctx.group, ctx.siglip = sizes, group, siglip
        return total[0]

    @staticmethod
    def backward(ctx, grad):
        image, text, scale, bias = ctx.saved_tensors
        rank = dist.get_rank(ctx.group)
        local = [torch.zeros_like(widen(image)), 0.0, 0.0]

        def visit(owner, blocks):
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(True) for t in (image, scale, bias, blocks[0])]
                block = siglip_pair_sum(ctx.siglip, leaves[0], leaves[3], leaves[1], leaves[2], owner == rank)
                grads = torch.autograd.grad(block * grad, leaves)
            for k in range(3):
                local[k] += grads[k]
            return [widen(grads[3])]

        (d_text,) = ring([text], ctx.sizes, ctx.group, visit)
        return local[0].to(image.dtype), d_text.to(text.dtype), local[1], local[2], None, None, None
