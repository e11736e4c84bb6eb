"""Multi-similarity loss with its miner (Wang et al., CVPR 2019), as in PML's MultiSimilarityLoss/Miner."""

from .._reduction import count_parts, reduce
from ._common import log1p_sum_exp, pair_masks


def mine_multi_similarity(sim, pos, neg, epsilon):
    """Keep hard pairs: a positive that is less similar than the most similar negative plus ε, a negative that
    is more similar than the least similar positive minus ε. Thresholds come from the unmined sets."""
    sim = sim.detach()
    max_neg = sim.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)
    min_pos = sim.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
    return pos & (sim - epsilon < max_neg), neg & (sim + epsilon > min_pos)


def multi_similarity_loss(x, labels, y, ref_labels, *, alpha, beta, base, epsilon, mining, reduction, self_offset=None):
    sim = x @ (x if y is None else y).T
    pos, neg = pair_masks(labels, ref_labels, self_offset)
    if mining:
        pos, neg = mine_multi_similarity(sim, pos, neg, epsilon)
    pos_term = log1p_sum_exp(-alpha * (sim - base), pos) / alpha
    neg_term = log1p_sum_exp(beta * (sim - base), neg) / beta
    rows = pos_term + neg_term
    return reduce(rows, reduction, lambda: count_parts(rows, len(rows)))
