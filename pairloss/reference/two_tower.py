"""Two-tower (image–text, query–document) losses where row i of one tower is paired with row i of the other.

CLIP and SigLIP follow OpenCLIP's ClipLoss and SigLipLoss formulas (features are used as given: OpenCLIP's
models normalise them before the loss). MW is the pairwise AUC surrogate on cosine similarity.
"""

import torch
import torch.nn.functional as F

from .._numerics import softplus
from .._reduction import count_parts, reduce
from ._common import own_columns


def clip_loss(image, text, logit_scale, *, reduction):
    logits = logit_scale * image @ text.T
    target = torch.arange(len(image), device=image.device)
    image_to_text = F.cross_entropy(logits, target, reduction="none")
    text_to_image = F.cross_entropy(logits.T, target, reduction="none")
    rows = (image_to_text + text_to_image) / 2
    return reduce(rows, reduction, lambda: count_parts(rows, len(rows)))


def siglip_loss(image, text, logit_scale, logit_bias, *, positive_offset=None):
    """``positive_offset``: image row i's positive is text row (positive_offset + i) mod M (default: row i)."""
    logits = logit_scale * image @ text.T + logit_bias
    positive = own_columns(len(image), len(text), positive_offset or 0, image.device)
    signs = 2 * positive.to(logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / len(image)


def mw_loss(queries, docs, *, temperature):
    """Per query i: mean over the other documents n of softplus((s_in − s_ii)/τ); mean over queries.

    ``docs`` may hold more rows than ``queries``: the extra rows are negatives for every query.
    """
    sim = queries @ docs.T / temperature
    rows = torch.arange(len(queries), device=queries.device)
    positive = sim[rows, rows]
    negative = torch.ones_like(sim, dtype=torch.bool)
    negative[rows, rows] = False
    terms = softplus(sim - positive[:, None]) * negative
    per_query = terms.sum(1) / max(docs.shape[0] - 1, 1)
    return per_query.mean()


def multi_positive_clip_loss(image, text, logit_scale, labels, *, reduction):
    """CLIP with several positives: image i's positives are the texts j with labels[j] == labels[i] (its own text
    among them), and text i's the images likewise; each direction is −(1/|P_i|) Σ_{j∈P_i} log softmax_j of the
    row's logits, the two directions averaged per row. All-distinct labels give ``clip_loss``."""
    logits = logit_scale * image @ text.T
    positive = (labels[:, None] == labels[None, :]).to(logits.dtype)

    def direction(row_logits):
        return -(positive * F.log_softmax(row_logits, dim=1)).sum(1) / positive.sum(1)

    rows = (direction(logits) + direction(logits.T)) / 2
    return reduce(rows, reduction, lambda: count_parts(rows, len(rows)))


def multi_positive_siglip_loss(image, text, logit_scale, logit_bias, labels, text_labels):
    """SigLIP with z_ij = +1 iff labels[i] == text_labels[j], −1 otherwise: −Σ log σ(z_ij · logit_ij) / B."""
    logits = logit_scale * image @ text.T + logit_bias
    signs = 2 * (labels[:, None] == text_labels[None, :]).to(logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / len(image)
