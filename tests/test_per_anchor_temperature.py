"""Per-anchor temperatures ((B,) tensors, learnable) for NT-Xent, SupCon and decoupled softmax: the dense oracles
(gradcheck, the temperature's gradient included), every backend against them (X = Y and with references and
own copies, odd shapes, grad_output ≠ 1, one class, all-distinct labels), a constant tensor equal to the number,
and the argument checks."""

import pytest
import torch

import pairloss
from pairloss.reference.decoupled_softmax import decoupled_softmax_loss as decoupled_oracle
from pairloss.reference.softmax import ntxent_loss as ntxent_oracle
from pairloss.reference.softmax import supcon_loss as supcon_oracle

from .tolerances import assert_close

BACKENDS = [b for b in ("reference", "cpp", "triton") if b in pairloss.available_backends("cpu")]
LABEL_LOSSES = {"ntxent_loss": ntxent_oracle, "supcon_loss": supcon_oracle}
LABEL_KINDS = {
    "few_classes": lambda rows, g: torch.randint(0, 3, (rows,), generator=g),
    "one_class": lambda rows, g: torch.zeros(rows, dtype=torch.int64),
    "distinct": lambda rows, g: torch.randperm(rows, generator=g),
}


def _unit(rows):
    return torch.nn.functional.normalize(rows, dim=1)


def _inputs(rows, dim, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(rows, dim, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(True)
    temperature = (0.05 + torch.rand(rows, generator=generator, dtype=torch.float64)).to(dtype).requires_grad_(True)
    return embeddings, temperature, generator


def _value_and_grads(loss, leaves):
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    return loss.detach(), torch.autograd.grad((loss * weights).sum() * 0.37, leaves)


def test_oracles_gradcheck():
    x, temperature, generator = _inputs(6, 3, torch.float64, seed=0)
    labels = torch.tensor([0, 1, 0, 1, 2, 0])
    for name, oracle in LABEL_LOSSES.items():
        assert torch.autograd.gradcheck(
            lambda x_, t_, oracle=oracle: oracle(_unit(x_), labels, None, None, temperature=t_, reduction="none"),
            (x, temperature),
        ), name
    keys = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([[0, 2], [1, -1], [4, 4], [3, 0], [-1, -1], [2, 1]])
    assert torch.autograd.gradcheck(
        lambda x_, k_, t_: decoupled_oracle(_unit(x_), _unit(k_), positives, temperature=t_), (x, keys, temperature)
    )


@pytest.mark.parametrize("with_refs", [False, True], ids=["self", "refs"])
@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_label_losses_match_the_oracle(backend, loss_name, kind, with_refs):
    dtype = torch.float32 if backend == "triton" else torch.float64  # the interpreter computes fp64 in fp32
    x, temperature, generator = _inputs(13, 6, dtype, seed=1)
    labels = LABEL_KINDS[kind](13, generator)
    refs = {}
    if with_refs:  # a memory of 9 rows holding the anchors' first 4 rows (own copies) from row 5 on
        ref_rows = torch.randn(9, 6, generator=generator, dtype=torch.float64).to(dtype)
        ref_labels = torch.randint(0, 3, (9,), generator=generator)
        ref_rows[5:] = x.detach()[:4]
        ref_labels[5:] = labels[:4]
        refs = {"ref_emb": ref_rows.requires_grad_(True), "ref_labels": ref_labels, "self_offset": 5}
    leaves = [x, temperature] + ([refs["ref_emb"]] if with_refs else [])
    for reduction in ("mean", "sum", "none"):
        expected_loss = LABEL_LOSSES[loss_name](
            _unit(x), labels, _unit(refs["ref_emb"]) if with_refs else None, refs.get("ref_labels"),
            temperature=temperature, reduction=reduction, self_offset=refs.get("self_offset"),
        )  # fmt: skip
        expected = _value_and_grads(expected_loss, leaves)
        loss = getattr(pairloss, loss_name)(x, labels, temperature=temperature, reduction=reduction,
                                            backend=backend, **refs)  # fmt: skip
        actual = _value_and_grads(loss, leaves)
        assert_close(actual[0], expected[0], msg=f"{reduction} loss")
        for name, grad, expected_grad in zip(("embeddings", "temperature", "ref_emb"), actual[1], expected[1]):
            assert_close(grad, expected_grad, kind="grad", msg=f"{reduction} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoupled_softmax_matches_the_oracle(backend):
    dtype = torch.float32 if backend == "triton" else torch.float64
    queries, temperature, generator = _inputs(11, 5, dtype, seed=2)
    keys = torch.randn(8, 5, generator=generator, dtype=torch.float64).to(dtype).requires_grad_(True)
    positives = torch.randint(-1, 8, (11, 3), generator=generator)
    leaves = [queries, keys, temperature]
    expected = _value_and_grads(
        decoupled_oracle(_unit(queries), _unit(keys), positives, temperature=temperature), leaves
    )
    actual = _value_and_grads(
        pairloss.decoupled_softmax_loss(queries, keys, positives, temperature=temperature, backend=backend), leaves
    )
    assert_close(actual[0], expected[0])
    for name, grad, expected_grad in zip(("queries", "keys", "temperature"), actual[1], expected[1]):
        assert_close(grad, expected_grad, kind="grad", msg=name)


@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_a_constant_tensor_is_the_number(loss_name):
    x, _, generator = _inputs(10, 4, torch.float64, seed=3)
    labels = torch.randint(0, 3, (10,), generator=generator)
    with torch.no_grad():
        as_number = getattr(pairloss, loss_name)(x, labels, temperature=0.2)
        as_tensor = getattr(pairloss, loss_name)(x, labels, temperature=torch.full((10,), 0.2, dtype=torch.float64))
    assert_close(as_tensor, as_number)


def test_argument_errors():
    x, _, _ = _inputs(4, 3, torch.float64, seed=0)
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"temperature must be a number or one value per row of embeddings \(4,\)"):
        pairloss.ntxent_loss(x, labels, temperature=torch.ones(3))
    with pytest.raises(ValueError, match="every entry of temperature must be positive"):
        pairloss.supcon_loss(x, labels, temperature=torch.tensor([0.1, 0.0, 0.2, 0.3]))
    with pytest.raises(TypeError, match="temperature must be a number or a floating-point tensor"):
        pairloss.ntxent_loss(x, labels, temperature=torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="one value per row of queries"):
        pairloss.decoupled_softmax_loss(x, x, torch.zeros(4, 1, dtype=torch.int64), temperature=torch.ones(2))
    with pytest.raises(ValueError, match=r"one value per row of embeddings \(4,\)"):  # before any collective
        pairloss.distributed.ntxent_loss(x, labels, temperature=torch.ones(3), strategy="ring")
