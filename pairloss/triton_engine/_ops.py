"""torch.library custom ops around the launchers, with fake (meta) implementations and the autograd formula.

``pairloss::pair_rows`` runs one forward pass and returns the (4, B) per-row outputs and the per-tile bytes.
Row i's own column (its positive under the DIAGONAL mask, left out with ``self_pairs``) is (i + own_offset) % M.
Its gradient (LOSS pass only; STATS outputs are thresholds/extremes and callers detach its inputs) calls
``pairloss::pair_grad`` with the upstream gradient of the per-row outputs as ``coefs``; that op returns dX, dY,
the row sums (g_vec, g_scale, g_bias) and the column sums of g_vec, which map to the op's inputs below.
``symmetric`` (the caller's promise that X and Y are the same tensor, with the same labels and per-row vectors,
own offset 0): the forward may (``_launch.shared_forward``) and the backward does compute each pair of mirrored
tiles once; the backward returns the whole gradient of X in dX (dY = 0; autograd adds the two, X being Y).
"""

import torch
from torch import Tensor

from . import _launch
from ._ids import ROW_SLOTS


@torch.library.custom_op("pairloss::pair_rows", mutates_args=())
def pair_rows(
    x: Tensor, y: Tensor, row_labels: Tensor, col_labels: Tensor, positives: Tensor, row_vec: Tensor,
    col_vec: Tensor, stats: Tensor, scale: Tensor, bias: Tensor,
    loss: int, stats_pass: bool, mask: int, self_pairs: bool, own_offset: int, params: list[float], tf32: bool,
    symmetric: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    return _launch.pair_rows(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
        self_pairs, own_offset, params, tf32, symmetric,
    )  # fmt: skip


@pair_rows.register_fake
def _(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
      self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
    values = x.new_empty((ROW_SLOTS, x.shape[0]), dtype=torch.float32)
    return values, x.new_empty(_launch.tile_grid(x.shape[0], y.shape[0], x.device, loss), dtype=torch.int8)


@torch.library.custom_op("pairloss::pair_grad", mutates_args=())
def pair_grad(
    x: Tensor, y: Tensor, row_labels: Tensor, col_labels: Tensor, positives: Tensor, row_vec: Tensor,
    col_vec: Tensor, stats: Tensor, values: Tensor, coefs: Tensor, scale: Tensor, bias: Tensor, tile_bits: Tensor,
    loss: int, mask: int, self_pairs: bool, own_offset: int, params: list[float], tf32: bool, symmetric: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    return _launch.pair_grad(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
        loss, mask, self_pairs, own_offset, params, tf32, symmetric,
    )  # fmt: skip


@pair_grad.register_fake
def _(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
      loss, mask, self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
    return (
        x.new_empty(x.shape, dtype=torch.float32),
        y.new_empty(y.shape, dtype=torch.float32),
        x.new_empty((3, x.shape[0]), dtype=torch.float32),
        y.new_empty((y.shape[0],), dtype=torch.float32),
    )


def _setup_context(ctx, inputs, output):
    x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias = inputs[:10]
    loss, stats_pass, mask, self_pairs, own_offset, params, tf32, symmetric = inputs[10:]
    values, tile_bits = output
    ctx.save_for_backward(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, values,
                          tile_bits)  # fmt: skip
    ctx.options = (loss, stats_pass, mask, self_pairs, own_offset, params, tf32, symmetric)  # the forward's decisions


def _backward(ctx, grad_values, _grad_tile_bits):
    x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, values, tile_bits = ctx.saved_tensors
    loss, stats_pass, mask, self_pairs, own_offset, params, tf32, symmetric = ctx.options
    if stats_pass:
        raise RuntimeError("pairloss::pair_rows: a STATS pass is not differentiable; call it on detached inputs")
    dx, dy, row_grads, col_grad = pair_grad(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values,
        grad_values.float().contiguous(), scale, bias, tile_bits, loss, mask, self_pairs, own_offset, params, tf32,
        symmetric,
    )  # fmt: skip
    return (
        dx.to(x.dtype),
        dy.to(y.dtype),
        None,
        None,
        None,
        row_grads[0].to(row_vec.dtype),
        col_grad.to(col_vec.dtype),
        None,
        row_grads[1].sum().to(scale.dtype).reshape(scale.shape),
        row_grads[2].sum().to(bias.dtype).reshape(bias.shape),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


pair_rows.register_autograd(_backward, setup_context=_setup_context)
