"""Multi-hot labels and soft (Jaccard) positives: the packing the engines read, the oracles by hand and by
gradcheck, one-hot rows against class ids on every engine, and the memory bank. The engines are compared with
the oracles on the multi-hot scenarios of backend_cases (every loss, option and engine)."""

import functools

import pytest
import torch
import torch.nn.functional as F

import pairloss
from pairloss._labels import engine_labels

from .backend_cases import LABEL_LOSSES, OPTIONS, label_case, random_multi_hot, soft_positives
from .test_gradcheck import gradcheck, smooth_point
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

ENGINES = [name for name in ("reference", "cpp", "triton") if name in pairloss.available_backends("cpu")]
F64 = torch.float64


@pytest.mark.parametrize("width", [1, 63, 64, 65, 128, 1000])
def test_packed_words_hold_each_label_bit(width):
    labels = torch.rand(9, width, generator=torch.Generator().manual_seed(width)) < 0.3
    words = engine_labels(labels)
    assert words.dtype == torch.int64 and words.shape == (9, -(-width // 64)) and words.is_contiguous()
    bits = torch.stack([(words[:, k // 64] >> (k % 64)) & 1 for k in range(width)], 1)
    assert torch.equal(bits.bool(), labels)
    padding = [(words[:, k // 64] >> (k % 64)) & 1 for k in range(width, words.shape[1] * 64)]
    assert all(not bool(bit.any()) for bit in padding)


def test_class_ids_pass_through_as_int64():
    labels = torch.tensor([3, 1, 3], dtype=torch.int32)[::1]
    assert torch.equal(engine_labels(labels), labels.long())


def _jaccard_by_hand(a, b):
    common = sum(1 for k in range(len(a)) if a[k] and b[k])
    either = sum(1 for k in range(len(a)) if a[k] or b[k])
    return common / either if either else 0.0


def test_jaccard_supcon_and_ntxent_by_hand():
    """The soft-positive formulas of the issue, one pair at a time, against the oracles."""
    labels = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)
    x = F.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64), dim=1)
    tau = 0.4
    logits = (x @ x.T / tau).tolist()
    supcon_rows, ntxent_sum, weight_total = [], 0.0, 0.0
    for i in range(5):
        others = [k for k in range(5) if k != i]
        weights = {p: _jaccard_by_hand(labels[i], labels[p]) for p in others}
        positives = [p for p in others if bool((labels[i] & labels[p]).any())]
        negatives = [n for n in others if n not in positives]
        log_all = torch.tensor([logits[i][k] for k in others], dtype=F64).logsumexp(0).item()
        if positives:
            total = sum(weights[p] for p in positives)
            supcon_rows.append(-sum(weights[p] * (logits[i][p] - log_all) for p in positives) / total)
        for p in positives:
            terms = torch.tensor([logits[i][p]] + [logits[i][n] for n in negatives], dtype=F64)
            ntxent_sum += weights[p] * -(logits[i][p] - terms.logsumexp(0).item())
            weight_total += weights[p]
    supcon = pairloss.supcon_loss(x, labels, temperature=tau, positive_weights="jaccard", backend="reference")
    ntxent = pairloss.ntxent_loss(x, labels, temperature=tau, positive_weights="jaccard", backend="reference")
    assert abs(supcon.item() - sum(supcon_rows) / len(supcon_rows)) < 1e-12
    assert abs(ntxent.item() - ntxent_sum / weight_total) < 1e-12


def test_rows_without_labels_have_no_positives():
    labels = torch.zeros(6, 5, dtype=torch.bool)
    labels[:3, 1] = True  # rows 3-5: no label, so only negatives (of every row)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    for engine in ENGINES:
        rows = pairloss.supcon_loss(x, labels, reduction="none", backend=engine)
        assert bool((rows[3:] == 0).all()) and bool((rows[:3] > 0).all()), engine


def _one_hot(labels, width):
    return F.one_hot(labels.long(), width).bool()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scenario", ["odd", "odd_ref", "memory_bank", "single_class", "all_distinct_ref"])
@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_one_hot_rows_equal_class_ids(engine, scenario, loss_name):
    case = label_case(scenario, dtype=F64 if engine != "triton" else torch.float32)
    width = int(max(case["labels"].max(), -1 if case["ref_labels"] is None else case["ref_labels"].max())) + 2
    for options in OPTIONS[loss_name]:
        if soft_positives(options):
            continue

        def run(labels, ref_labels, options=options):
            x = case["embeddings"].detach().clone().requires_grad_(True)
            y = None if case["ref_emb"] is None else case["ref_emb"].detach().clone().requires_grad_(True)
            loss = getattr(pairloss, loss_name)(
                x, labels, y, ref_labels, self_offset=case.get("self_offset"), backend=engine, **options
            )
            leaves = [t for t in (x, y) if t is not None]
            weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
            return loss.detach(), torch.autograd.grad((loss * weights).sum(), leaves, allow_unused=True)

        ids = run(case["labels"], case["ref_labels"])
        ref_hot = None if case["ref_labels"] is None else _one_hot(case["ref_labels"], width)
        hot = run(_one_hot(case["labels"], width), ref_hot)
        msg = f"{loss_name} [{engine}] {scenario} {options}"
        assert_close(hot[0], ids[0], msg=msg)
        for got, expected in zip(hot[1], ids[1]):
            assert_close(got, expected, kind="grad", msg=msg)


def test_jaccard_of_one_hot_rows_is_uniform():
    """One label per row: every positive pair has the same label set (weight 1), so soft positives change
    nothing (on a batch with negatives, where PML's batch rule does not apply)."""
    case = label_case("odd", dtype=F64)
    hot = _one_hot(case["labels"], 4)
    for loss in (pairloss.supcon_loss, pairloss.ntxent_loss):
        uniform = loss(case["embeddings"], hot, backend="reference")
        jaccard = loss(case["embeddings"], hot, positive_weights="jaccard", backend="reference")
        assert_close(jaccard, uniform)


def _multi_hot_inputs(seed, with_ref):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(7, 3, generator=generator, dtype=F64)
    labels = random_multi_hot(generator, 7, 70, 4, 0.4)
    if not with_ref:
        return x, labels, None, None
    return x, labels, torch.randn(6, 3, generator=generator, dtype=F64), random_multi_hot(generator, 6, 70, 4, 0.4)


GRADCHECK_CASES = [
    ("supcon_loss", {"positive_weights": "jaccard"}),
    ("ntxent_loss", {"positive_weights": "jaccard", "temperature": 0.3}),
    ("supcon_loss", {}),
    ("multi_similarity_loss", {}),
    ("triplet_margin_loss", {"mining": "all", "soft": True}),
    ("contrastive_loss", {"neg_margin": 1.2}),
]


@pytest.mark.parametrize("with_ref", [False, True], ids=["self", "ref"])
@pytest.mark.parametrize("loss_name,options", GRADCHECK_CASES, ids=[f"{n}-{o}" for n, o in GRADCHECK_CASES])
def test_multi_hot_oracles_gradcheck(loss_name, options, with_ref):
    inputs = next(
        inputs
        for inputs in map(functools.partial(_multi_hot_inputs, with_ref=with_ref), range(500))
        if smooth_point(loss_name, options, *inputs)
    )
    x, labels, ref_emb, ref_labels = inputs
    function = getattr(pairloss, loss_name)
    if ref_emb is None:
        gradcheck(lambda a: function(a, labels, backend="reference", **options), (x.requires_grad_(),))
    else:
        gradcheck(
            lambda a, b: function(a, labels, b, ref_labels, backend="reference", **options),
            (x.requires_grad_(), ref_emb.requires_grad_()),
        )


def test_per_anchor_temperatures_with_soft_positives_gradcheck():
    x, labels, _, _ = _multi_hot_inputs(3, with_ref=False)
    temperature = torch.linspace(0.2, 0.6, x.shape[0], dtype=F64)
    for loss in (pairloss.supcon_loss, pairloss.ntxent_loss):
        gradcheck(
            lambda a, t, loss=loss: loss(a, labels, temperature=t, positive_weights="jaccard", backend="reference"),
            (x.clone().requires_grad_(), temperature.clone().requires_grad_()),
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_memory_bank_of_multi_hot_rows(engine):
    """CrossBatchMemory keeps multi-hot label rows; each step equals the loss against the memory's rows."""
    dtype = torch.float32
    loss = functools.partial(pairloss.supcon_loss, positive_weights="jaccard", backend=engine)
    memory = pairloss.CrossBatchMemory(loss, embedding_size=6, memory_size=20)
    generator = torch.Generator().manual_seed(4)
    seen_x, seen_labels = [], []
    for _ in range(4):
        x = torch.randn(8, 6, generator=generator, dtype=dtype)
        labels = random_multi_hot(generator, 8, 130, 5, 0.35)
        value = memory(x, labels)
        seen_x.append(x)
        seen_labels.append(labels)
        bank, bank_labels = torch.cat(seen_x)[-20:], torch.cat(seen_labels)[-20:]
        # The bank's rows in memory order: the ring buffer wraps, so roll them into place.
        start = memory.queue_idx if memory.has_been_filled else 0
        bank, bank_labels = bank.roll(start, 0), bank_labels.roll(start, 0)
        own = (memory.queue_idx - 8) % 20 if memory.has_been_filled else len(torch.cat(seen_x)) - 8
        expected = loss(x, labels, bank, bank_labels, self_offset=own)
        assert_close(value, expected, msg=f"{engine} step {len(seen_x)}")
    with pytest.raises(ValueError, match="class ids but the memory holds multi-hot rows of 130 labels"):
        memory(torch.randn(2, 6), torch.tensor([0, 1]))
    memory.reset_queue()
    memory.loss = functools.partial(pairloss.supcon_loss, backend=engine)
    memory(torch.randn(2, 6), torch.tensor([0, 1]))  # an empty memory takes the new form
    assert memory.label_memory.dtype == torch.int64
