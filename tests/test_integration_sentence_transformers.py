"""pairloss.integrations.sentence_transformers against sentence-transformers' own losses on the same batches:
loss and gradients, every direction and partition mode, cosine and dot similarity, hard-negative columns, the
cached (GradCache) form through a tiny local model, and the options that must be refused."""

import pytest
import torch

import pairloss

from .frameworks import require
from .tolerances import assert_close

require("sentence_transformers")
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.util import cos_sim, dot_score, euclidean_sim

from bench.examples._tiny_text import WORDS, tiny_sentence_transformer
from pairloss.integrations import sentence_transformers as fused

GRAD_OUTPUT = 0.37
BACKENDS = [b for b in ("reference", "cpp", "triton") if b in pairloss.available_backends("cpu")]
CONFIGS = [  # (directions, partition_mode)
    (("query_to_doc",), "joint"),
    (("query_to_doc", "query_to_query"), "joint"),
    (("query_to_doc", "doc_to_query"), "per_direction"),
    (("query_to_doc", "doc_to_query"), "joint"),
    (("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "joint"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model"))


def _columns(rows, dim, columns, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, dim, generator=generator, dtype=dtype).requires_grad_(True) for _ in range(columns)]


def _value_and_grads(loss, columns):
    value = loss.compute_loss_from_embeddings(columns, None)
    return value.detach(), torch.autograd.grad(value * GRAD_OUTPUT, columns)


def _ranking_cases():
    """Every configuration on the float64 engines; the Triton engine (interpreted here, fp32) on the
    four-direction case with hard negatives, which runs every code path."""
    for backend in BACKENDS:
        for similarity in (cos_sim, dot_score):
            for hard_negatives in (0, 2):
                for directions, partition_mode in CONFIGS:
                    if backend != "triton" or (hard_negatives, directions) == (2, CONFIGS[-1][0]):
                        name = f"{backend}-{similarity.__name__}-hard{hard_negatives}-{'+'.join(directions)}-{partition_mode}"
                        yield pytest.param(backend, similarity, hard_negatives, directions, partition_mode, id=name)


@pytest.mark.parametrize("backend,similarity,hard_negatives,directions,partition_mode", list(_ranking_cases()))
def test_ranking_loss_matches_sentence_transformers(backend, similarity, hard_negatives, directions, partition_mode):
    dtype = torch.float32 if backend == "triton" else torch.float64
    columns = _columns(13, 7, 2 + hard_negatives, dtype, seed=len(directions) + hard_negatives)
    options = {"scale": 7.0, "similarity_fct": similarity, "directions": directions, "partition_mode": partition_mode}
    expected, expected_grads = _value_and_grads(losses.MultipleNegativesRankingLoss(None, **options), columns)
    actual, grads = _value_and_grads(fused.MultipleNegativesRankingLoss(None, backend=backend, **options), columns)
    assert_close(actual, expected, msg="loss")
    for k, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        assert_close(grad, expected_grad, kind="grad", msg=f"column {k}")


def test_one_row_batch():
    """B = 1: query_to_query's only candidate is the query itself (left out), the other directions remain."""
    columns = _columns(1, 4, 3, torch.float64, seed=3)
    options = {"directions": CONFIGS[-1][0]}
    expected, expected_grads = _value_and_grads(losses.MultipleNegativesRankingLoss(None, **options), columns)
    actual, grads = _value_and_grads(fused.MultipleNegativesRankingLoss(None, **options), columns)
    assert_close(actual, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad")


def test_symmetric_loss_matches_sentence_transformers():
    columns = _columns(9, 5, 2, torch.float64, seed=5)
    with pytest.warns(DeprecationWarning):
        theirs = losses.MultipleNegativesSymmetricRankingLoss(None, scale=11.0)
    expected, expected_grads = _value_and_grads(theirs, columns)
    actual, grads = _value_and_grads(fused.MultipleNegativesSymmetricRankingLoss(None, scale=11.0), columns)
    assert_close(actual, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad")


def _sentence_batch(rows, seed):
    generator = torch.Generator().manual_seed(seed)

    def sentence():
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (5,), generator=generator))

    return [[sentence() for _ in range(rows)] for _ in range(3)]  # queries, positives, hard negatives


