"""Public loss functions: check the arguments, normalise where the loss is on cosine similarity, pick a
backend, and compute. Every backend receives the same already-checked, already-normalised tensors."""

import torch

from . import _checks as checks
from . import _multi_positive as multi_positive
from ._labels import POSITIVE_WEIGHTS
from ._numerics import accumulation_dtype, unit_rows, widen
from ._precision import in_dtype, operand_dtype, without_autocast
from ._reduction import count_parts, reduce
from .backends import resolve


def _nonfinite_guard(*tensors):
    """0 when every entry is finite, NaN otherwise (fp32 or wider, no host sync).

    Mining compares similarities, and a comparison with NaN is false: a NaN row would silently drop out of
    the mined sets and leave a finite loss. Adding this term makes any NaN/inf input show in the loss. The sums
    are fp32 (at least): an fp16 sum of finite entries can overflow to inf.
    """
    return sum(t.sum(dtype=accumulation_dtype(t.dtype)) * 0 for t in tensors if t is not None)


def _with_guard(loss, *tensors):
    """``loss`` (or the sums of its parts) plus the non-finite guard of ``tensors``, in the loss's dtype."""
    if isinstance(loss, tuple):
        sums, counts = loss
        return sums + _nonfinite_guard(*tensors).to(sums.dtype), counts
    return loss + _nonfinite_guard(*tensors).to(loss.dtype)


def _finish(loss, *tensors):
    """A backend's ``loss`` in the dtype of the first of ``tensors`` (the parts of a mean stay wide), guarded."""
    return _with_guard(in_dtype(loss, tensors[0].dtype), *tensors)


def _unit_rows_for(function, *rows):
    """Each of ``rows`` (None stays None) normalised in fp32 and stored in the dtype in which the backend loss
    ``function`` takes its operands (``_precision.operand_dtype``, read off the first rows)."""
    operands = operand_dtype(function, rows[0])
    with without_autocast(rows[0].device.type):
        return [None if r is None else unit_rows(r, operands) for r in rows]


def _as_scalar_tensor(value, like):
    """A logit scale or bias as a 0-d tensor; a Python number becomes an fp32 (or fp64) tensor, never fp16/bf16
    (engines compute with scalars in fp32 whatever the features' dtype)."""
    if isinstance(value, torch.Tensor):
        return value.reshape(())
    return torch.tensor(float(value), dtype=accumulation_dtype(like.dtype), device=like.device)


def _multi_similarity_options(alpha, beta, base, epsilon, mining):
    checks.check_positive(alpha=alpha, beta=beta)
    checks.check_non_negative(epsilon=epsilon)
    checks.check_finite(base=base)
    checks.check_choice("mining", mining, (True, False))
    return {"alpha": alpha, "beta": beta, "base": base, "epsilon": epsilon, "mining": bool(mining)}


def _triplet_margin_options(margin, mining, soft):
    _check_margins(margin=margin)
    checks.check_choice("mining", mining, ("batch_hard", "all"))
    checks.check_choice("soft", soft, (True, False))
    return {"margin": margin, "mining": mining, "soft": bool(soft)}


def _contrastive_options(pos_margin, neg_margin):
    _check_margins(pos_margin=pos_margin, neg_margin=neg_margin)
    return {"pos_margin": pos_margin, "neg_margin": neg_margin}


def _check_margins(**margins):
    """Numbers checked here; one per anchor ((B,) tensors) against the rows (``_label_loss``)."""
    checks.check_non_negative(**{name: m for name, m in margins.items() if not isinstance(m, torch.Tensor)})


def _circle_options(m, gamma):
    checks.check_non_negative(m=m)
    checks.check_positive(gamma=gamma)
    return {"m": m, "gamma": gamma}


def _softmax_options(temperature, positive_weights):
    if not isinstance(temperature, torch.Tensor):  # one per anchor: checked against the rows (_label_loss)
        checks.check_positive(temperature=temperature)
    checks.check_choice("positive_weights", positive_weights, POSITIVE_WEIGHTS)
    return {"temperature": temperature, "positive_weights": positive_weights}


def _divided_rows(rows, temperature):
    """Per-anchor temperatures: the logits s_ij / τ_i are (x_i / τ_i)·y_j, so the engines run at temperature 1 on
    rows divided by their τ (computed wide, stored in the rows' dtype; τ's gradient through autograd)."""
    return (widen(rows) / widen(temperature)[:, None]).to(rows.dtype)


def _divided_anchors(x, y, labels, ref_labels, self_offset, temperature):
    """``_divided_rows`` for a label loss; with X = Y the references are the unit rows, each anchor's own copy
    left out."""
    if y is None:
        y, ref_labels, self_offset = x, labels, 0
    return _divided_rows(x, temperature), y, ref_labels, self_offset


