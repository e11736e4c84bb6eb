"""The backend registry: availability, explicit requests, PAIRLOSS_BACKEND, and what "auto" picks."""

import os
import re
import types

import pytest
import torch

import pairloss
import pairloss.reference
from pairloss import backends

from .backend_cases import ALL_LOSSES, SPECS, make_case, require_backend, split_case
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

ENGINES = [name for name in backends.BACKEND_NAMES if name != "reference"]


@pytest.fixture(autouse=True)
def no_backend_override(monkeypatch):
    monkeypatch.delenv("PAIRLOSS_BACKEND", raising=False)


def call(loss_name, backend, case):
    tensors, options, _ = split_case(loss_name, case)
    return getattr(pairloss, loss_name)(*(tensors[n] for n in SPECS[loss_name].tensors), backend=backend, **options)


def test_reference_is_always_available():
    assert "reference" in pairloss.available_backends()
    assert "reference" in pairloss.available_backends("cpu")
    assert backends.unavailable_reason("reference", "cpu") is None


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI only: a user's install may go on without the C++ engine")
def test_ci_has_the_cpp_and_triton_engines():
    """Under CI a missing engine must fail the run, not turn its tests into skips."""
    assert backends.unavailable_reason("cpp", "cpu") is None
    assert backends.unavailable_reason("triton", "cpu") is None


def test_available_backends_agree_with_unavailable_reason():
    listed = pairloss.available_backends("cpu")
    for name in backends.BACKEND_NAMES:
        assert (name in listed) == (backends.unavailable_reason(name, "cpu") is None), name
    assert all(name in backends.BACKEND_NAMES for name in pairloss.available_backends())


@pytest.mark.parametrize("name", ENGINES)
def test_unavailable_engine_raises_with_its_reason(name):
    reason = backends.unavailable_reason(name, "cpu")
    if reason is None:
        pytest.skip(f"backend {name!r} is available on cpu here; nothing to refuse")
    x, y = torch.randn(6, 4), torch.arange(6) % 2
    with pytest.raises(pairloss.BackendUnavailableError, match=re.escape(reason)) as info:
        pairloss.multi_similarity_loss(x, y, backend=name)
    assert name in str(info.value)


def test_unavailable_backend_error_says_why(monkeypatch):
    """Independent of what is installed: a backend reported unavailable is refused with that reason."""
    real = backends.unavailable_reason
    monkeypatch.setattr(
        backends,
        "unavailable_reason",
        lambda name, dt: "simulated: no such device" if name == "cpp" else real(name, dt),
    )
    with pytest.raises(pairloss.BackendUnavailableError, match="backend 'cpp' is unavailable on cpu.*simulated"):
        pairloss.supcon_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), backend="cpp")
    assert issubclass(pairloss.BackendUnavailableError, RuntimeError)


def _fake_backend(monkeypatch, name, implements=("multi_similarity_loss",), value=123.0):
    """Register a stand-in module for backend ``name`` that returns ``value`` for the losses it implements."""
    module = types.SimpleNamespace(unavailable_reason=lambda device_type: None)
    for loss_name in implements:
        setattr(module, loss_name, lambda *args, **kwargs: torch.tensor(value))
    real = backends._load
    monkeypatch.setattr(backends, "_load", lambda n: (module, None) if n == name else real(n))
    return module


def test_backend_missing_a_loss_is_refused_explicitly_and_skipped_by_auto(monkeypatch):
    _fake_backend(monkeypatch, "cpp", implements=("multi_similarity_loss",))
    x, y = torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(pairloss.BackendUnavailableError, match="backend 'cpp' does not implement circle_loss"):
        pairloss.circle_loss(x, y, backend="cpp")
    # auto falls through to the next backend that implements it
    assert_close(pairloss.circle_loss(x, y), pairloss.circle_loss(x, y, backend="reference"))
    assert float(pairloss.multi_similarity_loss(x, y)) == 123.0  # auto prefers cpp on CPU


def test_env_override_replaces_auto(monkeypatch):
    _fake_backend(monkeypatch, "cpp", implements=("multi_similarity_loss",))
    x, y = torch.randn(5, 3), torch.tensor([0, 0, 1, 1, 2])
    reference = pairloss.multi_similarity_loss(x, y, backend="reference")
    monkeypatch.setenv("PAIRLOSS_BACKEND", "reference")
    assert_close(pairloss.multi_similarity_loss(x, y), reference)  # would be 123 from the fake cpp without it
    assert backends.resolve("auto", x.device, "multi_similarity_loss") is pairloss.reference.multi_similarity_loss
    monkeypatch.setenv("PAIRLOSS_BACKEND", "cpp")
    assert float(pairloss.multi_similarity_loss(x, y)) == 123.0
    monkeypatch.setenv("PAIRLOSS_BACKEND", "auto")
    assert float(pairloss.multi_similarity_loss(x, y)) == 123.0
    # an explicit backend argument is not overridden
    monkeypatch.setenv("PAIRLOSS_BACKEND", "cpp")
    assert_close(pairloss.multi_similarity_loss(x, y, backend="reference"), reference)


@pytest.mark.parametrize("name", ENGINES)
def test_env_override_to_an_unavailable_engine_raises(monkeypatch, name):
    reason = backends.unavailable_reason(name, "cpu")
    if reason is None:
        pytest.skip(f"backend {name!r} is available on cpu here")
    monkeypatch.setenv("PAIRLOSS_BACKEND", name)
    with pytest.raises(pairloss.BackendUnavailableError, match=re.escape(reason)):
        pairloss.ntxent_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("value", ["nope", "Reference", "triton,cpp", ""])
def test_bad_env_value_errors(monkeypatch, value):
    monkeypatch.setenv("PAIRLOSS_BACKEND", value)
    with pytest.raises(ValueError, match="PAIRLOSS_BACKEND"):
        pairloss.multi_similarity_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("loss_name", ALL_LOSSES)
def test_auto_resolves_to_a_working_backend(loss_name):
    """ "auto" on CPU picks some usable backend that implements the loss and gives the reference's numbers."""
    function = backends.resolve("auto", torch.device("cpu"), loss_name)
    assert callable(function)
    case = make_case(loss_name, "odd", dtype=torch.float64)
    assert_close(call(loss_name, "auto", case), call(loss_name, "reference", case))


@pytest.mark.parametrize("name", backends.BACKEND_NAMES)
def test_each_available_backend_computes_every_loss_it_implements(name):
    require_backend(name, "cpu")
    module = backends._load(name)[0]
    implemented = [loss_name for loss_name in ALL_LOSSES if hasattr(module, loss_name)]
    assert implemented, f"backend {name!r} implements no loss"
    for loss_name in implemented:
        case = make_case(loss_name, "odd", dtype=torch.float32)
        loss = call(loss_name, name, case)
        assert bool(torch.isfinite(loss).all()), f"{name} {loss_name}: {loss}"
