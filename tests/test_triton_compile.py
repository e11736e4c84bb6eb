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


@pytest.mark.parametrize("backward,x_is_y", [("atomic", "mirrored"), ("deterministic", "symmetric")])
def test_static_report_covers_every_reported_loss(backward, x_is_y):
    """``_compile_check --report B D --l2-tbps READ ATOMIC``: the estimate compiles each loss's kernels for sm_90 and
    prints a bound, no less than the GEMM roofline nor than its L2 traffic at those rates (1 TB/s: L2 GB ≤ bound
    ms); with ``PAIRLOSS_DETERMINISTIC=1``, of the deterministic backward, and with ``PAIRLOSS_MIRRORED_BACKWARD=0``
    of the X = Y backward without the mirrored launch (deterministic: a row and a column launch)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    env["PAIRLOSS_DETERMINISTIC"] = "1" if backward == "deterministic" else "0"
    env["PAIRLOSS_MIRRORED_BACKWARD"] = "1" if x_is_y == "mirrored" else "0"
    result = subprocess.run(
        [sys.executable, "-m", "pairloss.triton_engine._compile_check", "--report", "4096", "64", "--l2-tbps", "1", "1"],
        check=False, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "L2 reads 1.0 TB/s, atomics 1.0 TB/s" in result.stdout.splitlines()[0]
    assert result.stdout.splitlines()[0].endswith(f"{backward} backward, X = Y {x_is_y}")
    summary = result.stdout.split("| loss | bound ms |")[1]
    for loss_name in ("multi_similarity_loss", "supcon_loss", "clip_loss", "siglip_loss", "triplet_margin_loss"):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {loss_name} |"))
        bound_ms, roofline_ms, _, l2_gb = (float(cell) for cell in row.split("|")[2:6])
        assert 0 < roofline_ms <= bound_ms, row
        assert l2_gb - 0.05 <= bound_ms, row  # (L2 GB printed to 0.1)


# Run without the interpreter: the JIT's binder over the launches of the compile check's aligned layouts (B = 2048),
# then over the same launches at the GPU benchmarks' batch sizes; prints the kernels whose specialisation differs.
SPECIALISATIONS = r"""
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature
from pairloss.triton_engine import _compile_check as cc
backend = make_backend(GPUTarget("cuda", 90, 32))
def keys(variant):
    found = []
    for launch in cc.launches(variant, mirrored=(True, False)):
        kernel = launch.kernel
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        found.append((cc.kernel_name(launch), str(binder(*launch.args, **launch.constexprs)[1])))
    return found
chosen = [v for v in cc.variants([90], True) if v.operands == "bf16" and v.layout in ("aligned", "wide")]
compiled = {str(v): keys(v) for v in chosen}
for rows in (4096, 16384, 65536):
    cc.LAYOUTS["aligned"], cc.LAYOUTS["wide"] = (rows, rows, 128, True), (rows, rows, 512, True)
    for v in chosen:
        print(*(f"{rows} {v} {a[0]}" for a, b in zip(compiled[str(v)], keys(v)) if a != b), sep="\n")
"""


def test_compile_check_compiles_the_benchmarks_kernels():
    """The GPU check compiles every bf16 variant ahead of time (B = 2048) so that the benchmarks, at B = 4k–64k, load
    their kernels from Triton's cache: a batch size must not change how the JIT specialises a kernel (column split
    counts equal to 1 or divisible by 16 did)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", SPECIALISATIONS], check=False, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not result.stdout.strip(), result.stdout[:3000]


@pytest.mark.parametrize("argv", [["--l2-tbps", "1", "1"], ["--report", "64", "16", "--l2-tbps", "0", "1"]])
def test_l2_rates_need_the_report_and_positive_values(argv, capsys):
    from pairloss.triton_engine._compile_check import main

    with pytest.raises(SystemExit):
        main(argv)
    assert "--l2-tbps takes two positive rates" in capsys.readouterr().err


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
