"""The L2 rate kernels of bench.l2 (what the GPU check measures for the static report) move what they say: every
element of the buffer, once per pass, whatever the number of programs and a size that is no multiple of a block. On
CPU tensors under Triton's interpreter; the CUDA test also runs the measurement."""

import math

import pytest
import torch

from bench.l2 import BLOCK, add_atomically, l2_rates, read_sums
from pairloss import backends

CASES = [pytest.param("cpu", marks=pytest.mark.skipif(backends.unavailable_reason("triton", "cpu") is not None,
                                                      reason="needs the interpreter")),
         pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                           reason="needs CUDA")])]  # fmt: skip


@pytest.mark.parametrize("device", CASES)
def test_read_kernel_loads_every_element_once_per_pass(device):
    source = torch.arange(5000, dtype=torch.float32, device=device)
    sums = read_sums(source, torch.empty(3, BLOCK, device=device), passes=2)
    assert sums.double().sum().item() == 2 * source.double().sum().item()


@pytest.mark.parametrize("device", CASES)
def test_atomic_kernel_adds_every_element_once_per_pass(device):
    source = torch.arange(5000, dtype=torch.float32, device=device)
    target = torch.full_like(source, 1.0)
    add_atomically(source, target, programs=3, passes=2)
    torch.testing.assert_close(target, 1.0 + 2 * source, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rates_are_measured():
    rates = l2_rates()
    assert all(math.isfinite(rates[name]) and rates[name] > 0 for name in ("read", "atomic_add")), rates
