"""pairloss.distributed on real gloo process groups of W = 1..4 ranks (spawned here, bounded in time, with
unequal local batch sizes): every rank's value and gradients against the single-process oracle on the
concatenated batch, in float64, and DDP + SGD ending with the single-process parameters."""

import pytest
import torch
import torch.distributed as dist

import pairloss
from pairloss.reference.two_tower import multi_positive_clip_loss, multi_positive_siglip_loss

from . import distributed_worker as worker
from .process_group import run_ranks
from .tolerances import assert_close

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

WORLDS = (1, 2, 3, 4)
BACKENDS = [b for b in ("reference", "cpp", "triton") if b in pairloss.available_backends("cpu")]
TWO_TOWER_BACKENDS = [b for b in BACKENDS if b in worker.TWO_TOWER_BACKENDS]
# The Triton engine computes float64 inputs in float32.
COMPUTE_DTYPE = {"triton": torch.float32}


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"W{w}")
def ranks(request, tmp_path_factory):
    """Run one process group of W ranks; returns (W, [each rank's saved results])."""
    world, directory = request.param, tmp_path_factory.mktemp(f"world{request.param}")
    return world, run_ranks("tests.distributed_worker", world, directory, ",".join(BACKENDS))


def _split(tensor, world):
    return list(tensor.split(worker.split_sizes(world)))


def _oracle(function, tensors, weights, reduction):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss = function(*leaves, reduction)
    grads = torch.autograd.grad(worker._backward_weight(loss, weights), [t for t in leaves if t.requires_grad])
    return loss.detach(), grads


def _per_rank(results, backend, key):
    """Each rank's value of case ``key``, and each rank's gradients."""
    return [r[backend][key][0] for r in results], [r[backend][key][1:] for r in results]


def _check_ranks(world, values, rank_grads, expected, expected_grads, reduction, msg, dtype=None):
    """values: per-rank losses; rank_grads: per rank, a list aligned with expected_grads (row tensors split);
    ``dtype``: the tolerance's (default: the expected values')."""
    if reduction == "none":
        assert_close(torch.cat(values), expected, dtype, msg=msg)
    else:
        assert_close(torch.stack(values).mean(), expected, dtype, msg=msg)
    factor = 1 if reduction == "none" else world  # DDP convention: W × the exact gradient of the rank's rows
    for k, expected_grad in enumerate(expected_grads):
        if expected_grad.dim() == 0:  # a scalar parameter: DDP averages the local partials
            total = sum(g[k] for g in rank_grads) / factor
            assert_close(total, expected_grad, dtype, kind="grad", msg=f"{msg} d{k}")
            continue
        for rank, piece in enumerate(_split(expected_grad, world)):
            assert_close(rank_grads[rank][k], factor * piece, dtype, kind="grad", msg=f"{msg} rank {rank} d{k}")


