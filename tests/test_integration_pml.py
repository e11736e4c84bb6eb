"""pairloss.integrations.pml against pytorch-metric-learning itself: each PML-named loss (with and without its
miner, with references) and CrossBatchMemory over several batches give PML's values and gradients; what cannot
be fused is refused with an error."""

import pytest
import torch

from pairloss.integrations import pml

from .frameworks import require
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

require("pytorch_metric_learning")
from pytorch_metric_learning import distances, losses, miners, reducers

GRAD_OUTPUT = 0.37
# (our loss, PML's loss, our miner, PML's miner); hyper-parameters off their defaults where they have any.
CASES = {
    "multi_similarity": lambda: (pml.MultiSimilarityLoss(1.5, 40, 0.6), losses.MultiSimilarityLoss(1.5, 40, 0.6)),
    "multi_similarity_mined": lambda: (
        pml.MultiSimilarityLoss(),
        losses.MultiSimilarityLoss(),
        pml.MultiSimilarityMiner(0.2),
        miners.MultiSimilarityMiner(0.2),
    ),
    "triplet_all": lambda: (pml.TripletMarginLoss(margin=0.3), losses.TripletMarginLoss(margin=0.3)),
    "triplet_batch_hard": lambda: (
        pml.TripletMarginLoss(margin=0.1),
        losses.TripletMarginLoss(margin=0.1),
        pml.BatchHardMiner(),
        miners.BatchHardMiner(),
    ),
    "triplet_smooth": lambda: (
        pml.TripletMarginLoss(smooth_loss=True, distance=distances.LpDistance()),
        losses.TripletMarginLoss(smooth_loss=True),
    ),
    "contrastive": lambda: (pml.ContrastiveLoss(0.1, 0.8), losses.ContrastiveLoss(0.1, 0.8)),
    "circle": lambda: (pml.CircleLoss(m=0.3, gamma=64), losses.CircleLoss(m=0.3, gamma=64)),
    "ntxent": lambda: (pml.NTXentLoss(0.2, distance=distances.CosineSimilarity()), losses.NTXentLoss(0.2)),
    "supcon": lambda: (pml.SupConLoss(0.15), losses.SupConLoss(0.15)),
}


def _batch(rows, classes, dim, seed):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    return embeddings, torch.randint(0, classes, (rows,), generator=generator)


def _run(loss, miner, embeddings, labels, ref_emb=None, ref_labels=None):
    leaves = [t.clone().requires_grad_(True) for t in (embeddings, ref_emb) if t is not None]
    refs = leaves[1] if ref_emb is not None else None
    mined = None if miner is None else miner(leaves[0], labels, refs, ref_labels)
    value = loss(leaves[0], labels, mined, refs, ref_labels)
    return value.detach(), torch.autograd.grad(value * GRAD_OUTPUT, leaves)


@pytest.mark.parametrize("with_refs", [False, True], ids=["self", "refs"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", CASES)
def test_loss_matches_pml(case, seed, with_refs):
    ours, theirs, *mining = CASES[case]()
    our_miner, their_miner = mining or (None, None)
    embeddings, labels = _batch(37, 5, 8, seed)
    ref_emb, ref_labels = _batch(23, 6, 8, seed + 100) if with_refs else (None, None)
    expected, expected_grads = _run(theirs, their_miner, embeddings, labels, ref_emb, ref_labels)
    actual, grads = _run(ours, our_miner, embeddings, labels, ref_emb, ref_labels)
    assert_close(actual, expected, msg=case)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad", msg=case)


@pytest.mark.parametrize("case", ["multi_similarity_mined", "multi_similarity", "ntxent", "triplet_batch_hard"])
def test_cross_batch_memory_matches_pml(case):
    """Five batches through a memory of 70 rows (it wraps around): every step's loss and gradient."""
    ours, theirs, *mining = CASES[case]()
    our_miner, their_miner = mining or (None, None)
    our_memory = pml.CrossBatchMemory(ours, 8, memory_size=70, miner=our_miner)
    their_memory = losses.CrossBatchMemory(theirs, 8, memory_size=70, miner=their_miner)
    for step in range(5):
        embeddings, labels = _batch(30, 4, 8, seed=step)
        results = []
        for memory in (their_memory, our_memory):
            leaf = embeddings.clone().requires_grad_(True)
            value = memory(leaf, labels)
            results.append((value.detach(), torch.autograd.grad(value * GRAD_OUTPUT, leaf)[0]))
        (expected, expected_grad), (actual, grad) = results
        assert_close(actual, expected, msg=f"{case} step {step}")
        assert_close(grad, expected_grad, kind="grad", msg=f"{case} step {step}")
        assert torch.equal(our_memory.label_memory, their_memory.label_memory.to(our_memory.label_memory.dtype))
        assert torch.equal(our_memory.embedding_memory, their_memory.embedding_memory)
    our_memory.reset_queue()
    assert not our_memory.has_been_filled and our_memory.queue_idx == 0


def test_refused():
    embeddings, labels = _batch(10, 3, 4, seed=0)
    with pytest.raises(ValueError, match="distance=DotProductSimilarity"):
        pml.MultiSimilarityLoss(distance=distances.DotProductSimilarity())
    with pytest.raises(ValueError, match="distance=CosineSimilarity"):  # triplet on cosine: not what pairloss does
        pml.TripletMarginLoss(distance=distances.CosineSimilarity())
    with pytest.raises(ValueError, match="distance=LpDistance"):
        pml.ContrastiveLoss(distance=distances.LpDistance(normalize_embeddings=False))
    with pytest.raises(ValueError, match="reducer"):
        pml.ContrastiveLoss(reducer=reducers.MeanReducer())
    with pytest.raises(ValueError, match="swap"):
        pml.TripletMarginLoss(swap=True)
    with pytest.raises(ValueError, match="triplets_per_anchor"):
        pml.TripletMarginLoss(triplets_per_anchor=5)
    with pytest.raises(TypeError, match="unexpected keyword arguments: temprature"):
        pml.NTXentLoss(temprature=0.1)
    pml_pairs = miners.MultiSimilarityMiner()(embeddings, labels)
    with pytest.raises(TypeError, match="indices_tuple must come from pairloss.integrations.pml.MultiSimilarityMiner"):
        pml.MultiSimilarityLoss()(embeddings, labels, pml_pairs)
    with pytest.raises(TypeError, match="BatchHardMiner"):
        pml.TripletMarginLoss()(embeddings, labels, pml.MultiSimilarityMiner()(embeddings, labels))
    with pytest.raises(TypeError, match="no miner"):
        pml.SupConLoss()(embeddings, labels, pml.MultiSimilarityMiner()(embeddings, labels))
    with pytest.raises(ValueError, match="labels is required"):
        pml.NTXentLoss()(embeddings)
    with pytest.raises(TypeError, match="BatchHardMiner"):
        pml.CrossBatchMemory(pml.TripletMarginLoss(), 4, miner=pml.MultiSimilarityMiner())
    with pytest.raises(TypeError, match="loss must be a loss of pairloss.integrations.pml"):
        pml.CrossBatchMemory(losses.NTXentLoss(), 4)
    with pytest.raises(TypeError, match="indices_tuple is not supported"):
        pml.CrossBatchMemory(pml.NTXentLoss(), 4)(embeddings, labels, pml_pairs)
