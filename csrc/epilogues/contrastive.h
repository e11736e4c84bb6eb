// Contrastive (pair margin) loss on L2 distances (PML ContrastiveLoss): each kind of pair is averaged over its
// non-zero terms, so the rows keep the positive and negative sums apart and count the non-zero terms.
#pragma once

#include "epilogue.h"

namespace pairloss {

template <typename T>
struct Contrastive : LossPassOnly<T> {
  static constexpr bool kDistance = true;
  static constexpr bool kLogits = false;
  PerAnchor<T> pos_margin, neg_margin;

  using Stats = NoStats;

  struct Acc {
    T pos_sum = T(0), neg_sum = T(0);
    int64_t pos_nonzero = 0, neg_nonzero = 0;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T, T sq, int64_t i, int64_t) const {
    const T d = distance(sq);
    if (kind == kPos && d - pos_margin(i) > T(0)) {
      acc.pos_sum += d - pos_margin(i);
      ++acc.pos_nonzero;
      return true;
    }
    if (kind == kNeg && neg_margin(i) - d > T(0)) {
      acc.neg_sum += neg_margin(i) - d;
      ++acc.neg_nonzero;
      return true;
    }
    return false;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.pos_sum += o.pos_sum;
    acc.neg_sum += o.neg_sum;
    acc.pos_nonzero += o.pos_nonzero;
    acc.neg_nonzero += o.neg_nonzero;
  }

  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    out.rows[0] = acc.pos_sum;
    out.rows[1] = acc.neg_sum;
    out.counts[0] = acc.pos_nonzero;
    out.counts[1] = acc.neg_nonzero;
  }

  struct Grad {
    T pos_weight, neg_weight, pos_margin, neg_margin;
  };
  PL_HD Grad grad_row(int64_t i) const {
    return {this->weight[2 * i], this->weight[2 * i + 1], pos_margin(i), neg_margin(i)};
  }
  PL_HD T grad(const Grad& g, Kind kind, T, T sq, int64_t, int64_t) const {
    const T d = distance(sq);
    if (kind == kPos && d - g.pos_margin > T(0)) return distance_grad_to_sim(g.pos_weight, sq);
    if (kind == kNeg && g.neg_margin - d > T(0)) return distance_grad_to_sim(-g.neg_weight, sq);
    return T(0);
  }
};

}  // namespace pairloss
