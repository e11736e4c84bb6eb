"""CLIP and SigLIP with label-defined positives (``labels=``): the dense oracles (gradcheck), then every backend's
fused form against them — values and gradients, odd shapes, grad_output ≠ 1, non-contiguous towers, one class,
all-distinct ids (= the loss without labels), arbitrary ids, the reductions, bf16 — and the argument checks."""

import pytest
import torch

import pairloss
from pairloss.reference.two_tower import multi_positive_clip_loss, multi_positive_siglip_loss

from .tolerances import assert_close, assert_within_torch_error

BACKENDS = [b for b in ("reference", "cpp", "triton") if b in pairloss.available_backends("cpu")]
GRAD_OUTPUT = 0.37
LABEL_KINDS = {
    "few_classes": lambda rows, g: torch.randint(0, 3, (rows,), generator=g),
    "one_class": lambda rows, g: torch.full((rows,), 7),
    "distinct": lambda rows, g: torch.randperm(rows, generator=g),
    "sparse_ids": lambda rows, g: torch.tensor([-5, 10**9, 3])[torch.randint(0, 3, (rows,), generator=g)],
}


def _towers(rows, text_rows, dim, dtype, seed, transposed=False):
    generator = torch.Generator().manual_seed(seed)

    def tower(count):
        rows_ = torch.nn.functional.normalize(torch.randn(count, dim, generator=generator, dtype=torch.float64), dim=1)
        if transposed:  # a non-contiguous view with the same values
            rows_ = rows_.T.contiguous().T
        return rows_.to(dtype).requires_grad_(True)

    return tower(rows), tower(text_rows), generator


def _value_and_grads(loss, leaves):
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    value = loss.detach()
    return value, torch.autograd.grad((loss * weights).sum() * GRAD_OUTPUT, leaves)


def test_oracles_gradcheck():
    image, text, _ = _towers(5, 5, 3, torch.float64, seed=0)
    text_other, _, _ = _towers(4, 1, 3, torch.float64, seed=1)
    labels, text_labels = torch.tensor([0, 1, 0, 2, 1]), torch.tensor([1, 1, 3, 0])
    scale, bias = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (4.0, -1.5))
    assert torch.autograd.gradcheck(
        lambda i, t, s: multi_positive_clip_loss(i, t, s, labels, reduction="none"), (image, text, scale)
    )
    assert torch.autograd.gradcheck(
        lambda i, t, s, b: multi_positive_siglip_loss(i, t, s, b, labels, text_labels), (image, text_other, scale, bias)
    )


@pytest.mark.parametrize("transposed", [False, True], ids=["contiguous", "transposed"])
@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_matches_the_oracle(backend, kind, transposed):
    dtype = torch.float32 if backend == "triton" else torch.float64  # the interpreter computes fp64 in fp32
    image, text, generator = _towers(13, 13, 6, dtype, seed=2, transposed=transposed)
    labels = LABEL_KINDS[kind](13, generator)
    for reduction in ("mean", "sum", "none"):
        scale = torch.tensor(9.0, dtype=dtype, requires_grad=True)
        leaves = [image, text, scale]
        expected = _value_and_grads(multi_positive_clip_loss(*leaves, labels, reduction=reduction), leaves)
        actual = _value_and_grads(
            pairloss.clip_loss(*leaves, labels=labels, reduction=reduction, backend=backend), leaves
        )
        assert_close(actual[0], expected[0], msg=f"{reduction} loss")
        for name, grad, expected_grad in zip(("image", "text", "scale"), actual[1], expected[1]):
            assert_close(grad, expected_grad, kind="grad", msg=f"{reduction} {name}")


