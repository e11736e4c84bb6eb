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
