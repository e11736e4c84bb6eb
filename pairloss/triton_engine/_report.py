"""A static performance estimate of the Triton engine on an H100/H200, without a GPU (``_compile_check --report``).

For each loss, the kernels one forward + backward launches at B rows (X = Y; two towers: B × B) and D features
(bf16), each compiled for sm_90: registers, spills, shared memory, resident CTAs per SM and waves on 132 SMs, GEMM
FLOPs, bytes, and the SFU operations (``ex2``/``lg2``/``sqrt``/``rcp`` in the PTX, and the one in each division) per
pair. A kernel's lower bound is the largest of its GEMM time at the bf16 peak (scaled by the share of SMs its grid
can fill), its HBM time and its SFU time; the sum over the kernels is set against the GEMM roofline of the passes a
loss cannot avoid (``FLOOR_PASSES``). Grids include the column splits that ``_launch.column_splits`` chooses for 132
SMs, and X = Y backwards their tiles (all of them mirrored; symmetric: half). The L2 traffic (operand blocks read
per tile; the backward's atomic sums, and the read-modify-writes of wide rows' owned blocks) is listed, and joins
the bound only at L2 rates measured on a GPU (``python -m bench.l2``: no peak figure is published), reads and atomic
sums each at their own. An estimate from counts and peak rates, not a measurement: its purpose is to steer the design
until a GPU measures it.
"""

import inspect
import re
from typing import NamedTuple

import torch

from .. import functional
from . import _launch, _ops, losses
from ._compile_check import compile_relieved

# H100/H200 figures (DESIGN.md §7): bf16 tensor cores, HBM, SMs, per-SM registers and shared memory, and the
# MUFU rate (16 operations per clock per SM at ~1.83 GHz).
PEAK_FLOPS = 790e12
HBM_BYTES_PER_S = 4.8e12
SMS = 132
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 228 * 1024
SFU_PER_S = 16 * SMS * 1.83e9
# PTX instructions that take one MUFU operation each: a division (div.full/div.rn) takes a reciprocal, an IEEE
# square root (sqrt.rn) a reciprocal square root, beside the FMA work that refines them.
SFU_OPS = ("ex2.approx", "lg2.approx", "sqrt.approx", "sqrt.rn", "rcp.approx", "rcp.rn", "rsqrt.approx", "div.full",
           "div.rn", "div.approx")  # fmt: skip
ELEMENT_BYTES = 2  # bf16 operands
# The position of the backward's tiles per split among its arguments.
TILES_PER_SPLIT = list(inspect.signature(_launch.pair_grad_kernel.fn).parameters).index("tiles_per_split")

# The GEMM-passes a loss cannot avoid (the roofline). X = Y: each forward sweep over the half of the tiles that
# symmetry leaves (0.5; statistics and loss for multi-similarity and NT-Xent, the loss alone for the others) and a
# symmetric backward (1.5). Two towers: a forward, a recompute and two gradient products (4). Batch-hard triplets:
# the hardest-pair sweep (1; their gradient is O(B·D)).
FLOOR_PASSES = {"two_tower": 4, "triplet_margin_loss": 1, "multi_similarity_loss": 2.5, "ntxent_loss": 2.5,
                "supcon_loss": 2, "contrastive_loss": 2, "circle_loss": 2}  # fmt: skip

KERNEL_NAMES = {"init_shared_kernel": "init", "pair_rows_kernel": "forward", "merge_splits_kernel": "merge"}

# The losses reported, with how they are called on a small batch to record their passes.
LABEL_LOSSES = ("multi_similarity_loss", "supcon_loss", "ntxent_loss", "contrastive_loss", "circle_loss",
                "triplet_margin_loss")  # fmt: skip
TWO_TOWER_LOSSES = ("clip_loss", "siglip_loss")


class L2Rates(NamedTuple):
    """A GPU's L2 rates in bytes per second, as ``python -m bench.l2`` measures them."""

    read: float
    atomic_add: float  # bytes of atomic traffic (8 per fp32 element added: the read and the write)


class Traffic(NamedTuple):
    """Bytes one launch moves."""

    hbm: float
    l2_reads: float
    l2_atomics: float


