"""Launchers: tile sizes, dtypes, strides, grids and output allocation around the two kernels.

Tile sizes are fixed per device (not autotuned) because the forward's per-tile "has gradient" bytes are read
by the backward, and the mining decisions recomputed there must see bitwise the same S as the forward: both
need the same BLOCK_M/N/D. On CUDA the autotuner only picks warps and pipeline stages.

``PAIRLOSS_DETERMINISTIC=1`` (read at every backward), or ``torch.use_deterministic_algorithms(True)``, selects
the atomic-free backward: a row-parallel dX kernel and a column-parallel dY kernel, each recomputing S.
"""

import os

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

from ._ids import LOSS_PASS, ROW_SLOTS, STATS_PASS, TRIPLET_ALL
from ._kernels import pair_grad_kernel, pair_rows_kernel

INTERPRETED = isinstance(pair_rows_kernel, InterpretedFunction)


def _autotuned(kernel, key, reset_to_zero=()):
    if INTERPRETED:
        return kernel
    configs = [triton.Config({}, num_warps=warps, num_stages=stages) for warps in (4, 8) for stages in (2, 3)]
    return triton.autotune(configs=configs, key=key, reset_to_zero=list(reset_to_zero))(kernel)


_pair_rows = _autotuned(pair_rows_kernel, key=["D", "LOSS", "PASS", "MASK"])
_pair_grad = _autotuned(
    pair_grad_kernel,
    key=["D", "LOSS", "MASK", "OWN_ROWS", "ATOMIC"],
    reset_to_zero=["dx_ptr", "dy_ptr", "col_grad_ptr"],
)


def tile_sizes(device, loss):
    """(BLOCK_M, BLOCK_N, BLOCK_D): small under the interpreter so that small test batches cross tiles; on CUDA
    the all-triplets loss holds a BLOCK_M × BLOCK_N × BLOCK_N tile in registers, hence its smaller tiles."""
    if INTERPRETED or torch.device(device).type != "cuda":
        return 16, 16, 32
    if loss == TRIPLET_ALL.value:
        return 16, 32, 64
    return 64, 64, 64


def tile_grid(rows, cols, device, loss):
    """Shape of the per-tile byte map: (row blocks, column blocks)."""
    block_m, block_n, _ = tile_sizes(device, loss)
    return (rows + block_m - 1) // block_m, (cols + block_n - 1) // block_n


def deterministic():
    return os.environ.get("PAIRLOSS_DETERMINISTIC", "0") == "1" or torch.are_deterministic_algorithms_enabled()


def _operand(t):
    """fp16/bf16/fp32 go to the tensor cores as they are; anything else (fp64) is computed in fp32."""
    return t if t.dtype in (torch.float16, torch.bfloat16, torch.float32) else t.float()


def _precision(x):
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def pair_rows(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
              self_pairs, params):  # fmt: skip
    x, y = _operand(x), _operand(y)
    (B, D), M = x.shape, y.shape[0]
    block_m, block_n, block_d = tile_sizes(x.device, loss)
    values = torch.empty((ROW_SLOTS, B), dtype=torch.float32, device=x.device)
    tile_bits = torch.zeros(tile_grid(B, M, x.device, loss), dtype=torch.int8, device=x.device)
    _pair_rows[(triton.cdiv(B, block_m),)](
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, values, tile_bits,
        B, M, D, positives.shape[1], x.stride(0), x.stride(1), y.stride(0), y.stride(1), *params,
        LOSS=loss, PASS=(STATS_PASS if stats_pass else LOSS_PASS).value, MASK=mask, SELF_PAIRS=self_pairs,
        PRECISION=_precision(x), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
    )  # fmt: skip
    return values, tile_bits


def pair_grad(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
              tile_bits, loss, mask, self_pairs, params):  # fmt: skip
    x, y = _operand(x), _operand(y)
    (B, D), M = x.shape, y.shape[0]
    block_m, block_n, block_d = tile_sizes(x.device, loss)
    dx = torch.zeros((B, D), dtype=torch.float32, device=x.device)
    dy = torch.zeros((M, D), dtype=torch.float32, device=x.device)
    row_grads = torch.zeros((3, B), dtype=torch.float32, device=x.device)
    col_grad = torch.zeros((M,), dtype=torch.float32, device=x.device)
    atomic = not deterministic()
    launches = [(True, triton.cdiv(B, block_m))] + ([] if atomic else [(False, triton.cdiv(M, block_n))])
    for own_rows, programs in launches:
        _pair_grad[(programs,)](
            x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
            tile_bits, dx, dy, row_grads, col_grad,
            B, M, D, positives.shape[1], x.stride(0), x.stride(1), y.stride(0), y.stride(1), *params,
            LOSS=loss, MASK=mask, SELF_PAIRS=self_pairs, PRECISION=_precision(x), OWN_ROWS=own_rows, ATOMIC=atomic,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        )  # fmt: skip
    return dx, dy, row_grads, col_grad
