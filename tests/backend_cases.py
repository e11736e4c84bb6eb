"""Shared test helpers (not tests): random batches covering the edge cases of DESIGN.md §3, and
``check_against_reference`` which compares any backend with the "reference" oracles, loss and gradients.

Engine tests use it as::

    @pytest.mark.parametrize("loss_name,scenario,option", all_case_ids())
    def test_engine(loss_name, scenario, option):
        require_backend("cpp", "cpu")
        case = make_case(loss_name, scenario, option, dtype=torch.float32)
        check_against_reference(loss_name, "cpp", **case)

A case is a dict of the loss's tensor arguments by name (``embeddings``, ``labels``, ``ref_emb``, …), its keyword
options (``reduction``, ``margin``, …) and an optional ``flags`` set describing the batch (e.g. "duplicates").
"""

import inspect
import math
import zlib
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss import backends, reference
from pairloss._precision import operand_dtype

from .tolerances import LOW_PRECISION, assert_close, assert_within_torch_error

LABEL_LOSSES = (
    "multi_similarity_loss",
    "triplet_margin_loss",
    "contrastive_loss",
    "circle_loss",
    "ntxent_loss",
    "supcon_loss",
)
OTHER_LOSSES = ("clip_loss", "siglip_loss", "decoupled_softmax_loss", "uniformity_loss", "mw_loss")
ALL_LOSSES = LABEL_LOSSES + OTHER_LOSSES
# The low-precision rule's slack: this many ulps of the dtype at the result's magnitude (its own rounding).
LOW_ULPS = 4
# Losses on L2 distances: d = 0 (duplicate rows) is a kink of the square root, so gradients there are only
# required to be finite; the reference computes d from the Gram matrix, which puts coincident rows at
# d ≈ sqrt(eps) instead of 0, so their loss is compared with an absolute slack of that size (triplet) or not at
# all (contrastive: a positive pair at d ≈ 1e-8 counts as a non-zero term in the mean).
DISTANCE_LOSSES = ("triplet_margin_loss", "contrastive_loss")


@dataclass(frozen=True)
class LossSpec:
    tensors: tuple  # positional tensor arguments, in order
    grads: tuple  # those that get a gradient (when they are floating-point tensors)
    has_reduction: bool


SPECS = {
    **{
        name: LossSpec(("embeddings", "labels", "ref_emb", "ref_labels"), ("embeddings", "ref_emb"), True)
        for name in LABEL_LOSSES
    },
    "clip_loss": LossSpec(
        ("image_features", "text_features", "logit_scale"), ("image_features", "text_features", "logit_scale"), True
    ),
    "siglip_loss": LossSpec(
        ("image_features", "text_features", "logit_scale", "logit_bias"),
        ("image_features", "text_features", "logit_scale", "logit_bias"),
        False,
    ),
    "decoupled_softmax_loss": LossSpec(("queries", "keys", "positives"), ("queries", "keys"), False),
    "uniformity_loss": LossSpec(("embeddings",), ("embeddings",), False),
    "mw_loss": LossSpec(("queries", "docs"), ("queries", "docs"), False),
}

# Keyword options every backend must reproduce; the first entry of each list is the defaults.
OPTIONS = {
    "multi_similarity_loss": [
        {},
        {"mining": False},
        {"alpha": 3.0, "beta": 20.0, "base": 0.3, "epsilon": 0.25},
        {"epsilon": 0.0, "reduction": "none"},
        {"reduction": "sum"},
    ],
    "triplet_margin_loss": [
        {},
        {"mining": "all"},
        {"soft": True},
        {"mining": "all", "soft": True, "margin": 0.3},
        {"margin": 0.5, "reduction": "none"},
        {"mining": "all", "reduction": "sum"},
    ],
    "contrastive_loss": [{}, {"pos_margin": 0.2, "neg_margin": 0.6}, {"reduction": "none"}, {"reduction": "sum"}],
    "circle_loss": [{}, {"m": 0.25, "gamma": 32.0}, {"reduction": "none"}, {"reduction": "sum"}],
    "ntxent_loss": [
        {},
        {"temperature": 0.5},
        {"reduction": "none"},
        {"reduction": "sum"},
        {"positive_weights": "jaccard"},
        {"positive_weights": "jaccard", "reduction": "none", "temperature": 0.3},
    ],
    "supcon_loss": [
        {},
        {"temperature": 0.05},
        {"reduction": "none"},
        {"reduction": "sum"},
        {"positive_weights": "jaccard"},
        {"positive_weights": "jaccard", "reduction": "none", "temperature": 0.3},
    ],
    "clip_loss": [{}, {"reduction": "none"}, {"reduction": "sum"}],
    "siglip_loss": [{}],
    "decoupled_softmax_loss": [{}, {"temperature": 0.2}],
    "uniformity_loss": [{}, {"t": 0.5}],
    "mw_loss": [{}, {"temperature": 0.1}],
}

