"""The label losses' ring on the Triton engine (CUDA, or CPU under the interpreter).

``RingReferences`` stands in for ``triton_engine.losses.References``: each engine pass runs on the local anchors
against one rank's block at a time and merges the blocks' (4, b) outputs by the pass's rule (extremes with their
global columns, log-sum-exps, sums), which gives the outputs over the whole global batch. A LOSS pass's backward
passes the blocks around again and calls ``pair_grad`` on each with the merged statistics and outputs: the
gradient of exactly that block's pairs, sent back to the block's owner with it.
"""

import torch
import torch.distributed as dist

from .._numerics import squared_norms
from ..triton_engine import _launch, _ops
from ..triton_engine._ids import CIRCLE, CONTRASTIVE, MULTI_SIMILARITY, NTXENT, SUPCON, TRIPLET_HARDEST
from ..triton_engine.losses import grad_inputs, label_mask, pair_rows_inputs
from ._gather import rank_offsets
from ._ring import ring


def _log1p_merge(a, b):
    """log(1 + S_a + S_b) from a = log(1 + S_a) and b = log(1 + S_b), S ≥ 0, without overflow."""
    high, low = torch.maximum(a, b), torch.minimum(a, b)
    return high + torch.log1p(torch.expm1(low) * torch.exp(-high))


def _first_max(value, column, other, other_column):
    """The larger value with its column; ties go to the lower global column (the kernel's first argmax)."""
    take = (other > value) | ((other == value) & (other_column < column))
    return torch.where(take, other, value), torch.where(take, other_column, column)


def _triplet_hardest(a, b):
    far, far_column = _first_max(a[0], a[1], b[0], b[1])
    near, near_column = _first_max(-a[2], a[3], -b[2], b[3])
    return torch.stack([far, far_column, -near, near_column])


# (loss, STATS pass?) → how two blocks' outputs combine (the layouts of triton_engine/_epilogues.py).
MERGES = {
    (MULTI_SIMILARITY, True): lambda a, b: torch.stack([a[0].maximum(b[0]), a[1].minimum(b[1]), a[2], a[3]]),
    (MULTI_SIMILARITY, False): lambda a, b: torch.stack(
        [_log1p_merge(a[0], b[0]), _log1p_merge(a[1], b[1]), a[2], a[3]]
    ),
    (TRIPLET_HARDEST, True): _triplet_hardest,
    (CONTRASTIVE, False): torch.add,
    (CIRCLE, False): lambda a, b: torch.stack(
        [a[0].logaddexp(b[0]), a[1].logaddexp(b[1]), a[2].maximum(b[2]), a[3].maximum(b[3])]
    ),
    (NTXENT, True): lambda a, b: torch.stack([a[0].logaddexp(b[0]), a[1].maximum(b[1]), a[2], a[3]]),
    (NTXENT, False): torch.add,
    (SUPCON, False): lambda a, b: torch.stack([a[0].logaddexp(b[0]), a[1] + b[1], a[2] + b[2], a[3]]),
}

# The log-sum-exp slots of a pass, each with the slot that flags its set as non-empty (None: the block holds any
# pair that is not left out). The engine writes 0 for an empty log-sum-exp; merging needs −inf there.
LSE_SLOTS = {
    (CIRCLE, False): ((0, 2), (1, 3)),
    (NTXENT, True): ((0, 1),),
    (SUPCON, False): ((0, None),),
}


