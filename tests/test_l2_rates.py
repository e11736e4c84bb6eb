"""The L2 rate kernels of bench.l2 (what the GPU check measures for the static report) move what they say: every
element of the buffer, once per pass, whatever the number of programs and a size that is no multiple of a block."""

import torch

from bench.l2 import add_atomically, read_sums


def test_read_kernel_loads_every_element_once_per_pass():
    source = torch.arange(5000, dtype=torch.float32)
    sums = read_sums(source, programs=3, passes=2)
    assert sums.shape == (3, 1024)
    assert sums.sum().item() == 2 * source.sum().item()


def test_atomic_kernel_adds_every_element_once_per_pass():
    source = torch.arange(5000, dtype=torch.float32)
    target = torch.full_like(source, 1.0)
    add_atomically(source, target, programs=3, passes=2)
    torch.testing.assert_close(target, 1.0 + 2 * source, rtol=0, atol=0)