# Batches for the label losses: rows (B), refs (M, absent: references = anchors), dim (D), classes (a count or
# "distinct"), ref_classes, layout of the inputs, flags.
LABEL_SCENARIOS = {
    "B1": {"rows": 1, "dim": 5, "classes": 1},
    "B1_ref": {"rows": 1, "refs": 4, "dim": 5, "classes": 2},
    "odd": {"rows": 13, "dim": 7, "classes": 4},
    "odd_ref": {"rows": 11, "refs": 17, "dim": 5, "classes": 3, "ref_classes": 5},
    "large_odd": {"rows": 67, "dim": 33, "classes": 9},
    "drawn_from_B_classes": {"rows": 17, "dim": 6, "classes": ("draw", 17)},
    "single_class": {"rows": 9, "dim": 4, "classes": 1},
    "single_class_ref": {"rows": 5, "refs": 7, "dim": 4, "classes": 1},
    "all_distinct": {"rows": 10, "dim": 8, "classes": "distinct"},
    "all_distinct_ref": {"rows": 6, "refs": 8, "dim": 8, "classes": "distinct"},
    "duplicates": {"rows": 12, "dim": 5, "classes": 3, "flags": {"duplicates"}},
    "duplicates_ref": {"rows": 7, "refs": 9, "dim": 5, "classes": 3, "flags": {"duplicates"}},
    "transposed": {"rows": 15, "dim": 6, "classes": 4, "layout": "transposed"},
    "sliced_ref": {"rows": 9, "refs": 11, "dim": 6, "classes": 3, "layout": "sliced"},
    "expanded_labels": {"rows": 7, "dim": 6, "classes": 1, "layout": "expanded_labels"},
    "expanded_ref_labels": {"rows": 9, "refs": 6, "dim": 6, "classes": 3, "layout": "expanded_labels"},
    "int32_labels_ref": {"rows": 10, "refs": 7, "dim": 6, "classes": 3, "label_dtype": torch.int32},
    # References holding copies of the anchors (self_offset): a gathered batch, and a ring-buffer memory bank
    # whose copies wrap around its end.
    "gathered": {"rows": 6, "refs": 17, "dim": 5, "classes": 3, "self_offset": 6},
    "memory_bank": {"rows": 9, "refs": 13, "dim": 6, "classes": 4, "self_offset": 8},
    "memory_bank_single_class": {"rows": 4, "refs": 6, "dim": 4, "classes": 1, "self_offset": 5},
    "memory_bank_distinct": {"rows": 5, "refs": 5, "dim": 4, "classes": "distinct", "self_offset": 3},
    # Multi-hot labels: (L label columns, how many of them rows draw from, the chance of each): rows without a
    # label, the last column of a word (63) and the first of the next (64) in use, L = 1 and a 1000-label space.
    "multi_hot": {"rows": 13, "dim": 7, "multi_hot": (5, 5, 0.3)},
    "multi_hot_ref": {"rows": 11, "refs": 17, "dim": 5, "multi_hot": (65, 6, 0.3)},
    "multi_hot_bank": {"rows": 9, "refs": 13, "dim": 6, "multi_hot": (64, 5, 0.3), "self_offset": 8},
    "multi_hot_L1": {"rows": 9, "dim": 4, "multi_hot": (1, 1, 0.5)},
    "multi_hot_L1000": {"rows": 31, "refs": 23, "dim": 6, "multi_hot": (1000, 12, 0.2)},
    "multi_hot_all_shared": {"rows": 8, "dim": 5, "multi_hot": (3, 3, 1.0)},
}
MULTI_HOT_SCENARIOS = tuple(name for name, spec in LABEL_SCENARIOS.items() if "multi_hot" in spec)

