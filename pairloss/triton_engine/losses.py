"""The reference's losses on the fused engine (same names and arguments as ``pairloss.reference``).

Each loss runs its STATS pass if it has one (on detached inputs: thresholds, extremes and log-denominators are
not differentiated, or are differentiated through the LOSS pass's outputs), then its LOSS pass, and reduces the
O(B) per-row outputs in PyTorch exactly as the reference does, through ``pairloss._reduction`` (the "mean" is
computed from the loss's parts), without host synchronisation (so that the losses compile with
``torch.compile(fullgraph=True)``). fp16/bf16 rows go to the tensor cores as they are; every side term (squared
norms, matching logits, positive scores, recomputed distances) and reduction is fp32 (``pairloss._numerics``), and
the result comes back in the inputs' dtype. fp64 inputs are computed in fp32.

The label losses' ``self_offset``: with references ``y`` given, anchor i's own copy sits at row
(self_offset + i) % len(y) (a memory bank, a gathered batch) and that pair is left out, as the diagonal is when
``y`` is None; the engine's SELF_PAIRS with that own-column offset.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._labels import engine_labels
from .._numerics import distance_from_gram, row_dots, softplus, squared_norms
from .._precision import backend_loss
from .._reduction import count_parts, nonzero_parts, ratio, reduce
from . import _launch, _ops
from ._ids import (
    CIRCLE,
    CLIP,
    CONTRASTIVE,
    DIAGONAL,
    INDEX,
    JACCARD,
    LABELS,
    MULTI_HOT,
    MULTI_SIMILARITY,
    MW,
    NTXENT,
    SIGLIP,
    SUPCON,
    TRIPLET_ALL,
    TRIPLET_HARDEST,
    UNIFORMITY,
)
from ._slots import (
    CircleTerms,
    ClipTerms,
    ContrastiveTerms,
    HardestPairs,
    MultiSimilarityTerms,
    SoftmaxTerms,
    SupConTerms,
    TripletTerms,
)

INF = float("inf")


class EnginePass(NamedTuple):
    """The compile-time choices of one ``pairloss::pair_rows`` call (ids as ints, as the op takes them)."""

    loss: int
    stats_pass: bool
    mask: int
    self_pairs: bool
    symmetric: bool  # X = Y: each pair of mirrored tiles computed once (backward; forward per shared_forward)


# The LOSS passes whose backward runs symmetric when the references are the anchors: all but the all-triplets one,
# whose pair gradients need every triplet of the pair's row (an inner loop over the row's tiles), and contrastive
# only with one pair of margins for every anchor (``_contrastive``). Of the STATS passes, the multi-similarity
# miner's and NT-Xent's forward may (_launch.shared_forward).
MIRRORED = {loss.value for loss in (MULTI_SIMILARITY, CONTRASTIVE, CIRCLE, NTXENT, SUPCON, UNIFORMITY)}
MIRRORED_STATS = {MULTI_SIMILARITY.value, NTXENT.value}


def _mirrored(loss, stats_pass):
    return loss.value in (MIRRORED_STATS if stats_pass else MIRRORED)


def _passes(loss, stats_passes=(False,), masks=(LABELS, MULTI_HOT), self_pairs=(True, False)):
    """The passes of ``loss`` (by default: for class ids and for multi-hot labels); with the own pairs left out,
    also the symmetric X = Y one where it has one."""
    return {
        EnginePass(loss.value, s, mask.value, p, symmetric)
        for s in stats_passes
        for mask in masks
        for p in self_pairs
        for symmetric in {False, p and _mirrored(loss, s)}
    }


# Every pass the losses below run (the LOSS passes also run the backward): the kernel variants _compile_check
# compiles for GPUs. tests/test_triton_compile.py checks that the losses run exactly these.
ENGINE_PASSES = sorted(
    _passes(MULTI_SIMILARITY, stats_passes=(True, False))
    | _passes(TRIPLET_HARDEST, stats_passes=(True,))
    | _passes(TRIPLET_ALL)
    | _passes(CONTRASTIVE)
    | _passes(CIRCLE)
    | _passes(NTXENT, stats_passes=(True, False))
    | _passes(NTXENT, masks=(JACCARD,))  # soft positives: the LOSS pass (the STATS pass reads negatives only)
    | _passes(NTXENT, stats_passes=(True, False), masks=(INDEX,), self_pairs=(False,))
    | _passes(SUPCON, masks=(LABELS, MULTI_HOT, JACCARD))
    | _passes(CLIP, stats_passes=(True, False), masks=(DIAGONAL,), self_pairs=(False,))
    | set().union(*(_passes(loss, masks=(DIAGONAL,), self_pairs=(False,)) for loss in (SIGLIP, MW)))
    | {EnginePass(UNIFORMITY.value, False, DIAGONAL.value, False, True)}
)


def pair_rows_inputs(loss, x, y, *, tf32, stats_pass=False, row_labels=None, col_labels=None, positives=None,
                     row_vec=None, col_vec=None, stats=None, scale=None, bias=None, mask=LABELS, self_pairs=False,
                     own_offset=0, params=(), symmetric=False):  # fmt: skip
    """The arguments of one ``pairloss::pair_rows`` call; unused inputs get small placeholders. ``pair_grad``
    takes the same ones, less ``stats_pass``, with the forward's outputs (``grad_inputs``). ``tf32``: the loss
    call's one precision decision (``_launch.tf32_allowed()``, read once), shared by all its passes so that they
    compute the same S. ``symmetric``: ``y`` is ``x`` with the same labels and vectors (one tensor: the mirrored
    rows read theirs as either), in a mirrored pass (the contrastive one with its margins, equal for every row, as
    ``params`` too: the mirrored rows read them there)."""
    if symmetric and not (y is x and col_vec is row_vec and own_offset == 0 and _mirrored(loss, stats_pass)):
        raise ValueError("symmetric: the references must be the anchors themselves, with their vectors, in a "
                         "mirrored pass")  # fmt: skip
    if symmetric and loss.value == CONTRASTIVE.value and len(params) < 2:
        raise ValueError("symmetric contrastive: params must hold the margins (pos_margin, neg_margin)")
    if stats_pass:
        x, y = x.detach(), y.detach()
        scale = None if scale is None else scale.detach()
        row_vec = None if row_vec is None else row_vec.detach()
        col_vec = None if col_vec is None else col_vec.detach()
    rows, cols = x.shape[0], y.shape[0]
    no_labels = x.new_zeros((1,), dtype=torch.int64)
    return (
        x,
        y,
        no_labels if row_labels is None else _kernel_labels(row_labels),
        no_labels if col_labels is None else _kernel_labels(col_labels),
        x.new_zeros((rows, 0), dtype=torch.int64) if positives is None else positives.to(torch.int64).contiguous(),
        x.new_zeros((rows,), dtype=torch.float32) if row_vec is None else row_vec.float().contiguous(),
        x.new_zeros((cols,), dtype=torch.float32) if col_vec is None else col_vec.float().contiguous(),
        x.new_zeros((4, rows), dtype=torch.float32) if stats is None else stats,
        x.new_ones((), dtype=torch.float32) if scale is None else scale.float().reshape(()),
        x.new_zeros((), dtype=torch.float32) if bias is None else bias.float().reshape(()),
        loss.value,
        stats_pass,
        mask.value,
        self_pairs,
        own_offset % cols,  # in [0, M): an int32 kernel argument whatever the caller's offset
        [float(p) for p in params] + [0.0] * (4 - len(params)),
        bool(tf32),
        symmetric,
    )


def _kernel_labels(labels):
    """Class ids as int64; multi-hot rows' packed int64 words (``engine_labels``) as twice as many int32 words."""
    labels = labels.contiguous()
    return labels.view(torch.int32) if labels.dim() == 2 else labels.to(torch.int64)


