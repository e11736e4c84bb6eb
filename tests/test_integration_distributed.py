"""The integrations on real gloo process groups of W = 2..4 ranks (spawned here, bounded in time): on every rank,
pairloss's OpenCLIP ClipLoss (local_loss × gather_with_grad) and SigLipLoss (every dist_impl) and
sentence-transformers' MultipleNegativesRankingLoss with gather_across_devices give the frameworks' own values
and gradients (embeddings, logit scale and bias), in float64."""

import pytest
import torch.distributed as dist

from .frameworks import require, require_open_clip_losses
from .process_group import run_ranks
from .tolerances import assert_close

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
require("sentence_transformers")
require_open_clip_losses()


@pytest.fixture(scope="module", params=(2, 3, 4), ids=lambda w: f"W{w}")
def ranks(request, tmp_path_factory):
    """Run one process group of W ranks; returns each rank's saved results."""
    return run_ranks("tests.framework_worker", request.param, tmp_path_factory.mktemp(f"world{request.param}"))


def _pairs(results, kind):
    """(case, theirs, ours) for every case of ``kind`` on one rank."""
    for key, theirs in results.items():
        if key[0] == kind and key[-1] == "theirs":
            yield key[:-1], theirs, results[(*key[:-1], "ours")]


@pytest.mark.parametrize("kind", ["clip", "siglip", "mnrl"])
def test_same_values_and_gradients_on_every_rank(ranks, kind):
    cases = 0
    for rank, results in enumerate(ranks):
        for case, theirs, ours in _pairs(results, kind):
            assert len(ours) == len(theirs)
            assert_close(ours[0], theirs[0], msg=f"rank {rank} {case} loss")
            for k, (grad, expected) in enumerate(zip(ours[1:], theirs[1:])):
                assert_close(grad, expected, kind="grad", msg=f"rank {rank} {case} gradient {k}")
            cases += 1
    assert cases == len(ranks) * {"clip": 4, "siglip": 4, "mnrl": 3}[kind]