OTHER_SCENARIOS = {
    "clip_loss": ("B1", "odd", "large_odd", "transposed", "float_scale", "large_scale", "duplicates"),
    "siglip_loss": ("B1", "odd", "large_odd", "transposed", "float_scale_bias"),
    "decoupled_softmax_loss": ("B1", "odd", "repeated_positives", "no_positives_row", "all_positive_row", "sliced"),
    "uniformity_loss": ("B2", "odd", "large_odd", "duplicates", "transposed"),
    "mw_loss": ("B1", "odd", "extra_docs", "sliced", "duplicates"),
}


def scenarios(loss_name):
    return tuple(LABEL_SCENARIOS) if loss_name in LABEL_LOSSES else OTHER_SCENARIOS[loss_name]


def soft_positives(option):
    return option.get("positive_weights", "uniform") != "uniform"


def all_case_ids(losses=ALL_LOSSES):
    """(loss, scenario, option index): every scenario with the default options, plus every option on mid-sized
    scenarios (with and without separate references, class ids and multi-hot labels); the options for multi-hot
    labels only (soft positives) on every multi-hot scenario."""
    ids = []
    for loss_name in losses:
        names = scenarios(loss_name)
        ids += [(loss_name, scenario, 0) for scenario in names]
        options = list(enumerate(OPTIONS[loss_name]))[1:]
        mid_sized = ("odd", "odd_ref", "memory_bank", "multi_hot", "multi_hot_ref")
        for scenario in mid_sized if loss_name in LABEL_LOSSES else ("odd",):
            ids += [(loss_name, scenario, k) for k, option in options if not soft_positives(option)]
        for scenario in MULTI_HOT_SCENARIOS if loss_name in LABEL_LOSSES else ():
            ids += [(loss_name, scenario, k) for k, option in options if soft_positives(option)]
    return ids


def _generator(*key):
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def _randn(generator, rows, dim, dtype, device, layout="contiguous"):
    """A rows×dim tensor, contiguous or as a non-contiguous view (transposed storage or a strided slice)."""
    if layout == "transposed":
        tensor = torch.randn(dim, rows, generator=generator, dtype=torch.float64).T
    elif layout == "sliced":
        tensor = torch.randn(2 * rows, 2 * dim + 1, generator=generator, dtype=torch.float64)[::2, 1::2]
    else:
        tensor = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    # Build in float64 and convert at the end so every dtype sees the same numbers; keep the strides.
    converted = torch.empty_strided(tensor.shape, tensor.stride(), dtype=dtype, device=device)
    converted.copy_(tensor)
    if layout in ("transposed", "sliced"):
        assert not converted.is_contiguous()
    return converted


def random_labels(generator, count, classes, device="cpu"):
    """``count`` labels from ``classes`` classes (every class used when count ≥ classes), shuffled; "distinct" for
    all-different labels, ("draw", k) for independent uniform draws from k classes."""
    if classes == "distinct":
        return torch.randperm(count, generator=generator).to(device)
    if isinstance(classes, tuple):  # ("draw", k): independent draws from k classes (some absent, some repeated)
        return torch.randint(0, classes[1], (count,), generator=generator).to(device)
    base = torch.arange(count) % classes
    labels = base[torch.randperm(count, generator=generator)]
    return labels.to(device)