# The hyper-parameters that may be one per anchor: temperatures (differentiable) and margins (constants).
PER_ANCHOR_OPTIONS = ("temperature", "margin", "pos_margin", "neg_margin")


def _check_per_anchor_options(options, embeddings):
    """The (B,) tensor options: on the rows' device, one per row; temperatures positive, margins non-negative
    and without a gradient (the engines take them as constants)."""
    for name in PER_ANCHOR_OPTIONS:
        value = options.get(name)
        if not isinstance(value, torch.Tensor):
            continue
        rows, device = embeddings.shape[0], embeddings.device
        if name == "temperature":
            checks.check_per_anchor_positive(name, value, rows, "embeddings", device)
        else:
            checks.check_per_anchor_non_negative(name, value, rows, "embeddings", device)


# Each label loss's hyper-parameters, checked and normalised (the engines' keyword arguments).
LABEL_OPTIONS = {
    "multi_similarity_loss": _multi_similarity_options,
    "triplet_margin_loss": _triplet_margin_options,
    "contrastive_loss": _contrastive_options,
    "circle_loss": _circle_options,
    "ntxent_loss": _softmax_options,
    "supcon_loss": _softmax_options,
}


def _label_loss(name, backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction, **options):
    options = LABEL_OPTIONS[name](**options)
    checks.check_label_loss_inputs(embeddings, labels, ref_emb, ref_labels, self_offset)
    if "positive_weights" in options:
        checks.check_positive_weights(options["positive_weights"], labels)
    checks.check_backend(backend)
    checks.check_reduction(reduction, checks.LABEL_REDUCTIONS)
    _check_per_anchor_options(options, embeddings)
    temperature = options.get("temperature")
    per_anchor = isinstance(temperature, torch.Tensor)
    if per_anchor:
        options["temperature"] = 1.0
    options["reduction"] = reduction
    function = resolve(backend, embeddings.device, name)
    x, y = _unit_rows_for(function, embeddings, ref_emb)
    if per_anchor:
        x, y, ref_labels, self_offset = _divided_anchors(x, y, labels, ref_labels, self_offset, temperature)
    loss = function(x, labels, y, ref_labels, self_offset=self_offset, **options)
    return _finish(loss, embeddings, ref_emb)


def multi_similarity_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    alpha=2.0,
    beta=50.0,
    base=0.5,
    epsilon=0.1,
    mining=True,
    reduction="mean",
    backend="auto",
):
    """Multi-similarity loss (Wang et al. 2019) on cosine similarity, with its pair miner when ``mining``.

    Every label loss takes ``labels`` as (B,) integer class ids or a (B, L) bool multi-hot matrix (``ref_labels``
    in the same form, same L): with multi-hot labels a pair is positive iff its rows share at least one label and
    negative iff they share none, so a row without labels has no positives; one-hot rows give exactly the
    integer-label loss. Every label loss takes ``ref_emb``/``ref_labels`` (the references; default: the anchors
    themselves, self-pairs left out) and ``self_offset``: when ``ref_emb`` holds the anchors' own copies (a memory
    bank, a gathered global batch), anchor i's copy is ``ref_emb[(self_offset + i) % len(ref_emb)]`` and is left
    out of its pairs.
    Their ``reduction`` is "mean" (the loss's PML reducer), "sum", "none" (per anchor) or "parts": ``(sums,
    counts)`` with mean = Σ_k sums_k / counts_k (0 where counts_k = 0), to average exactly over several batches
    or ranks (add the parts, then divide).

    Equals PML's ``MultiSimilarityLoss(alpha, beta, base)`` with ``MultiSimilarityMiner(epsilon)``.
    """
    return _label_loss(
        "multi_similarity_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction,
        alpha=alpha, beta=beta, base=base, epsilon=epsilon, mining=mining,
    )  # fmt: skip


def triplet_margin_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    margin=0.05,
    mining="batch_hard",
    soft=False,
    reduction="mean",
    backend="auto",
):
    """Triplet margin loss on L2 distances of the normalised rows.

    ``mining="batch_hard"``: each anchor's farthest positive and closest negative (PML's BatchHardMiner +
    TripletMarginLoss); ``mining="all"``: every valid triplet. ``soft=True`` replaces the hinge by softplus.
    ``margin``: a number, or a (B,) tensor with one per anchor (a constant: no gradient), for its triplets against
    ``ref_emb`` too.
    """
    return _label_loss(
        "triplet_margin_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction,
        margin=margin, mining=mining, soft=soft,
    )  # fmt: skip


