import os

import torch

# Triton kernels run on CPU tensors through its interpreter; the variable must be set before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture
def single_thread():
    """Run a test on one intra-op thread: the reference/PML tests use tiny tensors, where a second thread buys
    nothing and, on a shared 2-core machine, makes them several times slower. Engine tests should not use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
