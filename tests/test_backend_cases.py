"""Self-tests of the shared harness (backend_cases.check_against_reference): every case runs on the reference
backend in each dtype, and deliberately broken stand-in backends are caught (loss, each gradient, per-row order)."""

import types

import pytest
import torch

from pairloss import backends, reference

from .backend_cases import (
    ALL_LOSSES,
    LABEL_LOSSES,
    OPTIONS,
    SPECS,
    all_case_ids,
    check_against_reference,
    make_case,
    random_label_case,
    soft_positives,
)

pytestmark = pytest.mark.usefixtures("single_thread")

CASE_IDS = all_case_ids()


def test_case_ids_cover_every_loss_and_option():
    losses = {loss_name for loss_name, _, _ in CASE_IDS}
    assert losses == set(ALL_LOSSES)
    assert len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_every_case_runs_on_the_reference(dtype):
    # Every case in float32 (the engines' CPU dtype); the mid-sized scenarios with all options in the others.
    case_ids = CASE_IDS if dtype == torch.float32 else [c for c in CASE_IDS if c[1] in ("odd", "odd_ref")]
    for loss_name, scenario, option in case_ids:
        case = make_case(loss_name, scenario, option, dtype=dtype)
        check_against_reference(loss_name, "reference", **case)


@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_random_label_cases_run_on_the_reference(loss_name):
    sizes = set()
    options = [option for option in OPTIONS[loss_name] if not soft_positives(option)]  # class ids here
    for seed in range(12):
        case = random_label_case(seed, dtype=torch.float64, max_rows=40)
        sizes.add(case["embeddings"].shape[0])
        check_against_reference(loss_name, "reference", **case, **options[seed % len(options)])
    assert len(sizes) > 3


def test_cases_have_the_advertised_layouts():
    case = make_case("multi_similarity_loss", "transposed")
    assert not case["embeddings"].is_contiguous()
    case = make_case("supcon_loss", "sliced_ref")
    assert not case["embeddings"].is_contiguous() and not case["ref_emb"].is_contiguous()
    assert case["labels"].stride() == (2,) and case["ref_labels"].stride() == (2,)
    case = make_case("circle_loss", "expanded_labels")
    assert case["labels"].stride() == (0,)
    case = make_case("circle_loss", "expanded_ref_labels")
    assert case["ref_labels"].stride() == (0,)
    case = make_case("ntxent_loss", "duplicates")
    assert torch.equal(case["embeddings"][0], case["embeddings"][1])
    case = make_case("ntxent_loss", "single_class")
    assert case["labels"].unique().numel() == 1
    case = make_case("ntxent_loss", "all_distinct")
    assert case["labels"].unique().numel() == len(case["labels"])
    case = make_case("contrastive_loss", "B1")
    assert case["embeddings"].shape[0] == 1 and case["ref_emb"] is None


def _install(monkeypatch, name, **functions):
    module = types.SimpleNamespace(unavailable_reason=lambda device_type: None, **functions)
    real = backends._load
    monkeypatch.setattr(backends, "_load", lambda n: (module, None) if n == name else real(n))


def _scaled(function, factor):
    return lambda *args, **kwargs: function(*args, **kwargs) * factor


def _detached(function, position):
    """The reference with one input detached: right value, missing gradient."""

    def compute(*args, **kwargs):
        args = list(args)
        if isinstance(args[position], torch.Tensor):
            args[position] = args[position].detach()
        return function(*args, **kwargs)

    return compute


@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_harness_catches_a_wrong_value(monkeypatch, loss_name):
    _install(monkeypatch, "cpp", **{loss_name: _scaled(getattr(reference, loss_name), 1.001)})
    case = make_case(loss_name, "odd", dtype=torch.float64)
    with pytest.raises(AssertionError):
        check_against_reference(loss_name, "cpp", **case)


@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_harness_catches_a_missing_gradient(monkeypatch, loss_name):
    # the last differentiable argument: ref_emb for the label losses (given in the "odd_ref" batch), the text
    # tower / logit_bias / keys / docs otherwise
    names = SPECS[loss_name].tensors
    position = max(names.index(n) for n in SPECS[loss_name].grads)
    _install(monkeypatch, "cpp", **{loss_name: _detached(getattr(reference, loss_name), position)})
    scenario = "odd_ref" if loss_name in LABEL_LOSSES else "odd"
    case = make_case(loss_name, scenario, dtype=torch.float32)
    with pytest.raises(AssertionError, match=f"d/d{names[position]}"):
        check_against_reference(loss_name, "cpp", **case)


def test_harness_catches_permuted_rows(monkeypatch):
    def reversed_rows(*args, **kwargs):
        loss = reference.multi_similarity_loss(*args, **kwargs)
        return loss.flip(0) if loss.dim() else loss

    _install(monkeypatch, "cpp", multi_similarity_loss=reversed_rows)
    case = make_case("multi_similarity_loss", "odd", dtype=torch.float32, option=3)  # reduction="none"
    assert case["reduction"] == "none"
    with pytest.raises(AssertionError):
        check_against_reference("multi_similarity_loss", "cpp", **case)


def test_harness_low_precision_rule_catches_a_coarse_backend(monkeypatch):
    def coarse(x, *args, **kwargs):  # rounds the similarities' inputs far below bf16 precision
        return reference.supcon_loss((x * 4).round() / 4, *args, **kwargs)

    _install(monkeypatch, "cpp", supcon_loss=coarse)
    case = make_case("supcon_loss", "large_odd", dtype=torch.bfloat16)
    with pytest.raises(AssertionError, match="error vs fp64 truth"):
        check_against_reference("supcon_loss", "cpp", **case)
