"""One rank of the gloo process groups that tests/test_integration_distributed.py spawns (not a test module).

Each rank runs the frameworks' own distributed losses (OpenCLIP's ClipLoss and SigLipLoss, sentence-transformers'
MultipleNegativesRankingLoss with gather_across_devices) and pairloss's drop-ins on the same local rows, and saves
both values and gradients; the parent compares them rank by rank.
"""

import itertools
import sys

import torch
import torch.distributed as dist

from bench.examples._open_clip import open_clip_losses
from pairloss.integrations import open_clip as fused_open_clip

ROWS, DIM = 3, 5  # per rank: OpenCLIP needs equal local batches
GRAD_OUTPUT = 0.37
MNRL_CONFIGS = [
    {},
    {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"), "scale": 7.0},
    {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction", "similarity": "dot"},
]


def _local_rows(world, rank, columns, seed):
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randn(world * ROWS, DIM, generator=generator, dtype=torch.float64) for _ in range(columns)]
    return [r[rank * ROWS : (rank + 1) * ROWS].clone().requires_grad_(True) for r in rows]


def _run(loss, inputs):
    value = loss(*inputs)
    grads = torch.autograd.grad(value * GRAD_OUTPUT, [t for t in inputs if t.requires_grad])
    return value.detach(), *grads


def open_clip_cases(world, rank, theirs):
    results = {}
    for local_loss, gather_with_grad in itertools.product((False, True), repeat=2):
        for name, module in (("theirs", theirs), ("ours", fused_open_clip)):
            image, text = (torch.nn.functional.normalize(t, dim=1) for t in _local_rows(world, rank, 2, seed=1))
            scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
            loss = module.ClipLoss(local_loss, gather_with_grad, rank=rank, world_size=world)
            results[("clip", local_loss, gather_with_grad, name)] = _run(loss, [image, text, scale])
    for dist_impl in ("bidir", "shift", "reduce", "gather"):
        for name, module in (("theirs", theirs), ("ours", fused_open_clip)):
            image, text = _local_rows(world, rank, 2, seed=2)
            scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
            bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
            loss = module.SigLipLoss(rank=rank, world_size=world, dist_impl=dist_impl)
            results[("siglip", dist_impl, name)] = _run(loss, [image, text, scale, bias])
    return results


def _on_embeddings(loss):
    """A sentence-transformers loss as a function of its embedding columns."""
    return lambda *columns: loss.compute_loss_from_embeddings(list(columns), None)


def sentence_transformers_cases(world, rank):
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.util import cos_sim, dot_score

    from pairloss.integrations import sentence_transformers as fused

    results = {}
    for index, config in enumerate(MNRL_CONFIGS):
        options = dict(config, gather_across_devices=True)
        options["similarity_fct"] = dot_score if options.pop("similarity", "cos") == "dot" else cos_sim
        for name, module in (("theirs", losses), ("ours", fused)):
            columns = _local_rows(world, rank, 3, seed=3 + index)
            loss = module.MultipleNegativesRankingLoss(None, **options)
            results[("mnrl", index, name)] = _run(_on_embeddings(loss), columns)
    return results


def main(init_file, world, rank, out_path):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=world, rank=rank)
    try:
        theirs = open_clip_losses()
        results = {} if theirs is None else open_clip_cases(world, rank, theirs)
        results.update(sentence_transformers_cases(world, rank))
        torch.save(results, out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
