"""Compile the engine's kernels, as the launchers launch them on CUDA, for real GPU targets without a GPU.

Triton's interpreter (how the tests run the kernels without a GPU) accepts code that the GPU compiler rejects,
e.g. a loop-carried variable that changes type. This compiles each variant to PTX and a cubin (with the bundled
ptxas) and reports ptxas's registers, stack frame and spill stores per thread (a frame of a few bytes can be a
local array of Triton's code generation; spills are what does not fit the registers). Needs ``TRITON_INTERPRET``
unset (under it ``@triton.jit`` gives interpreter objects)::

    python -m pairloss.triton_engine._compile_check --arch 90 --arch 80 [--all] [--jobs 2]

A variant is an engine pass of ``losses.ENGINE_PASSES`` (its forward kernels: the tile loop and the merge of its
column splits, and, for a LOSS pass, the backward kernels of the atomic and the deterministic mode, with the
mirrored backward and without: ``PAIRLOSS_MIRRORED_BACKWARD=0``, the benchmarks' triton-symmetric), the operand
dtype and the operand layout. The launches come from the launchers themselves
(``_launch.rows_launches``/``grad_launches``) with their launch configs, so the signature is the one the JIT would
specialise; a kernel that spills with its config is compiled as the launcher would then run it
(``_launch.register_relief``), and its line names the config taken. By default every pass is compiled with bf16
operands in the aligned layout (D = 128: one resident feature chunk), plus a few passes with the other dtypes and
layouts (``EXTRAS``; "wide", D = 512, loops over feature chunks); ``--all`` compiles the full product. Exits 1 if
any kernel fails to compile.
"""

import argparse
import contextlib
import functools
import inspect
import io
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import NamedTuple

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend, get_ptxas, sm_arch_from_capability
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

from . import _ids, _launch
from ._kernels import pair_grad_kernel
from .losses import ENGINE_PASSES, EnginePass

# Operand kinds: the dtype of X and Y, and whether fp32 may use TF32 (torch.backends.cuda.matmul.allow_tf32).
OPERANDS = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, False), "fp32": (torch.float32, False),
            "tf32": (torch.float32, True)}  # fmt: skip
# Layouts: (rows, references, features, aligned). Aligned: contiguous, sizes and pointers multiples of 16 (the
# JIT marks them divisible). Otherwise: odd sizes, X transposed and both operands offset by one element; the
# launchers copy such rows padded to 48 aligned features (``_launch._operand``), so the kernels see odd batch
# sizes and zero-padded features. The kernels do not specialise on their split sizes, so these batches compile the
# kernels of every batch whose sizes (and strides) are, or are not, multiples of 16 alike.
LAYOUTS = {"aligned": (2048, 2048, 128, True), "odd": (1501, 1499, 33, False), "wide": (2048, 2048, 512, True)}
PRIMARY = ("bf16", "aligned")
# What the default run compiles beyond the primary operands and layout for every pass: every operand kind
# (aligned), bf16 and TF32 padded rows and bf16 wide rows for the plain tile loop, padded rows for the index mask.
# (--all: everything.)
EXTRAS = {
    EnginePass(_ids.MULTI_SIMILARITY.value, False, _ids.LABELS.value, True, True): [
        *((operands, "aligned") for operands in OPERANDS),
        ("bf16", "odd"),
        ("tf32", "odd"),
        ("bf16", "wide"),
    ],
    EnginePass(_ids.NTXENT.value, False, _ids.INDEX.value, False, False): [("bf16", "odd")],
}
_NAMES = {
    "loss": ("MULTI_SIMILARITY", "TRIPLET_HARDEST", "CONTRASTIVE", "CIRCLE", "NTXENT", "SUPCON", "CLIP",
             "SIGLIP", "MW", "UNIFORMITY", "TRIPLET_ALL"),
    "mask": ("LABELS", "DIAGONAL", "INDEX", "MULTI_HOT", "JACCARD"),
}  # fmt: skip
LOSS_NAMES, MASK_NAMES = ({getattr(_ids, name).value: name for name in names} for names in _NAMES.values())


class Variant(NamedTuple):
    engine_pass: EnginePass
    operands: str
    layout: str
    arch: int

    def __str__(self):
        p = self.engine_pass
        kind = "STATS" if p.stats_pass else "LOSS"
        pairs = ("self" if p.self_pairs else "cross") + (" symmetric" if p.symmetric else "")
        return f"sm_{self.arch} {self.operands} {self.layout} {LOSS_NAMES[p.loss]} {kind} {MASK_NAMES[p.mask]} {pairs}"


def variants(archs, everything):
    """The variants to compile: the full product, or (default) the primary operands and layout for every pass
    plus the extras."""
    chosen = [
        (engine_pass, operands, layout)
        for engine_pass in ENGINE_PASSES
        for operands, layout in itertools.product(OPERANDS, LAYOUTS)
        if everything or (operands, layout) == PRIMARY or (operands, layout) in EXTRAS.get(engine_pass, ())
    ]
    return [Variant(*c, arch) for arch in archs for c in chosen]


