"""All-gather of every rank's rows (sizes may differ) whose backward sums each row's gradient from every rank
back onto the rank that owns it."""

import torch
import torch.distributed as dist


def rank_sizes(rows, device, group):
    """Every rank's number of rows, in rank order (one small all-gather and a host sync)."""
    sizes = [torch.empty(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor([rows], dtype=torch.int64, device=device), group=group)
    return [int(size) for size in torch.cat(sizes).tolist()]


def rank_offsets(sizes):
    """Each rank's first row in the global batch, from ``rank_sizes``."""
    return [sum(sizes[:rank]) for rank in range(len(sizes))]


def all_gather_padded(tensor, sizes, group):
    """Concatenate every rank's ``tensor`` (rows may differ: padded to the largest for the collective)."""
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    chunks = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(chunks, padded, group=group)
    return torch.cat([chunk[:size] for chunk, size in zip(chunks, sizes)])


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, sizes, group):
        ctx.sizes, ctx.group = sizes, group
        return all_gather_padded(rows, sizes, group)

    @staticmethod
    def backward(ctx, grad):
        sizes, group = ctx.sizes, ctx.group
        rank, longest = dist.get_rank(group), max(sizes)
        padded = grad.new_zeros((len(sizes), longest, *grad.shape[1:]))
        for chunk, piece, size in zip(padded, grad.split(sizes), sizes):
            chunk[:size] = piece
        if dist.get_backend(group) == dist.Backend.NCCL:
            own = grad.new_empty((longest, *grad.shape[1:]))
            dist.reduce_scatter(own, list(padded.unbind(0)), group=group)
        else:  # gloo has no reduce-scatter
            dist.all_reduce(padded, group=group)
            own = padded[rank]
        return own[: sizes[rank]], None, None


def gather_rows(rows, sizes, group):
    """Every rank's ``rows`` concatenated in rank order; differentiable (the gradient goes back to the owners)."""
    if rows.requires_grad:
        return _GatherRows.apply(rows, sizes, group)
    return all_gather_padded(rows, sizes, group)
