"""Smoke test of the training examples in bench/examples: each runs end to end with a few steps, in its own
process as a user would start it, and writes its results (the full runs are in the README's numbers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .frameworks import require, require_open_clip_losses

require("sentence_transformers")
require("sklearn")
require_open_clip_losses()

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600
EXAMPLES = {  # module -> (arguments, check of its JSON)
    "metric_learning_digits": (
        ["--steps", "3"],
        lambda r: len(r["runs"]["pairloss"]["loss"]) == 3 and r["max_relative_loss_difference"] < 1e-4,
    ),
    "clip_ddp": (
        ["--steps", "3", "--batch", "64"],
        lambda r: len(r["ddp"]["loss"]) == 3 and r["max_loss_difference"] < 1e-4,
    ),
    "sentence_transformers_finetune": (
        ["--steps", "3", "--batch", "16"],
        lambda r: len(r["runs"]["pairloss"]["loss"]) == 3 and r["first_step_loss_difference"] < 1e-4,
    ),
    "largest_batch": (
        ["--first-batch", "256", "--max-batch", "512", "--cap-gib", "2"],
        lambda r: len(r["rows"]) == 12 and all(row["status"] == "ok" for row in r["rows"]),
    ),
}


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example, tmp_path):
    arguments, check = EXAMPLES[example]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("TRITON_INTERPRET", None)  # CPU tensors take the C++ engine, as on a user's machine
    done = subprocess.run(
        [sys.executable, "-m", f"bench.examples.{example}", *arguments, "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads((tmp_path / f"{example}.json").read_text())
    assert check(result), json.dumps(result)[:2000]