class RingReferences:
    """The references of the local ``anchors`` are every rank's rows ``rows`` (row counts ``sizes``); the engine
    passes and rows of ``triton_engine.losses.References`` over them."""

    def __init__(self, anchors, rows, labels, sizes, group):
        """``anchors``: the local rows, or those rows divided by per-anchor temperatures; ``rows``: the local rows
        the ring carries; ``labels``: theirs, in the engines' form (``pairloss._labels.engine_labels``)."""
        self.x, self._rows, self._labels, self._sizes, self._group = anchors, rows, labels, sizes, group
        self._rank = dist.get_rank(group)
        self._offsets = rank_offsets(sizes)
        self._tf32 = _launch.tf32_allowed()  # one precision decision for every block and pass of the call

    def run(self, loss, *, distances=False, jaccard=False, stats_pass=False, stats=None, params=(), mirror=True):
        """``References.run`` over the ring's blocks, none of which is mirrored (``mirror`` has nothing to turn
        off)."""
        row_vec = squared_norms(self.x) if distances else None
        mask = label_mask(self._labels, stats_pass, jaccard)
        if stats_pass:
            with torch.no_grad():
                return self.sweep(loss, True, mask, distances, row_vec, stats, params)[0]
        return RingPass.apply(self.x, self._rows, row_vec, self, loss, mask, stats, params, distances)

    def rows(self, columns):
        return RingPick.apply(self._rows, columns, self._sizes, self._group, self._offsets)

    def pair_count(self):
        return self.x.shape[0] * (sum(self._sizes) - 1)

    def block_inputs(self, loss, mask, owner, block, distances, row_vec, stats, params, stats_pass=False):
        """``pair_rows``'s arguments for the local anchors against the block of rank ``owner``."""
        rows, labels = block
        return pair_rows_inputs(
            loss, self.x, rows, tf32=self._tf32, stats_pass=stats_pass, row_labels=self._labels, col_labels=labels,
            row_vec=row_vec, col_vec=squared_norms(rows) if distances else None, stats=stats, mask=mask,
            self_pairs=owner == self._rank, params=params,
        )  # fmt: skip

    def sweep(self, loss, stats_pass, mask, distances, row_vec, stats, params):
        """The merged outputs of one pass over every block, and each block's tile map."""
        merged, tile_bits = [None], {}
        lse_slots = LSE_SLOTS.get((loss, stats_pass), ())

        def visit(owner, block):
            inputs = self.block_inputs(loss, mask, owner, block, distances, row_vec, stats, params, stats_pass)
            values, tile_bits[owner] = _ops.pair_rows(*inputs)
            if loss == TRIPLET_HARDEST:  # block columns → global ones (exact in fp64)
                values = values.double()
                values[1::2] += self._offsets[owner]
            for slot, flag in lse_slots:
                if flag is not None:
                    values[slot] = values[slot].masked_fill(values[flag] == 0, -torch.inf)
                elif block[0].shape[0] == int(owner == self._rank):  # every pair of the block is left out
                    values[slot] = -torch.inf
            merged[0] = values if merged[0] is None else MERGES[loss, stats_pass](merged[0], values)

        ring([self._rows, self._labels], self._sizes, self._group, visit)
        for slot, _ in lse_slots:  # back to the engine's convention for the passes and losses that read them
            merged[0][slot] = merged[0][slot].masked_fill(merged[0][slot] == -torch.inf, 0.0)
        return merged[0], tile_bits

    def ring_gradient(self, visit):
        return ring([self._rows, self._labels], self._sizes, self._group, visit)


class RingPass(torch.autograd.Function):
    """A LOSS pass over every block: its merged (4, b) outputs, differentiable in the anchors ``x`` and in the
    ``rows`` the ring carries (their gradients go back to their owners)."""

    @staticmethod
    def forward(ctx, x, rows, row_vec, refs, loss, mask, stats, params, distances):
        values, tile_bits = refs.sweep(loss, False, mask, distances, row_vec, stats, params)
        ctx.save_for_backward(x, rows, row_vec, stats, values)
        ctx.refs, ctx.loss, ctx.mask, ctx.params = refs, loss, mask, params
        ctx.distances, ctx.tile_bits = distances, tile_bits
        return values

    @staticmethod
    def backward(ctx, grad_values):
        x, rows, row_vec, stats, values = ctx.saved_tensors
        coefs = grad_values.float().contiguous()
        d_x = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        d_row_vec = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)

        def visit(owner, block):
            inputs = ctx.refs.block_inputs(ctx.loss, ctx.mask, owner, block, ctx.distances, row_vec, stats, ctx.params)
            dx, dy, row_grads, col_grad = _ops.pair_grad(*grad_inputs(inputs, values, coefs, ctx.tile_bits[owner]))
            d_x.add_(dx)
            d_row_vec.add_(row_grads[0])
            if ctx.distances:  # the block's squared norms were computed from its rows here
                dy = dy + 2 * col_grad[:, None] * block[0]
            return [dy]

        (d_own,) = ctx.refs.ring_gradient(visit)
        d_row = None if row_vec is None else d_row_vec.to(row_vec.dtype)
        return d_x.to(x.dtype), d_own.to(rows.dtype), d_row, None, None, None, None, None, None


class RingPick(torch.autograd.Function):
    """The global batch's rows at global ``columns``, fetched from their owners' blocks (and their gradients
    sent back)."""

    @staticmethod
    def forward(ctx, x, columns, sizes, group, offsets):
        picked = x.new_zeros((columns.shape[0], x.shape[1]))

        def visit(owner, block):
            local = columns - offsets[owner]
            here = (local >= 0) & (local < sizes[owner])
            picked[here] = block[0][local[here]]

        ring([x], sizes, group, visit)
        ctx.save_for_backward(x, columns)
        ctx.sizes, ctx.group, ctx.offsets = sizes, group, offsets
        return picked

    @staticmethod
    def backward(ctx, grad_picked):
        x, columns = ctx.saved_tensors
        grad_picked = grad_picked.float()

        def visit(owner, block):
            local = columns - ctx.offsets[owner]
            here = (local >= 0) & (local < ctx.sizes[owner])
            grad = torch.zeros(block[0].shape, dtype=torch.float32, device=x.device)
            return [grad.index_add_(0, local[here], grad_picked[here])]

        (d_x,) = ring([x], ctx.sizes, ctx.group, visit)
        return d_x.to(x.dtype), None, None, None, None
