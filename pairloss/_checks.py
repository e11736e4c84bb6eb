"""Argument checks shared by every backend; each error names the offending argument."""

import math

import torch

from ._labels import POSITIVE_WEIGHTS
from .backends import BACKEND_NAMES

REDUCTIONS = ("mean", "sum", "none")
# The label losses also return the parts of their mean (pairloss._reduction), to combine batches or ranks exactly.
LABEL_REDUCTIONS = REDUCTIONS + ("parts",)


def check_embeddings(name, tensor, dim=None):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows × features), got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty: the batch needs at least one row")
    if tensor.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(tensor.shape)})")
    if dim is not None and tensor.shape[1] != dim:
        raise ValueError(f"{name} has {tensor.shape[1]} features but the other tower has {dim}")


def check_labels(name, labels, rows, rows_name):
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer class ids, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got {labels.dtype}")
    if labels.shape[0] != rows:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {rows_name} has {rows} rows")


def check_class_labels(name, labels, rows, rows_name):
    """The labels of a label loss: (rows,) integer class ids, or a (rows, L) bool multi-hot matrix."""
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:
        if labels.dtype != torch.bool:
            raise TypeError(f"2-D {name} must be a bool multi-hot matrix (rows × labels), got {labels.dtype}")
        if labels.shape[0] != rows:
            raise ValueError(f"{name} has {labels.shape[0]} rows but {rows_name} has {rows} rows")
        if labels.shape[1] == 0:
            raise ValueError(f"{name} is multi-hot with no label columns (shape {tuple(labels.shape)})")
        return
    check_labels(name, labels, rows, rows_name)


def check_same_device(**tensors):
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listed}")


def check_same_dtype(name, tensor, reference_name, reference):
    if tensor.dtype != reference.dtype:
        raise TypeError(f"{name} is {tensor.dtype} but {reference_name} is {reference.dtype}")


def _check_number(name, value):
    # Hyper-parameters are Python numbers; a tensor (e.g. per-anchor values) would be compared element-wise.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python number, got {type(value).__name__}")


def check_positive(**values):
    for name, value in values.items():
        _check_number(name, value)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def check_non_negative(**values):
    for name, value in values.items():
        _check_number(name, value)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be non-negative and finite, got {value}")


def check_per_anchor_positive(name, value, rows, rows_name, device):
    """A positive finite number, or one per anchor: a floating (rows,) tensor on ``device``, every entry positive
    and finite (checked on the values: one host sync)."""
    if not isinstance(value, torch.Tensor):
        check_positive(**{name: value})
        return
    _check_per_anchor_tensor(name, value, rows, rows_name, device)
    if rows and not bool(((value > 0) & value.isfinite()).all()):
        raise ValueError(f"every entry of {name} must be positive and finite")


def check_per_anchor_non_negative(name, value, rows, rows_name, device):
    """As ``check_per_anchor_positive`` for values ≥ 0 that the engines take as constants (no gradient)."""
    if not isinstance(value, torch.Tensor):
        check_non_negative(**{name: value})
        return
    _check_per_anchor_tensor(name, value, rows, rows_name, device)
    if value.requires_grad:
        raise ValueError(f"{name} per anchor is a constant for the engines (no gradient): pass {name}.detach()")
    if rows and not bool(((value >= 0) & value.isfinite()).all()):
        raise ValueError(f"every entry of {name} must be non-negative and finite")


def _check_per_anchor_tensor(name, value, rows, rows_name, device):
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a number or a floating-point tensor, got {value.dtype}")
    if value.shape != (rows,):
        raise ValueError(f"{name} must be a number or one value per row of {rows_name} ({rows},), got shape "
                         f"{tuple(value.shape)}")  # fmt: skip
    if value.device != torch.device(device):
        raise ValueError(f"{name} is on {value.device} but {rows_name} on {device}")


