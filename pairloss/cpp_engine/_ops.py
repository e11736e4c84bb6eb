"""Loading of the compiled engine ``pairloss._C`` and the Python side of its ops: fake (meta) implementations for
torch.compile, and the autograd formula (the backward op recomputes tiles from the forward's O(B) statistics)."""

import importlib

import torch

from .._numerics import accumulation_dtype
from ..backends import BackendUnavailableError

_NOT_BUILT = "the C++ extension pairloss._C was not built: reinstall with `pip install --no-build-isolation .`"


_loaded = None


def load():
    """(pairloss._C, None) with the ops registered, or (None, the reason it cannot be loaded).

    Cached in a module global rather than functools.cache, so that torch.compile traces through it."""
    global _loaded
    if _loaded is None:
        try:
            module = importlib.import_module("pairloss._C")
        except ImportError as error:
            _loaded = None, f"{_NOT_BUILT} ({error})"
        else:
            _register(module.active_tile)
            _loaded = module, None
    return _loaded


def kernel_name(loss_name, options):
    """The engine's name for a public loss function called with ``options``."""
    if loss_name == "triplet_margin_loss":
        return "triplet_hard" if options.get("mining") == "batch_hard" else "triplet_all"
    return loss_name.removesuffix("_loss")


def unavailable_reason(device_type):
    """None when the engine can run on ``device_type`` tensors, else a sentence saying why not."""
    module, reason = load()
    if module is None:
        return reason
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if not module.with_cuda:
            return "the C++ extension pairloss._C was built without CUDA (no CUDA torch or no nvcc at build time)"
        return None
    return f"the C++ engine has no kernels for {device_type} tensors"


def _register(active_tile):
    forward = "pairloss::cpp_pair_forward"

    @torch.library.register_fake(forward)
    def _forward_fake(loss, x, y, labels, ref_labels, scalars, params, own_offset=-1, row_params=None):
        rows, cols = x.shape[0], (x if y is None else y).shape[0]
        tiles = (-(-rows // active_tile), -(-cols // active_tile))
        return (
            x.new_empty(rows, 2, dtype=accumulation_dtype(x.dtype)),
            x.new_empty(rows, 4, dtype=torch.float64),
            x.new_empty(2, dtype=torch.int64),
            x.new_empty(tiles, dtype=torch.uint8),
        )

    @torch.library.register_fake("pairloss::cpp_pair_backward")
    def _backward_fake(
        loss, grad_rows, x, y, labels, ref_labels, scalars, params, own_offset, saved, active, col_offset=0,
        row_params=None,
    ):  # fmt: skip
        dy = x.new_empty(0) if y is None else torch.empty_like(y, memory_format=torch.contiguous_format)
        dscalars = x.new_empty(0 if scalars is None else scalars.numel(), dtype=accumulation_dtype(x.dtype))
        return torch.empty_like(x, memory_format=torch.contiguous_format), dy, dscalars

    def setup_context(ctx, inputs, output):
        loss, x, y, labels, ref_labels, scalars, params, own_offset, row_params = inputs  # defaults filled in
        _, saved, counts, active = output
        ctx.loss, ctx.params, ctx.own_offset = loss, params, own_offset
        ctx.save_for_backward(x, y, labels, ref_labels, scalars, saved, active, row_params)
        ctx.mark_non_differentiable(saved, counts, active)

    def backward(ctx, grad_rows, *_):
        x, y, labels, ref_labels, scalars, saved, active, row_params = ctx.saved_tensors
        if grad_rows is None:
            grad_rows = x.new_zeros(x.shape[0], 2)
        dx, dy, dscalars = torch.ops.pairloss.cpp_pair_backward(
            ctx.loss, grad_rows, x, y, labels, ref_labels, scalars, ctx.params, ctx.own_offset, saved, active, 0,
            row_params,
        )  # fmt: skip
        d_scalars = None if scalars is None else dscalars
        return None, dx, None if y is None else dy, None, None, d_scalars, None, None, None

    torch.library.register_autograd(forward, backward, setup_context=setup_context)


def pair_forward(loss, x, y=None, labels=None, ref_labels=None, scalars=None, params=(), own_offset=None,
                 row_params=None):  # fmt: skip
    """Per-anchor loss components (B × 2, differentiable) and the batch counters (2,) of one engine loss.

    ``own_offset``: row i's own column in ``y`` is (own_offset + i) mod len(y): left out by the label losses,
    SigLIP's positive. ``row_params``: per-anchor values of the loss's first params (B × k, constants)."""
    reason = unavailable_reason(x.device.type)
    if reason is not None:
        raise BackendUnavailableError(f"backend 'cpp' is unavailable on {x.device.type} tensors: {reason}")
    own = -1 if own_offset is None else own_offset
    rows, _, counts, _ = torch.ops.pairloss.cpp_pair_forward(
        loss, x, y, labels, ref_labels, scalars, list(params), own, row_params
    )
    return rows, counts


# Load the extension with this module: torch.compile cannot trace an import made on first use.
load()
