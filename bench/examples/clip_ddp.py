"""A two-tower CLIP-style model trained with DistributedDataParallel on 2 gloo processes, the loss being
``pairloss.distributed.clip_loss`` with the ring strategy (each rank holds its own rows and one visiting block,
never the global similarity matrix). Images: scikit-learn's digits; captions: two words, the digit's name and
how much ink it has ("seven heavy"), 30 distinct captions. The same training on one process with the whole
global batch is run alongside: the DDP run must follow it step for step (the distributed loss is exact).

    python -m bench.examples.clip_ddp [--steps 120] [--batch 512]
"""

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import pairloss

from ._common import arguments, plot_curves, save
from .metric_learning_digits import digits

WORLD = 2
RANK_TIMEOUT_S = 600
DIGITS, INK_LEVELS = 10, 3
EMBEDDING = 32


class TwoTower(torch.nn.Module):
    """Image tower (an MLP on the 8×8 pixels), caption tower (mean of word embeddings), a learnable scale."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.image = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, EMBEDDING))
        self.words = torch.nn.EmbeddingBag(DIGITS + INK_LEVELS, 64, mode="mean")
        self.text = torch.nn.Linear(64, EMBEDDING)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, pixels, captions):
        image = torch.nn.functional.normalize(self.image(pixels), dim=1)
        text = torch.nn.functional.normalize(self.text(self.words(captions)), dim=1)
        return image, text, self.logit_scale.exp()


def captions_of(pixels, labels, thresholds):
    """Word ids: the digit (0–9) and its ink level (10–12, by the train set's terciles of total intensity)."""
    ink = torch.bucketize(pixels.sum(1), thresholds)
    return torch.stack([labels, DIGITS + ink], dim=1)


def dataset(seed):
    (pixels, labels), (test_pixels, test_labels) = digits(seed)
    thresholds = pixels.sum(1).quantile(torch.tensor([1 / 3, 2 / 3]))
    return (pixels, captions_of(pixels, labels, thresholds)), (
        test_pixels,
        captions_of(test_pixels, test_labels, thresholds),
    )


def zero_shot_accuracy(model, pixels, captions):
    """Each test image against the 30 possible captions: the share whose best caption is its own."""
    every = torch.cartesian_prod(torch.arange(DIGITS), DIGITS + torch.arange(INK_LEVELS))
    with torch.no_grad():
        image, text, _ = model(pixels, every)
    best = every[(image @ text.T).argmax(1)]
    return float((best == captions).all(1).float().mean())


def global_batches(rows, steps, batch, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(rows, generator=generator)[:batch] for _ in range(steps)]


def single_process(data, steps, batch, seed):
    """The reference: the whole global batch on one process, pairloss.clip_loss."""
    (pixels, captions), _ = data
    model = TwoTower(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    curve = []
    for rows in global_batches(len(pixels), steps, batch, seed):
        loss = pairloss.clip_loss(*model(pixels[rows], captions[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    return model, curve


def train_rank(rank, data, steps, batch, seed):
    """This rank's share of the DDP training; returns the loss curve, step times and the final weights."""
    (pixels, captions), _ = data
    model = DistributedDataParallel(TwoTower(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    share = batch // WORLD
    curve, step_ms = [], []
    for rows in global_batches(len(pixels), steps, batch, seed):
        local = rows[rank * share : (rank + 1) * share]
        began = time.perf_counter()
        loss = pairloss.distributed.clip_loss(*model(pixels[local], captions[local]), strategy="ring")
        optimizer.zero_grad()
        loss.backward()  # DDP averages the ranks' gradients: the exact gradient of the global batch
        optimizer.step()
        step_ms.append((time.perf_counter() - began) * 1e3)
        value = loss.detach().clone()
        dist.all_reduce(value)
        curve.append(value.item() / WORLD)  # the mean over ranks is the global batch's loss
    return {"loss": curve, "median_step_ms": statistics.median(step_ms), "state": model.module.state_dict()}


def rank_main(rank, directory, steps, batch, seed):
    """One rank, in its own process: train, rank 0 saves the run, then leave the group together."""
    dist.init_process_group("gloo", init_method=f"file://{directory}/init", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        run = train_rank(rank, dataset(seed), steps, batch, seed)
        if rank == 0:
            torch.save(run, f"{directory}/rank0.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def distributed(steps, batch, seed):
    """The DDP run: WORLD fresh interpreters (``--rank``), as a launcher such as torchrun would start them."""
    with tempfile.TemporaryDirectory() as directory:
        command = [sys.executable, "-m", "bench.examples.clip_ddp", "--steps", str(steps), "--batch", str(batch),
                   "--seed", str(seed), "--init-dir", directory]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS="1")
        ranks = [subprocess.Popen([*command, "--rank", str(rank)], env=env) for rank in range(WORLD)]
        try:
            codes = [process.wait(timeout=RANK_TIMEOUT_S) for process in ranks]
        finally:
            for process in ranks:  # a hung rank must not outlive the run
                process.kill()
        if any(codes):
            raise SystemExit(f"a DDP rank failed (exit codes {codes})")
        run = torch.load(Path(directory) / "rank0.pt")
    model = TwoTower(seed)
    model.load_state_dict(run.pop("state"))
    return model, run


def plot(out, single_curve, ddp_curve):
    curves = {"one process, global batch": single_curve, f"DDP, {WORLD} gloo ranks, ring": ddp_curve}
    return plot_curves(out, "clip_ddp", curves, "CLIP loss", "digits CLIP: pairloss.distributed vs one process")


def main(argv=None):
    args = arguments(__doc__.splitlines()[0], steps=120, argv=argv, batch=512, seed=0, rank=-1, init_dir="")
    if args.batch % WORLD:
        raise SystemExit(f"--batch must be a multiple of {WORLD}")
    if args.rank >= 0:  # a rank process started by distributed()
        rank_main(args.rank, args.init_dir, args.steps, args.batch, args.seed)
        return
    data = dataset(args.seed)
    ddp_model, ddp = distributed(args.steps, args.batch, args.seed)
    single_model, single_curve = single_process(data, args.steps, args.batch, args.seed)
    differences = [abs(a - b) for a, b in zip(ddp["loss"], single_curve)]
    difference, early_difference = max(differences), max(differences[:10])
    parameter_difference = max(
        float((a - b).abs().max()) for a, b in zip(ddp_model.state_dict().values(), single_model.state_dict().values())
    )
    accuracy = {name: zero_shot_accuracy(m, *data[1]) for name, m in (("ddp", ddp_model), ("single", single_model))}
    print(
        f"DDP ({WORLD} ranks, ring): final loss {ddp['loss'][-1]:.4f}, zero-shot caption accuracy {accuracy['ddp']:.3f}, "
        f"step {ddp['median_step_ms']:.1f} ms"
    )
    print(
        f"one process:          final loss {single_curve[-1]:.4f}, zero-shot caption accuracy {accuracy['single']:.3f}"
    )
    print(
        f"loss difference: {early_difference:.1e} over the first 10 steps, {difference:.1e} over all (Adam amplifies "
        f"rounding); final parameters differ by {parameter_difference:.1e}"
    )
    payload = {
        "steps": args.steps, "global_batch": args.batch, "world": WORLD, "ddp": ddp, "single_process_loss": single_curve,
        "max_loss_difference": difference, "max_loss_difference_first_10_steps": early_difference, "max_parameter_difference": parameter_difference,
        "zero_shot_caption_accuracy": accuracy,
    }  # fmt: skip
    written = save(args.out, "clip_ddp", payload)
    print("wrote", written, plot(args.out, single_curve, ddp["loss"]) or "(no matplotlib: no plot)")


if __name__ == "__main__":
    main()
