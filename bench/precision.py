"""python -m bench.precision [--device cpu|cuda] [--backends …] [--seeds N] [--rows B] [--dim D] [--out FILE]

Half-precision accuracy of every loss on every backend. On clustered batches (positives 0.1–0.6 apart, hard
negatives close by; ``tests/backend_cases.clustered_case``) in fp16 and bf16: the largest absolute error of the
loss and of each gradient against a float64 truth, as a ratio to the error of plain PyTorch in the same dtype
(``F.normalize`` and the dense formula evaluated in that dtype), worst over the seeds.

Two truths: on the backend's operands (the rows normalised and rounded to the dtype the backend takes them in,
what the test suite's rule ≤ 2 checks: the error the engine adds), and on the inputs (the dense formula on the
unrounded unit rows: what a user sees, including the rounding of the normalised rows to fp16/bf16 that
tensor-core engines need; near a hinge or a mining threshold that rounding can flip a pair's term).
"""

import argparse
import json
import math
import os
from pathlib import Path

import torch

if not torch.cuda.is_available():  # Triton runs on CPU tensors through its interpreter (set before importing it)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pairloss
from tests.backend_cases import ALL_LOSSES, backend_operand_dtype, clustered_case, run_loss, run_oracle, split_case
from tests.tolerances import max_error

from .report import environment

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TRUTHS = ("operands", "inputs")


def _errors(loss_name, backend, dtype, device, seed, rows, dim):
    """{truth: {quantity: (backend's error, plain PyTorch's error)}} for the loss and each gradient."""
    tensors, options, _ = split_case(loss_name, clustered_case(loss_name, dtype, device, seed, rows, dim))
    results = {
        "backend": run_loss(loss_name, backend, tensors, options),
        "plain": run_oracle(loss_name, tensors, options),
    }
    operands = backend_operand_dtype(loss_name, backend, tensors, options)
    truths = {
        "operands": run_oracle(loss_name, tensors, options, torch.float64, operands),
        "inputs": run_oracle(loss_name, tensors, options, torch.float64),
    }
    errors = {}
    for truth_name, (truth_loss, truth_grads) in truths.items():
        table = errors[truth_name] = {}
        table["loss"] = tuple(max_error(results[k][0], truth_loss) for k in ("backend", "plain"))
        for name, truth_grad in truth_grads.items():
            table[f"d/d{name}"] = tuple(max_error(results[k][1][name], truth_grad) for k in ("backend", "plain"))
    return errors


def _ratio(errors):
    kernel, plain = errors
    return kernel / plain if plain > 0 else (0.0 if kernel == 0 else math.inf)


def measure(args):
    rows = []
    for loss_name in ALL_LOSSES:
        for dtype_name, dtype in DTYPES.items():
            for backend in args.backends:
                worst = {truth: {} for truth in TRUTHS}
                for seed in range(args.seeds):
                    errors = _errors(loss_name, backend, dtype, args.device, seed, args.rows, args.dim)
                    for truth in TRUTHS:
                        for quantity, pair in errors[truth].items():
                            if quantity not in worst[truth] or _ratio(pair) > _ratio(worst[truth][quantity]):
                                worst[truth][quantity] = pair
                row = {"loss": loss_name, "dtype": dtype_name, "backend": backend}
                for truth in TRUTHS:
                    table = worst[truth]
                    grad = max((q for q in table if q != "loss"), key=lambda q: _ratio(table[q]))
                    row[truth] = {
                        "loss_error": table["loss"][0], "torch_loss_error": table["loss"][1],
                        "loss_ratio": _ratio(table["loss"]), "grad": grad, "grad_error": table[grad][0],
                        "torch_grad_error": table[grad][1], "grad_ratio": _ratio(table[grad]),
                    }  # fmt: skip
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _line(row):
    parts = [f"{row['loss']:24s} {row['dtype']} {row['backend']:9s}"]
    for truth in TRUTHS:
        r = row[truth]
        parts.append(
            f"[{truth}] loss {r['loss_error']:.1e}/{r['torch_loss_error']:.1e}={r['loss_ratio']:.2f} "
            f"{r['grad']} {r['grad_error']:.1e}/{r['torch_grad_error']:.1e}={r['grad_ratio']:.2f}"
        )
    return "  ".join(parts)


def markdown_table(rows, backends, truth="operands"):
    """One row per loss: the loss and worst-gradient ratios per dtype and backend, against ``truth``."""
    columns = [(d, b) for d in DTYPES for b in backends]
    lines = [
        "| loss | " + " | ".join(f"{b} {d}" for d, b in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    by_key = {(r["loss"], r["dtype"], r["backend"]): r[truth] for r in rows}
    for loss_name in ALL_LOSSES:
        cells = []
        for dtype_name, backend in columns:
            row = by_key.get((loss_name, dtype_name, backend))
            cells.append("–" if row is None else f"{row['loss_ratio']:.2f} / {row['grad_ratio']:.2f}")
        lines.append(f"| {loss_name.removesuffix('_loss')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device_type = torch.device(args.device).type
    args.backends = args.backends or pairloss.available_backends(device_type)
    rows = measure(args)
    tables = {truth: markdown_table(rows, args.backends, truth) for truth in TRUTHS}
    for truth, table in tables.items():
        print(f"\nerror ratio to plain PyTorch in the same dtype (loss / worst gradient), truth on the {truth}, "
              f"worst of {args.seeds} seeds:\n{table}")  # fmt: skip
    out = Path(args.out or f"bench/results/precision-{device_type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {**environment(args.device), "rows_per_batch": args.rows, "dim": args.dim, "seeds": args.seeds,
               "rows": rows, "tables": tables}  # fmt: skip
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