def _operand(rows, features, dtype, aligned, transposed):
    if aligned:
        return torch.zeros(rows, features, dtype=dtype)
    if transposed:
        return torch.zeros(features + 1, rows, dtype=dtype)[1:].t()
    return torch.zeros(rows * features + 1, dtype=dtype)[1:].view(rows, features)


def launches(variant, mirrored=(True,)):
    """The ``_launch.Launch`` of each kernel the variant's forward and backward launch, with zero inputs of the
    dtypes and shapes that ``losses._run`` passes: the backward of both modes, for each ``PAIRLOSS_MIRRORED_BACKWARD``
    setting in ``mirrored`` (a kernel that two settings share, once)."""
    (loss, stats_pass, mask, self_pairs, symmetric), (dtype, tf32) = variant.engine_pass, OPERANDS[variant.operands]
    rows, refs, features, aligned = LAYOUTS[variant.layout]
    # Class ids, multi-hot rows as 32 int32 words (L = 1024), or a placeholder for the masks without labels.
    multi_hot = mask in (_ids.MULTI_HOT.value, _ids.JACCARD.value)

    def labels(count):
        if multi_hot:
            return torch.zeros(count, 32, dtype=torch.int32)
        return torch.zeros(count if mask == _ids.LABELS.value else 1, dtype=torch.int64)

    x = _operand(rows, features, dtype, aligned, transposed=True)
    row_labels = labels(rows)
    positives = torch.zeros(rows, 2 if mask == _ids.INDEX.value else 0, dtype=torch.int64)
    row_vec, stats = torch.zeros(rows), torch.zeros(4, rows)
    # The kernels do not specialise on the own-column offset: any value compiles the kernel of every value.
    scale, bias, own_offset, params = torch.ones(()), torch.zeros(()), 3, [0.5] * 4
    if symmetric:  # the references are the anchors
        y, col_labels, col_vec, own_offset = x, row_labels, row_vec, 0
    else:
        y = _operand(refs, features, dtype, aligned, transposed=False)
        col_labels = labels(refs)
        col_vec = torch.zeros(refs)
    inputs = (x, y, row_labels, col_labels, positives, row_vec, col_vec, stats)
    (values, tile_bits), found = _launch.rows_launches(
        *inputs, scale, bias, loss, stats_pass, mask, self_pairs, own_offset, params, "cuda", tf32, symmetric
    )
    if not stats_pass:
        coefs = torch.zeros(4, rows)
        planned = set()  # (constexprs, config) of the backward kernels found so far
        for mirror, atomic in itertools.product(mirrored, (True, False)):
            for launch in _launch.grad_launches(
                *inputs, values, coefs, scale, bias, tile_bits, loss, mask, self_pairs, own_offset, params, "cuda",
                tf32, symmetric=symmetric, atomic=atomic, mirrored=mirror,
            )[1]:  # fmt: skip
                kernel = (tuple(launch.constexprs.items()), launch.config)
                if kernel not in planned:
                    planned.add(kernel)
                    found.append(launch)
    return found


def kernel_name(launch):
    name = launch.kernel.fn.__name__
    if launch.kernel is not pair_grad_kernel:
        return name
    c = launch.constexprs
    kind = ("rows" if c["OWN_ROWS"] else "cols") + (", atomic" if c["ATOMIC"] else "")
    x_is_y = ", symmetric" if c["SYMMETRIC"] else ", mirror" if c["MIRROR"] else ""
    held = f", {c['FLUSH_TILES']} tiles held" if c["FLUSH_TILES"] > 1 else ""
    return f"{name}({kind}{x_is_y}{held})"


def config_name(launch):
    """The launch's warps, stages and register cap, as w8s3 or w8s3r255."""
    config = launch.config
    return f"w{config.num_warps}s{config.num_stages}" + (f"r{config.maxnreg}" if config.maxnreg else "")


def compile_launch(launch, arch):
    """Compile one launch as ``JITFunction.run`` would on a device of compute capability ``arch``."""
    kernel = launch.kernel
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = {**launch.constexprs, **launch.config._asdict()}
    # The JIT's own binder and argument packing (private, triton 3.x), so that the argument types and the
    # specialisations (ints equal to 1 become constants, divisibility by 16) are exactly those of a launch.
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constants, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constants, attrs), target=target, options=options.__dict__)


class Resources(NamedTuple):
    """ptxas's account of one kernel, per thread."""

    registers: int
    stack: int  # stack frame bytes: spills, and local arrays (Triton's codegen makes some of a few bytes)
    spilled: int  # bytes of spill stores: registers that did not fit


# The register-allocation flag that Triton 3.9 passes to ptxas (3.6, the GPU machines' version, passes none): it
# changes which kernels spill, so the check passes it exactly when the installed Triton does.
REG_ALLOC_FLAG = "--regAllocOptLevel=2"


