"""Bad inputs raise a clear error naming the argument; NaN/inf inputs never give a finite loss."""

import functools
import math

import pytest
import torch

import pairloss

from .backend_cases import LABEL_LOSSES

pytestmark = pytest.mark.usefixtures("single_thread")

F32 = torch.float32


def emb(rows=5, dim=4, dtype=F32, device="cpu"):
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(rows * 31 + dim), dtype=dtype).to(device)


def lab(rows=5, device="cpu"):
    return (torch.arange(rows) % 2).to(device)


def hot(rows=5, width=6):
    return torch.arange(rows * width).reshape(rows, width) % 3 == 0


def meta(tensor):
    """The same tensor on another device ("meta": shapes and dtypes only, no data)."""
    return tensor.to("meta")


# (id, call, exception type, message regex)
LABEL_LOSS_CASES = [
    ("embeddings 1-D", lambda f: f(emb()[0], lab()), ValueError, r"embeddings must be 2-D"),
    ("embeddings 3-D", lambda f: f(emb()[None], lab()), ValueError, r"embeddings must be 2-D"),
    ("embeddings not a tensor", lambda f: f(emb().tolist(), lab()), TypeError, r"embeddings must be a torch.Tensor"),
    ("integer embeddings", lambda f: f(emb().long(), lab()), TypeError, r"embeddings must be a floating-point"),
    ("empty batch", lambda f: f(emb(0, 4), lab(0)), ValueError, r"embeddings is empty"),
    ("zero features", lambda f: f(emb(5, 0), lab()), ValueError, r"embeddings has no features"),
    ("labels 2-D integers", lambda f: f(emb(), lab()[:, None]), TypeError, r"2-D labels must be a bool multi-hot"),
    ("labels 3-D", lambda f: f(emb(), lab()[:, None, None]), ValueError, r"labels must be 1-D"),
    ("multi-hot rows", lambda f: f(emb(), hot(4)), ValueError, r"labels has 4 rows but embeddings has 5 rows"),
    ("multi-hot without columns", lambda f: f(emb(), hot(5, 0)), ValueError, r"labels is multi-hot with no label"),
    (
        "multi-hot ref_labels, class-id labels",
        lambda f: f(emb(), lab(), emb(3), hot(3)),
        ValueError,
        r"ref_labels is multi-hot but labels holds class ids",
    ),
    (
        "class-id ref_labels, multi-hot labels",
        lambda f: f(emb(), hot(), emb(3), lab(3)),
        ValueError,
        r"labels is multi-hot but ref_labels holds class ids",
    ),
    (
        "multi-hot label counts differ",
        lambda f: f(emb(), hot(5, 7), emb(3), hot(3, 8)),
        ValueError,
        r"labels has 7 label columns but ref_labels has 8",
    ),
    ("labels 0-D", lambda f: f(emb(1, 4), lab(1)[0]), ValueError, r"labels must be 1-D"),
    ("labels length", lambda f: f(emb(), lab(4)), ValueError, r"labels has 4 entries but embeddings has 5 rows"),
    ("float labels", lambda f: f(emb(), lab().float()), TypeError, r"labels must hold integer class ids"),
    ("bool labels", lambda f: f(emb(), lab().bool()), TypeError, r"labels must hold integer class ids"),
    ("labels not a tensor", lambda f: f(emb(), [0, 1, 0, 1, 0]), TypeError, r"labels must be a torch.Tensor"),
    (
        "ref_emb without ref_labels",
        lambda f: f(emb(), lab(), emb(3)),
        ValueError,
        r"ref_emb was given without ref_labels",
    ),
    (
        "ref_labels without ref_emb",
        lambda f: f(emb(), lab(), None, lab(3)),
        ValueError,
        r"ref_labels was given without ref_emb",
    ),
    ("ref_emb 1-D", lambda f: f(emb(), lab(), emb(3)[0], lab(3)), ValueError, r"ref_emb must be 2-D"),
    ("ref_emb other D", lambda f: f(emb(), lab(), emb(3, 6), lab(3)), ValueError, r"ref_emb has 6 features"),
    (
        "ref_emb other dtype",
        lambda f: f(emb(), lab(), emb(3, dtype=torch.float64), lab(3)),
        TypeError,
        r"ref_emb is torch.float64 but embeddings is torch.float32",
    ),
    ("ref_emb integer", lambda f: f(emb(), lab(), emb(3).long(), lab(3)), TypeError, r"ref_emb must be a floating"),
    ("ref_emb empty", lambda f: f(emb(), lab(), emb(0, 4), lab(0)), ValueError, r"ref_emb is empty"),
    ("ref_labels 2-D", lambda f: f(emb(), lab(), emb(3), lab(3)[None]), TypeError, r"2-D ref_labels must be a bool"),
    (
        "ref_labels length",
        lambda f: f(emb(), lab(), emb(3), lab(4)),
        ValueError,
        r"ref_labels has 4 entries but ref_emb has 3 rows",
    ),
    (
        "float ref_labels",
        lambda f: f(emb(), lab(), emb(3), lab(3).double()),
        TypeError,
        r"ref_labels must hold integer",
    ),
    ("labels on another device", lambda f: f(emb(), meta(lab())), ValueError, r"labels on meta"),
    ("ref_emb on another device", lambda f: f(emb(), lab(), meta(emb(3)), lab(3)), ValueError, r"ref_emb on meta"),
    (
        "ref_labels on another device",
        lambda f: f(emb(), lab(), emb(3), meta(lab(3))),
        ValueError,
        r"ref_labels on meta",
    ),
    ("unknown reduction", lambda f: f(emb(), lab(), reduction="avg"), ValueError, r"reduction must be one of"),
    ("reduction None", lambda f: f(emb(), lab(), reduction=None), ValueError, r"reduction must be one of"),
    ("unknown backend", lambda f: f(emb(), lab(), backend="cuda"), ValueError, r"backend must be one of"),
]


