"""The GPU's L2 rates, measured: what the static report (``python -m pairloss.triton_engine._compile_check --report B D
--l2-tbps RATE``) divides the engine's L2 traffic by. Its operand blocks come from L2 (Triton's pipelined loads
bypass L1) and its backward adds fp32 blocks there atomically; peak figures for either are not published.

    python -m bench.l2        # on a CUDA machine: one JSON line, rates in TB/s

Each kernel streams a buffer a quarter of the L2's size many times within one launch (no launch overhead in the
timing): ``read`` loads it with L1 bypassed, ``atomic_add`` adds it into a second such buffer with relaxed fp32
atomics (8 bytes of L2 traffic per element: the read and the write of the sum, as the report counts them; the
source's loads are not counted, so the rate errs low).
"""

import json

import torch
import triton
import triton.language as tl

BLOCK = 1024  # fp32 elements per program per step
PASSES = 512  # times each kernel streams its buffer: ~1 ms at 10 TB/s, well past launch and timer overheads


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


def read_sums(source, programs, passes):
    """Per program and lane, the sum of what ``_read_kernel`` loaded (their total is passes × source.sum())."""
    sums = torch.zeros(programs, BLOCK, dtype=torch.float32, device=source.device)
    _read_kernel[(programs,)](source, sums, source.numel(), passes, BLOCK=BLOCK)
    return sums


def add_atomically(source, target, programs, passes):
    _atomic_add_kernel[(programs,)](source, target, source.numel(), passes, BLOCK=BLOCK)


def _best_seconds(run, warmup=3, repeats=5):
    """The shortest of ``repeats`` timed runs, after ``warmup`` (compilation, buffers into L2, clocks up)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return min(times)


def l2_rates(device="cuda"):
    """{"read": bytes/s, "atomic_add": bytes/s, "buffer_bytes": …} on ``device`` (CUDA)."""
    properties = torch.cuda.get_device_properties(device)
    count = properties.L2_cache_size // 4 // 4  # fp32 elements in a quarter of the L2
    programs = 4 * properties.multi_processor_count
    source = torch.ones(count, dtype=torch.float32, device=device)
    target = torch.zeros_like(source)
    read_s = _best_seconds(lambda: read_sums(source, programs, PASSES))
    atomic_s = _best_seconds(lambda: add_atomically(source, target, programs, PASSES))
    return {"read": PASSES * count * 4 / read_s, "atomic_add": PASSES * count * 8 / atomic_s, "buffer_bytes": count * 4}


if __name__ == "__main__":
    rates = l2_rates()
    tbps = {f"{name}_tbps": round(rate / 1e12, 2) for name, rate in rates.items() if name != "buffer_bytes"}
    print(json.dumps({"device": torch.cuda.get_device_name(), **tbps, "buffer_bytes": rates["buffer_bytes"]}))