@functools.cache
def _triton_reg_alloc_flags():
    """[REG_ALLOC_FLAG] if the installed Triton's cubin step passes it to ptxas, else []."""
    return [REG_ALLOC_FLAG] if REG_ALLOC_FLAG in inspect.getsource(CUDABackend.make_cubin) else []


def resource_usage(compiled, arch):
    """The ``Resources`` of a compiled kernel: its PTX assembled again, with ``-v``, by the ptxas Triton used and
    with its register-allocation flag (the line-info and fused-multiply-add flags left at their defaults, as
    Triton's are here). The cubin's resource table gives the stack frame but not what of it is spills."""
    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as directory:
        ptx = os.path.join(directory, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        command = [ptxas, "-v", *_triton_reg_alloc_flags(), f"--gpu-name={sm_arch_from_capability(arch)}", ptx,
                   "-o", os.path.join(directory, "kernel.cubin")]  # fmt: skip
        log = subprocess.run(command, check=True, capture_output=True, text=True).stderr
    stack, spilled = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", log).groups()
    return Resources(int(re.search(r"Used (\d+) registers", log).group(1)), int(stack), int(spilled))


class Relieved(NamedTuple):
    """A launch as the engine runs it on a GPU: with its config after ``_launch.register_relief``."""

    launch: object  # _launch.Launch
    compiled: object  # triton's CompiledKernel
    usage: Resources


def compile_relieved(launch, arch):
    """Compile ``launch`` as the engine runs it: its config, or the alternative that ``_launch.register_relief``
    takes by ptxas's stack frame (where the driver's local memory count decides on a GPU)."""
    found = {}

    def local_memory(config):
        if config not in found:
            compiled = compile_launch(launch._replace(config=config), arch)
            found[config] = compiled, resource_usage(compiled, arch)
        return found[config][1].stack

    config = _launch.register_relief(launch.config, local_memory)
    return Relieved(launch._replace(config=config), *found[config])


def check(variant):
    """One report line per kernel of the variant, and whether all compiled."""
    lines, ok = [], True
    for launch in launches(variant, mirrored=(True, False)):
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # triton prints the PTX of a failing ptxas run
                launch, _, usage = compile_relieved(launch, variant.arch)
        except Exception as error:  # noqa: BLE001 (any compiler error is a failed variant, reported below)
            ok = False
            lines.append(f"FAIL  {variant} {kernel_name(launch)} {config_name(launch)}\n{error}")
            continue
        label = f"{variant} {kernel_name(launch)} {config_name(launch)}"
        stack = f"  stack {usage.stack} B" if usage.stack else ""
        spills = f"  SPILLS ({usage.spilled} bytes stored)" if usage.spilled else ""
        lines.append(f"ok    {label}  {usage.registers} regs{stack}{spills}  {time.perf_counter() - start:.1f}s")
    return lines, ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, action="append", help="compute capability ×10, e.g. 90 (default), 80")
    parser.add_argument("--all", action="store_true", help="every pass × operand kind × layout")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="compiler processes")
    parser.add_argument("--match", default="", help="only the variants whose description contains this")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument(
        "--report",
        nargs=2,
        type=int,
        metavar=("B", "D"),
        help="print the static performance estimate at B rows and D features (bf16) and exit",
    )
    parser.add_argument(
        "--l2-tbps",
        nargs=2,
        type=float,
        metavar=("READ", "ATOMIC"),
        help="with --report: the L2 read and atomic-add rates in TB/s (python -m bench.l2 on the GPU) for its bound",
    )
    options = parser.parse_args(argv)
    if options.l2_tbps and (not options.report or min(options.l2_tbps) <= 0):
        parser.error("--l2-tbps takes two positive rates, and goes with --report")
    if _launch.INTERPRETED:
        sys.exit("unset TRITON_INTERPRET: under the interpreter there is nothing to compile")
    if options.report:
        from ._report import L2Rates, report  # imports this module: loaded on demand

        l2_rates = L2Rates(*(rate * 1e12 for rate in options.l2_tbps)) if options.l2_tbps else None
        print("\n".join(report(*options.report, l2_rates)))
        return
    todo = [v for v in variants(options.arch or [90], options.all) if options.match in str(v)]
    if options.list:
        print("\n".join(map(str, todo)))
        return
    start = time.perf_counter()
    failed = kernels = spilling = 0
    with ProcessPoolExecutor(options.jobs, mp_context=get_context("spawn")) as pool:
        for lines, ok in pool.map(check, todo):
            print("\n".join(lines), flush=True)
            failed += not ok
            kernels += len(lines)
            spilling += sum("SPILLS" in line for line in lines)
    print(f"{len(todo)} variants, {kernels} kernels, {failed} variants failed, {spilling} kernels spill; "
          f"{time.perf_counter() - start:.0f}s")  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
