"""CLIP and SigLIP against OpenCLIP's ClipLoss / SigLipLoss formulas, transcribed here (open_clip is not a test
dependency), single process: loss and gradients w.r.t. both towers, logit_scale and logit_bias, B = 1 included."""

import pytest
import torch
import torch.nn.functional as F

import pairloss

from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")


def openclip_clip_loss(image_features, text_features, logit_scale):
    # open_clip.loss.ClipLoss.forward (world_size = 1): get_logits + cross entropy both ways.
    logits_per_image = logit_scale * image_features @ text_features.T
    logits_per_text = logit_scale * text_features @ image_features.T
    labels = torch.arange(logits_per_image.shape[0], device=image_features.device, dtype=torch.long)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def openclip_siglip_loss(image_features, text_features, logit_scale, logit_bias):
    # open_clip.loss.SigLipLoss._loss (negative_only=False): labels 2·eye − 1, sum of −logsigmoid over B.
    logits = logit_scale * image_features @ text_features.T + logit_bias
    labels = 2 * torch.eye(image_features.shape[0], device=image_features.device, dtype=image_features.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / image_features.shape[0]


def towers(rows, dim, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1).to(dtype)
    text = F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=1).to(dtype)
    return image, text


def loss_and_grads(function, *inputs, grad_output=0.37):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    loss = function(*leaves)
    grads = torch.autograd.grad(loss * grad_output, leaves)
    return loss.detach(), grads


SIZES = [(1, 4), (2, 3), (7, 16), (33, 8)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
@pytest.mark.parametrize("rows,dim", SIZES)
def test_clip_matches_openclip(rows, dim, scale, dtype):
    image, text = towers(rows, dim, dtype, seed=rows)
    logit_scale = torch.tensor(scale, dtype=dtype)

    def ours(i, t, s):
        return pairloss.clip_loss(i, t, s, backend="reference")

    loss, grads = loss_and_grads(ours, image, text, logit_scale)
    expected, expected_grads = loss_and_grads(openclip_clip_loss, image, text, logit_scale)
    assert_close(loss, expected, dtype, "loss")
    for name, grad, expected_grad in zip(("image", "text", "logit_scale"), grads, expected_grads):
        assert_close(grad, expected_grad, dtype, "grad", msg=f"d/d{name}")
    if rows == 1:  # one pair: both cross entropies are over a single logit
        assert float(loss) == 0.0


@pytest.mark.parametrize("rows,dim", SIZES)
def test_clip_reductions_and_python_scale(rows, dim):
    image, text = towers(rows, dim, torch.float64, seed=10 + rows)
    scale = 7.0
    logits = scale * image @ text.T
    target = torch.arange(rows)
    per_pair = F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
    per_pair = per_pair / 2
    assert_close(pairloss.clip_loss(image, text, scale, reduction="none", backend="reference"), per_pair)
    assert_close(pairloss.clip_loss(image, text, scale, reduction="sum", backend="reference"), per_pair.sum())
    assert_close(pairloss.clip_loss(image, text, scale, backend="reference"), openclip_clip_loss(image, text, scale))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale,bias", [(1.0, 0.0), (10.0, -10.0), (4.0, 2.5)])
@pytest.mark.parametrize("rows,dim", SIZES)
def test_siglip_matches_openclip(rows, dim, scale, bias, dtype):
    image, text = towers(rows, dim, dtype, seed=100 + rows)
    logit_scale, logit_bias = torch.tensor(scale, dtype=dtype), torch.tensor(bias, dtype=dtype)

    def ours(i, t, s, b):
        return pairloss.siglip_loss(i, t, s, b, backend="reference")

    loss, grads = loss_and_grads(ours, image, text, logit_scale, logit_bias)
    expected, expected_grads = loss_and_grads(openclip_siglip_loss, image, text, logit_scale, logit_bias)
    assert_close(loss, expected, dtype, "loss")
    for name, grad, expected_grad in zip(("image", "text", "logit_scale", "logit_bias"), grads, expected_grads):
        assert_close(grad, expected_grad, dtype, "grad", msg=f"d/d{name}")


def test_scale_and_bias_accept_one_element_tensors_of_any_shape():
    # OpenCLIP keeps logit_scale as a parameter of shape [] and SigLIP's as shape [1]; both must work.
    image, text = towers(5, 4, torch.float64, seed=0)
    scale, bias = torch.full((1,), 10.0, dtype=torch.float64), torch.full((1, 1), -10.0, dtype=torch.float64)
    expected = openclip_siglip_loss(image, text, scale, bias)  # broadcasting keeps a [1, 1] shape here
    loss = pairloss.siglip_loss(image, text, scale, bias, backend="reference")
    assert loss.shape == ()
    assert_close(loss, expected.reshape(()))
    assert pairloss.clip_loss(image, text, torch.full((1,), 3.0, dtype=torch.float64)).shape == ()
