"""The "cpp" backend's loss functions: same names and arguments as pairloss.reference. Each runs one engine op
(per-anchor loss components and batch counters, no B×M tensor) and applies the loss's reduction; the label
losses' reductions are also applied to the ring's rows (``LABEL_LOSSES``).

The engine's rows are fp32 for fp16/bf16 inputs (the CPU engine computes them in fp32, the CUDA kernels
accumulate in fp32); reductions stay in fp32 and the result comes back in the inputs' dtype."""

import math

import torch

from .._labels import engine_labels
from .._numerics import widen
from .._precision import accumulation_operands, backend_loss, tensor_core_operands
from .._reduction import count_parts, nonzero_parts, ratio, reduce
from ._ops import kernel_name, pair_forward


def _operands(device_type, dtype):
    """The CPU engine computes in fp32: it takes the normalised rows unrounded; the CUDA kernels take fp16/bf16
    rows to their tensor cores."""
    return (accumulation_operands if device_type == "cpu" else tensor_core_operands)(device_type, dtype)


def _multi_similarity(rows_of, *, alpha, beta, base, epsilon, mining, reduction):
    rows = rows_of("multi_similarity", (alpha, beta, base, epsilon, float(mining)))[0][:, 0]
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


def _per_anchor(*values):
    """The engine's (params, row_params) of hyper-parameters given as numbers or one per anchor ((B,) tensors):
    tensors become the row_params' columns (their params entries are placeholders), None when all are numbers."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return values, None
    rows = tensors[0].shape[0]
    columns = [v if isinstance(v, torch.Tensor) else tensors[0].new_full((rows,), v) for v in values]
    return [0.0 if isinstance(v, torch.Tensor) else v for v in values], torch.stack(columns, 1)


def _triplet_margin(rows_of, *, margin, mining, soft, reduction):
    (margin,), row_params = _per_anchor(margin)
    kernel = kernel_name("triplet_margin_loss", {"mining": mining})
    rows, counts = rows_of(kernel, (margin, float(soft)), row_params)
    rows = rows[:, 0]
    if mining == "batch_hard":  # one term per anchor (0 without a triplet)
        return reduce(rows, reduction, lambda: nonzero_parts(rows))
    return reduce(rows, reduction, lambda: count_parts(rows, counts[0]))  # counts[0]: non-zero triplets


def _contrastive(rows_of, *, pos_margin, neg_margin, reduction):
    params, row_params = _per_anchor(pos_margin, neg_margin)
    parts, counts = rows_of("contrastive", params, row_params)
    # Positive and negative terms are averaged apart, each over its non-zero terms (counts).
    return reduce(parts.sum(1), reduction, lambda: (parts.sum(0), counts))


def _circle(rows_of, *, m, gamma, reduction):
    rows = rows_of("circle", (m, gamma))[0][:, 0]
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


def _softmax_params(temperature, positive_weights):
    return temperature, float(positive_weights == "jaccard")


def _ntxent(rows_of, *, temperature, positive_weights="uniform", reduction):
    parts, _ = rows_of("ntxent", _softmax_params(temperature, positive_weights))
    rows, weight_sums = parts[:, 0], parts[:, 1].detach()
    # The mean over the positive pairs' weights (their number when uniform: exact integers).
    return reduce(rows, reduction, lambda: count_parts(rows, weight_sums.sum(dtype=torch.float64)))


def _supcon(rows_of, *, temperature, positive_weights="uniform", reduction):
    rows, counts = rows_of("supcon", _softmax_params(temperature, positive_weights))
    rows = rows[:, 0]
    if positive_weights == "uniform":  # PML: a batch without any positive pair or any negative pair has loss 0
        rows = rows * ((counts[0] > 0) & (counts[1] > 0))
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


# Each label loss from ``rows_of(kernel, params, row_params=None) -> (per-anchor rows, batch counters)`` of the
# engine: over one reference set here, or over references arriving block by block (pairloss.distributed's ring,
# which takes no row_params).
LABEL_LOSSES = {
    "multi_similarity_loss": _multi_similarity,
    "triplet_margin_loss": _triplet_margin,
    "contrastive_loss": _contrastive,
    "circle_loss": _circle,
    "ntxent_loss": _ntxent,
    "supcon_loss": _supcon,
}


def _on_references(loss_name):
    @backend_loss(operands=_operands)
    def loss(x, labels, y, ref_labels, *, self_offset=None, **options):
        row_labels, col_labels = engine_labels(labels), None if ref_labels is None else engine_labels(ref_labels)

        def rows_of(kernel, params, row_params=None):
            return pair_forward(kernel, x, y, row_labels, col_labels, params=params, own_offset=self_offset,
                                row_params=row_params)  # fmt: skip

        return LABEL_LOSSES[loss_name](rows_of, **options)

    loss.__name__ = loss.__qualname__ = loss_name
    return loss


multi_similarity_loss = _on_references("multi_similarity_loss")
triplet_margin_loss = _on_references("triplet_margin_loss")
contrastive_loss = _on_references("contrastive_loss")
circle_loss = _on_references("circle_loss")
ntxent_loss = _on_references("ntxent_loss")
supcon_loss = _on_references("supcon_loss")


@backend_loss
def clip_loss(image, text, logit_scale, *, reduction):
    scalars = widen(logit_scale.reshape(1))
    rows = pair_forward("clip", image, text, scalars=scalars)[0][:, 0]
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


@backend_loss
def siglip_loss(image, text, logit_scale, logit_bias, *, positive_offset=None):
    scalars = widen(torch.stack([logit_scale.reshape(()), logit_bias.reshape(()).to(logit_scale.dtype)]))
    rows = pair_forward("siglip", image, text, scalars=scalars, own_offset=positive_offset)[0][:, 0]
    return rows.sum() / image.shape[0]


@backend_loss(operands=_operands)
def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    rows, counts = pair_forward("decoupled_softmax", queries, keys, positives, params=(temperature,))
    return ratio(rows[:, 0].sum(), counts[0])  # mean over the distinct (query, positive) pairs


@backend_loss
def uniformity_loss(x, *, t):
    rows = pair_forward("uniformity", x, params=(t,))[0][:, 0]  # each row's LSE of −t·|x_i − x_j|²
    pairs = x.shape[0] * (x.shape[0] - 1)
    return torch.logsumexp(rows, 0) - math.log(pairs)


@backend_loss(operands=_operands)
def mw_loss(queries, docs, *, temperature):
    return pair_forward("mw", queries, docs, params=(temperature,))[0][:, 0].mean()