@pytest.mark.parametrize("strategy", pairloss.distributed.STRATEGIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_label_losses_equal_the_global_batch(ranks, backend, strategy):
    world, results = ranks
    embeddings, _, _, _, weights = worker.global_batch(world)
    cases = [case for case in worker.LABEL_CASES if strategy in worker.label_strategies(backend, case[1])]
    if not cases:
        pytest.skip(f"strategy {strategy!r} runs no label loss on backend {backend!r}")
    for loss_name, options, kind in cases:
        labels = worker.case_labels(world, kind)
        for reduction in worker.REDUCTIONS:
            key = (loss_name, repr(options), kind, strategy, reduction)

            def single(x, reduction, loss_name=loss_name, options=options, labels=labels):
                return getattr(pairloss, loss_name)(x, labels, reduction=reduction, backend="reference", **options)

            expected, expected_grads = _oracle(single, [embeddings], weights, reduction)
            values, rank_grads = _per_rank(results, backend, key)
            dtype = COMPUTE_DTYPE.get(backend)
            _check_ranks(world, values, rank_grads, expected, expected_grads, reduction, f"W={world} {key}", dtype)


def _two_tower_oracles(pair_ids):
    """(CLIP, SigLIP) on the global batch: the reference backend, or the dense multi-positive oracles."""
    if pair_ids is None:
        return (
            lambda image, text, scale, reduction: pairloss.clip_loss(
                image, text, scale, reduction=reduction, backend="reference"
            ),
            lambda image, text, scale, bias: pairloss.siglip_loss(image, text, scale, bias, backend="reference"),
        )
    return (
        lambda image, text, scale, reduction: multi_positive_clip_loss(
            image, text, scale, pair_ids, reduction=reduction
        ),
        lambda image, text, scale, bias: multi_positive_siglip_loss(image, text, scale, bias, pair_ids, pair_ids),
    )


@pytest.mark.parametrize("with_labels", [False, True], ids=["diagonal", "labels"])
@pytest.mark.parametrize("strategy", pairloss.distributed.STRATEGIES)
@pytest.mark.parametrize("backend", TWO_TOWER_BACKENDS)
def test_clip_and_siglip_equal_the_global_batch(ranks, backend, strategy, with_labels):
    """Diagonal positives, or ``labels`` as pair ids (positives on other ranks included)."""
    world, results = ranks
    _, labels, image, text, weights = worker.global_batch(world)
    clip, siglip = _two_tower_oracles(labels if with_labels else None)
    case = f"{strategy} labels" if with_labels else strategy
    for reduction in worker.REDUCTIONS:
        scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
        leaves = [image.clone().requires_grad_(True), text.clone().requires_grad_(True)]
        loss = clip(*leaves, scale, reduction)
        expected_grads = torch.autograd.grad(worker._backward_weight(loss, weights), [*leaves, scale])
        key = ("clip_loss", case, reduction)
        values, rank_grads = _per_rank(results, backend, key)
        _check_ranks(world, values, rank_grads, loss.detach(), expected_grads, reduction, f"W={world} {key}")
    leaves = [image.clone().requires_grad_(True), text.clone().requires_grad_(True)]
    scale, bias = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (9.0, -4.0))
    loss = siglip(*leaves, scale, bias)
    expected_grads = torch.autograd.grad(loss * worker.GRAD_OUTPUT, [*leaves, scale, bias])
    key = ("siglip_loss", case, "mean")
    values, rank_grads = _per_rank(results, backend, key)
    _check_ranks(world, values, rank_grads, loss.detach(), expected_grads, "mean", f"W={world} {key}")