def contrastive_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    pos_margin=0.0,
    neg_margin=1.0,
    reduction="mean",
    backend="auto",
):
    """Contrastive loss on L2 distances of the normalised rows (PML's ContrastiveLoss). ``pos_margin`` and
    ``neg_margin``: numbers, or (B,) tensors with one per anchor (constants), for its pairs against ``ref_emb``
    too."""
    return _label_loss(
        "contrastive_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction,
        pos_margin=pos_margin, neg_margin=neg_margin,
    )  # fmt: skip


def circle_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    m=0.4,
    gamma=80.0,
    reduction="mean",
    backend="auto",
):
    """Circle loss (Sun et al. 2020) on cosine similarity (PML's CircleLoss)."""
    return _label_loss(
        "circle_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction, m=m, gamma=gamma,
    )  # fmt: skip


def ntxent_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    temperature=0.07,
    positive_weights="uniform",
    reduction="mean",
    backend="auto",
):
    """Label-aware NT-Xent / InfoNCE on cosine similarity (PML's NTXentLoss); mean over positive pairs.

    ``temperature``: a number, or a (B,) tensor with one per anchor (learnable: its gradient flows); anchor i's
    logits are s_ij / τ_i, against ``ref_emb`` too.

    ``positive_weights="jaccard"`` (multi-hot labels): soft positives, each positive pair's term weighted by
    w_ip = |L_i ∩ L_p| / |L_i ∪ L_p| and the mean taken over Σ w instead of the number of positive pairs."""
    return _label_loss(
        "ntxent_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction,
        temperature=temperature, positive_weights=positive_weights,
    )  # fmt: skip


def supcon_loss(
    embeddings,
    labels,
    ref_emb=None,
    ref_labels=None,
    *,
    self_offset=None,
    temperature=0.1,
    positive_weights="uniform",
    reduction="mean",
    backend="auto",
):
    """Supervised contrastive loss (Khosla et al. 2020) on cosine similarity (PML's SupConLoss); ``temperature``
    as in ``ntxent_loss`` (a number or one per anchor).

    ``positive_weights="jaccard"`` (multi-hot labels): L_i = −Σ_p w_ip (s_ip/τ − log Σ_{k≠i} e^{s_ik/τ}) / Σ_p w_ip
    with w_ip = |L_i ∩ L_p| / |L_i ∪ L_p|. PML's rule that a batch without any negative pair has loss 0 holds for
    uniform weights only: soft positives still rank each row's positives."""
    return _label_loss(
        "supcon_loss", backend, embeddings, labels, ref_emb, ref_labels, self_offset, reduction,
        temperature=temperature, positive_weights=positive_weights,
    )  # fmt: skip


def clip_loss(image_features, text_features, logit_scale, *, labels=None, reduction="mean", backend="auto"):
    """Symmetric InfoNCE of CLIP (OpenCLIP's ClipLoss): logits = logit_scale · I·Tᵀ, row i matches column i.

    ``logit_scale`` is the multiplier itself (OpenCLIP passes ``model.logit_scale.exp()``); features are used as
    given, normalise them beforehand as CLIP models do.

    ``labels`` (B integer ids, e.g. the image id of each caption): every text j with labels[j] == labels[i] is a
    positive of image i and vice versa; each direction is −(1/|P_i|) Σ_{j∈P_i} log softmax_j(logits_i), the two
    directions averaged per row. All-distinct labels give the loss without labels.
    """
    checks.check_clip_inputs(image_features, text_features, logit_scale)
    checks.check_reduction(reduction)
    checks.check_backend(backend)
    scale = _as_scalar_tensor(logit_scale, image_features)
    if labels is None:
        function = resolve(backend, image_features.device, "clip_loss")
        loss = function(image_features, text_features, scale, reduction=reduction)
    else:
        checks.check_labels("labels", labels, image_features.shape[0], "image_features")
        checks.check_same_device(image_features=image_features, labels=labels)
        ntxent = resolve(backend, image_features.device, "ntxent_loss")
        rows = multi_positive.clip_rows(
            ntxent, image_features, text_features, image_features, text_features, labels, labels, scale
        )
        loss = reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))
    return _finish(loss, image_features, text_features)


