"""The benchmark cases as a pytest-benchmark suite: ``pytest bench`` (not part of the test suite)."""

import pytest
import torch

from .cases import LOSSES, implementations

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROWS, DIM = (8192, 512) if DEVICE.type == "cuda" else (1024, 128)
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32


def _cases():
    for loss in LOSSES.values():
        found, missing = implementations(loss, DEVICE)
        for impl in found:
            yield pytest.param(loss, impl, id=f"{loss.name}-{impl.name}")
        for name, why in missing.items():
            yield pytest.param(loss, None, id=f"{loss.name}-{name}", marks=pytest.mark.skip(reason=why))


@pytest.mark.parametrize("loss, impl", _cases())
def test_forward_backward(benchmark, loss, impl):
    leaves, rest = loss.make_inputs(ROWS, DIM, DTYPE, DEVICE)

    def step():
        impl.run(leaves, rest).backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    with impl.setting():
        step()  # warm-up: compilation and autotuning stay out of the timings
        benchmark.extra_info.update(B=ROWS, D=DIM, dtype=str(DTYPE), device=DEVICE.type)
        benchmark.pedantic(step, rounds=5, iterations=1)