def _model_step(model, loss, texts):
    """The loss through the model, as the trainer calls it; returns the value and every parameter's gradient."""
    model.zero_grad()
    features = [model.tokenize(column) for column in texts]
    value = loss(features, None)
    (value * GRAD_OUTPUT).backward()
    return value.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("directions,partition_mode", [CONFIGS[0], CONFIGS[-1]], ids=["default", "all"])
def test_through_a_model_and_cached(model, directions, partition_mode):
    """The same step through a tiny model: sentence-transformers' loss, the fused one and the fused cached one
    (mini-batches of 3 rows, GradCache's replay) give the same loss and parameter gradients."""
    model = model.double()
    texts = _sentence_batch(8, seed=7)
    options = {"scale": 9.0, "directions": directions, "partition_mode": partition_mode}
    expected, expected_grads = _model_step(model, losses.MultipleNegativesRankingLoss(model, **options), texts)
    for ours in (
        fused.MultipleNegativesRankingLoss(model, **options),
        fused.CachedMultipleNegativesRankingLoss(model, mini_batch_size=3, **options),
    ):
        actual, grads = _model_step(model, ours, texts)
        assert_close(actual, expected, msg=type(ours).__name__)
        assert len(grads) == len(expected_grads)
        for grad, expected_grad in zip(grads, expected_grads):
            assert_close(grad, expected_grad, kind="grad", msg=type(ours).__name__)


def test_cached_loss_matches_sentence_transformers_cached(model):
    """calculate_loss on the same cached mini-batch representations: value and the gradients GradCache keeps."""
    generator = torch.Generator().manual_seed(11)
    reps = [[torch.randn(rows, 6, generator=generator, dtype=torch.float64) for rows in (4, 4, 2)] for _ in range(3)]

    def run(loss):
        leaves = [[r.clone().requires_grad_(True) for r in column] for column in reps]
        value = loss.calculate_loss(leaves, None, with_backward=True)
        return value, [r.grad for column in leaves for r in column]

    options = {"mini_batch_size": 4, "directions": CONFIGS[-1][0]}
    expected, expected_grads = run(losses.CachedMultipleNegativesRankingLoss(model, **options))
    actual, grads = run(fused.CachedMultipleNegativesRankingLoss(model, **options))
    assert not actual.requires_grad
    assert_close(actual, expected)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close(grad, expected_grad, kind="grad")


def test_refused_options(model):
    with pytest.raises(ValueError, match="similarity_fct=euclidean_sim"):
        fused.MultipleNegativesRankingLoss(None, similarity_fct=euclidean_sim)
    with pytest.raises(ValueError, match="hardness_mode='hard_negatives'"):
        fused.MultipleNegativesRankingLoss(None, hardness_mode="hard_negatives", hardness_strength=0.5)
    with pytest.raises(ValueError, match="hardness_mode='all_negatives'"):
        fused.CachedMultipleNegativesRankingLoss(model, hardness_mode="all_negatives", hardness_strength=1.0)
    loss = fused.MultipleNegativesRankingLoss(None, hardness_mode="hard_negatives")  # strength 0: no effect
    loss.hardness_strength = 0.3  # set later: refused at the call, not silently ignored
    with pytest.raises(ValueError, match="hardness_strength"):
        loss.compute_loss_from_embeddings(_columns(3, 4, 2, torch.float64, seed=0), None)
    with pytest.raises(ValueError, match="at least 2 embedding columns"):
        fused.MultipleNegativesRankingLoss(None).compute_loss_from_embeddings(_columns(3, 4, 1, torch.float64, 0), None)
    with pytest.raises(ValueError, match="query_to_doc"):  # sentence-transformers' own checks still run
        fused.MultipleNegativesRankingLoss(None, directions=("doc_to_query",))


def test_is_a_sentence_transformers_loss():
    loss = fused.MultipleNegativesRankingLoss(None, scale=5.0)
    assert isinstance(loss, losses.MultipleNegativesRankingLoss)
    assert loss.get_config_dict()["scale"] == 5.0 and loss.temperature == pytest.approx(0.2)
