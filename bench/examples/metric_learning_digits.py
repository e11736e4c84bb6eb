"""Metric learning on scikit-learn's digits (1797 real 8×8 images, 10 classes): an MLP embedder trained with
multi-similarity loss and its miner, once with pytorch-metric-learning and once with pairloss's PML drop-in
(``pairloss.integrations.pml``), from the same initial weights on the same batches. Reports both loss curves,
Recall@1 on held-out digits, and the time and peak memory of each training step.

    python -m bench.examples.metric_learning_digits [--steps 150] [--batch 256]
"""

import statistics
import time

import torch
from pytorch_metric_learning import losses, miners
from sklearn.datasets import load_digits

from pairloss.integrations import pml

from ..measure import PeakMemory
from ._common import arguments, plot_curves, save

TEST_ROWS = 500


def digits(seed):
    """Train and test splits: pixels scaled to [0, 1], integer labels."""
    data = load_digits()
    pixels = torch.tensor(data.data, dtype=torch.float32) / 16
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, train = order[:TEST_ROWS], order[TEST_ROWS:]
    return (pixels[train], labels[train]), (pixels[test], labels[test])


def embedder(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))


def recall_at_1(model, pixels, labels):
    """Share of test digits whose nearest other test digit (cosine) has the same label."""
    with torch.no_grad():
        rows = torch.nn.functional.normalize(model(pixels), dim=1)
    similarity = rows @ rows.T
    similarity.fill_diagonal_(float("-inf"))
    return float((labels[similarity.argmax(1)] == labels).float().mean())


def train(loss_function, miner, data, steps, batch, seed, shadow=None):
    """Adam steps on random batches (the same for every run with the same seed); per step: loss, ms, MiB.
    ``shadow`` (a loss and its miner) is evaluated on the same embeddings at every step, untimed: the loss
    curve the other implementation gives along this very trajectory."""
    (pixels, labels), (test_pixels, test_labels) = data
    model = embedder(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(seed + 1)
    curve, shadow_curve, step_ms, step_mib = [], [], [], []
    for _ in range(steps):
        rows = torch.randperm(len(labels), generator=batches)[:batch]
        with PeakMemory(torch.device("cpu")) as memory:
            began = time.perf_counter()
            embeddings = model(pixels[rows])
            loss = loss_function(embeddings, labels[rows], miner(embeddings, labels[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step_ms.append((time.perf_counter() - began) * 1e3)
        step_mib.append(memory.mib)
        curve.append(loss.item())
        if shadow is not None:
            with torch.no_grad():
                shadow_curve.append(shadow[0](embeddings, labels[rows], shadow[1](embeddings, labels[rows])).item())
    return {
        "loss": curve,
        "shadow_loss": shadow_curve,
        "recall_at_1": recall_at_1(model, test_pixels, test_labels),
        "median_step_ms": statistics.median(step_ms),
        "median_step_peak_mib": statistics.median(step_mib),
    }


def plot(out, runs):
    curves = {f"{name}: Recall@1 {run['recall_at_1']:.3f}": run["loss"] for name, run in runs.items()}
    return plot_curves(out, "metric_learning_digits", curves, "multi-similarity loss", "digits: PML vs pairloss")


def main(argv=None):
    args = arguments(__doc__.splitlines()[0], steps=150, argv=argv, batch=256, seed=0)
    data = digits(args.seed)
    theirs = (losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner())
    ours = (pml.MultiSimilarityLoss(), pml.MultiSimilarityMiner())
    runs = {
        "PML": train(*theirs, data, args.steps, args.batch, args.seed),
        "pairloss": train(*ours, data, args.steps, args.batch, args.seed, shadow=theirs),
    }
    # The two runs drift apart by rounding after many steps (training is chaotic); along pairloss's trajectory,
    # PML's loss on the very same embeddings measures the difference of the losses themselves. PML returns 0
    # when the miner leaves at most one pair of a kind (a rule pairloss does not copy): such steps are counted.
    pairs = list(zip(runs["pairloss"]["loss"], runs["pairloss"].pop("shadow_loss")))
    early_zero = sum(1 for ours_, theirs_ in pairs if theirs_ == 0 and ours_ != 0)
    compared = [(a, b) for a, b in pairs if b != 0]
    difference = max((abs(a - b) / abs(b) for a, b in compared), default=0.0)
    for name, run in runs.items():
        print(
            f"{name:9s} final loss {run['loss'][-1]:.4f}  Recall@1 {run['recall_at_1']:.3f}  "
            f"step {run['median_step_ms']:.1f} ms  peak {run['median_step_peak_mib']:.1f} MiB"
        )
    print(
        f"same embeddings: largest relative loss difference {difference:.1e} over {len(compared)} steps; "
        f"{early_zero} steps where PML returned 0 for at most one mined pair"
    )
    payload = {
        "steps": args.steps, "batch": args.batch, "max_relative_loss_difference": difference,
        "pml_single_pair_zero_steps": early_zero, "runs": runs,
    }  # fmt: skip
    written = save(args.out, "metric_learning_digits", payload)
    print("wrote", written, plot(args.out, runs) or "(no matplotlib: no plot)")


if __name__ == "__main__":
    main()
