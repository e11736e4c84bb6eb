"""Results JSON → a Markdown table for the README: ``python -m bench.markdown bench/results/NAME.json``."""

import json
import sys
from pathlib import Path


def _cell(row, key):
    return f"{row[key]['median_ms']:.1f}" if key in row else "–"


def markdown_table(payload):
    lines = [
        f"{payload['device']}, torch {payload['versions']['torch']}, commit {payload['commit']}, {payload['date']}",
        "",
        "| loss | impl | B | D | dtype | fwd ms | bwd ms | fwd+bwd ms (range) | peak MiB | % GEMM | max err |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in payload["rows"]:
        head = f"| {row['loss']} | {row['impl']} | {row['B']} | {row['D']} | {row['dtype']} |"
        if row["status"] != "ok":
            lines.append(f"{head} {row['status']} | | | | | |")
            continue
        spread = f"{row['fwd_bwd']['median_ms']:.1f} ({row['fwd_bwd']['min_ms']:.1f}–{row['fwd_bwd']['max_ms']:.1f})"
        error = f"{row['max_abs_error']:.1e}" if "max_abs_error" in row else "–"
        lines.append(
            f"{head} {_cell(row, 'fwd')} | {_cell(row, 'bwd')} | {spread} | {row['peak_mib']:.0f} | "
            f"{row['gemm_roofline_pct']:.0f} | {error} |"
        )
    for name, why in sorted(payload["missing_implementations"].items()):
        lines.append(f"\nmissing: {name}: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(markdown_table(json.loads(Path(path).read_text())))
        print()
