"""Compile-time selectors shared by the kernels and the Python side (``.value`` gives the int to pass).

Triton only lets jitted code read globals that are ``tl.constexpr``, hence the wrapping.
"""

import triton.language as tl

# Which loss epilogue runs on the shared tile loop.
MULTI_SIMILARITY = tl.constexpr(0)
TRIPLET_HARDEST = tl.constexpr(1)  # stats only: hardest positive/negative per anchor
CONTRASTIVE = tl.constexpr(2)
CIRCLE = tl.constexpr(3)
NTXENT = tl.constexpr(4)  # also decoupled softmax (positives given by index instead of labels)
SUPCON = tl.constexpr(5)
CLIP = tl.constexpr(6)  # STATS on (text, image): the column LSEs; LOSS on (image, text): both directions
SIGLIP = tl.constexpr(7)
MW = tl.constexpr(8)
UNIFORMITY = tl.constexpr(9)
TRIPLET_ALL = tl.constexpr(10)  # every (anchor, positive, negative): an inner loop over tiles, see _triplet_all

# Which pass of the forward: row statistics that the loss pass reads (STATS), or the loss pass itself (LOSS).
STATS_PASS = tl.constexpr(0)
LOSS_PASS = tl.constexpr(1)

# Where positive pairs come from: equal labels, the row's own column (two towers: row i pairs column
# (i + own offset) % M, the diagonal at offset 0), a −1 padded B×P tensor of column indices, or multi-hot labels
# packed into int64 words (a label shared; JACCARD also weighs each positive by the Jaccard similarity of the
# label sets, for the losses with soft positives). Negatives are the other valid pairs.
LABELS = tl.constexpr(0)
DIAGONAL = tl.constexpr(1)
INDEX = tl.constexpr(2)
MULTI_HOT = tl.constexpr(3)
JACCARD = tl.constexpr(4)

# Rows of the (4, B) per-row tensors every pass reads or writes.
ROW_SLOTS = 4