def check_positive_int(**values):
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_finite(**values):
    for name, value in values.items():
        _check_number(name, value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_reduction(reduction, choices=REDUCTIONS):
    check_choice("reduction", reduction, choices)


def check_backend(backend):
    check_choice("backend", backend, ("auto",) + BACKEND_NAMES)


def check_scalar(name, value):
    """A python number or a one-element tensor (e.g. a learnable logit scale)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar (one element), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be floating-point, got {value.dtype}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a one-element tensor, got {type(value).__name__}")


def check_label_loss_inputs(embeddings, labels, ref_emb, ref_labels, self_offset=None):
    """The shared leading arguments of the label losses (multi-similarity, triplet, …) and ``self_offset``."""
    check_embeddings("embeddings", embeddings)
    check_class_labels("labels", labels, embeddings.shape[0], "embeddings")
    if (ref_emb is None) != (ref_labels is None):
        given, missing = ("ref_emb", "ref_labels") if ref_labels is None else ("ref_labels", "ref_emb")
        raise ValueError(f"{given} was given without {missing}: pass both or neither")
    if ref_emb is not None:
        check_embeddings("ref_emb", ref_emb, dim=embeddings.shape[1])
        check_same_dtype("ref_emb", ref_emb, "embeddings", embeddings)
        check_class_labels("ref_labels", ref_labels, ref_emb.shape[0], "ref_emb")
        check_same_label_form(labels, ref_labels)
    check_same_device(embeddings=embeddings, labels=labels, ref_emb=ref_emb, ref_labels=ref_labels)
    if self_offset is not None:
        if ref_emb is None:
            raise ValueError("self_offset places the anchors' own copies in ref_emb, but no ref_emb was given")
        check_row_offset("self_offset", self_offset)


def check_same_label_form(labels, ref_labels):
    """Both class ids, or both multi-hot over the same L labels."""
    if (labels.dim() == 2) != (ref_labels.dim() == 2):
        multi_hot, ids = ("labels", "ref_labels") if labels.dim() == 2 else ("ref_labels", "labels")
        raise ValueError(f"{multi_hot} is multi-hot but {ids} holds class ids: pass both in one form")
    if labels.dim() == 2 and labels.shape[1] != ref_labels.shape[1]:
        raise ValueError(f"labels has {labels.shape[1]} label columns but ref_labels has {ref_labels.shape[1]}")


def check_positive_weights(positive_weights, labels):
    """ "uniform", or "jaccard" (soft positives, which need multi-hot labels)."""
    check_choice("positive_weights", positive_weights, POSITIVE_WEIGHTS)
    if positive_weights == "jaccard" and labels.dim() != 2:
        raise ValueError(
            "positive_weights='jaccard' weighs a positive pair by its label sets' overlap: labels must be a "
            "(rows × L) bool multi-hot matrix"
        )


def check_row_offset(name, value):
    """A row index of the references where row 0's own / paired row sits (taken modulo their count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative Python int (a row index), got {value!r}")


def check_clip_inputs(image_features, text_features, logit_scale):
    check_towers("image_features", image_features, "text_features", text_features)
    check_scalar("logit_scale", logit_scale)
    check_same_device(image_features=image_features, text_features=text_features, logit_scale=logit_scale)


def check_siglip_inputs(image_features, text_features, logit_scale, logit_bias, positive_offset=None):
    """``positive_offset`` lets the text tower have its own number of rows."""
    same_rows = positive_offset is None
    check_towers("image_features", image_features, "text_features", text_features, same_rows=same_rows)
    check_scalar("logit_scale", logit_scale)
    check_scalar("logit_bias", logit_bias)
    check_same_device(
        image_features=image_features, text_features=text_features, logit_scale=logit_scale, logit_bias=logit_bias
    )
    if not same_rows:
        check_row_offset("positive_offset", positive_offset)


def check_towers(first_name, first, second_name, second, same_rows=True):
    check_embeddings(first_name, first)
    check_embeddings(second_name, second, dim=first.shape[1])
    check_same_dtype(second_name, second, first_name, first)
    if same_rows and second.shape[0] != first.shape[0]:
        raise ValueError(
            f"{first_name} has {first.shape[0]} rows but {second_name} has {second.shape[0]}: row i of one "
            f"is the pair of row i of the other"
        )
