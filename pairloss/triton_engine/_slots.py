"""Names of the four per-row output slots of the engine passes whose outputs the losses read, as
``_epilogues.py`` lays them out: ``Slots(*values)`` names a pass's (4, B) rows. ``spare`` slots are 0. (A STATS
pass's outputs go on to its LOSS pass as they are.)"""

from typing import NamedTuple


class MultiSimilarityTerms(NamedTuple):  # LOSS: log(1 + Σ …) over the mined positives and negatives
    positive_log1p: object
    negative_log1p: object
    spare_2: object
    spare_3: object


class HardestPairs(NamedTuple):  # TRIPLET_HARDEST STATS: columns as fp32 (exact below 2²⁴)
    far_positive: object
    far_positive_column: object
    near_negative: object
    near_negative_column: object


class TripletTerms(NamedTuple):  # TRIPLET_ALL LOSS
    term_sum: object
    nonzero_terms: object
    spare_2: object
    spare_3: object


class ContrastiveTerms(NamedTuple):  # CONTRASTIVE LOSS
    positive_sum: object
    negative_sum: object
    positive_nonzero: object
    negative_nonzero: object


class CircleTerms(NamedTuple):  # CIRCLE LOSS
    positive_lse: object
    negative_lse: object
    has_positive: object
    has_negative: object


class SoftmaxTerms(NamedTuple):  # NTXENT LOSS: Σ_P w·softplus(LSE_N − l), Σ_P w, Σ_P w·σ(LSE_N − l)
    pair_loss_sum: object
    weight_sum: object
    slope_sum: object
    spare_3: object


class SupConTerms(NamedTuple):  # SUPCON LOSS
    log_denominator: object
    positive_logit_sum: object  # Σ_P w·l
    weight_sum: object  # Σ_P w
    spare_3: object


class ClipTerms(NamedTuple):  # CLIP LOSS (STATS: slot 0 only)
    row_lse: object
    column_lse: object
    spare_2: object
    spare_3: object
