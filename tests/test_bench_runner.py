"""The benchmark's case runner: an implementation's setting holds over its whole case, backward included."""

import os

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
