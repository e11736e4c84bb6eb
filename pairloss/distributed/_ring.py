"""Ring strategy: every rank's reference rows travel around the ring (rank r sends to r + 1, receives from
r − 1) while the current block is computed, so no rank ever holds more than two blocks; the backward passes the
blocks around again, recomputes, and sends each block's gradient accumulator along with it back to its owner.
Saved state between forward and backward: the local rows and O(b) row statistics, whatever the world size.
"""

import torch.distributed as dist


def _exchange(tensors, shapes, group):
    """Send ``tensors`` to the next rank and receive tensors of ``shapes`` from the previous one (async)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)

    def global_rank(group_rank):  # P2POp addresses peers by their rank in the default group
        return group_rank if group is None else dist.get_global_rank(group, group_rank)

    send_to, receive_from = global_rank((rank + 1) % world), global_rank((rank - 1) % world)
    received = [t.new_empty(shape) for t, shape in zip(tensors, shapes)]
    operations = [dist.P2POp(dist.isend, t.contiguous(), send_to, group) for t in tensors]
    operations += [dist.P2POp(dist.irecv, t, receive_from, group) for t in received]
    return received, dist.batch_isend_irecv(operations)


def ring(local, sizes, group, visit):
    """Call ``visit(owner, blocks)`` on every rank's ``local`` tensors (rows first, row counts ``sizes``), this
    rank's own first, receiving the next blocks while ``visit`` computes.

    ``visit`` returns None, or accumulators shaped by the block owner's rows (gradients of its rows, which need not
    travel themselves when ``visit`` only reads their labels): those travel with the blocks, and ``ring`` returns
    the sum over all ranks of this rank's own accumulators (None without them).
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    blocks, totals = local, None
    for step in range(world):
        owner = (rank - step) % world
        # The rows received next: the previous owner's block, or after the last step this rank's accumulator.
        next_rows = sizes[(owner - 1) % world]
        pending = None
        if step < world - 1:  # post the next block's transfer before computing on this one
            incoming, pending = _exchange(blocks, [(next_rows, *b.shape[1:]) for b in blocks], group)
        grads = visit(owner, blocks)
        if grads is not None:
            totals = grads if totals is None else [t + g for t, g in zip(totals, grads)]
            if world > 1:  # the accumulator follows its block; after the last step it reaches the owner
                totals, requests = _exchange(totals, [(next_rows, *t.shape[1:]) for t in totals], group)
                for request in requests:
                    request.wait()
        if pending is not None:
            for request in pending:
                request.wait()
            blocks = incoming
    return totals