@pytest.mark.parametrize("strategy", pairloss.distributed.STRATEGIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_anchor_hyper_parameters_give_the_global_loss(ranks, backend, strategy):
    """NT-Xent and SupCon with one learnable temperature per row (values, embedding and temperature gradients),
    triplet and contrastive with one margin per row, against the single-process oracle."""
    world, results = ranks
    if strategy not in worker.label_strategies(backend, {}):
        pytest.skip(f"backend {backend!r} runs no label loss with strategy {strategy!r}")
    embeddings, labels, _, _, weights = worker.global_batch(world)
    temperature, margins = worker.per_anchor_temperatures(world), worker.per_anchor_margins(world)
    dtype = COMPUTE_DTYPE.get(backend)
    for reduction in worker.REDUCTIONS:
        for loss_name in ("ntxent_loss", "supcon_loss"):

            def with_temperatures(x, t, reduction, loss_name=loss_name):
                return getattr(pairloss, loss_name)(x, labels, temperature=t, reduction=reduction, backend="reference")

            expected, expected_grads = _oracle(with_temperatures, [embeddings, temperature], weights, reduction)
            key = (loss_name, "per-anchor temperature", strategy, reduction)
            values, rank_grads = _per_rank(results, backend, key)
            _check_ranks(world, values, rank_grads, expected, expected_grads, reduction, f"W={world} {key}", dtype)
        for loss_name, names in worker.MARGIN_CASES.items():

            def with_margins(x, reduction, loss_name=loss_name, names=names):
                function = getattr(pairloss, loss_name)
                return function(x, labels, reduction=reduction, backend="reference", **dict.fromkeys(names, margins))

            expected, expected_grads = _oracle(with_margins, [embeddings], weights, reduction)
            key = (loss_name, "per-anchor margins", strategy, reduction)
            values, rank_grads = _per_rank(results, backend, key)
            _check_ranks(world, values, rank_grads, expected, expected_grads, reduction, f"W={world} {key}", dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_rows_give_the_global_loss(ranks, backend):
    """bf16 local rows: each strategy returns a bf16 loss and bf16 gradients equal to the fp64 truth on the rounded
    global batch, to bf16 precision (the engines and the collectives accumulate in fp32)."""
    world, results = ranks
    embeddings, labels, image, text, _ = worker.global_batch(world)
    embeddings, image, text = (t.bfloat16().double() for t in (embeddings, image, text))
    for key in results[0]["bf16"][backend]:
        values = [r["bf16"][backend][key][0] for r in results]
        rank_grads = [r["bf16"][backend][key][1:] for r in results]
        assert all(v.dtype == torch.bfloat16 for v in values) and rank_grads[0][0].dtype == torch.bfloat16, key
        if key[0] == "clip_loss":
            leaves = [image.clone().requires_grad_(True), text.clone().requires_grad_(True)]
            scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
            loss = pairloss.clip_loss(*leaves, scale, backend="reference")
            expected_grads = torch.autograd.grad(loss * worker.GRAD_OUTPUT, [*leaves, scale])
        else:
            options = dict(worker.HALF_CASES)[key[0]]
            leaf = embeddings.clone().requires_grad_(True)
            loss = getattr(pairloss, key[0])(leaf, labels, backend="reference", **options)
            expected_grads = torch.autograd.grad(loss * worker.GRAD_OUTPUT, [leaf])
        msg = f"W={world} bf16 {key}"
        _check_ranks(world, values, rank_grads, loss.detach(), expected_grads, "mean", msg, torch.bfloat16)


def test_ddp_training_matches_single_process(ranks):
    world, results = ranks
    model = worker.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=worker.LR)
    for step in range(3):
        embeddings, labels, *_ = worker.global_batch(world, seed=10 + step)
        loss = pairloss.multi_similarity_loss(model(embeddings), labels, backend="reference")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for rank, result in enumerate(results):
        for parameter, trained in zip(model.parameters(), result["ddp"]):
            assert_close(trained, parameter.detach(), kind="grad", msg=f"W={world} rank {rank}")


def test_argument_errors_before_any_collective():
    embeddings, labels = torch.randn(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="strategy must be one of 'gather', 'ring'"):
        pairloss.distributed.clip_loss(embeddings, embeddings, 10.0, strategy="tree")
    with pytest.raises(ValueError, match="strategy='ring' computes the label losses with a fused engine"):
        pairloss.distributed.ntxent_loss(embeddings, labels, strategy="ring", backend="reference")
    with pytest.raises(ValueError, match=r"triplet_margin_loss\(mining='all'\) has no ring form"):
        pairloss.distributed.triplet_margin_loss(embeddings, labels, strategy="ring", mining="all")
    with pytest.raises(ValueError, match="temperature must be positive"):
        pairloss.distributed.ntxent_loss(embeddings, labels, strategy="ring", temperature=0.0)
    with pytest.raises(RuntimeError, match="initialised torch.distributed process group"):
        pairloss.distributed.ntxent_loss(embeddings, labels)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        pairloss.distributed.ntxent_loss(embeddings, labels[:3])
    with pytest.raises(ValueError, match="reduction must be one of"):
        pairloss.distributed.supcon_loss(embeddings, labels, reduction="parts")
    with pytest.raises(ValueError, match="but text_features has 3"):
        pairloss.distributed.clip_loss(embeddings, embeddings[:3], 10.0)
