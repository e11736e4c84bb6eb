"""The label losses' ring on the C++ engine's block-by-block ops (CPU: the tiled engine; CUDA: the chunked one).

Every rank's (rows, labels) block visits each rank; the engine continues each local anchor's statistics and
accumulators over the blocks (``csrc/block_losses.h``), so the rows equal those of the whole global batch. A loss
with mining thresholds or a softmax denominator sweeps the ring twice (statistics, then the loss under the
complete statistics). The backward passes the blocks around once more, recomputes each block's tiles from the
saved per-row statistics, and returns each block's gradient accumulator to its owner. Saved between forward and
backward: the local rows and labels, O(b) per-row statistics and one tile map per block (a byte per 128 × 128
pairs), whatever the world size.
"""

import torch
import torch.distributed as dist

from .._numerics import widen
from ..cpp_engine._ops import load
from ._gather import rank_offsets
from ._ring import ring


class RingRows(torch.autograd.Function):
    """``cpp_pair_forward``'s (rows, counts) of the local ``anchors`` against every rank's rows ``x`` (own pairs
    left out). The anchors are the local rows, or those rows divided by per-anchor temperatures; ``row_params``:
    per-anchor values of the loss's first params (None: the params' numbers)."""

    @staticmethod
    def forward(ctx, anchors, x, labels, kernel, params, row_params, sizes, group):
        ops = torch.ops.pairloss
        rank = dist.get_rank(group)
        offsets = rank_offsets(sizes)

        def block(owner, blocks):  # the engine's arguments for the block of `owner` (global columns from its offset)
            return (kernel, anchors, blocks[0], labels, blocks[1], params, 0 if owner == rank else -1, offsets[owner])

        statistics_sweep, loss_sweep = ops.cpp_ring_sweeps(kernel, params)
        stats, accs, active = [ops.cpp_ring_begin(kernel, anchors, labels, params, row_params)], [None], {}
        if statistics_sweep:

            def add_statistics(owner, blocks):
                stats[0] = ops.cpp_ring_stats(*block(owner, blocks), stats[0], row_params)

            ring([x, labels], sizes, group, add_statistics)
        if loss_sweep:

            def accumulate(owner, blocks):
                accs[0], active[owner] = ops.cpp_ring_accumulate(*block(owner, blocks), stats[0], accs[0], row_params)

            ring([x, labels], sizes, group, accumulate)
        rows, saved, counts = ops.cpp_ring_finish(kernel, anchors, labels, params, stats[0], accs[0], row_params)
        ctx.save_for_backward(anchors, x, labels, saved, row_params)
        ctx.kernel, ctx.params, ctx.offsets, ctx.active = kernel, params, offsets, active
        ctx.sizes, ctx.group = sizes, group
        ctx.mark_non_differentiable(counts)
        return rows, counts

    @staticmethod
    def backward(ctx, grad_rows, _grad_counts):
        anchors, x, labels, saved, row_params = ctx.saved_tensors
        rank = dist.get_rank(ctx.group)
        grad_rows = grad_rows.contiguous()
        d_anchors = torch.zeros_like(widen(anchors))  # fp32 for fp16/bf16 rows: the blocks' gradients add unrounded
        tile = load()[0].active_tile

        def visit(owner, blocks):
            references, reference_labels = blocks
            # A loss without a loss sweep (batch-hard triplets) has no tile map: its backward reads none.
            active = ctx.active.get(owner)
            if active is None:
                active = x.new_ones((-(-x.shape[0] // tile), -(-references.shape[0] // tile)), dtype=torch.uint8)
            d_block_anchors, d_references, _ = torch.ops.pairloss.cpp_pair_backward(
                ctx.kernel, grad_rows, anchors, references, labels, reference_labels, None, ctx.params,
                0 if owner == rank else -1, saved, active, ctx.offsets[owner], row_params,
            )  # fmt: skip
            d_anchors.add_(d_block_anchors)
            return [d_references]

        (d_own,) = ring([x, labels], ctx.sizes, ctx.group, visit)
        return d_anchors.to(anchors.dtype), d_own.to(x.dtype), None, None, None, None, None, None