@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
@pytest.mark.parametrize("case", LABEL_LOSS_CASES, ids=[c[0] for c in LABEL_LOSS_CASES])
def test_label_loss_argument_errors(loss_name, case):
    _, call, error, match = case
    with pytest.raises(error, match=match):
        call(getattr(pairloss, loss_name))


# (loss, keyword, bad value, message regex): hyper-parameter ranges, NaN included
HYPER_PARAMETER_CASES = [
    ("multi_similarity_loss", "alpha", 0.0, r"alpha must be positive"),
    ("multi_similarity_loss", "alpha", -1.0, r"alpha must be positive"),
    ("multi_similarity_loss", "beta", 0.0, r"beta must be positive"),
    ("multi_similarity_loss", "epsilon", -0.1, r"epsilon must be non-negative"),
    ("multi_similarity_loss", "mining", "hard", r"mining must be one of"),
    ("triplet_margin_loss", "margin", -0.05, r"margin must be non-negative"),
    ("triplet_margin_loss", "mining", "semihard", r"mining must be one of"),
    ("triplet_margin_loss", "mining", None, r"mining must be one of"),
    ("triplet_margin_loss", "soft", "yes", r"soft must be one of"),
    ("contrastive_loss", "pos_margin", -0.1, r"pos_margin must be non-negative"),
    ("contrastive_loss", "neg_margin", -1.0, r"neg_margin must be non-negative"),
    ("circle_loss", "m", -0.4, r"m must be non-negative"),
    ("circle_loss", "gamma", 0.0, r"gamma must be positive"),
    ("circle_loss", "gamma", -80.0, r"gamma must be positive"),
    ("ntxent_loss", "temperature", 0.0, r"temperature must be positive"),
    ("ntxent_loss", "temperature", -0.07, r"temperature must be positive"),
    ("supcon_loss", "temperature", 0.0, r"temperature must be positive"),
    ("supcon_loss", "positive_weights", "soft", r"positive_weights must be one of"),
    ("ntxent_loss", "positive_weights", None, r"positive_weights must be one of"),
    ("ntxent_loss", "positive_weights", "jaccard", r"labels must be a \(rows × L\) bool multi-hot matrix"),
    ("supcon_loss", "temperature", -0.1, r"temperature must be positive"),
]
NAN_CASES = [  # each must reject NaN and +inf
    ("multi_similarity_loss", "alpha"),
    ("multi_similarity_loss", "beta"),
    ("multi_similarity_loss", "epsilon"),
    ("triplet_margin_loss", "margin"),
    ("contrastive_loss", "pos_margin"),
    ("contrastive_loss", "neg_margin"),
    ("circle_loss", "m"),
    ("circle_loss", "gamma"),
    ("ntxent_loss", "temperature"),
    ("supcon_loss", "temperature"),
]


