"""One rank of the gloo process groups that tests/test_distributed.py spawns (not a test module).

Each rank takes its slice of a seeded global batch, computes every case with pairloss.distributed and saves the
values and gradients; the parent compares them with the single-process oracle on the whole batch.
"""

import sys

import torch
import torch.distributed as dist

import pairloss

DIM = 5
LR = 0.5


def split_sizes(world):
    """Unequal local batch sizes (a rank with a single row included when W ≥ 3)."""
    return [(4, 7, 1, 5)[rank] for rank in range(world)]


def per_anchor_temperatures(world):
    """One temperature per row of the global batch, 0.1 … 0.5."""
    total = sum(split_sizes(world))
    return 0.1 + 0.4 * torch.arange(total, dtype=torch.float64) / total


# Per-anchor margins of the global batch, by loss (constants: no gradient).
MARGIN_CASES = {"triplet_margin_loss": ("margin",), "contrastive_loss": ("pos_margin", "neg_margin")}


def per_anchor_margins(world):
    """One margin per row of the global batch, 0.1 … 0.9."""
    total = sum(split_sizes(world))
    return 0.1 + 0.8 * torch.arange(total, dtype=torch.float64) / total


def global_batch(world, seed=0):
    generator = torch.Generator().manual_seed(seed)
    total = sum(split_sizes(world))
    embeddings = torch.randn(total, DIM, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (total,), generator=generator)
    image = torch.nn.functional.normalize(torch.randn(total, DIM, generator=generator, dtype=torch.float64), dim=1)
    text = torch.nn.functional.normalize(torch.randn(total, DIM, generator=generator, dtype=torch.float64), dim=1)
    weights = torch.randn(total, generator=generator, dtype=torch.float64)  # grad_output of "none"
    return embeddings, labels, image, text, weights


def global_multi_hot(world, seed=0):
    """Multi-hot labels of the global batch: 70 label columns (two words), 6 of them in use."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(sum(split_sizes(world)), 70, dtype=torch.bool)
    labels[:, [0, 5, 63, 64, 65, 69]] = torch.rand(labels.shape[0], 6, generator=generator) < 0.3
    return labels


# (loss, options, labels: class ids or multi-hot)
LABEL_CASES = [
    ("multi_similarity_loss", {}, "ids"),
    ("multi_similarity_loss", {"mining": False}, "ids"),
    ("triplet_margin_loss", {"margin": 0.3}, "ids"),
    ("triplet_margin_loss", {"mining": "all", "margin": 0.3}, "ids"),
    ("contrastive_loss", {"pos_margin": 0.1, "neg_margin": 0.9}, "ids"),
    ("circle_loss", {}, "ids"),
    ("ntxent_loss", {"temperature": 0.3}, "ids"),
    ("supcon_loss", {}, "ids"),
    ("multi_similarity_loss", {}, "multi-hot"),
    ("triplet_margin_loss", {"margin": 0.3}, "multi-hot"),
    ("ntxent_loss", {"temperature": 0.3, "positive_weights": "jaccard"}, "multi-hot"),
    ("supcon_loss", {"positive_weights": "jaccard"}, "multi-hot"),
]


def case_labels(world, kind):
    """The global batch's labels of a label case."""
    return global_batch(world)[1] if kind == "ids" else global_multi_hot(world)


REDUCTIONS = ("mean", "sum", "none")
TWO_TOWER_BACKENDS = ("reference", "cpp")
GRAD_OUTPUT = 0.37


def _local(tensor, world, rank):
    sizes = split_sizes(world)
    start = sum(sizes[:rank])
    return tensor[start : start + sizes[rank]]


def _backward_weight(loss, weights):
    return (loss * weights).sum() if loss.dim() else loss * GRAD_OUTPUT


def label_strategies(backend, options):
    """The strategies a label-loss case runs with: the ring takes the fused engines, not the all-triplets
    variant; the Triton engine (interpreted here, slow) is tested on the ring only, its own tests cover the rest."""
    ring = backend in ("cpp", "triton") and options.get("mining") != "all"
    if backend == "triton":
        return ("ring",) if ring else ()
    return pairloss.distributed.STRATEGIES if ring else ("gather",)