def grad_inputs(inputs, values, coefs, tile_bits):
    """``pairloss::pair_grad``'s arguments for the ``pair_rows`` call of ``inputs`` that gave ``values`` and
    ``tile_bits``, with the upstream gradient ``coefs`` of ``values``."""
    x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, scale, bias = inputs[:10]
    loss, _, mask, self_pairs, own_offset, params, tf32, symmetric = inputs[10:]
    return (x, y, row_labels, col_labels, positives, row_vec, col_vec, stats, values, coefs, scale, bias, tile_bits,
            loss, mask, self_pairs, own_offset, params, tf32, symmetric)  # fmt: skip


def _run(loss, x, y, **options):
    """One engine pass; returns its (4, B) fp32 per-row outputs."""
    return _ops.pair_rows(*pair_rows_inputs(loss, x, y, **options))[0]


def label_mask(packed_labels, stats_pass=False, jaccard=False):
    """The mask of a label loss's pass on labels in the engines' form (``pairloss._labels.engine_labels``: 2-D
    words for multi-hot rows); ``jaccard``: soft positives, which only the LOSS pass reads."""
    if packed_labels.dim() == 1:
        return LABELS
    return JACCARD if jaccard and not stats_pass else MULTI_HOT


def _label_pairs(labels, y, ref_labels, self_offset):
    """Keyword arguments of ``_run`` for a label loss (labels packed for the engine); ``y is None`` means the
    anchors are the references, and ``self_offset`` (with ``y``) where their copies sit in ``y``: either way each
    anchor's own pair is left out."""
    labels = engine_labels(labels)
    if y is None:
        return {"row_labels": labels, "col_labels": labels, "self_pairs": True}
    ref_labels = engine_labels(ref_labels)
    if self_offset is None:
        return {"row_labels": labels, "col_labels": ref_labels, "self_pairs": False}
    return {"row_labels": labels, "col_labels": ref_labels, "self_pairs": True, "own_offset": self_offset}


