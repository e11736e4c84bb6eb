"""python -m bench [--quick] [--loss ...] [--backend ...] [--device cpu|cuda] [--dtype ...] [--out DIR]"""

import argparse
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .cases import LOSSES
from .report import environment, format_table, headline_ratios, write_json, write_plots
from .runner import sweep

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class Config:
    device: str
    losses: list
    dims: list
    dtypes: list
    batch_sizes: list
    impls: list
    repeats: int
    warmup: int
    case_seconds: float  # a case predicted to take longer (all repeats) is skipped, and larger B with it
    memory_fraction: float  # of the memory available at start-up, per case
    oracle_max_rows: int  # errors vs the float64 oracle are measured up to this B


def build_config(args):
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    if args.quick:
        losses = ["multi_similarity", "clip"]
        sizes = [4096 * 2**k for k in range(5)] if gpu else [1024, 2048, 4096]
        repeats, case_seconds = 3, (20.0 if gpu else 40.0)
    else:
        losses = list(LOSSES)
        sizes = [1024 * 2**k for k in range(11 if gpu else 7)]
        repeats, case_seconds = (10, 60.0) if gpu else (3, 300.0)
    return Config(
        device=device,
        losses=args.loss or losses,
        dims=args.dim or [512 if gpu else 128],
        dtypes=[DTYPES[name] for name in (args.dtype or ["bfloat16" if gpu else "float32"])],
        batch_sizes=sorted(args.batch or sizes),
        impls=args.backend or [],
        repeats=args.repeats or repeats,
        warmup=args.warmup,
        case_seconds=args.case_seconds or case_seconds,
        memory_fraction=0.6,
        oracle_max_rows=8192 if gpu else 2048,
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short sweep (the README's main command)")
    parser.add_argument("--loss", nargs="+", choices=sorted(LOSSES), help="losses to run (default: all)")
    parser.add_argument(
        "--backend",
        nargs="+",
        help="implementations: reference, cpp, triton, triton-deterministic, triton-symmetric (CUDA), pml, "
        "torch.compile-dense, inf-cl",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when present, else cpu")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES))
    parser.add_argument("--dim", nargs="+", type=int, help="embedding sizes D")
    parser.add_argument("--batch", nargs="+", type=int, help="batch sizes B (default: doubling from 1024)")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each timing")
    parser.add_argument(
        "--case-seconds", type=float, help="skip a size whose timings are predicted to take longer than this"
    )
    parser.add_argument("--out", default="bench/results", help="directory for the JSON rows and PNG plots")
    parser.add_argument("--name", help="file name stem of the results (default: mode, device and host)")
    return parser.parse_args(argv)


def _progress_printer():
    """A one-line progress bar on a terminal (tqdm), plain lines elsewhere (logs)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return lambda text: print(f"  … {text}", file=sys.stderr, flush=True), lambda: None
    bar = tqdm(bar_format="[{elapsed}] case {n_fmt}: {desc}", file=sys.stderr)

    def show(text):
        bar.set_description_str(text)
        bar.update()

    return show, bar.close


def main(argv=None):
    args = parse_args(argv)
    config = build_config(args)
    env = environment(config.device)
    print(f"pairloss benchmark on {env['device']} (torch {env['versions']['torch']}, commit {env['commit']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    where = env["device"] if config.device.startswith("cuda") else f"cpu-{platform.node() or 'host'}"
    stem = args.name or f"{'quick' if args.quick else 'full'}-{where}".replace(" ", "_")
    config_dict = {**asdict(config), "dtypes": [str(d) for d in config.dtypes], "quick": args.quick}

    def save(rows, missing, rates):
        write_json(out / f"{stem}.json", env, config_dict, rows, missing, rates, headline_ratios(rows))

    def on_row(row, rows, missing, rates):
        # Each row goes to the log and the JSON as it lands: a run cut short by a time limit keeps what it measured.
        print("measured:", format_table([row]).splitlines()[1], flush=True)
        save(rows, missing, rates)

    started = time.perf_counter()
    show, close = _progress_printer()
    rows, missing, rates = sweep(config, progress=show, on_row=on_row)
    close()
    print(format_table(rows))
    for name, why in sorted(missing.items()):
        print(f"missing: {name}: {why}")
    for ratio in headline_ratios(rows):
        print(
            f"{ratio['loss']} B={ratio['B']}: {ratio['ours']} is {ratio['speedup']}× faster than {ratio['peer']} "
            f"with {ratio['memory_ratio']}× less peak memory"
        )
    save(rows, missing, rates)
    plots = write_plots(out, stem, rows, env["device"])
    print(f"wrote {out / (stem + '.json')} and {len(plots)} plot(s) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
