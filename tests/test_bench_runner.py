"""The benchmark's case runner: an implementation's setting holds over its whole case, backward included."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from bench.cases import LOSSES, Implementation, _deterministic_backward
from bench.runner import measure_case


def test_setting_holds_over_the_backward_and_is_undone():
    seen = []

    def run(leaves, rest):
        value = leaves[0].square().sum()
        value.register_hook(lambda grad: seen.append(os.environ.get("PAIRLOSS_DETERMINISTIC")))
        return value

    before = os.environ.get("PAIRLOSS_DETERMINISTIC")
    impl = Implementation("probe", run, False, _deterministic_backward)
    row = measure_case(LOSSES["multi_similarity"], impl, 8, 4, torch.float32, torch.device("cpu"), repeats=1)
    assert row["status"] == "ok"
    assert seen and set(seen) == {"1"}
    assert os.environ.get("PAIRLOSS_DETERMINISTIC") == before


def test_a_run_cut_short_keeps_its_rows(tmp_path, monkeypatch, capsys):
    """Each row reaches the log and the JSON as it lands: the GPU check stops a benchmark at its time limit, and the
    cases measured before then must survive it (here the third case is interrupted)."""
    import bench.runner
    from bench.__main__ import main

    measured = []

    def measure_or_stop(*args, **kwargs):
        if len(measured) == 2:
            raise KeyboardInterrupt  # a stop mid-sweep (the time limit's SIGTERM ends the process outright)
        measured.append(measure_case(*args, **kwargs))
        return measured[-1]

    monkeypatch.setattr(bench.runner, "measure_case", measure_or_stop)
    argv = ["--device", "cpu", "--dtype", "float32", "--dim", "8", "--batch", "16", "32", "64",
            "--loss", "multi_similarity", "--backend", "reference", "--repeats", "1", "--out", str(tmp_path),
            "--name", "cut"]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    saved = json.loads((tmp_path / "cut.json").read_text())
    assert [row["B"] for row in saved["rows"]] == [16, 32]
    assert all(row["status"] == "ok" and row["fwd_bwd"]["median_ms"] > 0 for row in saved["rows"])
    logged = [line for line in capsys.readouterr().out.splitlines() if line.startswith("measured: ")]
    assert [line.split()[3] for line in logged] == ["16", "32"]


def test_gpu_check_stages_fit_ten_minutes():
    """The GPU check is one command on a lent machine whose calls stop at 10 minutes: its stages' own time limits
    must add up to less, with half a minute left for the steps between them, and the script must parse."""
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    limits = [int(match) for match in re.findall(r"\bstage [\w-]+ (\d+) \"", script.read_text())]
    assert len(limits) == 7 and sum(limits) <= 570, limits
    subprocess.run(["bash", "-n", str(script)], check=True)
