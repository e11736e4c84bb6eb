"""python -m bench.distributed [--loss multi_similarity|ntxent|…|clip|siglip] [--strategies gather ring] [--rows B]
[--dim D] [--worlds 1 2 3 4] [--backends cpp reference] [--out FILE]

Per-rank time and peak extra memory of one forward + backward of a pairloss.distributed loss on gloo process
groups of W local ranks, each with B local rows (global batch W·B). The ranks share this machine's cores, so
times at W > 1 include that contention; memory is per process.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

import pairloss

from .measure import PeakMemory, time_call
from .report import environment

LABEL_LOSSES = ("multi_similarity", "triplet_margin", "contrastive", "circle", "ntxent", "supcon")


def _rank_main(args):
    dist.init_process_group("gloo", init_method=f"file://{args.init}", world_size=args.world, rank=args.rank)
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(args.rank)
    embeddings = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=generator), dim=1)
    labels = torch.randint(0, max(1, args.rows * args.world // 4), (args.rows,), generator=generator)
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)
    rows = []
    for backend in args.backends:
        for strategy in args.strategies:

            def step(backend=backend, strategy=strategy):
                leaf = embeddings.clone().requires_grad_(True)
                options = {"backend": backend, "strategy": strategy}
                if args.loss == "clip":
                    loss = pairloss.distributed.clip_loss(leaf, texts, scale, **options)
                elif args.loss == "siglip":
                    loss = pairloss.distributed.siglip_loss(leaf, texts, scale, bias, **options)
                else:
                    loss = getattr(pairloss.distributed, f"{args.loss}_loss")(leaf, labels, **options)
                loss.backward()

            dist.barrier()
            with PeakMemory(device) as peak:
                step()
            timing = time_call(step, device, repeats=args.repeats, warmup=1)
            rows.append({"loss": args.loss, "backend": backend, "strategy": strategy, "world": args.world,
                         "local_rows": args.rows, "dim": args.dim, "rank": args.rank, "peak_extra_mib": peak.mib,
                         **timing})  # fmt: skip
    gathered = [None] * args.world
    dist.all_gather_object(gathered, rows)
    if args.rank == 0:
        Path(args.result).write_text(json.dumps([row for part in gathered for row in part]))
    dist.destroy_process_group()


def _run_world(args, world):
    with tempfile.TemporaryDirectory() as directory:
        result = Path(directory) / "result.json"
        command = [sys.executable, "-m", "bench.distributed", "--rank-of", str(world), "--init",
                   str(Path(directory) / "init"), "--result", str(result), "--rows", str(args.rows), "--dim",
                   str(args.dim), "--repeats", str(args.repeats), "--loss", args.loss, "--backends", *args.backends,
                   "--strategies", *args.strategies]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // world)))
        processes = [subprocess.Popen([*command, "--rank", str(rank)], env=env) for rank in range(world)]
        for process in processes:
            if process.wait(timeout=1800) != 0:
                raise RuntimeError(f"a rank of the W={world} group failed")
        return json.loads(result.read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048, help="local rows per rank")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--loss", choices=[*LABEL_LOSSES, "clip", "siglip"], default="multi_similarity")
    parser.add_argument("--strategies", nargs="+", default=["gather"], choices=["gather", "ring"])
    parser.add_argument("--backends", nargs="+", default=["cpp", "reference"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--rank-of", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--init", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_of is not None:
        args.world = args.rank_of
        return _rank_main(args)
    results = [row for world in args.worlds for row in _run_world(args, world)]
    print(f"{args.loss}: {'backend':>10} {'strategy':>8} {'W':>2} {'global B':>9} {'median ms (rank 0)':>19} "
          f"{'max peak MiB/rank':>18}")  # fmt: skip
    for backend in args.backends:
        for strategy in args.strategies:
            for world in args.worlds:
                ranks = [r for r in results if (r["backend"], r["strategy"], r["world"]) == (backend, strategy, world)]
                print(f"{backend:>10} {strategy:>8} {world:>2} {world * args.rows:>9} {ranks[0]['median_ms']:>19.1f} "
                      f"{max(r['peak_extra_mib'] for r in ranks):>18.1f}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": environment(torch.device("cpu")), "results": results},
                                             indent=1))  # fmt: skip
    return None


if __name__ == "__main__":
    main()
