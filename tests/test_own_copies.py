"""References that hold the anchors' own copies (``self_offset``: memory banks, gathered global batches), the
rectangular SigLIP of ``positive_offset``, and the "parts" reduction that pairloss.distributed all-reduces.

Every backend is checked against the reference, and the reference against an independent construction: the
anchors' copies placed anywhere in ``ref_emb`` (rolled, wrapping around) give the loss of ``ref_emb=None``.
"""

import inspect

import pytest
import torch

import pairloss
from pairloss import _reduction, backends

from .backend_cases import (
    LABEL_LOSSES,
    MULTI_HOT_SCENARIOS,
    OPTIONS,
    label_case,
    require_backend,
    soft_positives,
)
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

BACKENDS = ("reference", "cpp", "triton")
CPU_DTYPE = {"reference": torch.float64, "cpp": torch.float64, "triton": torch.float32}


def _with_defaults(loss_name, options):
    """``options`` completed with the public function's defaults: backend functions take every option."""
    parameters = inspect.signature(getattr(pairloss, loss_name)).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    for name in ("backend", "self_offset"):
        defaults.pop(name, None)
    return {**defaults, **options}


def _function(backend, loss_name, options):
    require_backend(backend)
    return backends.resolve(backend, torch.device("cpu"), loss_name)


def _normalised(*tensors):
    return [torch.nn.functional.normalize(t, dim=1) for t in tensors]


def _value_and_grads(loss, inputs):
    value = loss if loss.dim() == 0 else (loss * torch.linspace(0.3, 1.7, len(loss), dtype=loss.dtype)).sum()
    return loss.detach(), torch.autograd.grad(value, inputs, allow_unused=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name,option", [(n, k) for n in LABEL_LOSSES for k in range(len(OPTIONS[n]))])
def test_copies_anywhere_in_the_references_equal_the_self_pairs(backend, loss_name, option):
    options = _with_defaults(loss_name, OPTIONS[loss_name][option])
    function = _function(backend, loss_name, options)
    case = label_case("multi_hot" if soft_positives(options) else "odd", dtype=CPU_DTYPE[backend])
    x, labels = _normalised(case["embeddings"])[0], case["labels"]
    rows = len(x)
    for shift in (0, 5, rows - 1):
        anchors = x.clone().requires_grad_(True)
        expected, (expected_grad,) = _value_and_grads(function(anchors, labels, None, None, **options), [anchors])
        anchors = x.clone().requires_grad_(True)
        bank = torch.roll(x, shift, 0).requires_grad_(True)  # anchor i at row (i + shift) % rows
        loss = function(anchors, labels, bank, torch.roll(labels, shift, 0), self_offset=shift, **options)
        value, (anchor_grad, bank_grad) = _value_and_grads(loss, [anchors, bank])
        msg = f"{loss_name} [{backend}] {options} shift={shift}"
        assert_close(value, expected, msg=msg)
        # With ref_emb=None the anchors get both roles' gradients; here they are split between the two tensors.
        assert_close(anchor_grad + torch.roll(bank_grad, -shift, 0), expected_grad, msg=msg)


def _parts_cases():
    """(loss, option, scenario): every option on batches with and without references and own copies; soft
    positives on the multi-hot ones only."""
    scenarios = ("odd", "odd_ref", "memory_bank", "single_class", "all_distinct_ref", "multi_hot_ref", "multi_hot_bank")
    return [
        (name, k, scenario)
        for name in LABEL_LOSSES
        for k, option in enumerate(OPTIONS[name])
        for scenario in scenarios
        if scenario in MULTI_HOT_SCENARIOS or not soft_positives(option)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name,option,scenario", _parts_cases())
def test_parts_make_the_mean(backend, loss_name, option, scenario):
    options = _with_defaults(loss_name, OPTIONS[loss_name][option])
    options.pop("reduction")
    function = _function(backend, loss_name, dict(options, reduction="mean"))
    case = label_case(scenario, dtype=CPU_DTYPE[backend])
    x, y = _normalised(case["embeddings"])[0], case["ref_emb"]
    y = None if y is None else _normalised(y)[0]
    args = (x, case["labels"], y, case["ref_labels"])
    offset = case.get("self_offset")
    sums, counts = function(*args, self_offset=offset, reduction="parts", **options)
    expected_sums, expected_counts = backends.resolve("reference", x.device, loss_name)(
        *[a if not (isinstance(a, torch.Tensor) and a.is_floating_point()) else a.double() for a in args],
        self_offset=offset, reduction="parts", **options,
    )  # fmt: skip
    assert counts.dtype == torch.float64 and not counts.requires_grad
    if soft_positives(options):  # Σ of the positives' weights: fractions, summed in fp32 by the engines
        assert_close(counts, expected_counts, dtype=torch.float32, msg=f"{loss_name} [{backend}] {scenario} counts")
    else:
        assert torch.equal(counts, expected_counts), f"{loss_name} [{backend}] {scenario}: counts {counts}"
    msg = f"{loss_name} [{backend}] {scenario}"
    assert_close(sums.double(), expected_sums, dtype=x.dtype, msg=msg)
    mean = function(*args, self_offset=offset, reduction="mean", **options)
    assert_close(mean, _reduction.mean_of_parts(sums, counts), msg=msg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows,cols,offset", [(7, 7, 0), (5, 12, 9), (1, 4, 3), (6, 6, 4)])
def test_siglip_positive_offset(backend, rows, cols, offset):
    function = _function(backend, "siglip_loss", {})
    reference = backends.resolve("reference", torch.device("cpu"), "siglip_loss")
    generator = torch.Generator().manual_seed(rows * 100 + cols)
    image, text = _normalised(*(torch.randn(n, 8, generator=generator, dtype=torch.float64) for n in (rows, cols)))
    scale, bias = torch.tensor(9.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    dtype = CPU_DTYPE[backend]
    inputs = [t.to(dtype).requires_grad_(True) for t in (image, text, scale, bias)]
    value, grads = _value_and_grads(function(*inputs, positive_offset=offset), inputs)
    truth = [t.clone().requires_grad_(True) for t in (image, text, scale, bias)]
    expected, expected_grads = _value_and_grads(reference(*truth, positive_offset=offset), truth)
    assert_close(value, expected, dtype=dtype, msg=backend)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, dtype=dtype, kind="grad", msg=backend)


def test_reference_siglip_offset_is_a_rolled_text_tower():
    reference = backends.resolve("reference", torch.device("cpu"), "siglip_loss")
    image, text = _normalised(torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64))
    scale, bias = torch.tensor(7.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    assert_close(reference(image, torch.roll(text, 4, 0), scale, bias, positive_offset=4),
                 reference(image, text, scale, bias))  # fmt: skip


def test_public_offsets_are_checked():
    image, text = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="image_features has 3 rows but text_features has 5"):
        pairloss.siglip_loss(image, text, 1.0, 0.0)
    with pytest.raises(ValueError, match="positive_offset must be a non-negative Python int"):
        pairloss.siglip_loss(image, text, 1.0, 0.0, positive_offset=-2)
    assert pairloss.siglip_loss(image, text, 1.0, 0.0, positive_offset=4).shape == ()
