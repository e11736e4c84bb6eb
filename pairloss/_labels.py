"""The labels of the label losses: one integer class id per row, or a multi-hot (rows × L) bool matrix.

With multi-hot labels pair (i, j) is positive iff the rows share a label and negative iff they share none (a
row without any label has no positive). The fused engines read each multi-hot row as ⌈L/64⌉ packed 64-bit words
and test a pair with a bitwise AND per word, in registers: O(B·L/64) memory, never B×M or B×L×M.
"""

import torch

WORD_BITS = 64
POSITIVE_WEIGHTS = ("uniform", "jaccard")
# Bit k of a byte is worth 2^k: a row of 8 labels sums to its byte (distinct powers of two never carry).
_BYTE_BITS = (2 ** torch.arange(8)).to(torch.uint8)


def is_multi_hot(labels):
    return labels.dtype == torch.bool


def engine_labels(labels):
    """``labels`` as the engines take them: class ids as a contiguous int64 (rows,) tensor; multi-hot rows packed
    into an int64 (rows, ⌈L/64⌉) tensor of words (label 64w + b is bit b of word w; bits past L are 0)."""
    if not is_multi_hot(labels):
        return labels.to(torch.int64).contiguous()
    rows, width = labels.shape
    words = -(-width // WORD_BITS)
    # One rows × 64·words uint8 temporary: bytes first, then eight bytes viewed as one word (any fixed bit order
    # works, as every row of both label sets is packed the same way).
    bits = labels.new_zeros((rows, words * WORD_BITS), dtype=torch.uint8)
    bits[:, :width] = labels
    bits = bits.view(rows, words * 8, 8).mul_(_BYTE_BITS.to(labels.device))
    return bits.sum(-1, dtype=torch.uint8).view(torch.int64)


def shared_label(labels, ref_labels):
    """The B×M "same class" matrix of the reference oracles: equal ids, or at least one shared label."""
    if is_multi_hot(labels):
        return labels.double() @ ref_labels.double().T > 0
    return labels[:, None] == ref_labels[None, :]


def jaccard(labels, ref_labels):
    """B×M Jaccard similarity |L_i ∩ L_j| / |L_i ∪ L_j| of multi-hot rows (0 where both rows have no label)."""
    a, b = labels.double(), ref_labels.double()
    common = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - common
    return torch.where(union > 0, common / union.clamp_min(1), 0.0)
