"""The Triton engine's kernels compile for real GPUs (sm_90), checked without one.

The other engine tests run the kernels through Triton's interpreter, which accepts code that the GPU compiler
rejects; ``pairloss.triton_engine._compile_check`` compiles the variants that the launchers launch on CUDA. It
runs in a subprocess because conftest.py sets TRITON_INTERPRET=1 for this process when there is no GPU.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import pairloss
from pairloss import backends

from .backend_cases import SPECS, all_case_ids, make_case, split_case

triton = pytest.importorskip("triton")


def test_every_launched_kernel_compiles_for_sm90():
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "pairloss.triton_engine._compile_check", "--arch", "90", "--jobs", "2"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    failures = [line for line in result.stdout.splitlines() if not line.startswith("ok ")]
    assert result.returncode == 0, "\n".join(failures[-60:]) + result.stderr[-3000:]
    # No kernel spills registers.
    spilling = [line for line in result.stdout.splitlines() if "SPILLS" in line]
    assert not spilling, "\n".join(spilling)


def test_jit_functions_assign_no_nested_tuples():
    """triton 3.6 (the version on the GPU machines this project is lent) fails to hash a jitted function that
    unpacks nested tuples, ``(a, b), c = ...`` or ``for (a, b), c in ...`` ("unhashable type: 'list'" in its
    dependency finder), before compiling anything; 3.9, here, accepts it. A syntactic check of every @triton.jit
    function of the engine."""
    from pairloss import triton_engine

    nested = []
    for path in pathlib.Path(triton_engine.__file__).parent.glob("*.py"):
        for function in ast.walk(ast.parse(path.read_text())):
            decorators = [ast.unparse(d) for d in getattr(function, "decorator_list", [])]
            if not any(d.startswith("triton.jit") for d in decorators):
                continue
            for node in ast.walk(function):
                # 3.6 collects the names of assignment and loop targets alike.
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                if any(isinstance(e, (ast.Tuple, ast.List)) for t in targets for e in getattr(t, "elts", [])):
                    nested.append(f"{path.name}:{node.lineno}")
    assert not nested, nested


def test_static_report_covers_every_reported_loss():
    """``_compile_check --report B D --l2-tbps R``: the estimate compiles each loss's kernels for sm_90 and prints a
    bound, no less than the GEMM roofline nor than its L2 traffic at R (1 TB/s: L2 GB ≤ bound ms)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "pairloss.triton_engine._compile_check", "--report", "4096", "64", "--l2-tbps", "1"],
        check=False, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "L2 1.0 TB/s" in result.stdout.splitlines()[0]
    summary = result.stdout.split("| loss | bound ms |")[1]
    for loss_name in ("multi_similarity_loss", "supcon_loss", "clip_loss", "siglip_loss", "triplet_margin_loss"):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {loss_name} |"))
        bound_ms, roofline_ms, _, l2_gb = (float(cell) for cell in row.split("|")[2:6])
        assert 0 < roofline_ms <= bound_ms, row
        assert l2_gb - 0.05 <= bound_ms, row  # (L2 GB printed to 0.1)


@pytest.mark.skipif(backends.unavailable_reason("triton", "cpu") is not None, reason="needs the interpreter")
def test_losses_run_exactly_the_compiled_engine_passes(monkeypatch):
    """``losses.ENGINE_PASSES`` (what _compile_check compiles) is what the losses run on the shared cases."""
    from pairloss.triton_engine import _ops, losses

    seen = set()

    def record(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
               self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
        seen.add(losses.EnginePass(loss, stats_pass, mask, self_pairs, symmetric))
        return x.new_zeros((4, x.shape[0]), dtype=torch.float32), None

    monkeypatch.setattr(_ops, "pair_rows", record)
    with torch.no_grad():
        for loss_name, scenario, option in all_case_ids():
            tensors, options, _ = split_case(loss_name, make_case(loss_name, scenario, option))
            args = [tensors[name] for name in SPECS[loss_name].tensors]
            getattr(pairloss, loss_name)(*args, backend="triton", **options)
    assert seen == set(losses.ENGINE_PASSES)