class Kernel(NamedTuple):
    """One launch of the estimate: what it is, its compiled resources and its counted work."""

    name: str
    programs: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    resident: int  # CTAs per SM
    waves: float
    gemm_passes: float
    hbm_bytes: float
    l2_read_bytes: float  # operand blocks
    l2_atomic_bytes: float  # fp32 gradient blocks added in L2, read and write counted
    sfu_per_pair: float
    bound_ms: float

    @property
    def l2_bytes(self):
        return self.l2_read_bytes + self.l2_atomic_bytes


def engine_passes(loss_name):
    """The ``pairloss::pair_rows`` calls (EnginePass) of one forward, recorded on a small batch."""
    seen = []

    def record(x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias, loss, stats_pass, mask,
               self_pairs, own_offset, params, tf32, symmetric):  # fmt: skip
        seen.append(losses.EnginePass(loss, stats_pass, mask, self_pairs, symmetric))
        return x.new_zeros((4, x.shape[0]), dtype=torch.float32), None

    original, _ops.pair_rows = _ops.pair_rows, record
    try:
        x = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
        labels = torch.arange(8) % 3
        with torch.no_grad():
            if loss_name in LABEL_LOSSES:
                getattr(losses, loss_name)(x, labels, None, None, reduction="mean", **_defaults(loss_name))
            elif loss_name == "clip_loss":
                losses.clip_loss(x, x, torch.tensor(10.0), reduction="mean")
            else:
                losses.siglip_loss(x, x, torch.tensor(10.0), torch.tensor(-10.0))
    finally:
        _ops.pair_rows = original
    return seen


def _defaults(loss_name):
    """The label loss's hyper-parameters at the public function's defaults, as the engines take them."""
    parameters = inspect.signature(getattr(functional, loss_name)).parameters
    fixed = ("self_offset", "reduction", "backend")
    hyper = {n: p.default for n, p in parameters.items() if p.kind == p.KEYWORD_ONLY and n not in fixed}
    return functional.LABEL_OPTIONS[loss_name](**hyper)


def _plan(engine_pass, rows, dim):
    """(name, launch) of a pass's forward kernels and, for a LOSS pass, its backward, for CUDA at rows × rows × dim
    in bf16: the atomic one, or (``PAIRLOSS_DETERMINISTIC=1``, as the engine reads it) the deterministic row and
    column launches, with the forward that mode runs (no shared symmetric sweep); with X = Y the mirrored backward
    unless ``PAIRLOSS_MIRRORED_BACKWARD=0`` (as the engine reads them)."""
    loss, stats_pass, mask, self_pairs, symmetric = engine_pass
    x = torch.zeros(rows, dim, dtype=torch.bfloat16)
    labels = torch.zeros(rows, dtype=torch.int64)
    positives = torch.zeros(rows, 2 if mask == losses.INDEX.value else 0, dtype=torch.int64)
    vec = torch.zeros(rows)
    inputs = (x, x, labels, labels, positives, vec, vec, torch.zeros(4, rows))
    scale, bias, params = torch.ones(()), torch.zeros(()), [0.5] * 4
    (values, tile_bits), forward = _launch.rows_launches(
        *inputs, scale, bias, loss, stats_pass, mask, self_pairs, 0, params, "cuda", False, symmetric
    )
    found = [(KERNEL_NAMES[launch.kernel.fn.__name__], launch) for launch in forward]
    if not stats_pass:
        _, grads = _launch.grad_launches(
            *inputs, values, torch.zeros(4, rows), scale, bias, tile_bits, loss, mask, self_pairs, 0, params, "cuda",
            False, symmetric=symmetric, atomic=not _launch.deterministic(), mirrored=_launch.mirrored_backward(),
        )  # fmt: skip
        found += [("backward", grad) for grad in grads]
    return found