def _squared_norms(x, y):
    """fp32 squared row norms of X and of Y (the same tensor when Y is X, so that both gradients reach it)."""
    x_norms = squared_norms(x)
    return x_norms, x_norms if y is None else squared_norms(y)


def _total(per_row_counts):
    """Σ of the kernels' per-row fp32 counts as one part's count, exact (an fp32 sum is not beyond 2²⁴)."""
    return per_row_counts.detach().sum(dtype=torch.float64).reshape(1)


def _l2_rows(a, b):
    """Row-wise L2 distance through the Gram formula in fp32 (at least), as the kernels' tiles compute it."""
    norms_sum = squared_norms(a) + squared_norms(b)
    return distance_from_gram(norms_sum - 2.0 * row_dots(a, b), norms_sum, a.dtype)


class References:
    """The engine passes of a label loss over one set of references ``y`` (the anchors themselves when None)."""

    def __init__(self, x, labels, y, ref_labels, self_offset):
        self.x, self._y = x, y
        self._refs = x if y is None else y
        self._pairs = _label_pairs(labels, y, ref_labels, self_offset)
        self._tf32 = _launch.tf32_allowed()

    def run(self, loss, *, distances=False, jaccard=False, mirror=True, **options):
        """The (4, B) outputs of one pass; ``distances``: the per-row/column vectors are squared norms;
        ``jaccard``: soft positives (multi-hot labels). With the anchors as references a mirrored pass runs
        symmetric (``MIRRORED``, ``MIRRORED_STATS``) unless ``mirror`` is False."""
        if distances:
            options["row_vec"], options["col_vec"] = _squared_norms(self.x, self._y)
        stats_pass = options.get("stats_pass", False)
        symmetric = self._y is None and mirror and _mirrored(loss, stats_pass)
        mask = label_mask(self._pairs["row_labels"], stats_pass, jaccard)
        return _run(loss, self.x, self._refs, tf32=self._tf32, symmetric=symmetric, mask=mask, **self._pairs,
                    **options)  # fmt: skip

    def rows(self, columns):
        """The reference rows at these columns (differentiable)."""
        return self._refs[columns]

    def pair_count(self):
        """The number of (anchor, reference) pairs that are not left out."""
        return self.x.shape[0] * (self._refs.shape[0] - int(self._pairs["self_pairs"]))


def _multi_similarity(refs, *, alpha, beta, base, epsilon, mining, reduction):
    x = refs.x
    params = (alpha, beta, base, epsilon)
    if mining:
        stats = refs.run(MULTI_SIMILARITY, stats_pass=True, params=params)
    else:
        # Thresholds that keep every pair: s − ε < +inf and s + ε > −inf.
        stats = torch.tensor([INF, -INF, 0.0, 0.0], device=x.device)[:, None].expand(4, x.shape[0]).contiguous()
    terms = MultiSimilarityTerms(*refs.run(MULTI_SIMILARITY, stats=stats, params=params))
    rows = terms.positive_log1p / alpha + terms.negative_log1p / beta
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