def random_multi_hot(generator, count, width, used, chance, device="cpu"):
    """``count`` multi-hot rows over ``width`` labels, each of ``used`` label columns (spread over the width, the
    last one included) set with probability ``chance``; the first row has no label (unless every label is
    always set)."""
    columns = torch.randperm(width, generator=_generator("label columns", width, used))[:used]  # same for refs
    columns[0] = width - 1
    if width > 64:
        columns[1] = 63  # the last bit of the first word, beside the first of the next
    rows = torch.zeros(count, width, dtype=torch.bool)
    rows[:, columns] = torch.rand(count, used, generator=generator) < chance
    if chance < 1:
        rows[0] = False
    return rows.to(device)


def _scenario_labels(generator, spec, count, device, for_refs=False):
    if "multi_hot" in spec:
        return random_multi_hot(generator, count, *spec["multi_hot"], device)
    classes = spec.get("ref_classes", spec["classes"]) if for_refs else spec["classes"]
    if for_refs and classes == "distinct":
        return None  # drawn by the caller
    return random_labels(generator, count, classes, device)


def label_case(scenario, dtype=torch.float32, device="cpu", seed=0):
    """Tensors for a label loss: embeddings, labels, ref_emb, ref_labels (the last two may be None), flags."""
    spec = LABEL_SCENARIOS[scenario]
    generator = _generator("label", scenario, seed)
    rows, refs, dim = spec["rows"], spec.get("refs"), spec["dim"]
    layout = spec.get("layout", "contiguous")
    embedding_layout = layout if layout in ("transposed", "sliced") else "contiguous"
    embeddings = _randn(generator, rows, dim, dtype, device, embedding_layout)
    labels = _scenario_labels(generator, spec, rows, device)
    ref_emb = ref_labels = None
    if refs is not None:
        ref_emb = _randn(generator, refs, dim, dtype, device, embedding_layout)
        ref_labels = _scenario_labels(generator, spec, refs, device, for_refs=True)
        if ref_labels is None:
            # Distinct labels that overlap the anchors' labels only partly.
            ref_labels = torch.randperm(refs + rows, generator=generator)[:refs].to(device)
    if "self_offset" in spec:
        own = (torch.arange(rows) + spec["self_offset"]) % refs
        with torch.no_grad():
            ref_emb[own] = embeddings
        ref_labels[own.to(device)] = labels
    flags = set(spec.get("flags", ()))
    if "duplicates" in flags:
        with torch.no_grad():
            if ref_emb is None:
                # Rows 1, 3, 5 copy rows 0, 2, 4 (same class for 0/1, another class for 2/3 and 4/5).
                embeddings[1::2][:3] = embeddings[0::2][:3]
                labels[1] = labels[0]
                labels[3] = (labels[2] + 1) % spec["classes"]
            else:
                # References that are exact copies of anchors, with the anchor's label and with another one.
                ref_emb[:3] = embeddings[:3]
                ref_labels[0], ref_labels[1] = labels[0], labels[1] + 1
                embeddings[-1] = embeddings[-2]  # and two identical anchors
    if layout == "sliced":  # strided label views too
        labels = torch.stack([labels, labels], 1).flatten()[::2]
        ref_labels = None if ref_labels is None else torch.stack([ref_labels, ref_labels], 1).flatten()[::2]
    if "label_dtype" in spec:
        labels = labels.to(spec["label_dtype"])
        ref_labels = None if ref_labels is None else ref_labels.to(spec["label_dtype"])
    if layout == "expanded_labels":
        if ref_emb is None:
            labels = labels[:1].expand(rows)
        else:
            ref_labels = labels[:1].expand(refs)
        flags.add("expanded")
    case = {"embeddings": embeddings, "labels": labels, "ref_emb": ref_emb, "ref_labels": ref_labels, "flags": flags}
    if "self_offset" in spec:
        case["self_offset"] = spec["self_offset"]
    return case