def _tiles(name, launch, rows):
    """The BLOCK_M × BLOCK_N tiles a launch computes: every tile, or (symmetric backward) those on and right of
    the diagonal."""
    if name in ("init", "merge"):
        return 0
    blocks = -(-rows // launch.constexprs["BLOCK_M"])
    return blocks * (blocks + 1) // 2 if launch.constexprs.get("SYMMETRIC") else blocks * blocks


def _traffic(name, launch, rows, dim):
    """The ``Traffic`` of one launch. HBM: the operands once, the backward's fp32 dX and dY once, the init and merge
    kernels' per-row states. L2 reads: per tile the X and Y blocks (the forward's X block once per program when the
    features are one chunk). The backward's owner launches (one product per tile) read the streamed block once more
    for it; a resident owned block is added at each program's end (atomically when split), a wider one once per
    FLUSH_TILES tiles (atomically when split, else read and written); each launch writes one of dX and dY to HBM.
    The launches adding the streamed side's gradients per tile (two products per tile: X = Y symmetric, half the
    tiles, both row blocks' dX; all-triplets' row owners, dY) read both blocks twice and add both blocks atomically
    per tile. L2 atomics, and a read-modify-write, count 8 bytes per fp32 element."""
    c = launch.constexprs
    if name == "init":
        return Traffic(4 * rows * 4, 0, 0)
    if name == "merge":
        splits = launch.args[3]
        return Traffic((splits + 1) * 4 * rows * 4, 0, 0)
    tiles = _tiles(name, launch, rows)
    programs = launch.grid[0] * launch.grid[1]
    operands = (c["BLOCK_M"] + c["BLOCK_N"]) * dim * ELEMENT_BYTES
    if name == "forward":
        if c["ONE_CHUNK"]:  # the row block once per program
            reads = tiles * c["BLOCK_N"] * dim * ELEMENT_BYTES + programs * c["BLOCK_M"] * dim * ELEMENT_BYTES
            return Traffic(2 * rows * dim * ELEMENT_BYTES, reads, 0)
        return Traffic(2 * rows * dim * ELEMENT_BYTES, tiles * operands, 0)
    if c["STREAMED_GRADS"] or c["SYMMETRIC"]:  # (never resident) both blocks added per tile
        atomics = tiles * (c["BLOCK_M"] + c["BLOCK_N"]) * dim * 8
        return Traffic(2 * rows * dim * (ELEMENT_BYTES + 4), tiles * 2 * operands, atomics)
    # Owners (BLOCK_M = BLOCK_N: owned and streamed blocks alike): resident blocks are added once per program (split:
    # atomically), others once per FLUSH_TILES tiles, atomically when split, else read and written.
    owned_block = c["BLOCK_M"] * dim * 8
    if c["OWNED_D"]:
        owned_adds = programs * owned_block if c["ATOMIC"] else 0
    else:  # per program, once per group of FLUSH_TILES tiles of its split (the last group may be partial)
        streamed, per_split = -(-rows // c["BLOCK_N"]), launch.args[TILES_PER_SPLIT]
        ranges = [min(per_split, streamed - first) for first in range(0, streamed, per_split)]
        owned_adds = launch.grid[0] * sum(-(-count // c["FLUSH_TILES"]) for count in ranges) * owned_block
    reads = tiles * (operands + c["BLOCK_N"] * dim * ELEMENT_BYTES)
    hbm = 2 * rows * dim * ELEMENT_BYTES + rows * dim * 4
    if c["ATOMIC"]:
        return Traffic(hbm, reads, owned_adds)
    return Traffic(hbm, reads + owned_adds, 0)


def _estimate(name, launch, rows, dim, l2_rates):
    launch, compiled, (registers, _, spills) = compile_relieved(launch, 90)
    shared = compiled.metadata.shared
    threads = launch.config.num_warps * 32
    resident = min(REGISTERS_PER_SM // max(registers * threads, 1), SHARED_PER_SM // shared if shared else 32, 32)
    programs = launch.grid[0] * (launch.grid[1] if len(launch.grid) > 1 else 1)
    sm_share = min(1.0, programs / SMS)
    traffic = _traffic(name, launch, rows, dim)
    # GEMMs per tile: S; in the backward also both gradient products (the launches adding the streamed side's per
    # tile) or one (the owners'). A pass is one B × B × D product.
    c = launch.constexprs
    tile_elements = c["BLOCK_M"] * c["BLOCK_N"] if _tiles(name, launch, rows) else 0
    gemms = {"forward": 1, "backward": 3 if c.get("STREAMED_GRADS") or c.get("SYMMETRIC") else 2}.get(name, 0)
    flops = gemms * _tiles(name, launch, rows) * tile_elements * 2.0 * dim
    passes = flops / (2.0 * rows * rows * dim)
    sfu_per_pair = 0.0
    if tile_elements:
        # SFU instructions in the PTX, per element a thread holds of one tile, over the tiles computed, per pair.
        sfu = sum(len(re.findall(rf"\b{re.escape(op)}\b", compiled.asm["ptx"])) for op in SFU_OPS)
        sfu_per_pair = sfu / (tile_elements / threads) * _tiles(name, launch, rows) * tile_elements / rows**2
    pairs = rows * rows
    bound_s = max(
        flops / (PEAK_FLOPS * sm_share), traffic.hbm / HBM_BYTES_PER_S, sfu_per_pair * pairs / (SFU_PER_S * sm_share)
    )
    if l2_rates:  # measured with every SM streaming: a grid that fills fewer gets its share
        l2_s = traffic.l2_reads / l2_rates.read + traffic.l2_atomics / l2_rates.atomic_add
        bound_s = max(bound_s, l2_s / sm_share)
    return Kernel(name, programs, registers, spills, shared, resident, programs / (SMS * resident), passes,
                  traffic.hbm, traffic.l2_reads, traffic.l2_atomics, sfu_per_pair, bound_s * 1e3)  # fmt: skip


def report(rows, dim, l2_rates=None):
    """Lines of the report for every reported loss at ``rows`` × ``dim``; the L2 traffic in the bound at
    ``l2_rates`` (``L2Rates``) if given."""
    if l2_rates:
        l2_rate = f"L2 reads {l2_rates.read / 1e12:.1f} TB/s, atomics {l2_rates.atomic_add / 1e12:.1f} TB/s"
    else:
        l2_rate = "L2 traffic not in the bound"
    lines = [
        (
            f"Static estimate (no GPU): bf16, B = M = {rows}, D = {dim}, {SMS} SMs, {PEAK_FLOPS / 1e12:.0f} "
            f"TFLOP/s, HBM {HBM_BYTES_PER_S / 1e12:.1f} TB/s, {l2_rate}, {_launch.LAUNCH_CONFIG.num_warps} warps, "
            f"{_launch.LAUNCH_CONFIG.num_stages} stages ({_launch.RESIDENT_CONFIG.num_stages} in the backward on "
            "resident rows; a kernel that spills as register_relief picks), "
            f"{'deterministic' if _launch.deterministic() else 'atomic'} backward, X = Y "
            f"{'mirrored' if _launch.mirrored_backward() else 'symmetric'}"
        ),
        (
            "| loss | kernel | programs | regs | spill B | smem KiB | CTAs/SM | waves | GEMM-passes | L2 GB | "
            "SFU/pair | bound ms |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = ["", "| loss | bound ms | GEMM roofline ms | % of roofline | L2 GB |", "|---|---:|---:|---:|---:|"]
    for loss_name in LABEL_LOSSES + TWO_TOWER_LOSSES:
        kernels = [
            _estimate(name, launch, rows, dim, l2_rates)
            for engine_pass in engine_passes(loss_name)
            for name, launch in _plan(engine_pass, rows, dim)
        ]
        for k in kernels:
            lines.append(
                f"| {loss_name} | {k.name} | {k.programs} | {k.registers} | {k.spill_bytes} | "
                f"{k.shared_bytes / 1024:.0f} | {k.resident} | {k.waves:.2f} | {k.gemm_passes:.2g} | "
                f"{k.l2_bytes / 1e9:.1f} | {k.sfu_per_pair:.1f} | {k.bound_ms:.3g} |"
            )
        bound = sum(k.bound_ms for k in kernels)
        floor_passes = FLOOR_PASSES["two_tower" if loss_name in TWO_TOWER_LOSSES else loss_name]
        roofline = floor_passes * 2.0 * rows * rows * dim / PEAK_FLOPS * 1e3
        l2 = sum(k.l2_bytes for k in kernels) / 1e9
        summary.append(f"| {loss_name} | {bound:.3g} | {roofline:.3g} | {100 * roofline / bound:.0f} | {l2:.1f} |")
    return lines + summary
