"""Per-label sums of every rank's rows with the ring strategy: for each local row, the sum (and the count) of the
global rows that carry its label, the blocks visiting each rank in turn; the backward passes only the labels
around, each block's gradient travelling back to its owner. The positive terms of CLIP and SigLIP with
``labels`` (``_multi_positive``)."""

import torch

from .._multi_positive import group_counts, group_sums, label_groups
from .._numerics import widen
from ._ring import ring


class RingGroupSums(torch.autograd.Function):
    """(sums of each of ``rows``, counts): sums[i] = Σ over every rank's rows j with label = labels[i] of rows[j]
    (fp32 at least), counts[i] the number of those rows. ``row_labels`` and each of ``rows`` are this rank's
    block (the rows differentiable); several row sets share one ring of their labels and one grouping per block."""

    @staticmethod
    def forward(ctx, labels, row_labels, sizes, group, *rows):
        sums = [widen(r).new_zeros((labels.shape[0], *r.shape[1:])) for r in rows]
        counts = torch.zeros(labels.shape[0], dtype=torch.float32, device=row_labels.device)

        def visit(owner, blocks):
            block_labels, *block_rows = blocks
            groups = label_groups(labels, block_labels)
            for total, block in zip(sums, block_rows):
                total.add_(group_sums(block, groups.second, groups.slots)[groups.first])
            counts.add_(group_counts(groups.second, groups.slots)[groups.first])

        ring([row_labels, *rows], sizes, group, visit)
        ctx.save_for_backward(labels, row_labels)
        ctx.sizes, ctx.group, ctx.dtypes = sizes, group, [r.dtype for r in rows]
        ctx.mark_non_differentiable(counts)
        return (*sums, counts)

    @staticmethod
    def backward(ctx, *grads):
        labels, row_labels = ctx.saved_tensors
        grad_sums = grads[:-1]

        def visit(owner, blocks):
            (block_labels,) = blocks
            groups = label_groups(labels, block_labels)
            # ∂sums_i/∂row_j = I where the labels match: each block row gets the sum of its label's anchors' grads.
            return [group_sums(grad, groups.first, groups.slots)[groups.second] for grad in grad_sums]

        d_rows = ring([row_labels], ctx.sizes, ctx.group, visit)
        return (None, None, None, None, *(d.to(dtype) for d, dtype in zip(d_rows, ctx.dtypes)))