def random_label_case(seed, dtype=torch.float32, device="cpu", max_rows=130, with_ref=None):
    """A random batch for the label losses: B and M in 1..max_rows (log-uniform, so small sizes are common), labels
    from 1..B classes, ref_emb/ref_labels half of the time (or as ``with_ref`` says), D in {2, 3, 5, 8, 16, 33}."""
    generator = _generator("random", seed)

    def log_uniform(high):
        return max(1, min(high, int(torch.exp(torch.rand((), generator=generator) * math.log(high + 1)))))

    rows = log_uniform(max_rows)
    classes = int(torch.randint(1, rows + 1, (1,), generator=generator))
    dim = (2, 3, 5, 8, 16, 33)[int(torch.randint(0, 6, (1,), generator=generator))]
    if with_ref is None:
        with_ref = bool(torch.rand((), generator=generator) < 0.5)
    embeddings = _randn(generator, rows, dim, dtype, device)
    labels = random_labels(generator, rows, ("draw", classes), device)
    ref_emb = ref_labels = None
    if with_ref:
        refs = log_uniform(max_rows)
        ref_emb = _randn(generator, refs, dim, dtype, device)
        ref_labels = random_labels(generator, refs, ("draw", classes + 1), device)  # a class only the refs have
    return {"embeddings": embeddings, "labels": labels, "ref_emb": ref_emb, "ref_labels": ref_labels, "flags": set()}