def _row_inputs(x, *values):
    """A pass's (4, B) fp32 per-row inputs (its ``stats``) holding hyper-parameters given as numbers or one per
    anchor ((B,) tensors), in slot order."""
    rows = torch.zeros((4, x.shape[0]), dtype=torch.float32, device=x.device)
    for slot, value in enumerate(values):
        rows[slot] = value
    return rows


def _triplet_margin(refs, *, margin, mining, soft, reduction):
    x = refs.x
    if mining == "all":
        stats = _row_inputs(x, margin)
        terms = TripletTerms(*refs.run(TRIPLET_ALL, distances=True, stats=stats, params=(0.0, float(soft))))
        rows = terms.term_sum
        # The mean is over the non-zero triplet terms (PML's AvgNonZeroReducer over triplets, not anchors).
        return reduce(rows, reduction, lambda: count_parts(rows, _total(terms.nonzero_terms)))
    hardest = HardestPairs(*refs.run(TRIPLET_HARDEST, stats_pass=True, distances=True))
    has_triplet = (hardest.far_positive > -INF) & (hardest.near_negative < INF)
    # The kernel only picks the hardest columns; the distances there are recomputed with autograd (O(B·D)),
    # so the gradient reaches exactly one positive and one negative per anchor, as in PML.
    far_pos = _l2_rows(x, refs.rows(hardest.far_positive_column.long()))
    near_neg = _l2_rows(x, refs.rows(hardest.near_negative_column.long()))
    hinge = softplus if soft else F.relu
    rows = torch.where(has_triplet, hinge(far_pos - near_neg + margin), 0.0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


def _contrastive(refs, *, pos_margin, neg_margin, reduction):
    # The symmetric kernels read the mirrored rows' margins from params (one pair for all anchors): per-anchor
    # margins run over every tile.
    uniform_margins = not any(isinstance(margin, torch.Tensor) for margin in (pos_margin, neg_margin))
    stats = _row_inputs(refs.x, pos_margin, neg_margin)
    params = (pos_margin, neg_margin) if uniform_margins else ()
    outputs = refs.run(CONTRASTIVE, distances=True, stats=stats, params=params, mirror=uniform_margins)
    terms = ContrastiveTerms(*outputs)
    rows = terms.positive_sum + terms.negative_sum

    def parts():
        # PML averages each kind over its own non-zero pairs, then adds the two averages.
        sums = torch.stack([terms.positive_sum.sum(), terms.negative_sum.sum()])
        return sums, torch.cat([_total(terms.positive_nonzero), _total(terms.negative_nonzero)])

    return reduce(rows, reduction, parts)


def _circle(refs, *, m, gamma, reduction):
    terms = CircleTerms(*refs.run(CIRCLE, params=(m, gamma)))
    has_both = (terms.has_positive > 0) & (terms.has_negative > 0)
    rows = torch.where(has_both, softplus(terms.positive_lse + terms.negative_lse), 0.0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


def _ntxent_values(run, params, **loss_options):
    """(Σ over each row's positives of the weighted pair loss, Σ of the positives' weights) of label-aware
    InfoNCE (the weights are 1 but with ``jaccard=True`` in ``loss_options``)."""
    stats = run(NTXENT, stats_pass=True, params=params)
    terms = SoftmaxTerms(*run(NTXENT, stats=stats, params=params, **loss_options))
    return terms.pair_loss_sum, terms.weight_sum.detach()


def _ntxent(refs, *, temperature, positive_weights="uniform", reduction):
    rows, weight_sums = _ntxent_values(refs.run, (temperature,), jaccard=positive_weights == "jaccard")
    return reduce(rows, reduction, lambda: count_parts(rows, _total(weight_sums)))


@backend_loss
def decoupled_softmax_loss(queries, keys, positives, *, temperature):
    tf32 = _launch.tf32_allowed()

    def run(loss, **options):
        return _run(loss, queries, keys, tf32=tf32, positives=positives, mask=INDEX, **options)

    rows, counts = _ntxent_values(run, (temperature,))
    return ratio(rows.sum(), counts.sum())


def _supcon(refs, *, temperature, positive_weights="uniform", reduction):
    jaccard = positive_weights == "jaccard"
    terms = SupConTerms(*refs.run(SUPCON, params=(temperature,), jaccard=jaccard))
    weight_sums = terms.weight_sum.detach()
    # A positive's weight is never 0: Σ w > 0 exactly for the rows with positives.
    has_positives = weight_sums > 0
    mean_positive_logit = terms.positive_logit_sum / torch.where(has_positives, weight_sums, 1)
    rows = torch.where(has_positives, terms.log_denominator - mean_positive_logit, 0.0)
    if not jaccard:
        # PML returns 0 for a batch with no positive pair or no negative pair at all (e.g. a single class). Every
        # pair that is not left out is one or the other, so the negatives are those pairs less the positives
        # (Σ w: their number, exact integers).
        positive_count = weight_sums.to(torch.int64).sum()
        rows = torch.where((positive_count > 0) & (positive_count < refs.pair_count()), rows, rows * 0)
    return reduce(rows, reduction, lambda: nonzero_parts(rows))


# Each label loss from its engine passes over ``References`` here, or over every rank's block of references
# (pairloss.distributed's ring, with the same methods).
LABEL_LOSSES = {
    "multi_similarity_loss": _multi_similarity,
    "triplet_margin_loss": _triplet_margin,
    "contrastive_loss": _contrastive,
    "circle_loss": _circle,
    "ntxent_loss": _ntxent,
    "supcon_loss": _supcon,
}


def _on_references(loss_name):
    @backend_loss
    def loss(x, labels, y, ref_labels, *, self_offset=None, **options):
        return LABEL_LOSSES[loss_name](References(x, labels, y, ref_labels, self_offset), **options)

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
    # The column log-sum-exps are the row ones of the transposed problem (a STATS pass); the LOSS pass returns
    # them beside the row ones and differentiates both from each recomputed tile (one backward, not one per side).
    tf32 = _launch.tf32_allowed()
    text_lse = ClipTerms(*_run(CLIP, text, image, tf32=tf32, stats_pass=True, scale=logit_scale, mask=DIAGONAL)).row_lse
    terms = ClipTerms(
        *_run(CLIP, image, text, tf32=tf32, row_vec=text_lse, col_vec=text_lse, scale=logit_scale, mask=DIAGONAL)
    )
    matching = logit_scale * row_dots(image, text)
    rows = (terms.row_lse + terms.column_lse) / 2 - matching
    return reduce(rows, reduction, lambda: count_parts(rows, rows.shape[0]))


@backend_loss
def siglip_loss(image, text, logit_scale, logit_bias, *, positive_offset=None):
    """Image row i's positive is text row (positive_offset + i) % len(text) (i when None: square towers)."""
    own_offset = 0 if positive_offset is None else positive_offset
    rows = _run(SIGLIP, image, text, tf32=_launch.tf32_allowed(), scale=logit_scale, bias=logit_bias, mask=DIAGONAL,
                own_offset=own_offset)[0]  # fmt: skip
    return rows.sum() / image.shape[0]


@backend_loss
def mw_loss(queries, docs, *, temperature):
    positive_scores = row_dots(queries, docs[: queries.shape[0]])
    tf32 = _launch.tf32_allowed()
    rows = _run(MW, queries, docs, tf32=tf32, row_vec=positive_scores, mask=DIAGONAL, params=(temperature,))[0]
    return (rows / max(docs.shape[0] - 1, 1)).mean()


@backend_loss
def uniformity_loss(x, *, t):
    norms = squared_norms(x)
    row_lse = _run(UNIFORMITY, x, x, tf32=_launch.tf32_allowed(), row_vec=norms, col_vec=norms, mask=DIAGONAL,
                   params=(t,), symmetric=True)[0]  # fmt: skip
    pairs = x.shape[0] * (x.shape[0] - 1)
    return torch.logsumexp(row_lse, 0) - math.log(pairs)
