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


# (num_warps, num_stages) the autotuner chooses from on CUDA.
AUTOTUNE_CONFIGS = [(warps, stages) for warps in (4, 8) for stages in (2, 3)]


def _autotuned(kernel, key, reset_to_zero=()):
    if INTERPRETED:
        return kernel
    configs = [triton.Config({}, num_warps=warps, num_stages=stages) for warps, stages in AUTOTUNE_CONFIGS]
    return triton.autotune(configs=configs, key=key, reset_to_zero=list(reset_to_zero))(kernel)


_pair_rows = _autotuned(pair_rows_kernel, key=["D", "LOSS", "PASS", "MASK"])
_pair_grad = _autotuned(
    pair_grad_kernel,
    key=["D", "LOSS", "MASK", "OWN_ROWS", "ATOMIC"],
    reset_to_zero=["dx_ptr", "dy_ptr", "col_grad_ptr"],
)


def tile_sizes(device, loss):
    """(BLOCK_M, BLOCK_N, BLOCK_D): small under the interpreter so that small test batches cross tiles; on CUDA
    the all-triplets loss holds a BLOCK_M × BLOCK_N × BLOCK_N tile in registers, hence its smaller tiles
    (at BLOCK_N = 32 ptxas spills kilobytes per thread)."""
    if INTERPRETED or torch.device(device).type != "cuda":
        return 16, 16, 32
    if loss == TRIPLET_ALL.value:
        return 16, 16, 64
    return 64, 64, 64


def tile_grid(rows, cols, device, loss):
    """Shape of the per-tile byte map: (row blocks, column blocks)."""
    block_m, block_n, _ = tile_sizes(device, loss)
    return (rows + block_m - 1) // block_m, (cols + block_n - 1) // block_n


def deterministic():
    return os.environ.get("PAIRLOSS_DETERMINISTIC", "0") == "1" or torch.are_deterministic_algorithms_enabled()


def _operand(t):
    """fp16/bf16/fp32 go to the tensor cores as they are; anything else (fp64) is computed in fp32.

    Under the interpreter bf16 goes in as fp32: its ``tl.dot`` misreads bf16 operands (garbage, seen with triton
    3.9), and fp32 operands holding bf16 values compute what the GPU's bf16 MMA does (exact products, fp32 sums)."""
    if t.dtype in (torch.float16, torch.float32) or (t.dtype == torch.bfloat16 and not INTERPRETED):
        return t
    return t.float()


def _constexprs(x, device, tf32, **selectors):
    """The kernels' compile-time arguments: ``selectors`` (LOSS, MASK, …) plus what follows from the operands
    and the device they run on."""
    block_m, block_n, block_d = tile_sizes(device, selectors["LOSS"])
    cuda_fp32 = x.dtype == torch.float32 and torch.device(device).type == "cuda"
    precision = "tf32" if cuda_fp32 and tf32 else "ieee"
    if cuda_fp32 and not tf32:
        # Exact fp32 runs tl.dot on FMAs: with 64-wide feature chunks ptxas spills kilobytes per thread in the
        # backward (python -m pairloss.triton_engine._compile_check), with 16 nothing.
        block_d = 16
    return {"PRECISION": precision, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d, **selectors}


def _tf32_allowed():
    return torch.backends.cuda.matmul.allow_tf32


# A launch as data, (grid, positional arguments, compile-time arguments), so that _compile_check can compile
# exactly what the launchers below run, for a GPU it does not have.


def rows_launch(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass,
                mask, self_pairs, own_offset, params, device, tf32):  # fmt: skip
    """((values, tile_bits) outputs, launch) of one forward pass for tensors that will run on ``device``."""
    x, y = _operand(x), _operand(y)
    (B, D), M = x.shape, y.shape[0]
    values = torch.empty((ROW_SLOTS, B), dtype=torch.float32, device=x.device)
    tile_bits = torch.zeros(tile_grid(B, M, device, loss), dtype=torch.int8, device=x.device)
    args = (
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, values, tile_bits,
        B, M, D, positives.shape[1], own_offset, x.stride(0), x.stride(1), y.stride(0), y.stride(1), *params,
    )  # fmt: skip
    pass_id = (STATS_PASS if stats_pass else LOSS_PASS).value
    constexprs = _constexprs(x, device, tf32, LOSS=loss, PASS=pass_id, MASK=mask, SELF_PAIRS=self_pairs)
    return (values, tile_bits), ((tile_bits.shape[0],), args, constexprs)


def pair_rows(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
              self_pairs, own_offset, params):  # fmt: skip
    outputs, (grid, args, constexprs) = rows_launch(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
        self_pairs, own_offset, params, x.device, _tf32_allowed(),
    )  # fmt: skip
    _pair_rows[grid](*args, **constexprs)
    return outputs


def grad_launches(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
                  tile_bits, loss, mask, self_pairs, own_offset, params, device, tf32, atomic):  # fmt: skip
    """((dx, dy, row_grads, col_grad) outputs, launches) of the backward: one row-owner launch with atomics, or
    (deterministic) a row-owner launch for dX and a column-owner launch for dY."""
    x, y = _operand(x), _operand(y)
    (B, D), M = x.shape, y.shape[0]
    outputs = (
        torch.zeros((B, D), dtype=torch.float32, device=x.device),
        torch.zeros((M, D), dtype=torch.float32, device=x.device),
        torch.zeros((3, B), dtype=torch.float32, device=x.device),
        torch.zeros((M,), dtype=torch.float32, device=x.device),
    )
    args = (
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
        *outputs, B, M, D, positives.shape[1], own_offset, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        *params,
    )  # fmt: skip
    row_blocks, col_blocks = tile_bits.shape
    owners = [(True, row_blocks)] + ([] if atomic else [(False, col_blocks)])
    return outputs, [
        (
            (programs,),
            args,
            _constexprs(x, device, tf32, LOSS=loss, MASK=mask, SELF_PAIRS=self_pairs, OWN_ROWS=own_rows, ATOMIC=atomic),
        )
        for own_rows, programs in owners
    ]


def pair_grad(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias,
              tile_bits, loss, mask, self_pairs, own_offset, params):  # fmt: skip
    outputs, launches = grad_launches(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
        loss, mask, self_pairs, own_offset, params, x.device, _tf32_allowed(), atomic=not deterministic(),
    )  # fmt: skip
    for grid, args, constexprs in launches:
        _pair_grad[grid](*args, **constexprs)
    return outputs