def other_case(loss_name, scenario, dtype=torch.float32, device="cpu", seed=0):
    """Tensors for the two-tower and single-tower losses."""
    generator = _generator(loss_name, scenario, seed)
    rows = {"B1": 1, "B2": 2, "odd": 9, "large_odd": 33}.get(scenario, 11)
    dim = 16 if scenario == "large_odd" else 6
    layout = {"transposed": "transposed", "sliced": "sliced"}.get(scenario, "contiguous")
    flags = {"duplicates"} if scenario == "duplicates" else set()

    def features(count):
        tensor = _randn(generator, count, dim, dtype, device, layout)
        if loss_name in ("clip_loss", "siglip_loss"):  # CLIP towers are normalised by the model before the loss
            with torch.no_grad():
                tensor.div_(tensor.norm(dim=1, keepdim=True))
        return tensor

    def scalar(value):
        return torch.tensor(value, dtype=dtype, device=device)

    if loss_name in ("clip_loss", "siglip_loss"):
        image, text = features(rows), features(rows)
        if "duplicates" in flags:
            with torch.no_grad():
                image[1] = image[0]
                text[2] = text[1]
        case = {"image_features": image, "text_features": text, "logit_scale": scalar(14.3), "flags": flags}
        if scenario == "large_scale":
            case["logit_scale"] = scalar(100.0)
        if scenario == "float_scale":
            case["logit_scale"] = 7.5
        if loss_name == "siglip_loss":
            case["logit_bias"] = -6.0 if scenario == "float_scale_bias" else scalar(-4.0)
            if scenario == "float_scale_bias":
                case["logit_scale"] = 10.0
        return case
    if loss_name == "uniformity_loss":
        embeddings = features(rows)
        if "duplicates" in flags:
            with torch.no_grad():
                embeddings[1] = embeddings[0]
        return {"embeddings": embeddings, "flags": flags}
    if loss_name == "mw_loss":
        docs_rows = rows + 6 if scenario == "extra_docs" else rows
        queries, docs = features(rows), features(docs_rows)
        if "duplicates" in flags:
            with torch.no_grad():
                docs[1] = docs[0]
        return {"queries": queries, "docs": docs, "flags": flags}
    # decoupled softmax: B queries, L keys, a −1 padded B×P index tensor of positives.
    keys_rows = rows + 8
    queries, keys = features(rows), features(keys_rows)
    width = 3
    positives = torch.randint(-1, keys_rows, (rows, width), generator=generator)
    positives[:, 0] = torch.randint(0, keys_rows, (rows,), generator=generator)  # at least one positive
    if scenario == "repeated_positives":
        positives[:, 1] = positives[:, 0]
    if scenario == "no_positives_row":
        positives[rows // 2] = -1
    if scenario == "all_positive_row":
        positives = torch.cat([positives, torch.full((rows, keys_rows), -1)], 1)
        positives[0, :keys_rows] = torch.arange(keys_rows)
    return {"queries": queries, "keys": keys, "positives": positives.to(device), "flags": flags}


def _clustered_rows(generator, labels, classes, dim, spread=0.1):
    """Unit rows (float64) in ``classes`` clusters: same-class rows 0.1–0.6 apart, other classes 0.45–1.0 apart
    (D = 32), so that hinges, mining thresholds and hardest pairs all see pairs close to each other."""
    base = F.normalize(torch.randn(dim, generator=generator, dtype=torch.float64), dim=0)
    centers = F.normalize(base + spread * torch.randn(classes, dim, generator=generator, dtype=torch.float64), dim=1)
    return _near(generator, centers[labels])


def _near(generator, rows):
    """Unit rows 0.05–0.3 away from ``rows`` (each with its own noise level)."""
    sigma = 0.015 + 0.055 * torch.rand(rows.shape[0], 1, generator=generator, dtype=torch.float64)
    return F.normalize(rows + sigma * torch.randn(rows.shape, generator=generator, dtype=torch.float64), dim=1)


def clustered_case(loss_name, dtype, device="cpu", seed=0, rows=96, dim=32, multi_hot=False):
    """A realistic low-precision batch for ``loss_name``: clustered unit rows (positives 0.1–0.6 apart, hard
    negatives close by) in ``dtype``; two towers pair each row with a row 0.05–0.3 away; logit scale and bias are
    fp32 tensors, as a model's parameters are under autocast. ``multi_hot``: label rows holding the row's class and
    its pair of classes (class // 2), so positives have Jaccard weights 1 and 1/3."""
    generator = _generator("clustered", loss_name, seed)
    classes = max(2, rows // 8)
    labels = torch.arange(rows) % classes
    anchors = _clustered_rows(generator, labels, classes, dim)

    def rounded(tensor):
        return tensor.to(device, dtype)

    if loss_name in LABEL_LOSSES:
        if multi_hot:
            hot = torch.zeros(rows, classes + (classes + 1) // 2, dtype=torch.bool)
            hot[torch.arange(rows), labels] = True
            hot[torch.arange(rows), classes + labels // 2] = True
            labels = hot
        return {"embeddings": rounded(anchors), "labels": labels.to(device), "flags": set()}
    if loss_name in ("clip_loss", "siglip_loss"):
        scale = torch.tensor(14.3, device=device)
        case = {"image_features": rounded(anchors), "text_features": rounded(_near(generator, anchors)),
                "logit_scale": scale, "flags": set()}  # fmt: skip
        if loss_name == "siglip_loss":
            case["logit_bias"] = torch.tensor(-4.0, device=device)
        return case
    if loss_name == "mw_loss":
        return {"queries": rounded(anchors), "docs": rounded(_near(generator, anchors)), "flags": set()}
    if loss_name == "uniformity_loss":
        return {"embeddings": rounded(anchors), "flags": set()}
    # decoupled softmax: key j is a perturbed copy of row j; query i's positives are the keys of its class.
    same_class = (labels[:, None] == labels[None, :]).nonzero()
    positives = torch.full((rows, rows // classes + 1), -1, dtype=torch.int64)
    slots = torch.zeros(rows, dtype=torch.int64)
    for query, key in same_class.tolist():
        positives[query, slots[query]] = key
        slots[query] += 1
    return {"queries": rounded(anchors), "keys": rounded(_near(generator, anchors)), "positives": positives.to(device),
            "flags": set()}  # fmt: skip


def make_case(loss_name, scenario, option=0, dtype=torch.float32, device="cpu", seed=0):
    """The case dict (tensors, options, flags) for ``check_against_reference``."""
    if loss_name in LABEL_LOSSES:
        case = label_case(scenario, dtype, device, seed)
    else:
        case = other_case(loss_name, scenario, dtype, device, seed)
    case.update(OPTIONS[loss_name][option])
    return case


def require_backend(name, device_type="cpu"):
    """Skip the calling test, with the registry's reason, when backend ``name`` cannot run on ``device_type``."""
    reason = backends.unavailable_reason(name, device_type)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable on {device_type}: {reason}")


def split_case(loss_name, case):
    """(tensor arguments by name, keyword options, flags) of a case dict."""
    spec = SPECS[loss_name]
    tensors = {name: case.get(name) for name in spec.tensors}
    options = {k: v for k, v in case.items() if k not in spec.tensors and k != "flags"}
    return tensors, options, set(case.get("flags", ()))


def _leaves(loss_name, tensors, dtype=None):
    """Fresh leaf tensors (same strides, shared storage) with requires_grad where the loss has a gradient."""
    leaves = {}
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach()
            if dtype is not None:
                value = value.to(dtype)
            if name in SPECS[loss_name].grads:
                value.requires_grad_(True)
        leaves[name] = value
    return leaves


def _weights(loss, rounded_to):
    """grad_output ≠ 1: 0.37 for a scalar loss, a fixed random (signed) vector for per-anchor losses; rounded to
    the dtype ``rounded_to`` of the case's inputs, so that a fp64 truth gets the very same values."""
    if loss.dim() == 0:
        values = torch.tensor(0.37, dtype=torch.float64)
    else:
        values = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    return values.to(rounded_to).to(loss.device, loss.dtype)


def _grads(loss_name, leaves, loss, case_dtype):
    """Gradients ({name: grad}) of ``loss`` w.r.t. the differentiable ``leaves``, for the grad_output of
    ``_weights``."""
    differentiable = {n: v for n, v in leaves.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    grads = {}
    if differentiable and loss.requires_grad:
        weights = _weights(loss, case_dtype)
        values = torch.autograd.grad((loss * weights).sum(), list(differentiable.values()), allow_unused=True)
        for (name, leaf), grad in zip(differentiable.items(), values):
            grads[name] = torch.zeros_like(leaf) if grad is None else grad
    return grads


def _case_dtype(tensors):
    return next(v.dtype for v in tensors.values() if isinstance(v, torch.Tensor) and v.is_floating_point())


def run_loss(loss_name, backend, tensors, options, dtype=None):
    """Loss and gradients ({name: grad}) for one backend, with the fixed grad_output of ``_weights``."""
    leaves = _leaves(loss_name, tensors, dtype)
    function = getattr(pairloss, loss_name)
    loss = function(*[leaves[name] for name in SPECS[loss_name].tensors], backend=backend, **options)
    return loss.detach(), _grads(loss_name, leaves, loss, _case_dtype(tensors))


# The arguments the public functions normalise to unit rows (cosine similarity).
NORMALISED = {
    **{name: ("embeddings", "ref_emb") for name in LABEL_LOSSES},
    "decoupled_softmax_loss": ("queries", "keys"),
    "mw_loss": ("queries", "docs"),
}


def run_oracle(loss_name, tensors, options, dtype=None, operands=None):
    """Loss and gradients of the dense formula (``reference.ORACLES``) evaluated in ``dtype`` (default: the
    inputs' own), the rows normalised with ``F.normalize`` in that dtype as a user would write it.

    ``operands``: the normalised rows are rounded to this dtype (straight through for the gradient) before the
    formula sees them, as an engine that takes ``operands`` rows does: in float64, the truth on that engine's
    operands."""
    leaves = _leaves(loss_name, tensors, dtype)
    defaults = inspect.signature(getattr(pairloss, loss_name)).parameters
    oracle = inspect.signature(reference.ORACLES[loss_name]).parameters  # (the labels= forms have oracles of their own)
    options = {
        **{n: p.default for n, p in defaults.items() if p.kind == p.KEYWORD_ONLY and n in oracle},
        **options,
    }

    def argument(name):
        value = leaves[name]
        if value is None or name not in NORMALISED.get(loss_name, ()):
            return value
        unit = F.normalize(value, dim=1)
        return unit if operands is None else unit.to(operands).to(unit.dtype)

    loss = reference.ORACLES[loss_name](*[argument(n) for n in SPECS[loss_name].tensors], **options)
    return loss.detach(), _grads(loss_name, leaves, loss, _case_dtype(tensors))


def backend_operand_dtype(loss_name, backend, tensors, options):
    """The dtype of the normalised rows ``backend`` computes ``loss_name`` from (``pairloss._precision``)."""
    first = tensors[SPECS[loss_name].tensors[0]]
    function = backends.resolve(backend, first.device, loss_name)
    return operand_dtype(function, first)


def check_against_reference(loss_name, backend, **case):
    """Loss and gradients of ``backend`` against the "reference" backend on one case (dict of ``make_case``).

    fp64/fp32: both backends run in the case's dtype and are compared with the tolerance table. fp16/bf16: the
    backend's error against the fp64 truth must stay within twice the error of plain PyTorch in that dtype
    (``run_oracle``) plus a few ulps. The truth is the dense formula in float64 on the backend's own operands:
    the rows normalised and rounded to the dtype the backend takes them in (fp32 for the CPU engines, the
    inputs' dtype for tensor-core engines), so that the rule measures what the engine adds; the rounding of the
    normalised rows is correct rounding, no worse than plain PyTorch's own normalisation in that dtype
    (tests/test_precision.py). Gradients w.r.t. every floating tensor argument (embeddings, ref_emb,
    logit_scale, logit_bias, …) are checked with grad_output ≠ 1. For distance losses on batches with duplicate
    rows (d = 0, a kink of the distance), the gradients are only required to be finite.
    """
    tensors, options, flags = split_case(loss_name, case)
    dtype = next(v.dtype for v in tensors.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    loss, grads = run_loss(loss_name, backend, tensors, options)
    label = f"{loss_name} [{backend}] {options}"

    reduction = options.get("reduction", "mean")
    first = tensors[SPECS[loss_name].tensors[0]]
    expected_shape = (first.shape[0],) if reduction == "none" else ()
    assert loss.shape == expected_shape, f"{label}: loss shape {tuple(loss.shape)}, expected {expected_shape}"
    assert loss.dtype == dtype, f"{label}: loss dtype {loss.dtype}, expected {dtype}"
    assert bool(torch.isfinite(loss).all()), f"{label}: non-finite loss {loss}"
    for name, grad in grads.items():
        assert grad.shape == tensors[name].shape, f"{label}: d/d{name} has shape {tuple(grad.shape)}"
        assert bool(torch.isfinite(grad).all()), f"{label}: non-finite gradient w.r.t. {name}"

    kink = loss_name in DISTANCE_LOSSES and "duplicates" in flags
    if dtype in LOW_PRECISION:
        same_dtype_loss, same_dtype_grads = run_oracle(loss_name, tensors, options)
        operands = backend_operand_dtype(loss_name, backend, tensors, options)
        truth_loss, truth_grads = run_oracle(loss_name, tensors, options, torch.float64, operands)
        if not (kink and loss_name == "contrastive_loss"):
            assert_within_torch_error(loss, same_dtype_loss, truth_loss, dtype, msg=f"{label} loss", ulps=LOW_ULPS)
        if not kink:
            for name, grad in grads.items():
                assert_within_torch_error(
                    grad, same_dtype_grads[name], truth_grads[name], dtype, msg=f"{label} d/d{name}", ulps=LOW_ULPS
                )
        return loss, grads

    expected_loss, expected_grads = run_loss(loss_name, "reference", tensors, options)
    if not kink:
        assert_close(loss, expected_loss, dtype, "loss", msg=f"{label} loss")
    elif loss_name != "contrastive_loss":
        # The reference's Gram-matrix distance puts coincident rows at d ≈ sqrt(eps) rather than 0.
        slack = 4 * torch.finfo(dtype).eps ** 0.5
        torch.testing.assert_close(
            loss.double(), expected_loss.double(), rtol=0, atol=slack, msg=lambda m: f"{label} loss: {m}"
        )
    if not kink:
        for name, grad in grads.items():
            assert_close(grad, expected_grads[name], dtype, "grad", msg=f"{label} d/d{name}")
    return loss, grads
