"""pairloss.integrations.open_clip against OpenCLIP's own loss module in one process (the distributed modes are
in test_integration_distributed): values, gradients of both towers, the logit scale and bias, output_dict, and
the refused options."""

import pytest
import torch

import pairloss
from pairloss.integrations import open_clip as fused

from .frameworks import require_open_clip_losses
from .tolerances import assert_close

theirs = require_open_clip_losses()

GRAD_OUTPUT = 0.37
BACKENDS = [b for b in ("reference", "cpp", "triton") if b in pairloss.available_backends("cpu")]


def _towers(rows, dim, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    image, text = (torch.randn(rows, dim, generator=generator, dtype=dtype) for _ in "it")
    return [torch.nn.functional.normalize(t, dim=1).requires_grad_(True) for t in (image, text)]


def _run(loss, inputs, output_dict=False):
    value = loss(*inputs, output_dict=output_dict)
    if output_dict:
        assert list(value) == ["contrastive_loss"]
        value = value["contrastive_loss"]
    return value.detach(), torch.autograd.grad(value * GRAD_OUTPUT, inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output_dict", [False, True])
def test_clip_loss_matches_open_clip(backend, output_dict):
    dtype = torch.float32 if backend == "triton" else torch.float64
    image, text = _towers(19, 6, dtype, seed=1)
    scale = torch.tensor(8.0, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=dtype, requires_grad=True)  # shifts every logit: no effect, zero gradient
    expected, expected_grads = _run(theirs.ClipLoss(), [image, text, scale, bias], output_dict)
    actual, grads = _run(fused.ClipLoss(backend=backend), [image, text, scale, bias], output_dict)
    assert_close(actual, expected)
    for name, grad, expected_grad in zip(("image", "text", "scale", "bias"), grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad", msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_siglip_loss_matches_open_clip(backend):
    dtype = torch.float32 if backend == "triton" else torch.float64
    image, text = _towers(17, 5, dtype, seed=2)
    scale = torch.tensor(10.0, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-4.0, dtype=dtype, requires_grad=True)
    expected, expected_grads = _run(theirs.SigLipLoss(), [image, text, scale, bias])
    actual, grads = _run(fused.SigLipLoss(backend=backend), [image, text, scale, bias])
    assert_close(actual, expected)
    for name, grad, expected_grad in zip(("image", "text", "scale", "bias"), grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad", msg=name)


def test_refused():
    with pytest.raises(ValueError, match="use_horovod"):
        fused.ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="dist_impl"):
        fused.SigLipLoss(dist_impl="allreduce")
    image, text = _towers(4, 3, torch.float64, seed=0)
    with pytest.raises(RuntimeError, match="world_size=2 needs an initialised torch.distributed process group"):
        fused.ClipLoss(world_size=2, rank=1)(image, text, 1.0)
    with pytest.raises(RuntimeError, match="world_size=3"):
        fused.SigLipLoss(world_size=3)(image, text, 1.0, 0.0)