def siglip_loss(image_features, text_features, logit_scale, logit_bias, *, positive_offset=None, labels=None,
                text_labels=None, backend="auto"):  # fmt: skip
    """Pairwise sigmoid loss of SigLIP (OpenCLIP's SigLipLoss): −Σ log σ(z_ij · (scale·s_ij + bias)) / B.

    ``positive_offset=k``: ``text_features`` may have any number M of rows and image i's positive is text row
    (k + i) mod M, every other row a negative (e.g. local images against a gathered global text batch).

    ``labels`` (B integer ids) and ``text_labels`` (M ids; default ``labels`` when M = B): z_ij = +1 iff
    labels[i] == text_labels[j] (several positives per image), instead of the diagonal.
    """
    if text_labels is not None and labels is None:
        raise ValueError("text_labels was given without labels: pass labels (one id per image) too")
    if labels is not None and positive_offset is not None:
        raise ValueError("positive_offset and labels both define the positives: pass one of them")
    own_rows = positive_offset is None and (labels is None or text_labels is None)
    checks.check_siglip_inputs(
        image_features, text_features, logit_scale, logit_bias, None if own_rows else (positive_offset or 0)
    )
    checks.check_backend(backend)
    function = resolve(backend, image_features.device, "siglip_loss")
    scale = _as_scalar_tensor(logit_scale, image_features)
    bias = _as_scalar_tensor(logit_bias, image_features)
    if labels is None:
        loss = function(image_features, text_features, scale, bias, positive_offset=positive_offset)
    else:
        text_labels = labels if text_labels is None else text_labels
        checks.check_labels("labels", labels, image_features.shape[0], "image_features")
        checks.check_labels("text_labels", text_labels, text_features.shape[0], "text_features")
        checks.check_same_device(image_features=image_features, labels=labels, text_labels=text_labels)
        total = multi_positive.siglip_sum(function, image_features, text_features, scale, bias, labels, text_labels)
        loss = total / image_features.shape[0]
    return _finish(loss, image_features, text_features)


def decoupled_softmax_loss(queries, keys, positives, *, temperature=0.05, backend="auto"):
    """Decoupled softmax (DEXML) on cosine similarity: each positive (q, p) against q's negatives only.

    ``positives`` is a B×P integer tensor of row indices into ``keys``, padded with −1; mean over the valid
    (query, positive) pairs, a repeated index counting once. ``temperature``: a number or one per query (B,).
    """
    checks.check_towers("queries", queries, "keys", keys, same_rows=False)
    if not isinstance(positives, torch.Tensor) or positives.dim() != 2:
        raise ValueError("positives must be a 2-D tensor (queries × max positives) of key indices, −1 padded")
    if positives.is_floating_point() or positives.dtype == torch.bool:
        raise TypeError(f"positives must hold integer key indices, got {positives.dtype}")
    if positives.shape[0] != queries.shape[0]:
        raise ValueError(f"positives has {positives.shape[0]} rows but queries has {queries.shape[0]}")
    checks.check_same_device(queries=queries, keys=keys, positives=positives)
    if positives.numel() and not bool(((positives >= -1) & (positives < keys.shape[0])).all()):
        raise ValueError(f"positives must be −1 (padding) or an index below len(keys)={keys.shape[0]}")
    checks.check_per_anchor_positive("temperature", temperature, queries.shape[0], "queries", queries.device)
    checks.check_backend(backend)
    function = resolve(backend, queries.device, "decoupled_softmax_loss")
    queries_unit, keys_unit = _unit_rows_for(function, queries, keys)
    if isinstance(temperature, torch.Tensor):  # one per query
        queries_unit, temperature = _divided_rows(queries_unit, temperature), 1.0
    loss = function(queries_unit, keys_unit, positives, temperature=temperature)
    return _finish(loss, queries, keys)


def uniformity_loss(embeddings, *, t=2.0, backend="auto"):
    """Uniformity (Wang & Isola 2020): log mean_{i≠j} exp(−t‖x_i − x_j‖²); rows used as given."""
    checks.check_embeddings("embeddings", embeddings)
    if embeddings.shape[0] < 2:
        raise ValueError("embeddings needs at least 2 rows: uniformity is a mean over distinct pairs")
    checks.check_positive(t=t)
    checks.check_backend(backend)
    function = resolve(backend, embeddings.device, "uniformity_loss")
    return _finish(function(embeddings, t=t), embeddings)


def mw_loss(queries, docs, *, temperature=1.0, backend="auto"):
    """Pairwise AUC (Mann–Whitney) surrogate on cosine similarity: doc i is query i's positive, every other doc
    a negative; per query the mean of softplus((s_neg − s_pos)/τ), then the mean over queries.

    ``docs`` may have more rows than ``queries`` (extra hard negatives)."""
    checks.check_towers("queries", queries, "docs", docs, same_rows=False)
    if docs.shape[0] < queries.shape[0]:
        raise ValueError(f"docs has {docs.shape[0]} rows but needs at least one per query ({queries.shape[0]})")
    checks.check_same_device(queries=queries, docs=docs)
    checks.check_positive(temperature=temperature)
    checks.check_backend(backend)
    function = resolve(backend, queries.device, "mw_loss")
    queries_unit, docs_unit = _unit_rows_for(function, queries, docs)
    loss = function(queries_unit, docs_unit, temperature=temperature)
    return _finish(loss, queries, docs)
