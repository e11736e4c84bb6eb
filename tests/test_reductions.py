"""Reduction consistency for every label loss: "none" is per anchor and sums to "sum"; "mean" is PML's reducer
applied to the same terms (MeanReducer for MS over anchors and NT-Xent over positive pairs; AvgNonZeroReducer
over anchors for circle, SupCon and batch-hard triplet)."""

import pytest
import torch

import pairloss
from pairloss._labels import shared_label

from .backend_cases import LABEL_LOSSES, LABEL_SCENARIOS, label_case
from .tolerances import assert_close

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = [(loss_name, {}) for loss_name in LABEL_LOSSES]
CONFIGS += [
    ("multi_similarity_loss", {"mining": False}),
    ("triplet_margin_loss", {"mining": "all"}),
    ("triplet_margin_loss", {"soft": True}),
    ("triplet_margin_loss", {"mining": "all", "soft": True}),
    ("contrastive_loss", {"pos_margin": 0.2, "neg_margin": 0.6}),
]


def _compute(loss_name, case, **options):
    return getattr(pairloss, loss_name)(
        case["embeddings"], case["labels"], case["ref_emb"], case["ref_labels"], self_offset=case.get("self_offset"),
        backend="reference", **options,
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c[0] + "".join(f"-{k}={v}" for k, v in c[1].items()))
def test_none_sums_to_sum(config, dtype):
    loss_name, options = config
    for scenario in LABEL_SCENARIOS:
        case = label_case(scenario, dtype=dtype)
        rows = _compute(loss_name, case, reduction="none", **options)
        assert rows.shape == (case["embeddings"].shape[0],), scenario
        assert bool((rows >= 0).all()), f"{scenario}: negative per-anchor loss {rows}"
        assert_close(rows.sum(), _compute(loss_name, case, reduction="sum", **options), msg=scenario)


def _positive_pairs(case):
    labels, ref_labels = case["labels"], case["ref_labels"]
    # An anchor shares its label(s) with its own copy: with class ids always, multi-hot rows when they hold one.
    own_pairs = int(labels.any(1).sum()) if labels.dim() == 2 else len(labels)
    if ref_labels is None:
        return int(shared_label(labels, labels).sum()) - own_pairs
    own_copies = own_pairs if "self_offset" in case else 0
    return int(shared_label(labels, ref_labels).sum()) - own_copies


@pytest.mark.parametrize("loss_name", LABEL_LOSSES)
def test_mean_is_the_pml_reducer_of_the_rows(loss_name):
    for scenario in LABEL_SCENARIOS:
        case = label_case(scenario, dtype=torch.float64)
        rows = _compute(loss_name, case, reduction="none")
        mean = _compute(loss_name, case)
        if loss_name == "multi_similarity_loss":
            expected = rows.mean()
        elif loss_name == "ntxent_loss":
            pairs = _positive_pairs(case)
            expected = rows.sum() / pairs if pairs else rows.sum()
        elif loss_name in ("circle_loss", "supcon_loss", "triplet_margin_loss"):  # batch-hard: one term per anchor
            nonzero = rows[rows > 0]
            expected = nonzero.mean() if nonzero.numel() else rows.sum()
        else:  # contrastive: two averages over pairs, not a function of the rows; bounded by them
            assert float(mean) >= 0
            continue
        assert_close(mean, expected, msg=scenario)
