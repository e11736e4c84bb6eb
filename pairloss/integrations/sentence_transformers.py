"""Drop-in sentence-transformers losses computed by pairloss's fused engines.

``MultipleNegativesRankingLoss``, ``MultipleNegativesSymmetricRankingLoss`` and
``CachedMultipleNegativesRankingLoss`` subclass sentence-transformers' own classes (same constructors, same
numbers, usable with ``SentenceTransformerTrainer``); only the loss computation changes: per-row log-sum-exps
from the fused engines instead of the B × (B·k) score matrices, so the loss stage's memory is O(B·D).

    from pairloss.integrations.sentence_transformers import MultipleNegativesRankingLoss
    loss = MultipleNegativesRankingLoss(model)          # instead of losses.MultipleNegativesRankingLoss(model)

Needs ``sentence-transformers`` (an optional extra). What the fused loss cannot reproduce (hardness weighting,
similarity functions other than cosine and dot product) is refused with an error, never approximated.
"""

import torch
import torch.distributed as dist
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.util import cos_sim, similarity_fct_name

from ..distributed._losses import global_rows
from ._ranking import multiple_negatives_ranking_loss

# similarity_fct (by sentence-transformers' name for it) -> whether the rows are normalised first
SIMILARITIES = {"cos_sim": True, "dot_score": False}


def _check_fusable(loss):
    """Refuse the options whose numbers the fused loss would not reproduce."""
    name = similarity_fct_name(loss.similarity_fct)
    if name not in SIMILARITIES:
        raise ValueError(
            f"similarity_fct={name} is not supported by pairloss's fused loss: use cos_sim or dot_score, or "
            "sentence-transformers' own loss class"
        )
    if loss.hardness_mode is not None and loss.hardness_strength > 0:
        raise ValueError(
            f"hardness_mode={loss.hardness_mode!r} with hardness_strength > 0 is not supported by pairloss's fused "
            "loss: use sentence-transformers' own loss class for hardness weighting"
        )
    return SIMILARITIES[name]


def fused_ranking_loss(loss, embeddings, backend):
    """The mean ranking loss of this rank's rows; ``loss`` holds the hyper-parameters, ``embeddings`` is
    [queries, positives, hard negatives…] (local rows). With ``gather_across_devices`` the candidates are every
    rank's rows, gathered with their gradients (the owners receive them), as sentence-transformers does."""
    cosine = _check_fusable(loss)
    if len(embeddings) < 2:
        raise ValueError(f"expected at least 2 embedding columns (queries, documents), got {len(embeddings)}")
    queries, *docs = embeddings
    local_rows, offset = queries.shape[0], 0
    if loss.gather_across_devices and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        (queries, *docs), offset, _ = global_rows([queries, *docs], None)
    return multiple_negatives_ranking_loss(
        queries, docs, scale=loss.scale, cosine=cosine, directions=loss.directions,
        partition_mode=loss.partition_mode, offset=offset, local_rows=local_rows, backend=backend,
    )  # fmt: skip


class MultipleNegativesRankingLoss(losses.MultipleNegativesRankingLoss):
    """sentence-transformers' MultipleNegativesRankingLoss (same arguments), fused; ``backend`` picks the
    pairloss engine."""

    def __init__(self, model, scale=20.0, similarity_fct=cos_sim, gather_across_devices=False,
                 directions=("query_to_doc",), partition_mode="joint", hardness_mode=None, hardness_strength=0.0,
                 *, backend="auto"):  # fmt: skip
        super().__init__(
            model, scale=scale, similarity_fct=similarity_fct, gather_across_devices=gather_across_devices,
            directions=directions, partition_mode=partition_mode, hardness_mode=hardness_mode,
            hardness_strength=hardness_strength,
        )  # fmt: skip
        _check_fusable(self)
        self.backend = backend

    def compute_loss_from_embeddings(self, embeddings, labels=None):
        return fused_ranking_loss(self, list(embeddings), self.backend)


class MultipleNegativesSymmetricRankingLoss(MultipleNegativesRankingLoss):
    """sentence-transformers' MultipleNegativesSymmetricRankingLoss: query→document and document→query, each
    direction normalised on its own, averaged."""

    def __init__(self, model, scale=20.0, similarity_fct=cos_sim, gather_across_devices=False, *, backend="auto"):
        super().__init__(
            model, scale=scale, similarity_fct=similarity_fct, gather_across_devices=gather_across_devices,
            directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction", backend=backend,
        )  # fmt: skip


class CachedMultipleNegativesRankingLoss(losses.CachedMultipleNegativesRankingLoss):
    """sentence-transformers' CachedMultipleNegativesRankingLoss (GradCache: the model runs on
    ``mini_batch_size`` rows at a time), with the loss stage fused over the whole batch at once: it needs no
    chunking, its memory being O(B·D)."""

    def __init__(self, model, scale=20.0, similarity_fct=cos_sim, mini_batch_size=32, mini_batch_num_tokens=None,
                 gather_across_devices=False, directions=("query_to_doc",), partition_mode="joint",
                 show_progress_bar=False, hardness_mode=None, hardness_strength=0.0, *, backend="auto"):  # fmt: skip
        super().__init__(
            model, scale=scale, similarity_fct=similarity_fct, mini_batch_size=mini_batch_size,
            mini_batch_num_tokens=mini_batch_num_tokens, gather_across_devices=gather_across_devices,
            directions=directions, partition_mode=partition_mode, show_progress_bar=show_progress_bar,
            hardness_mode=hardness_mode, hardness_strength=hardness_strength,
        )  # fmt: skip
        _check_fusable(self)
        self.backend = backend

    def calculate_loss(self, reps, labels=None, *, with_backward=False):
        loss = fused_ranking_loss(self, [torch.cat(column) for column in reps], self.backend)
        if with_backward:
            loss.backward()
            loss = loss.detach()
        return loss
