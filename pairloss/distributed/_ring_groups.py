"""Per-label sums of every rank's rows with the ring strategy: for each local row, the sum (and the count) of the
global rows that carry its label, the blocks visiting each rank in turn; the backward sends each block's
gradient back along the ring. The positive terms of CLIP and SigLIP with ``labels`` (``_multi_positive``)."""

import torch

from .._multi_positive import group_counts, group_sums, label_groups
from .._numerics import widen
from ._ring import ring


class RingGroupSums(torch.autograd.Function):
    """(sums, counts): sums[i] = Σ over every rank's ``rows`` j with label = labels[i] of rows[j] (fp32 at least),
    counts[i] the number of those rows; ``rows`` and ``row_labels`` are this rank's block (differentiable rows)."""

    @staticmethod
    def forward(ctx, labels, rows, row_labels, sizes, group):
        sums = widen(rows).new_zeros((labels.shape[0], *rows.shape[1:]))
        counts = torch.zeros(labels.shape[0], dtype=torch.float32, device=rows.device)

        def visit(owner, blocks):
            block_rows, block_labels = blocks
            groups = label_groups(labels, block_labels)
            sums.add_(group_sums(block_rows, groups.second, groups.slots)[groups.first])
            counts.add_(group_counts(groups.second, groups.slots)[groups.first])

        ring([rows, row_labels], sizes, group, visit)
        ctx.save_for_backward(labels, rows, row_labels)
        ctx.sizes, ctx.group = sizes, group
        ctx.mark_non_differentiable(counts)
        return sums, counts

    @staticmethod
    def backward(ctx, grad_sums, grad_counts):
        labels, rows, row_labels = ctx.saved_tensors

        def visit(owner, blocks):
            _, block_labels = blocks
            groups = label_groups(labels, block_labels)
            # ∂sums_i/∂row_j = I where the labels match: each block row gets the sum of its label's anchors' grads.
            return [group_sums(grad_sums, groups.first, groups.slots)[groups.second]]

        (d_rows,) = ring([rows, row_labels], ctx.sizes, ctx.group, visit)
        return None, d_rows.to(rows.dtype), None, None, None
