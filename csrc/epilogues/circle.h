// Circle loss (PML CircleLoss): softplus(LSE_P logit_p + LSE_N logit_n), the self-paced weights detached.
#pragma once

#include "epilogue.h"

namespace pairloss {

template <typename T>
struct Circle : LossPassOnly<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;
  T m, gamma;

  PL_HD T pos_weight(T s) const { return 1 + m - s > T(0) ? 1 + m - s : T(0); }
  PL_HD T neg_weight(T s) const { return s + m > T(0) ? s + m : T(0); }
  PL_HD T pos_logit(T s) const { return -gamma * pos_weight(s) * (s - (1 - m)); }
  PL_HD T neg_logit(T s) const { return gamma * neg_weight(s) * (s - m); }

  using Stats = NoStats;

  struct Acc {
    OnlineLSE<T> pos, neg;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind == kPos) acc.pos.add(pos_logit(s));
    if (kind == kNeg) acc.neg.add(neg_logit(s));
    return kind != kSkip;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.pos.merge(o.pos);
    acc.neg.merge(o.neg);
  }

  // A row lacking positives or negatives has loss 0 (and no gradient).
  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    const bool both = acc.pos.sum > T(0) && acc.neg.sum > T(0);
    const T lse_pos = acc.pos.value(), lse_neg = acc.neg.value();
    out.rows[0] = both ? softplus(lse_pos + lse_neg) : T(0);
    out.saved[0] = both ? lse_pos : 0.0;
    out.saved[1] = both ? lse_neg : 0.0;
    out.saved[2] = both;
  }

  struct Grad {
    T lse_pos, lse_neg, scale;  // scale = ∂L/∂(lse_pos + lse_neg)
  };
  PL_HD Grad grad_row(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    const T lse_pos = T(saved[0]), lse_neg = T(saved[1]);
    const T scale = saved[2] != 0 ? this->weight[2 * i] * softplus_grad(lse_pos + lse_neg) : T(0);
    return {lse_pos, lse_neg, scale};
  }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t, int64_t) const {
    if (g.scale == T(0)) return T(0);
    if (kind == kPos) return g.scale * pl_exp(pos_logit(s) - g.lse_pos) * (-gamma * pos_weight(s));
    if (kind == kNeg) return g.scale * pl_exp(neg_logit(s) - g.lse_neg) * (gamma * neg_weight(s));
    return T(0);
  }
};

}  // namespace pairloss
