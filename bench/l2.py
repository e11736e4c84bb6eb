"""The GPU's L2 rates, measured: what the static report (``python -m pairloss.triton_engine._compile_check --report B D
--l2-tbps READ ATOMIC``) divides the engine's L2 traffic by. Its operand blocks come from L2 (Triton's pipelined
loads, ``cp.async.cg``, bypass L1) and its backward adds fp32 blocks there atomically; peak figures for either are
not published.

    python -m bench.l2        # on a CUDA machine: one JSON line, rates in TB/s

Each kernel streams an L2-resident buffer (at most a quarter of the L2) many times within one launch, so that the
launch is short beside the ~1 ms timed: ``read`` loads it with L1 bypassed; ``atomic_add`` adds it into a second
such buffer with relaxed fp32 atomics, counted as 8 bytes of L2 traffic per element (the read and the write of the
sum, as the report counts them; the source's loads are not counted, so the rate errs low; every element has an
address of its own, so the engine's atomics, which meet on shared rows, may go slower). Both take the best over a
few grid sizes and warp counts, so that the rate is the L2's and not the latency of too few loads in flight.
"""

import functools
import json

import torch
import triton
import triton.language as tl

from .measure import time_call

BLOCK = 2048  # fp32 elements per program per step: four 16-byte loads per thread at 4 warps, two at 8
PROGRAMS_PER_SM = (2, 4, 8)
WARPS = (4, 8)
TIMED_BYTES = 8e9  # per timed run of a kernel: ~1 ms at 8 TB/s


@triton.jit
def _read_kernel(source_ptr, sums_ptr, count, passes, BLOCK: tl.constexpr):
    """Each program sums its strided share of ``source`` ``passes`` times into its own row of ``sums``."""
    program, programs = tl.program_id(0), tl.num_programs(0)
    offsets = tl.arange(0, BLOCK)
    total = tl.zeros((BLOCK,), tl.float32)
    for _ in range(passes):
        for start in range(program * BLOCK, count, programs * BLOCK):
            mask = start + offsets < count
            total += tl.load(source_ptr + start + offsets, mask=mask, other=0.0, cache_modifier=".cg")
    tl.store(sums_ptr + program * BLOCK + offsets, total)


@triton.jit
def _atomic_add_kernel(source_ptr, target_ptr, count, passes, BLOCK: tl.constexpr):
    """``target += passes · source``, one relaxed atomic add per element per pass."""
    program, programs = tl.program_id(0), tl.num_programs(0)
    offsets = tl.arange(0, BLOCK)
    for _ in range(passes):
        for start in range(program * BLOCK, count, programs * BLOCK):
            mask = start + offsets < count
            values = tl.load(source_ptr + start + offsets, mask=mask, other=0.0)
            tl.atomic_add(target_ptr + start + offsets, values, mask=mask, sem="relaxed")


def read_sums(source, sums, passes, num_warps=4):
    """``_read_kernel`` over ``source`` with one program per row of ``sums`` (programs × BLOCK): per program and
    lane the sum of what it loaded, their total passes × source.sum()."""
    _read_kernel[(sums.shape[0],)](source, sums, source.numel(), passes, BLOCK=BLOCK, num_warps=num_warps)
    return sums


def add_atomically(source, target, programs, passes, num_warps=4):
    _atomic_add_kernel[(programs,)](source, target, source.numel(), passes, BLOCK=BLOCK, num_warps=num_warps)


def _best_seconds(run, device):
    """The shortest of 5 timed runs, after 3 untimed ones (compilation, buffers into L2, clocks up)."""
    return time_call(run, device, repeats=5, warmup=3, keep_l2=True)["min_ms"] / 1e3


def l2_rates(device="cuda"):
    """{"read": bytes/s, "atomic_add": bytes/s, "buffer_bytes": …} on ``device`` (CUDA): the best over the grid
    sizes and warp counts tried."""
    device = torch.device(device)
    properties = torch.cuda.get_device_properties(device)
    # Whole blocks for every grid tried (no program streams more than another), within a quarter of the L2 (8.6 MB
    # on an H100/H200: the atomic kernel's two buffers fit their 50-60 MB).
    unit = max(PROGRAMS_PER_SM) * properties.multi_processor_count * BLOCK
    count = max(1, properties.L2_cache_size // 16 // unit) * unit
    passes = max(1, round(TIMED_BYTES / (count * 4)))
    source = torch.ones(count, dtype=torch.float32, device=device)
    target = torch.zeros_like(source)
    read, atomic_add = 0.0, 0.0
    for per_sm in PROGRAMS_PER_SM:
        programs = per_sm * properties.multi_processor_count
        sums = torch.empty(programs, BLOCK, dtype=torch.float32, device=device)
        for warps in WARPS:
            read_s = _best_seconds(functools.partial(read_sums, source, sums, passes, warps), device)
            atomic_s = _best_seconds(functools.partial(add_atomically, source, target, programs, passes, warps), device)
            read = max(read, passes * count * 4 / read_s)
            atomic_add = max(atomic_add, passes * count * 8 / atomic_s)
    return {"read": read, "atomic_add": atomic_add, "buffer_bytes": count * 4}


if __name__ == "__main__":
    rates = l2_rates()
    tbps = {f"{name}_tbps": round(rate / 1e12, 2) for name, rate in rates.items() if name != "buffer_bytes"}
    print(json.dumps({"device": torch.cuda.get_device_name(), **tbps, "buffer_bytes": rates["buffer_bytes"]}))