@pytest.mark.parametrize(
    "loss_name,keyword,value,match",
    HYPER_PARAMETER_CASES
    + [(loss, key, math.nan, rf"{key} must be") for loss, key in NAN_CASES]
    + [(loss, key, math.inf, rf"{key} must be") for loss, key in NAN_CASES],
)
def test_label_loss_hyper_parameter_errors(loss_name, keyword, value, match):
    with pytest.raises(ValueError, match=match):
        getattr(pairloss, loss_name)(emb(), lab(), **{keyword: value})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_multi_similarity_non_finite_base_is_rejected(value):
    # base (λ) may be any real number, but not NaN or ±inf
    with pytest.raises(ValueError, match=r"base must be"):
        pairloss.multi_similarity_loss(emb(), lab(), base=value)


# The other losses: (id, call, exception, message regex)
def clip(image=None, text=None, scale=2.0, **kwargs):
    return pairloss.clip_loss(emb() if image is None else image, emb() if text is None else text, scale, **kwargs)


def siglip(image=None, text=None, scale=2.0, bias=-1.0, **kwargs):
    image = emb() if image is None else image
    return pairloss.siglip_loss(image, emb() if text is None else text, scale, bias, **kwargs)


def decoupled(positives, queries=None, keys=None, **kwargs):
    queries = emb(3) if queries is None else queries
    return pairloss.decoupled_softmax_loss(queries, emb(6) if keys is None else keys, positives, **kwargs)


POSITIVES = torch.tensor([[0, 1], [2, -1], [5, -1]])

