"""Multiple-negatives ranking (InfoNCE over in-batch and hard negatives, in up to four directions), fused: the
loss of sentence-transformers' MultipleNegativesRankingLoss computed from per-row log-sum-exps, never a
B × (B·k) score matrix."""

import torch

from .. import _checks as checks
from .._logsumexp import row_logsumexp
from .._numerics import row_dots, unit_rows
from ..backends import resolve

DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
PARTITION_MODES = ("joint", "per_direction")


def check_ranking_options(scale, directions, partition_mode):
    """sentence-transformers' own rules, with the argument named."""
    checks.check_positive(scale=scale)
    directions = tuple(directions)
    unknown = set(directions) - set(DIRECTIONS)
    if not directions or unknown:
        raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}, got {directions}")
    if "query_to_doc" not in directions:
        raise ValueError("directions must include 'query_to_doc': it holds the positive pair")
    checks.check_choice("partition_mode", partition_mode, PARTITION_MODES)
    if partition_mode == "per_direction" and {"query_to_query", "doc_to_doc"} & set(directions):
        raise ValueError(
            "partition_mode='per_direction' needs the positive in every direction's candidates; 'query_to_query' "
            "and 'doc_to_doc' have none: use partition_mode='joint'"
        )
    return directions


def multiple_negatives_ranking_loss(
    queries, docs, *, scale=20.0, cosine=True, directions=("query_to_doc",), partition_mode="joint", offset=0,
    local_rows=None, backend="auto",
):  # fmt: skip
    """Mean over the anchors i (rows ``offset … offset + local_rows`` of ``queries``, default all) of
    log Z_i − scale·s(q_i, d_i), with s the cosine (``cosine``) or dot similarity and d = ``docs[0]``.

    ``docs`` is a list of (N, D) columns: the positives, then any hard negatives (row i of each column belongs
    to query i). Z_i sums e^{scale·s} over the candidates of every direction: query_to_doc, q_i against every
    document; query_to_query, against the other queries; doc_to_query, d_i against every query; doc_to_doc,
    d_i against the documents of the other queries. ``partition_mode="per_direction"`` averages the directions'
    log Z instead of pooling them.
    """
    directions = check_ranking_options(scale, directions, partition_mode)
    docs = list(docs)
    if not docs:
        raise ValueError("docs must hold at least one column (the positives)")
    for k, column in enumerate(docs):
        checks.check_towers("queries", queries, f"docs[{k}]", column)
    checks.check_backend(backend)
    local_rows = queries.shape[0] - offset if local_rows is None else local_rows
    ntxent = resolve(backend, queries.device, "ntxent_loss")
    if cosine:
        queries, *docs = (unit_rows(rows) for rows in (queries, *docs))
    anchors = slice(offset, offset + local_rows)
    query, doc = scale * queries[anchors], scale * docs[0][anchors]
    parts = {  # each direction's log-sum-exps over its reference blocks
        "query_to_doc": lambda: [row_logsumexp(ntxent, query, column) for column in docs],
        "query_to_query": lambda: [row_logsumexp(ntxent, query, queries, self_offset=offset)],
        "doc_to_query": lambda: [row_logsumexp(ntxent, doc, queries)],
        "doc_to_doc": lambda: [row_logsumexp(ntxent, doc, column, self_offset=offset) for column in docs],
    }
    per_direction = [torch.stack(parts[name]()) for name in directions]
    if partition_mode == "joint":
        log_z = torch.cat(per_direction).logsumexp(0)
    else:
        log_z = torch.stack([lse.logsumexp(0) for lse in per_direction]).mean(0)
    positive = row_dots(query, docs[0][anchors])
    return (log_z - positive).mean().to(queries.dtype)
