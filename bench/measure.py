"""Timing and peak-memory measurement on CPU and CUDA."""

import ctypes
import re
import resource
import statistics
import sys
import time

import torch


def _return_freed_memory_to_the_os():
    """Make glibc serve every allocation of 64 KiB or more with mmap and unmap it on free (a fixed threshold
    also stops glibc from raising it dynamically), so that the resident set follows live tensors and its peak
    measures a case's memory instead of reused heap pages."""
    if sys.platform.startswith("linux"):
        mallopt_mmap_threshold = -3
        ctypes.CDLL("libc.so.6").mallopt(mallopt_mmap_threshold, 64 * 1024)


_return_freed_memory_to_the_os()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _do_bench(function, repeats, warmup):
    """``triton.testing.do_bench``'s samples (ms) of ``function()`` on CUDA: the L2 cache flushed before each."""
    from triton.testing import do_bench

    return do_bench(function, warmup=warmup, rep=max(repeats, 1), return_mode="all")


def time_call(function, device, repeats, warmup=1, setup=None, keep_l2=False):
    """Median and spread (min, max) in milliseconds of ``function()``, after ``warmup`` untimed calls.

    ``setup`` runs untimed before each call (e.g. the forward pass whose backward is being timed). On CUDA without
    a setup, ``triton.testing.do_bench`` times it (L2 flushed between runs; ``repeats`` and ``warmup`` are then its
    time budgets in ms, at least that many runs of a call that takes a millisecond or more), unless ``keep_l2``
    (what the call reads stays in L2: CUDA events around each of ``repeats`` calls).
    """
    if device.type == "cuda" and setup is None and not keep_l2:
        samples = _do_bench(function, repeats * 10, warmup * 10)
        return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
                "n": len(samples)}  # fmt: skip
    samples = []
    for index in range(warmup + repeats):
        state = setup() if setup is not None else None
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function(state) if setup is not None else function()
            end.record()
            torch.cuda.synchronize(device)
            elapsed = start.elapsed_time(end)
        else:
            began = time.perf_counter()
            function(state) if setup is not None else function()
            elapsed = (time.perf_counter() - began) * 1e3
        if index >= warmup:
            samples.append(elapsed)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples), "n": len(samples)}


def _status_kib(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


class PeakMemory:
    """Peak memory allocated inside the ``with`` block beyond what was allocated on entry, in MiB.

    CUDA: the caching allocator's peak. CPU: the process's peak resident set (Linux VmHWM, reset on entry by
    writing 5 to /proc/self/clear_refs), which also counts allocator caches — an upper bound.
    """

    def __init__(self, device):
        self.device = device
        self.mib = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        self.mib = max(peak - self.base, 0) / 2**20
        return False


def cap_cpu_memory(budget_bytes):
    """Cap this process's address space at its current size plus ``budget_bytes``: a peer that asks for more
    (PML's NT-Xent builds a positive-pairs × negative-pairs matrix) then gets an allocation error, recorded as
    OOM, instead of the kernel's OOM killer ending the whole sweep."""
    virtual = _status_kib("VmSize") * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (virtual + int(budget_bytes), hard))


def available_memory_bytes(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return int(re.search(r"MemAvailable:\s+(\d+)", open("/proc/meminfo").read()).group(1)) * 1024


def gemm_rate(device, dtype, dim):
    """Peak measured FLOP/s of (rows×dim)·(dim×rows) products with ``dim`` features: the roofline the losses
    are held to. Large ``rows`` are slower per FLOP (the rows×rows result leaves the caches), which fused
    kernels never pay, so the best of a few moderate sizes is the fair ceiling."""
    rates = []
    for rows in (1024, 2048) if device.type == "cpu" else (4096, 8192):
        a = torch.randn(rows, dim, device=device, dtype=dtype)
        b = torch.randn(rows, dim, device=device, dtype=dtype)
        timing = time_call(lambda a=a, b=b: a @ b.T, device, repeats=10, warmup=3)
        rates.append(2 * rows * rows * dim / (timing["min_ms"] / 1e3))
    return max(rates)
