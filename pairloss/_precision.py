"""How a backend's loss function meets the precision rules of ``pairloss._numerics``, written once for every
backend: it computes with autocast off (each engine decides its own operand and accumulation dtypes; autocast
would otherwise recast the GEMMs inside an engine), and it returns the inputs' dtype, as torch's losses do."""

import contextlib
import functools

import torch

from ._numerics import accumulation_dtype, widen


def in_dtype(result, dtype):
    """A loss (or per-anchor losses) in the inputs' ``dtype``; the parts of a mean, (sums, counts), stay wide so
    that they add up exactly across batches or ranks."""
    return result if isinstance(result, tuple) else result.to(dtype)


def _is_float_tensor(value):
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def without_autocast(device_type):
    """A context in which ops on ``device_type`` tensors run in the dtypes they are given."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def accumulation_operands(device_type, dtype):
    """An ``operands`` hook: GEMMs that accumulate in fp32 without tensor cores gain nothing from fp16/bf16
    operands, so the normalised rows they get stay fp32 (unrounded)."""
    return accumulation_dtype(dtype)


def tensor_core_operands(device_type, dtype):
    """The default ``operands`` hook, for engines that feed tensor cores: rows in their own dtype, except fp32 rows
    under autocast, which go in autocast's dtype (as autocast hands a matmul its operands)."""
    if dtype == torch.float32 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def operand_dtype(function, rows):
    """The dtype in which the backend loss ``function`` takes the normalised ``rows``: its ``operands`` hook, or
    ``tensor_core_operands``."""
    hook = getattr(function, "operands", None) or tensor_core_operands
    return hook(rows.device.type, rows.dtype)


def backend_loss(function=None, *, widen_inputs=False, operands=None):
    """Decorate a backend's loss function: autocast off, result in the dtype of its first floating tensor
    argument. ``widen_inputs``: floating tensors are first widened to their accumulation dtype (the dense
    reference computes fp16/bf16 inputs entirely in fp32, as the engines accumulate them). ``operands(device_type,
    dtype)``: the dtype of the normalised rows the backend wants for ``dtype`` inputs (see ``operand_dtype``);
    default: the inputs' dtype, or their accumulation dtype with ``widen_inputs``."""
    if function is None:
        return functools.partial(backend_loss, widen_inputs=widen_inputs, operands=operands)

    @functools.wraps(function)
    def loss(*args, **kwargs):
        first = next(value for value in args if _is_float_tensor(value))
        if widen_inputs:
            args = [widen(value) if _is_float_tensor(value) else value for value in args]
            kwargs = {key: widen(value) if _is_float_tensor(value) else value for key, value in kwargs.items()}
        with without_autocast(first.device.type):
            return in_dtype(function(*args, **kwargs), first.dtype)

    loss.operands = accumulation_operands if widen_inputs and operands is None else operands
    return loss