@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_siglip_matches_the_oracle(backend, kind):
    dtype = torch.float32 if backend == "triton" else torch.float64
    image, text, generator = _towers(11, 7, 5, dtype, seed=3)  # M ≠ B: text_labels of their own
    labels, text_labels = LABEL_KINDS[kind](11, generator), LABEL_KINDS[kind](7, generator)
    scale, bias = (torch.tensor(v, dtype=dtype, requires_grad=True) for v in (8.0, -3.0))
    leaves = [image, text, scale, bias]
    expected = _value_and_grads(multi_positive_siglip_loss(*leaves, labels, text_labels), leaves)
    loss = pairloss.siglip_loss(*leaves, labels=labels, text_labels=text_labels, backend=backend)
    actual = _value_and_grads(loss, leaves)
    assert_close(actual[0], expected[0])
    for name, grad, expected_grad in zip(("image", "text", "scale", "bias"), actual[1], expected[1]):
        assert_close(grad, expected_grad, kind="grad", msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_labels_are_the_plain_losses(backend):
    """One positive per row: the diagonal losses exactly (text_labels default to labels when M = B)."""
    dtype = torch.float32 if backend == "triton" else torch.float64
    image, text, _ = _towers(9, 9, 4, dtype, seed=4)
    ids = torch.arange(100, 109)
    with torch.no_grad():
        assert_close(pairloss.clip_loss(image, text, 5.0, labels=ids, backend=backend),
                     pairloss.clip_loss(image, text, 5.0, backend=backend))  # fmt: skip
        assert_close(pairloss.siglip_loss(image, text, 5.0, -2.0, labels=ids, backend=backend),
                     pairloss.siglip_loss(image, text, 5.0, -2.0, backend=backend))  # fmt: skip


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_bf16_within_twice_plain_pytorch(backend):
    """error(bf16 fused) ≤ 2 × error(the dense formula in bf16), both against fp64 on the same rounded rows."""
    image, text, generator = _towers(40, 40, 16, torch.bfloat16, seed=5)
    labels = torch.randint(0, 6, (40,), generator=generator)
    wide = [t.detach().double() for t in (image, text)]
    truth = multi_positive_clip_loss(*wide, torch.tensor(10.0, dtype=torch.float64), labels, reduction="none")
    with torch.no_grad():
        plain = multi_positive_clip_loss(
            image, text, torch.tensor(10.0, dtype=torch.bfloat16), labels, reduction="none"
        )
        fused = pairloss.clip_loss(image, text, 10.0, labels=labels, reduction="none", backend=backend)
    assert fused.dtype == torch.bfloat16
    assert_within_torch_error(fused, plain, truth, msg="clip")
    truth = multi_positive_siglip_loss(*wide, 10.0, -5.0, labels, labels)
    with torch.no_grad():
        plain = multi_positive_siglip_loss(image, text, 10.0, -5.0, labels, labels)
        fused = pairloss.siglip_loss(image, text, 10.0, -5.0, labels=labels, backend=backend)
    assert_within_torch_error(fused, plain, truth, msg="siglip")


def test_argument_errors():
    image, text, _ = _towers(4, 3, 2, torch.float64, seed=0)
    square = image.detach()[:3]
    with pytest.raises(ValueError, match="labels has 3 entries but image_features has 4 rows"):
        pairloss.clip_loss(image, image, 1.0, labels=torch.arange(3))
    with pytest.raises(TypeError, match="labels must hold integer"):
        pairloss.clip_loss(image, image, 1.0, labels=torch.zeros(4))
    with pytest.raises(ValueError, match="text_labels was given without labels"):
        pairloss.siglip_loss(square, square, 1.0, 0.0, text_labels=torch.arange(3))
    with pytest.raises(ValueError, match="positive_offset and labels"):
        pairloss.siglip_loss(image, text, 1.0, 0.0, labels=torch.arange(4), positive_offset=0)
    with pytest.raises(ValueError, match="text_features has 3"):  # M ≠ B needs text_labels
        pairloss.siglip_loss(image, text, 1.0, 0.0, labels=torch.arange(4))
    with pytest.raises(ValueError, match="text_labels has 4 entries but text_features has 3 rows"):
        pairloss.siglip_loss(image, text, 1.0, 0.0, labels=torch.arange(4), text_labels=torch.arange(4))
    with pytest.raises(ValueError, match="labels has 3 entries"):  # checked before any collective
        pairloss.distributed.clip_loss(image, image, 1.0, labels=torch.arange(3), strategy="ring")
