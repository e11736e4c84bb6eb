"""Each framework's own loss against pairloss's drop-in as the batch doubles, on this machine's CPU with a memory
cap per case: pytorch-metric-learning's MultiSimilarityLoss with its miner, sentence-transformers'
MultipleNegativesRankingLoss, OpenCLIP's ClipLoss. Forward + backward time and peak memory (resident set) of the
loss alone on random D=128 embeddings, each case in a fresh process, up to the largest batch the framework's
loss survives and twice beyond it for pairloss. The default cap (2 GiB) keeps the run under two minutes; the
machine's own limit is found with a larger one (e.g. ``--cap-gib 16``).

    python -m bench.examples.largest_batch [--cap-gib 2] [--max-batch 16384]
"""

import json
import statistics
import subprocess
import sys
import time

import torch

from ..measure import PeakMemory, cap_cpu_memory
from ..runner import is_oom
from ._common import arguments, save
from ._open_clip import open_clip_losses

DIM = 128
FRAMEWORKS = ("pml", "sentence_transformers", "open_clip")
DOUBLINGS_BEYOND = 1  # pairloss goes on to 2× the batch where the framework's loss failed


def _losses(framework, implementation):
    """(make inputs, loss of the inputs) for one framework's loss ("theirs") or pairloss's drop-in ("ours")."""
    if framework == "pml":
        if implementation == "theirs":
            from pytorch_metric_learning import losses, miners
        else:
            from pairloss.integrations import pml as losses
            from pairloss.integrations import pml as miners
        loss, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()

        def make(rows, generator):
            return [torch.randn(rows, DIM, generator=generator)], torch.randint(
                0, rows // 4, (rows,), generator=generator
            )

        return make, lambda leaves, labels: loss(leaves[0], labels, miner(leaves[0], labels))
    if framework == "sentence_transformers":
        from sentence_transformers.sentence_transformer import losses

        from pairloss.integrations import sentence_transformers as fused

        loss = (losses if implementation == "theirs" else fused).MultipleNegativesRankingLoss(None)

        def make(rows, generator):
            return [torch.randn(rows, DIM, generator=generator) for _ in range(2)], None

        return make, lambda leaves, _: loss.compute_loss_from_embeddings(leaves, None)
    from pairloss.integrations import open_clip as fused

    if implementation == "theirs":
        module = open_clip_losses()
        if module is None:
            raise ImportError("open_clip_torch is not installed")
        loss = module.ClipLoss()
    else:
        loss = fused.ClipLoss()

    def make(rows, generator):
        towers = [torch.nn.functional.normalize(torch.randn(rows, DIM, generator=generator), dim=1) for _ in "it"]
        return towers, torch.tensor(20.0)

    return make, lambda leaves, scale: loss(*leaves, scale)


def run_case(framework, implementation, rows, cap_gib, repeats=1):
    """One case in this process: fwd+bwd ms (after a warm-up call) and peak MiB, or the failure."""
    try:
        make, loss = _losses(framework, implementation)
    except ImportError as error:
        return {"status": f"not installed: {error}"}
    leaves, rest = make(rows, torch.Generator().manual_seed(0))
    leaves = [leaf.requires_grad_(True) for leaf in leaves]
    cap_cpu_memory(cap_gib * 2**30)
    try:
        with PeakMemory(torch.device("cpu")) as peak:
            loss(leaves, rest).backward()  # also the warm-up
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            loss(leaves, rest).backward()
            times.append((time.perf_counter() - began) * 1e3)
        return {"status": "ok", "fwd_bwd_ms": statistics.median(times), "peak_mib": round(peak.mib, 1)}
    except Exception as error:  # noqa: BLE001 — running out of memory is the result being measured
        return {"status": "OOM" if is_oom(error) else f"error: {type(error).__name__}: {str(error)[:200]}"}


def _in_fresh_process(framework, implementation, rows, cap_gib):
    command = [sys.executable, "-m", "bench.examples.largest_batch", "--case", f"{framework},{implementation},{rows}",
               "--cap-gib", str(cap_gib)]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"status": f"process failed ({done.returncode}): {done.stderr[-300:]}"}
    return json.loads(lines[-1])


def sweep(framework, cap_gib, max_batch, first_batch):
    rows, theirs_failed_at, results = first_batch, None, []
    while rows <= max_batch:
        for implementation in ("theirs", "ours"):
            if implementation == "theirs" and theirs_failed_at is not None:
                continue
            result = _in_fresh_process(framework, implementation, rows, cap_gib)
            results.append({"framework": framework, "implementation": implementation, "B": rows, **result})
            print(json.dumps(results[-1]), flush=True)
            if implementation == "theirs" and result["status"] != "ok":
                theirs_failed_at = rows
        if theirs_failed_at is not None and rows >= theirs_failed_at * 2**DOUBLINGS_BEYOND:
            break
        rows *= 2
    return results


def summary(results):
    """Per framework: the largest batch its own loss survived, and both sides' time and memory there."""
    lines = {}
    for framework in FRAMEWORKS:
        ok = {(r["implementation"], r["B"]): r for r in results if r["framework"] == framework and r["status"] == "ok"}
        survived = max((b for impl, b in ok if impl == "theirs"), default=None)
        largest_ours = max((b for impl, b in ok if impl == "ours"), default=None)
        if survived is None:
            continue
        theirs, ours = ok[("theirs", survived)], ok.get(("ours", survived))
        lines[framework] = {"largest_batch_theirs": survived, "largest_batch_ours_tried": largest_ours,
                            "theirs": theirs, "ours": ours}  # fmt: skip
    return lines


def main(argv=None):
    args = arguments(__doc__.splitlines()[0], steps=0, argv=argv, cap_gib=2, max_batch=16384, first_batch=4096,
                     case="")  # fmt: skip
    if args.case:  # a child process: one measurement, printed as a JSON line
        framework, implementation, rows = args.case.split(",")
        print(json.dumps(run_case(framework, implementation, int(rows), args.cap_gib)))
        return
    results = [r for framework in FRAMEWORKS for r in sweep(framework, args.cap_gib, args.max_batch, args.first_batch)]
    lines = summary(results)
    for framework, line in lines.items():
        theirs, ours = line["theirs"], line["ours"] or {}
        print(
            f"{framework:22s} own loss survives B={line['largest_batch_theirs']} under {args.cap_gib} GiB: "
            f"{theirs['fwd_bwd_ms']:.0f} ms, {theirs['peak_mib']:.0f} MiB; pairloss there: "
            f"{ours.get('fwd_bwd_ms', float('nan')):.0f} ms, {ours.get('peak_mib', float('nan')):.0f} MiB "
            f"(ran up to B={line['largest_batch_ours_tried']})"
        )
    payload = {"dim": DIM, "cap_gib": args.cap_gib, "rows": results, "summary": lines}
    print("wrote", save(args.out, "largest_batch", payload))


if __name__ == "__main__":
    main()
