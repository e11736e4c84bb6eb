"""Spawn a gloo process group of worker processes for a test (bounded in time) and collect what each saved."""

import os
import subprocess
import sys
from pathlib import Path

import torch

TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parent.parent


def run_ranks(worker_module, world, directory, *extra_arguments):
    """Run ``python -m worker_module INIT_FILE WORLD RANK OUTPUT *extra_arguments`` for every rank; returns each
    rank's ``torch.save``d results, after asserting that every rank succeeded."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    outputs = [directory / f"rank{rank}.pt" for rank in range(world)]
    command = [sys.executable, "-m", worker_module, str(directory / "init"), str(world)]
    processes = [
        subprocess.Popen(
            [*command, str(rank), str(outputs[rank]), *extra_arguments],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(world)
    ]
    try:
        logs = [process.communicate(timeout=TIMEOUT_S)[0].decode() for process in processes]
    finally:
        for process in processes:  # a hung rank must not outlive the test
            process.kill()
    for rank, (process, log) in enumerate(zip(processes, logs)):
        assert process.returncode == 0, f"rank {rank} of {world} failed:\n{log[-4000:]}"
    return [torch.load(path, weights_only=False) for path in outputs]
