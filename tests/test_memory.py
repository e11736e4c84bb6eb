"""pairloss.CrossBatchMemory against PML's CrossBatchMemory, step by step (the queue filling, then wrapping
around), loss and gradients in float64, for every label loss; plus its own edge cases and argument errors."""

import functools

import pytest
import torch

import pairloss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")

pytestmark = pytest.mark.usefixtures("single_thread")

DIM = 6


def _pml_loss(loss_name, options):
    """(PML loss, PML miner or None) equal to pairloss's ``loss_name`` with ``options``."""
    if loss_name == "multi_similarity_loss":
        loss = pml_losses.MultiSimilarityLoss(alpha=options["alpha"], beta=options["beta"], base=options["base"])
        return loss, pml_miners.MultiSimilarityMiner(epsilon=options["epsilon"])
    if loss_name == "triplet_margin_loss":
        loss = pml_losses.TripletMarginLoss(margin=options["margin"], smooth_loss=options.get("soft", False))
        return loss, pml_miners.BatchHardMiner() if options["mining"] == "batch_hard" else None
    if loss_name == "contrastive_loss":
        return pml_losses.ContrastiveLoss(pos_margin=options["pos_margin"], neg_margin=options["neg_margin"]), None
    if loss_name == "circle_loss":
        return pml_losses.CircleLoss(m=options["m"], gamma=options["gamma"]), None
    if loss_name == "ntxent_loss":
        return pml_losses.NTXentLoss(temperature=options["temperature"]), None
    return pml_losses.SupConLoss(temperature=options["temperature"]), None


CONFIGS = {
    "multi_similarity": ("multi_similarity_loss", {"alpha": 2.0, "beta": 40.0, "base": 0.4, "epsilon": 0.2}),
    "triplet_batch_hard": ("triplet_margin_loss", {"margin": 0.2, "mining": "batch_hard"}),
    "triplet_all": ("triplet_margin_loss", {"margin": 0.3, "mining": "all"}),
    "contrastive": ("contrastive_loss", {"pos_margin": 0.1, "neg_margin": 0.9}),
    "circle": ("circle_loss", {"m": 0.3, "gamma": 40.0}),
    "ntxent": ("ntxent_loss", {"temperature": 0.2}),
    "supcon": ("supcon_loss", {"temperature": 0.3}),
}


def _batches(steps, rows, classes, seed=0):
    # Several rows per class: every anchor has a positive besides its own copy (the one case where leaving the
    # copy out before or after mining differs; see CrossBatchMemory's docstring).
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        labels = torch.arange(rows) % classes
        yield torch.randn(rows, DIM, generator=generator, dtype=torch.float64), labels[torch.randperm(rows)]


def _step(memory, embeddings, labels, **kwargs):
    leaf = embeddings.clone().requires_grad_(True)
    loss = memory(leaf, labels, **kwargs)
    (grad,) = torch.autograd.grad(loss * 0.37, leaf)
    return loss.detach(), grad


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("memory_size", [30, 12])
def test_matches_pml_step_by_step(config, memory_size):
    loss_name, options = CONFIGS[config]
    ours = pairloss.CrossBatchMemory(
        functools.partial(getattr(pairloss, loss_name), backend="reference", **options), DIM, memory_size
    )
    loss, miner = _pml_loss(loss_name, options)
    theirs = pml_losses.CrossBatchMemory(loss, DIM, memory_size=memory_size, miner=miner)
    for step, (embeddings, labels) in enumerate(_batches(6, 12, 3)):  # 72 rows: the queue wraps around
        loss, grad = _step(ours, embeddings, labels)
        expected, expected_grad = _step(theirs, embeddings, labels)
        torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-11, msg=f"{config} step {step}")
        torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-10, msg=f"{config} step {step}")
        assert ours.queue_idx == theirs.queue_idx and ours.has_been_filled == theirs.has_been_filled
    assert torch.equal(ours.embedding_memory, theirs.embedding_memory)
    assert torch.equal(ours.label_memory, theirs.label_memory)


@pytest.mark.parametrize("config", ["multi_similarity", "ntxent", "contrastive"])
def test_enqueue_mask_matches_pml(config):
    loss_name, options = CONFIGS[config]
    ours = pairloss.CrossBatchMemory(
        pairloss.MultiSimilarityLoss(backend="reference", **options)
        if config == "multi_similarity"
        else functools.partial(getattr(pairloss, loss_name), backend="reference", **options),
        DIM,
        20,
    )
    loss, miner = _pml_loss(loss_name, options)
    theirs = pml_losses.CrossBatchMemory(loss, DIM, memory_size=20, miner=miner)
    for step, (embeddings, labels) in enumerate(_batches(5, 12, 3, seed=1)):
        mask = torch.arange(12) % 2 == 0  # half the rows are only enqueued (e.g. a momentum encoder's keys)
        loss, grad = _step(ours, embeddings, labels, enqueue_mask=mask)
        expected, expected_grad = _step(theirs, embeddings, labels, enqueue_mask=mask)
        torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-11, msg=f"step {step}")
        torch.testing.assert_close(grad, expected_grad, rtol=1e-7, atol=1e-10, msg=f"step {step}")


