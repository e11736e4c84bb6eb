"""The label losses with the ring strategy (see ``_ring``): every rank's block of rows and labels visits each
rank, and an engine computes the local anchors' rows over the blocks exactly as over the global batch: the C++
engine's block-by-block ops (``_ring_cpp``; backend "auto" on CPU tensors) or the Triton engine's
(``_ring_triton``; "auto" elsewhere)."""

import inspect

import torch

from .. import cpp_engine, functional
from .._labels import engine_labels
from ..backends import BackendUnavailableError, unavailable_reason
from ._gather import rank_sizes
from ._ring_cpp import RingRows

_RING_BACKENDS = ("auto", "cpp", "triton")


def _options(public_function, embeddings, labels, options):
    """The loss's hyper-parameters with their defaults, checked (as the public function checks them)."""
    bound = inspect.signature(public_function).bind(embeddings, labels, **options)
    bound.apply_defaults()
    fixed = ("embeddings", "labels", "ref_emb", "ref_labels", "self_offset", "reduction", "backend")
    hyper = {name: value for name, value in bound.arguments.items() if name not in fixed}
    return functional.LABEL_OPTIONS[public_function.__name__](**hyper), bound.arguments["backend"]


def _ring_engine(name, backend, device_type):
    """The engine ("cpp" or "triton") of a ring call, or BackendUnavailableError saying why there is none."""
    if backend not in _RING_BACKENDS:
        raise ValueError(
            f"strategy='ring' computes the label losses with a fused engine: backend must be one of "
            f"{', '.join(map(repr, _RING_BACKENDS))}, got {backend!r} (strategy='gather' takes every backend)"
        )
    engine = backend if backend != "auto" else ("cpp" if device_type == "cpu" else "triton")
    reason = unavailable_reason(engine, device_type)
    if reason is not None:
        raise BackendUnavailableError(
            f"strategy='ring' for {name} is unavailable on {device_type} tensors: {reason} "
            "(strategy='gather' works with every backend)"
        )
    return engine


def check_ring(public_function, embeddings, labels, options):
    """(engine, hyper-parameters with their defaults, checked) of a ring call; raises where it cannot run."""
    name = public_function.__name__
    options, backend = _options(public_function, embeddings, labels, options)
    functional._check_per_anchor_options(options, embeddings)
    if name == "triplet_margin_loss" and options["mining"] == "all":
        raise ValueError(
            "triplet_margin_loss(mining='all') has no ring form: each anchor's triplets pair positives and "
            "negatives of different ranks (use strategy='gather', or mining='batch_hard')"
        )
    return _ring_engine(name, backend, embeddings.device.type), options


def ring_label_loss(name, embeddings, labels, reduction, group, ring_call):
    """The local rows' part of the label loss ``name`` on the global batch with the ring, reduced as
    ``reduction`` ("parts" for a mean; the caller turns parts into the global mean); ``ring_call`` from
    ``check_ring``."""
    engine, options = ring_call
    sizes = rank_sizes(embeddings.shape[0], embeddings.device, group)
    global_labels = engine_labels(labels)  # class ids, or multi-hot rows as packed words
    module = cpp_engine if engine == "cpp" else _triton_engine()
    # The unit rows in the dtype the engine takes them in, as for the single-process loss; with per-anchor
    # temperatures the anchors are those rows divided by their τ (the rows travelling the ring are not).
    (x,) = functional._unit_rows_for(getattr(module, name), embeddings)
    anchors = x
    temperature = options.get("temperature")
    if isinstance(temperature, torch.Tensor):
        anchors, options = functional._divided_rows(x, temperature), {**options, "temperature": 1.0}
    if engine == "cpp":

        def rows_of(kernel, params, row_params=None):
            params = [float(p) for p in params]
            return RingRows.apply(anchors, x, global_labels, kernel, params, row_params, sizes, group)

        local = cpp_engine.losses.LABEL_LOSSES[name](rows_of, reduction=reduction, **options)
    else:
        from ..triton_engine.losses import LABEL_LOSSES
        from ._ring_triton import RingReferences

        references = RingReferences(anchors, x, global_labels, sizes, group)
        local = LABEL_LOSSES[name](references, reduction=reduction, **options)
    return functional._with_guard(local, embeddings)


def _triton_engine():
    # Imported here: triton is an optional dependency, and _ring_engine has checked that it is usable.
    from .. import triton_engine

    return triton_engine