OTHER_CASES = [
    (
        "clip rows differ",
        lambda: clip(emb(5), emb(4)),
        ValueError,
        r"image_features has 5 rows but text_features has 4",
    ),
    ("clip D differs", lambda: clip(emb(5, 4), emb(5, 3)), ValueError, r"text_features has 3 features"),
    ("clip image 1-D", lambda: clip(emb()[0]), ValueError, r"image_features must be 2-D"),
    ("clip text 3-D", lambda: clip(None, emb()[None]), ValueError, r"text_features must be 2-D"),
    ("clip integer", lambda: clip(emb().long()), TypeError, r"image_features must be a floating"),
    ("clip dtype mix", lambda: clip(None, emb(dtype=torch.float64)), TypeError, r"text_features is torch.float64"),
    ("clip empty", lambda: clip(emb(0, 4), emb(0, 4)), ValueError, r"image_features is empty"),
    ("clip zero features", lambda: clip(emb(5, 0), emb(5, 0)), ValueError, r"image_features has no features"),
    ("clip scale vector", lambda: clip(scale=torch.ones(2)), ValueError, r"logit_scale must be a scalar"),
    ("clip scale integer", lambda: clip(scale=torch.tensor(3)), TypeError, r"logit_scale must be floating"),
    ("clip scale string", lambda: clip(scale="2"), TypeError, r"logit_scale must be a number"),
    ("clip scale bool", lambda: clip(scale=True), TypeError, r"logit_scale must be a number"),
    ("clip scale device", lambda: clip(scale=meta(torch.tensor(2.0))), ValueError, r"logit_scale on meta"),
    ("clip text device", lambda: clip(None, meta(emb())), ValueError, r"text_features on meta"),
    ("clip reduction", lambda: clip(reduction="batchmean"), ValueError, r"reduction must be one of"),
    ("clip backend", lambda: clip(backend="numpy"), ValueError, r"backend must be one of"),
    ("siglip rows differ", lambda: siglip(emb(5), emb(6)), ValueError, r"image_features has 5 rows"),
    ("siglip scale vector", lambda: siglip(scale=torch.ones(1, 2)), ValueError, r"logit_scale must be a scalar"),
    ("siglip bias vector", lambda: siglip(bias=torch.zeros(3)), ValueError, r"logit_bias must be a scalar"),
    ("siglip bias None", lambda: siglip(bias=None), TypeError, r"logit_bias must be a number"),
    ("siglip bias device", lambda: siglip(bias=meta(torch.tensor(0.0))), ValueError, r"logit_bias on meta"),
    ("siglip backend", lambda: siglip(backend="fast"), ValueError, r"backend must be one of"),
    ("decoupled index too large", lambda: decoupled(torch.tensor([[0], [6], [1]])), ValueError, r"positives must be"),
    ("decoupled index below -1", lambda: decoupled(torch.tensor([[0], [-2], [1]])), ValueError, r"positives must be"),
    ("decoupled float positives", lambda: decoupled(POSITIVES.float()), TypeError, r"positives must hold integer"),
    ("decoupled bool positives", lambda: decoupled(POSITIVES > 0), TypeError, r"positives must hold integer"),
    ("decoupled 1-D positives", lambda: decoupled(POSITIVES[:, 0]), ValueError, r"positives must be a 2-D tensor"),
    ("decoupled list positives", lambda: decoupled([[0], [1], [2]]), ValueError, r"positives must be a 2-D tensor"),
    ("decoupled rows differ", lambda: decoupled(POSITIVES[:2]), ValueError, r"positives has 2 rows but queries has 3"),
    ("decoupled keys D", lambda: decoupled(POSITIVES, keys=emb(6, 5)), ValueError, r"keys has 5 features"),
    ("decoupled queries 1-D", lambda: decoupled(POSITIVES, queries=emb()[0]), ValueError, r"queries must be 2-D"),
    ("decoupled device", lambda: decoupled(meta(POSITIVES)), ValueError, r"positives on meta"),
    (
        "decoupled temperature",
        lambda: decoupled(POSITIVES, temperature=0.0),
        ValueError,
        r"temperature must be positive",
    ),
    ("decoupled temperature NaN", lambda: decoupled(POSITIVES, temperature=math.nan), ValueError, r"temperature must"),
    ("uniformity one row", lambda: pairloss.uniformity_loss(emb(1)), ValueError, r"embeddings needs at least 2 rows"),
    ("uniformity empty", lambda: pairloss.uniformity_loss(emb(0)), ValueError, r"embeddings is empty"),
    ("uniformity 1-D", lambda: pairloss.uniformity_loss(emb()[0]), ValueError, r"embeddings must be 2-D"),
    ("uniformity integer", lambda: pairloss.uniformity_loss(emb().int()), TypeError, r"embeddings must be a floating"),
    ("uniformity t=0", lambda: pairloss.uniformity_loss(emb(), t=0.0), ValueError, r"t must be positive"),
    ("uniformity t<0", lambda: pairloss.uniformity_loss(emb(), t=-2.0), ValueError, r"t must be positive"),
    ("uniformity t NaN", lambda: pairloss.uniformity_loss(emb(), t=math.nan), ValueError, r"t must be positive"),
    ("uniformity t inf", lambda: pairloss.uniformity_loss(emb(), t=math.inf), ValueError, r"t must be positive"),
    ("mw temperature NaN", lambda: pairloss.mw_loss(emb(), emb(), temperature=math.nan), ValueError, r"temperature"),
    (
        "decoupled temperature inf",
        lambda: decoupled(POSITIVES, temperature=math.inf),
        ValueError,
        r"temperature must be positive",
    ),
    ("mw fewer docs", lambda: pairloss.mw_loss(emb(5), emb(4)), ValueError, r"docs has 4 rows but needs at least one"),
    ("mw D differs", lambda: pairloss.mw_loss(emb(5), emb(5, 3)), ValueError, r"docs has 3 features"),
    ("mw dtype", lambda: pairloss.mw_loss(emb(), emb(dtype=torch.float64)), TypeError, r"docs is torch.float64"),
    ("mw device", lambda: pairloss.mw_loss(emb(), meta(emb())), ValueError, r"docs on meta"),
    ("mw temperature", lambda: pairloss.mw_loss(emb(), emb(), temperature=-1.0), ValueError, r"temperature must be"),
    ("mw backend", lambda: pairloss.mw_loss(emb(), emb(), backend="gpu"), ValueError, r"backend must be one of"),
]


