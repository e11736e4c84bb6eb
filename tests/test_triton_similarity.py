"""The invariant the Triton engine's mining and tile skipping rest on: the backward recomputes bitwise the S that
the forward computed. Forward and backward share tile sizes and precision by construction (test_triton_engine's
plan tests); what only a GPU can show is that the products do not change with what does differ between them: the
pipeline stages (3 in the forward, 1 in the backward on resident rows), the register cap or stages that
``_launch.register_relief`` may pick per kernel, the forward's preloaded row block against the backward's loads, and,
X = Y, which side of a pair's tile computes it (the symmetric forward feeds tile (J, I)'s rows from tile (I, J)'s S;
the mirrored backward computes both). This runs the engine's own S functions in a tile loop shaped as the kernels'
and compares the results bit for bit. Under the interpreter (no stages, no registers, numpy's products) it checks
only the test itself.
"""

import pytest
import torch

from pairloss import backends

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from pairloss.triton_engine import _ids, _launch
from pairloss.triton_engine._compile_check import OPERANDS
from pairloss.triton_engine._tiles import load_block, similarity_tile, similarity_with_rows

CPU_REASON = backends.unavailable_reason("triton", "cpu")
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(CPU_REASON is not None, reason=f"no interpreter ({CPU_REASON})")),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")]),
]


@triton.jit
def _similarities_kernel(
    x_ptr, y_ptr, out_ptr, B, M, D, stride_xr, stride_xd, stride_yr, stride_yd,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ONE_CHUNK: tl.constexpr,
):  # fmt: skip
    """S = X·Yᵀ into ``out`` (B × M), a program per row block looping over the column tiles as the engine's tile
    loops do: with ONE_CHUNK the forward's way (row block loaded once), else the backward's."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    row_mask = rows < B
    if ONE_CHUNK:
        x = load_block(x_ptr, rows, row_mask, tl.arange(0, BLOCK_D).to(tl.int64), D, stride_xr, stride_xd)
    for col_block in range(tl.cdiv(M, BLOCK_N)):
        cols = col_block * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
        col_mask = cols < M
        if ONE_CHUNK:
            s = similarity_with_rows(x, y_ptr, cols, col_mask, D, stride_yr, stride_yd, PRECISION, BLOCK_N, BLOCK_D)
        else:
            s = similarity_tile(x_ptr, y_ptr, rows, cols, row_mask, col_mask, D, stride_xr, stride_xd, stride_yr,
                                stride_yd, PRECISION, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
        tl.store(out_ptr + rows[:, None] * M + cols[None, :], s, mask=row_mask[:, None] & col_mask[None, :])


def _similarities(x, y, tf32, config, one_chunk):
    """S of the engine's CUDA plan for these rows (``tf32``: fp32 on TF32), with ``config``."""
    constexprs = _launch._constexprs(x.dtype, x.shape[1], "cuda", tf32, LOSS=_ids.MULTI_SIMILARITY.value)
    x, y = _launch._operands(x, y)
    (rows, features), cols = x.shape, y.shape[0]
    out = torch.empty(rows, cols, dtype=torch.float32, device=x.device)
    grid = (-(-rows // constexprs["BLOCK_M"]),)
    _similarities_kernel[grid](
        x, y, out, rows, cols, features, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        PRECISION=constexprs["PRECISION"], BLOCK_M=constexprs["BLOCK_M"], BLOCK_N=constexprs["BLOCK_N"],
        BLOCK_D=constexprs["BLOCK_D"], ONE_CHUNK=one_chunk and constexprs["BLOCK_D"] >= features, **config._asdict(),
    )  # fmt: skip
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("features", [128, 100, 512])
@pytest.mark.parametrize("operands", ["bf16", "fp16", "tf32", "fp32"])
def test_similarity_is_the_same_in_every_launch_config(operands, features, device):
    """The forward's S (3 stages, its row block preloaded when one chunk) equals the backward's (1 stage on resident
    rows), and every config that ``register_relief`` may take, bit for bit; with X = Y, S equals its transpose.
    The GPU's tiles (64 × 64, the CUDA feature chunks) on both devices."""
    if device == "cpu" and features != 100:
        pytest.skip("the interpreter checks the test itself: at one width")
    dtype, tf32 = OPERANDS[operands]
    generator = torch.Generator().manual_seed(features)
    x, y = (torch.nn.functional.normalize(torch.randn(rows, features, generator=generator), dim=1).to(device, dtype)
            for rows in (200, 136))  # fmt: skip
    configs = [_launch.RESIDENT_CONFIG] + [_launch.LAUNCH_CONFIG._replace(**change) for change in _launch.RELIEF]
    for references in (x, y):
        forward = _similarities(x, references, tf32, _launch.LAUNCH_CONFIG, one_chunk=True)
        for config in configs:
            backward = _similarities(x, references, tf32, config, one_chunk=False)
            assert torch.equal(forward, backward), (config, (forward - backward).abs().max())
        if references is x and device == "cuda":  # (the interpreter's products are numpy's, blocked by BLAS)
            assert torch.equal(forward, forward.T), (forward - forward.T).abs().max()
