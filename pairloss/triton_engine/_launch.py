"""Launchers: tile sizes, dtypes, strides, grids and output allocation around the two kernels.

Forward and backward must see bitwise the same S: the forward's per-tile "has gradient" bytes are read by the
backward, and the mining decisions recomputed there compare the recomputed S with the forward's thresholds. So
every S-producing choice is made once and shared: tile sizes are fixed per device, the launch configuration
(warps, pipeline stages) is one constant for every kernel, never autotuned apart, and the TF32 decision is taken
by the forward and handed to the backward with its saved inputs (``tf32`` of the ops), never re-read.

``PAIRLOSS_DETERMINISTIC=1`` (read at every backward), or ``torch.use_deterministic_algorithms(True)``, selects
the atomic-free backward: a row-parallel dX kernel and a column-parallel dY kernel, each recomputing S.
"""

import os
from typing import NamedTuple

import torch
from triton.runtime.interpreter import InterpretedFunction

from ._ids import LOSS_PASS, ROW_SLOTS, STATS_PASS, TRIPLET_ALL
from ._kernels import pair_grad_kernel, pair_rows_kernel

INTERPRETED = isinstance(pair_rows_kernel, InterpretedFunction)


class LaunchConfig(NamedTuple):
    num_warps: int
    num_stages: int


# The one launch configuration of every kernel. Not autotuned: a forward and a backward tuned apart may compute S
# differently, and Triton's autotuner reruns a kernel while it benchmarks, resetting its outputs, which zeroed the
# dX that the deterministic backward's row launch had written before its column launch was tuned. 8 warps and 3
# stages spill least in the sm_90 compile check (3 of 96 kernels, odd layouts only; 4/3: 33, 4/2: 31, 8/2: 6).
# A GPU session tunes this constant, for forward and backward together.
LAUNCH_CONFIG = LaunchConfig(num_warps=8, num_stages=3)


def planned_for_cuda(device):
    """Whether launches on ``device`` take the CUDA tile sizes and code paths: on CUDA, and on the interpreter
    when ``PAIRLOSS_TRITON_TILES=cuda`` (so that CPU tests run exactly the GPU's tiles; read at every call)."""
    return torch.device(device).type == "cuda" or os.environ.get("PAIRLOSS_TRITON_TILES") == "cuda"


def tile_sizes(device, loss):
    """(BLOCK_M, BLOCK_N, BLOCK_D): small under the interpreter so that small test batches cross tiles (unless
    ``planned_for_cuda``); on CUDA the all-triplets loss holds a BLOCK_M × BLOCK_N × BLOCK_N tile in registers,
    hence its smaller tiles (at BLOCK_N = 32 ptxas spills kilobytes per thread)."""
    if not planned_for_cuda(device):
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
    cuda_fp32 = x.dtype == torch.float32 and planned_for_cuda(device)
    precision = "tf32" if cuda_fp32 and tf32 else "ieee"
    if cuda_fp32 and not tf32:
        # Exact fp32 runs tl.dot on FMAs: with 64-wide feature chunks ptxas spills kilobytes per thread in the
        # backward (python -m pairloss.triton_engine._compile_check), with 16 nothing.
        block_d = 16
    return {"PRECISION": precision, "BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_D": block_d, **selectors}


def tf32_allowed():
    """The TF32 decision of a forward (fp32 operands on CUDA): read once per loss call and passed on."""
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
              self_pairs, own_offset, params, tf32):  # fmt: skip
    outputs, (grid, args, constexprs) = rows_launch(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
        self_pairs, own_offset, params, x.device, tf32,
    )  # fmt: skip
    pair_rows_kernel[grid](*args, **constexprs, **LAUNCH_CONFIG._asdict())
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
              tile_bits, loss, mask, self_pairs, own_offset, params, tf32):  # fmt: skip
    """The backward of the ``pair_rows`` call with these inputs; ``tf32`` is that forward's decision."""
    outputs, launches = grad_launches(
        x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
        loss, mask, self_pairs, own_offset, params, x.device, tf32, atomic=not deterministic(),
    )  # fmt: skip
    for grid, args, constexprs in launches:
        pair_grad_kernel[grid](*args, **constexprs, **LAUNCH_CONFIG._asdict())
    return outputs