def run_cases(world, rank, backend):
    embeddings, labels, image, text, weights = global_batch(world)
    x, y, local_weights = _local(embeddings, world, rank), _local(labels, world, rank), _local(weights, world, rank)
    results = {}
    for loss_name, options, kind in LABEL_CASES:
        local_labels = _local(case_labels(world, kind), world, rank)
        for strategy in label_strategies(backend, options):
            for reduction in REDUCTIONS:
                leaf = x.clone().requires_grad_(True)
                loss = getattr(pairloss.distributed, loss_name)(
                    leaf, local_labels, reduction=reduction, backend=backend, strategy=strategy, **options
                )
                (grad,) = torch.autograd.grad(_backward_weight(loss, local_weights), leaf)
                results[(loss_name, repr(options), kind, strategy, reduction)] = (loss.detach(), grad)
    results.update(run_per_anchor_cases(world, rank, backend))
    if backend not in TWO_TOWER_BACKENDS:
        return results
    image_local, text_local = _local(image, world, rank), _local(text, world, rank)
    for strategy in pairloss.distributed.STRATEGIES:
        # Diagonal positives, then several positives per row (the label losses' labels as pair ids).
        for pair_ids, case in ((None, strategy), (y, f"{strategy} labels")):
            for reduction in REDUCTIONS:
                leaves = [image_local.clone().requires_grad_(True), text_local.clone().requires_grad_(True)]
                scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
                loss = pairloss.distributed.clip_loss(
                    *leaves, scale, labels=pair_ids, reduction=reduction, backend=backend, strategy=strategy
                )
                grads = torch.autograd.grad(_backward_weight(loss, local_weights), [*leaves, scale])
                results[("clip_loss", case, reduction)] = (loss.detach(), *grads)
            leaves = [image_local.clone().requires_grad_(True), text_local.clone().requires_grad_(True)]
            scale, bias = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (9.0, -4.0))
            loss = pairloss.distributed.siglip_loss(
                *leaves, scale, bias, labels=pair_ids, backend=backend, strategy=strategy
            )
            grads = torch.autograd.grad(loss * GRAD_OUTPUT, [*leaves, scale, bias])
            results[("siglip_loss", case, "mean")] = (loss.detach(), *grads)
    return results


def run_per_anchor_cases(world, rank, backend):
    """Per-anchor hyper-parameters with every strategy the backend runs: each rank passes its rows' learnable
    temperatures (NT-Xent, SupCon) or margins (triplet, contrastive)."""
    embeddings, labels, _, _, weights = global_batch(world)
    x, y, local_weights = _local(embeddings, world, rank), _local(labels, world, rank), _local(weights, world, rank)
    temperatures = _local(per_anchor_temperatures(world), world, rank)
    margins = _local(per_anchor_margins(world), world, rank)
    results = {}
    for strategy in label_strategies(backend, {}):
        for reduction in REDUCTIONS:
            for loss_name in ("ntxent_loss", "supcon_loss"):
                leaves = [x.clone().requires_grad_(True), temperatures.clone().requires_grad_(True)]
                loss = getattr(pairloss.distributed, loss_name)(
                    leaves[0], y, temperature=leaves[1], reduction=reduction, backend=backend, strategy=strategy
                )
                grads = torch.autograd.grad(_backward_weight(loss, local_weights), leaves)
                results[(loss_name, "per-anchor temperature", strategy, reduction)] = (loss.detach(), *grads)
            for loss_name, names in MARGIN_CASES.items():
                leaf = x.clone().requires_grad_(True)
                loss = getattr(pairloss.distributed, loss_name)(
                    leaf, y, reduction=reduction, backend=backend, strategy=strategy, **dict.fromkeys(names, margins)
                )
                (grad,) = torch.autograd.grad(_backward_weight(loss, local_weights), leaf)
                results[(loss_name, "per-anchor margins", strategy, reduction)] = (loss.detach(), grad)
    return results


HALF_CASES = [("multi_similarity_loss", {}), ("triplet_margin_loss", {"margin": 0.3}), ("supcon_loss", {})]


def run_half_cases(world, rank, backend):
    """The global-batch losses on bf16 local rows (mean reduction; CLIP with an fp32 logit scale)."""
    embeddings, labels, image, text, _ = global_batch(world)
    x, y = _local(embeddings, world, rank).bfloat16(), _local(labels, world, rank)
    results = {}
    for loss_name, options in HALF_CASES:
        for strategy in label_strategies(backend, options):
            leaf = x.clone().requires_grad_(True)
            loss = getattr(pairloss.distributed, loss_name)(leaf, y, backend=backend, strategy=strategy, **options)
            (grad,) = torch.autograd.grad(loss * GRAD_OUTPUT, leaf)
            results[(loss_name, strategy)] = (loss.detach(), grad)
    if backend not in TWO_TOWER_BACKENDS:
        return results
    towers = [_local(image, world, rank).bfloat16(), _local(text, world, rank).bfloat16()]
    for strategy in pairloss.distributed.STRATEGIES:
        leaves = [tower.clone().requires_grad_(True) for tower in towers]
        scale = torch.tensor(12.0, requires_grad=True)
        loss = pairloss.distributed.clip_loss(*leaves, scale, backend=backend, strategy=strategy)
        results[("clip_loss", strategy)] = (loss.detach(), *torch.autograd.grad(loss * GRAD_OUTPUT, [*leaves, scale]))
    return results


def make_model(seed=1):
    torch.manual_seed(seed)
    return torch.nn.Linear(DIM, 3, dtype=torch.float64)


def train_ddp(world, rank, steps=3):
    """A few SGD steps of a DDP-wrapped linear embedder on the distributed multi-similarity loss."""
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(steps):
        embeddings, labels, *_ = global_batch(world, seed=10 + step)
        loss = pairloss.distributed.multi_similarity_loss(
            model(_local(embeddings, world, rank)), _local(labels, world, rank), backend="reference"
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def main(init_file, world, rank, out_path, backends):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", world_size=world, rank=rank)
    try:
        results = {backend: run_cases(world, rank, backend) for backend in backends.split(",")}
        results["bf16"] = {backend: run_half_cases(world, rank, backend) for backend in backends.split(",")}
        results["ddp"] = train_ddp(world, rank)
        torch.save(results, out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
