"""The sweep: for each loss, dimension, dtype and implementation, time fwd / bwd / fwd+bwd and measure peak
memory while doubling the batch, until the time or memory budget says the next size would not fit."""

import gc

import torch

from .cases import LOSSES, implementations
from .measure import PeakMemory, available_memory_bytes, cap_cpu_memory, gemm_rate, time_call


def is_oom(error):
    message = str(error).lower()
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or any(
        text in message for text in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


def _loss_and_grads(loss, impl, leaves, rest):
    for leaf in leaves:
        leaf.grad = None
    value = impl.run(leaves, rest)
    value.backward()
    return value.detach().double(), [leaf.grad.detach().double() for leaf in leaves]


def _oracle(loss, rows, dim, device, seed):
    """Loss and gradients of the dense reference in float64: the truth the errors are measured against."""
    leaves, rest = loss.make_inputs(rows, dim, torch.float64, device, seed)
    value = loss.call(leaves, rest, "reference")
    value.backward()
    return value.detach(), [leaf.grad for leaf in leaves]


def _max_error(result, oracle):
    (value, grads), (true_value, true_grads) = result, oracle
    return max([(value - true_value).abs().item()] + [(g - t).abs().max().item() for g, t in zip(grads, true_grads)])


def measure_case(loss, impl, rows, dim, dtype, device, repeats, warmup=1, oracle=None, seed=0):
    """One row of results: timings, peak memory and error, or an OOM / failure record."""
    row = _case(loss, impl, rows, dim, dtype)
    try:
        with impl.setting():
            leaves, rest = loss.make_inputs(rows, dim, dtype, device, seed)
            result = _loss_and_grads(loss, impl, leaves, rest)  # also the warm-up (compilation, autotuning)
            with PeakMemory(device) as peak:
                _loss_and_grads(loss, impl, leaves, rest)
            row["peak_mib"] = round(peak.mib, 1)
            row["fwd"] = time_call(lambda: impl.run(leaves, rest), device, repeats, warmup)
            row["fwd_bwd"] = time_call(lambda: impl.run(leaves, rest).backward(), device, repeats, warmup)
            row["bwd"] = time_call(
                lambda value: value.backward(), device, repeats, warmup, setup=lambda: impl.run(leaves, rest)
            )
            if oracle is not None:
                row["max_abs_error"] = _max_error(result, oracle)
            row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 — an OOM or a failing peer is a result; the sweep goes on
        row["status"] = "OOM" if is_oom(error) else f"error: {type(error).__name__}: {str(error)[:200]}"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def sweep(config, progress=None, on_row=None):
    """All result rows for ``config`` (see __main__ for the fields), the implementations missing and the GEMM rates.
    ``progress(text)`` is told of each case before it runs; ``on_row(row, rows, missing, rates)`` of each row as it
    lands (so that a run stopped by a time limit still leaves what it measured)."""
    device = torch.device(config.device)
    rows_out, missing = [], {}
    rates = {}  # (dtype, dim) -> peak GEMM FLOP/s with that many features, measured once

    def rates_by_name():
        return {"/".join(map(str, shape)): rate for shape, rate in rates.items()}

    def keep(row):
        rows_out.append(row)
        if on_row:
            on_row(row, rows_out, missing, rates_by_name())

    memory_budget = config.memory_fraction * available_memory_bytes(device) / 2**20
    if device.type == "cpu":
        cap_cpu_memory(memory_budget * 2**20)
    for loss_name in config.losses:
        loss = LOSSES[loss_name]
        for dim in config.dims:
            for dtype in config.dtypes:
                impls, absent = implementations(loss, device, config.impls)
                oracles = {}
                missing.update({f"{loss_name}/{name}": why for name, why in absent.items()})
                for impl in impls:
                    last = None
                    for rows in config.batch_sizes:
                        if last is not None and last["status"] != "ok":
                            break  # OOM or failure at the previous size: larger ones would fail too
                        if last is not None and _predicted_over_budget(last, rows, config, memory_budget):
                            keep({**_case(loss, impl, rows, dim, dtype), "status": "skipped: over budget"})
                            break
                        if progress:
                            progress(f"{loss_name} {impl.name} B={rows} D={dim} {dtype}")
                        if rows <= config.oracle_max_rows and rows not in oracles:
                            oracles[rows] = _oracle(loss, rows, dim, device, seed=0)
                        last = measure_case(
                            loss, impl, rows, dim, dtype, device, config.repeats, config.warmup, oracles.get(rows)
                        )
                        if last["status"] == "ok":
                            shape = (str(dtype).removeprefix("torch."), dim)
                            if shape not in rates:
                                rates[shape] = gemm_rate(device, dtype, dim)
                            seconds = last["fwd_bwd"]["median_ms"] / 1e3
                            last["gemm_roofline_pct"] = round(
                                100 * loss.gemm_flops(rows, dim) / seconds / rates[shape], 1
                            )
                        keep(last)
    return rows_out, missing, rates_by_name()


def _case(loss, impl, rows, dim, dtype):
    return {"loss": loss.name, "impl": impl.name, "B": rows, "D": dim, "dtype": str(dtype).removeprefix("torch.")}


def _predicted_over_budget(last, rows, config, memory_budget_mib):
    """Cost grows at most with B² (dense paths in memory, every path in time): predict the next size from the
    last one and skip it when it would break the per-case time budget or the memory budget."""
    growth = (rows / last["B"]) ** 2
    calls = 3 * (config.repeats + config.warmup) + 2
    too_slow = last["fwd_bwd"]["median_ms"] * growth * calls / 1e3 > config.case_seconds
    too_big = last["peak_mib"] * growth > memory_budget_mib
    return too_slow or too_big
