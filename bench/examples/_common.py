"""What the examples share: their command line, where results go, and the optional plot."""

import argparse
import json
from pathlib import Path

from ..report import environment

RESULTS = Path(__file__).resolve().parent.parent / "results" / "examples"


def arguments(description, steps, argv=None, **extra):
    """``--steps`` (training steps), ``--out`` (results folder) and the example's own options (name → default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and PNG results")
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    return parser.parse_args(argv)


def save(out, name, payload):
    """Write ``payload`` (with where it was measured) as ``out/name.json``; returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({**environment("cpu"), **payload}, indent=1))
    return path


def plot_curves(out, name, curves, ylabel, title):
    """``curves`` (label → values, the first solid, the others dashed) against the step, as ``out/name.png``;
    returns the path, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (label, values) in enumerate(curves.items()):
        axis.plot(values, "-" if index == 0 else "--", label=label)
    axis.set(xlabel="step", ylabel=ylabel, title=title)
    axis.legend()
    path = out / f"{name}.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path
