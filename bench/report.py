"""Results out: the terminal table, JSON rows with the machine's description, and log-log plots."""

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch


def environment(device):
    """Where the numbers come from: machine, device, versions, commit."""
    device = torch.device(device)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("triton", "pytorch_metric_learning", "pairloss"):
        try:
            versions[package] = __import__(package).__version__
        except (ImportError, AttributeError):
            versions[package] = None
    return {
        "machine": platform.node(),
        "device": device_name,
        "versions": versions,
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _ms(row, key):
    return f"{row[key]['median_ms']:.1f}" if key in row else "-"


def format_table(rows):
    header = ["loss", "impl", "B", "D", "dtype", "fwd ms", "bwd ms", "fwd+bwd ms", "spread", "peak MiB", "%GEMM", "err"]
    lines = [header]
    for row in rows:
        if row["status"] != "ok":
            lines.append([row["loss"], row["impl"], str(row["B"]), str(row["D"]), row["dtype"], row["status"]])
            continue
        spread = f"{row['fwd_bwd']['min_ms']:.1f}–{row['fwd_bwd']['max_ms']:.1f}"
        error = f"{row['max_abs_error']:.1e}" if "max_abs_error" in row else "-"
        lines.append(
            [row["loss"], row["impl"], str(row["B"]), str(row["D"]), row["dtype"], _ms(row, "fwd"), _ms(row, "bwd"),
             _ms(row, "fwd_bwd"), spread, f"{row['peak_mib']:.0f}", f"{row['gemm_roofline_pct']:.0f}", error]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines if i < len(line)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def headline_ratios(rows):
    """For each loss: the fastest pairloss backend vs each peer at the largest B both ran (fwd+bwd time and
    peak memory ratios, measured in the same run)."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = []
    for loss in dict.fromkeys(r["loss"] for r in ok):
        ours = [
            r
            for r in ok
            if r["loss"] == loss and r["impl"].startswith("pairloss-") and r["impl"] != "pairloss-reference"
        ]
        peers = {r["impl"] for r in ok if r["loss"] == loss and r not in ours}
        for peer in sorted(peers):
            both = [
                (mine, theirs)
                for mine in ours
                for theirs in ok
                if theirs["loss"] == loss and theirs["impl"] == peer
                and (theirs["B"], theirs["D"], theirs["dtype"]) == (mine["B"], mine["D"], mine["dtype"])
            ]  # fmt: skip
            if not both:
                continue
            largest = max(mine["B"] for mine, _ in both)
            mine, theirs = min(
                ((m, t) for m, t in both if m["B"] == largest), key=lambda pair: pair[0]["fwd_bwd"]["median_ms"]
            )
            out.append(
                {
                    "loss": loss, "B": largest, "ours": mine["impl"], "peer": peer,
                    "speedup": round(theirs["fwd_bwd"]["median_ms"] / mine["fwd_bwd"]["median_ms"], 2),
                    "memory_ratio": round(theirs["peak_mib"] / max(mine["peak_mib"], 0.1), 1),
                }
            )  # fmt: skip
    return out


def write_json(path, env, config, rows, missing, rates, ratios):
    payload = {
        **env, "config": config, "peak_gemm_flops_per_s_by_dtype_dim": rates, "missing_implementations": missing,
        "headline": ratios, "rows": rows,
    }  # fmt: skip
    # Written aside and renamed over: a run stopped mid-write (the GPU check's time limits) leaves the last whole file.
    partial = Path(f"{path}.partial")
    partial.write_text(json.dumps(payload, indent=1))
    os.replace(partial, path)


def write_plots(directory, stem, rows, device_name):
    """One PNG per loss: fwd+bwd time and peak memory against B, log-log, one line per implementation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    ok = [r for r in rows if r["status"] == "ok"]
    for loss in dict.fromkeys(r["loss"] for r in ok):
        figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
        for impl in dict.fromkeys(r["impl"] for r in ok if r["loss"] == loss):
            series = sorted((r for r in ok if r["loss"] == loss and r["impl"] == impl), key=lambda r: r["B"])
            sizes = [r["B"] for r in series]
            time_axis.plot(sizes, [r["fwd_bwd"]["median_ms"] for r in series], marker="o", label=impl)
            memory_axis.plot(sizes, [max(r["peak_mib"], 0.1) for r in series], marker="o", label=impl)
        for axis, label in ((time_axis, "fwd+bwd time (ms, median)"), (memory_axis, "peak memory beyond inputs (MiB)")):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("batch size B")
            axis.set_ylabel(label)
            axis.grid(True, which="both", alpha=0.3)
        time_axis.legend(fontsize=8)
        figure.suptitle(f"{loss} — {device_name}")
        figure.tight_layout()
        path = Path(directory) / f"{stem}-{loss}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(str(path))
    return written
