"""Backend registry: which implementation computes a loss for a given device.

A backend is a module exposing ``unavailable_reason(device_type)`` and the reference module's loss functions
(same names, same arguments). Engines may
cover a subset of losses; ``auto`` takes the first backend in preference order that is usable on the tensors'
device and implements the loss. ``PAIRLOSS_BACKEND`` replaces ``auto`` for every call.
"""

import importlib
import os

import torch

# Preference order of ``auto`` on each device type (fastest first). The reference backend is always last.
AUTO_ORDER = {"cuda": ("triton", "cpp", "reference"), "cpu": ("cpp", "reference")}
BACKEND_MODULES = {
    "reference": "pairloss.reference",
    "cpp": "pairloss.cpp_engine",
    "triton": "pairloss.triton_engine",
}
BACKEND_NAMES = tuple(BACKEND_MODULES)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


_loaded = {}  # name -> (module or None, reason); a plain dict so that torch.compile can trace lookups


def _load(name):
    """The backend's module, or the reason it cannot be imported."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(BACKEND_MODULES[name]), None
        except ImportError as error:
            _loaded[name] = None, f"backend {name!r} is not installed ({error})"
    return _loaded[name]


def unavailable_reason(name, device_type):
    """None when backend ``name`` can run on ``device_type`` tensors, else a sentence saying why not."""
    module, reason = _load(name)
    if module is None:
        return reason
    if not hasattr(module, "unavailable_reason"):
        return f"backend {name!r} is incomplete: {module.__name__} defines no unavailable_reason()"
    return module.unavailable_reason(device_type)


def available_backends(device=None):
    """Names of the backends usable now on ``device`` (default: the CPU, and CUDA when present)."""
    if device is None:
        device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        device_types = [torch.device(device).type]
    return [name for name in BACKEND_NAMES if any(unavailable_reason(name, dt) is None for dt in device_types)]


def _loss_reason(name, loss_name):
    """None when backend ``name`` implements ``loss_name``."""
    if not hasattr(_load(name)[0], loss_name):
        return f"backend {name!r} does not implement {loss_name}"
    return None


def resolve(backend, device, loss_name):
    """The function computing ``loss_name`` for ``backend`` ("auto" or a name) on ``device`` tensors: "auto" never
    picks a backend that would refuse them."""
    if backend == "auto":
        backend = os.environ.get("PAIRLOSS_BACKEND", "auto")
        if backend not in BACKEND_NAMES and backend != "auto":
            raise ValueError(f"PAIRLOSS_BACKEND={backend!r} is not one of {', '.join(BACKEND_NAMES)}")
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            usable = unavailable_reason(name, device.type) is None
            if usable and _loss_reason(name, loss_name) is None:
                return getattr(_load(name)[0], loss_name)
        raise BackendUnavailableError(f"no backend implements {loss_name} on {device.type} tensors")
    reason = unavailable_reason(backend, device.type) or _loss_reason(backend, loss_name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {backend!r} is unavailable on {device.type} tensors: {reason}")
    return getattr(_load(backend)[0], loss_name)


# Import every backend now, not on first use: torch.compile cannot trace an import, so a compiled training step
# must find the modules already loaded.
for _name in BACKEND_NAMES:
    _load(_name)