def test_works_on_every_backend_and_saves_its_queue():
    options = CONFIGS["multi_similarity"][1]
    batches = list(_batches(4, 10, 4, seed=2))
    results = {}
    for backend in pairloss.available_backends("cpu"):
        memory = pairloss.CrossBatchMemory(pairloss.MultiSimilarityLoss(backend=backend, **options), DIM, 25)
        results[backend] = [_step(memory, e.float(), labels)[0] for e, labels in batches]
    for backend, losses in results.items():
        torch.testing.assert_close(torch.stack(losses), torch.stack(results["reference"]), rtol=2e-5, atol=1e-6)
    restored = pairloss.CrossBatchMemory(pairloss.MultiSimilarityLoss(**options), DIM, 25)
    restored.load_state_dict(memory.state_dict())
    assert (restored.queue_idx, restored.has_been_filled) == (memory.queue_idx, memory.has_been_filled)
    assert torch.equal(restored.embedding_memory, memory.embedding_memory)


def test_memory_never_concatenates_the_batch():
    # The loss receives a view of the memory buffer and the offset of the anchors' copies in it.
    calls = []

    def spy(embeddings, labels, ref_emb, ref_labels, self_offset):
        calls.append((ref_emb.data_ptr(), len(ref_emb), self_offset))
        return pairloss.ntxent_loss(embeddings, labels, ref_emb, ref_labels, self_offset=self_offset)

    memory = pairloss.CrossBatchMemory(spy, DIM, 10)
    for embeddings, labels in _batches(3, 4, 2):
        memory(embeddings.float(), labels)
    base = memory.embedding_memory.data_ptr()
    assert calls == [(base, 4, 0), (base, 8, 4), (base, 10, 8)]  # the third batch wraps: rows 8, 9, 0, 1


def test_empty_memory_or_no_anchor_gives_zero():
    memory = pairloss.CrossBatchMemory(pairloss.ntxent_loss, DIM, 10)
    embeddings = torch.randn(4, DIM, requires_grad=True)
    loss = memory(embeddings, torch.zeros(4, dtype=torch.int64), enqueue_mask=torch.ones(4, dtype=torch.bool))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_argument_errors():
    memory = pairloss.CrossBatchMemory(pairloss.ntxent_loss, DIM, 8)
    labels = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="embeddings has 5 features"):
        memory(torch.randn(4, 5), labels)
    with pytest.raises(ValueError, match="memory_size is 8"):
        memory(torch.randn(9, DIM), torch.zeros(9, dtype=torch.int64))
    with pytest.raises(TypeError, match="enqueue_mask must be a bool tensor"):
        memory(torch.randn(4, DIM), labels, enqueue_mask=torch.ones(4))
    with pytest.raises(ValueError, match="enqueue_mask must have shape"):
        memory(torch.randn(4, DIM), labels, enqueue_mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="labels must hold integer"):
        memory(torch.randn(4, DIM), torch.zeros(4))
    with pytest.raises(ValueError, match="memory_size must be a positive int"):
        pairloss.CrossBatchMemory(pairloss.ntxent_loss, DIM, 0)
    with pytest.raises(ValueError, match="self_offset must be a non-negative"):
        pairloss.ntxent_loss(torch.randn(3, DIM), labels[:3], torch.randn(5, DIM), labels[:1].expand(5), self_offset=-1)
    with pytest.raises(ValueError, match="no ref_emb was given"):
        pairloss.ntxent_loss(torch.randn(3, DIM), labels[:3], self_offset=0)


def test_reset_queue_zeroes_the_buffers_as_pml():
    """PML's reset_queue replaces the buffers by zeros: no stale rows stay in the state_dict."""
    loss_name, options = CONFIGS["ntxent"]
    memory = pairloss.CrossBatchMemory(functools.partial(getattr(pairloss, loss_name), **options), DIM, 12)
    pml = pml_losses.CrossBatchMemory(_pml_loss(loss_name, options)[0], DIM, memory_size=12)
    for embeddings, labels in _batches(2, 8, 3):
        memory(embeddings, labels)
        pml(embeddings, labels)
    memory.reset_queue()
    pml.reset_queue()
    assert (memory.queue_idx, memory.has_been_filled) == (pml.queue_idx, pml.has_been_filled) == (0, False)
    assert torch.equal(memory.embedding_memory, pml.embedding_memory.to(memory.embedding_memory.dtype))
    assert torch.equal(memory.label_memory, pml.label_memory) and not memory.label_memory.any()
    assert not memory.state_dict()["embedding_memory"].any()
    embeddings, labels = next(_batches(1, 8, 3, seed=5))
    torch.testing.assert_close(_step(memory, embeddings, labels)[0], _step(pml, embeddings, labels)[0].double())