@pytest.mark.parametrize("case", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_other_loss_argument_errors(case):
    _, call, error, match = case
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------- NaN / inf propagate
def _poisoned(tensor, value, row):
    tensor = tensor.clone()
    tensor[row, 1] = value
    return tensor


NON_FINITE = [math.nan, math.inf, -math.inf]
LABEL_OPTIONS = {  # mining on, where the loss has it
    "multi_similarity_loss": {"mining": True},
    "triplet_margin_loss": {"mining": "batch_hard"},
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("where", ["embeddings", "ref_emb"])
@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES + ("triplet_all",))
def test_non_finite_inputs_give_non_finite_label_loss(loss_name, value, where, reduction):
    options = dict(LABEL_OPTIONS.get(loss_name, {}), reduction=reduction)
    if loss_name == "triplet_all":
        loss_name, options["mining"] = "triplet_margin_loss", "all"
    x, y = emb(9, 4), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    ref, ref_y = emb(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    for row in (0, 4):  # a row that mining would drop or keep: the loss must not depend on which
        if where == "embeddings":
            loss = getattr(pairloss, loss_name)(_poisoned(x, value, row), y, **options)
            loss_ref = getattr(pairloss, loss_name)(_poisoned(x, value, row), y, ref, ref_y, **options)
            assert not bool(torch.isfinite(loss_ref).all()), f"{loss_name} with ref_emb: finite loss {loss_ref}"
        else:
            loss = getattr(pairloss, loss_name)(x, y, _poisoned(ref, value, row), ref_y, **options)
        assert not bool(torch.isfinite(loss).all()), f"{loss_name}: finite loss {loss} from a {value} input"


OTHER_NON_FINITE = [
    ("clip image", lambda bad: pairloss.clip_loss(bad(emb()), emb(), 2.0)),
    ("clip text", lambda bad: pairloss.clip_loss(emb(), bad(emb()), 2.0)),
    ("clip none", lambda bad: pairloss.clip_loss(bad(emb()), emb(), 2.0, reduction="none")),
    ("siglip image", lambda bad: pairloss.siglip_loss(bad(emb()), emb(), 2.0, -1.0)),
    ("siglip text", lambda bad: pairloss.siglip_loss(emb(), bad(emb()), 2.0, -1.0)),
    ("decoupled queries", lambda bad: pairloss.decoupled_softmax_loss(bad(emb(3)), emb(6), POSITIVES)),
    ("decoupled keys", lambda bad: pairloss.decoupled_softmax_loss(emb(3), bad(emb(6)), POSITIVES)),
    ("uniformity", lambda bad: pairloss.uniformity_loss(bad(emb()))),
    ("mw queries", lambda bad: pairloss.mw_loss(bad(emb()), emb(7))),
    ("mw docs", lambda bad: pairloss.mw_loss(emb(), bad(emb(7)))),
]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("case", OTHER_NON_FINITE, ids=[c[0] for c in OTHER_NON_FINITE])
def test_non_finite_inputs_give_non_finite_other_loss(case, value):
    _, call = case
    for row in (0, 2):
        loss = call(functools.partial(_poisoned, value=value, row=row))
        assert not bool(torch.isfinite(loss).all()), f"finite loss {loss} from a {value} input"
