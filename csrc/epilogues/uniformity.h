// Uniformity (Wang & Isola): log mean_{i≠j} e^{−t·|x_i − x_j|²}; each row keeps its LSE and the caller takes
// the LSE over rows.
#pragma once

#include "epilogue.h"

namespace pairloss {

template <typename T>
struct Uniformity : LossPassOnly<T> {
  static constexpr bool kDistance = true;
  static constexpr bool kLogits = false;
  T t;

  PL_HD T potential(T sq) const { return -t * (sq > T(0) ? sq : T(0)); }

  using Stats = NoStats;

  struct Acc {
    OnlineLSE<T> lse;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T, T sq, int64_t, int64_t) const {
    if (kind == kSkip) return false;
    acc.lse.add(potential(sq));
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const { acc.lse.merge(o.lse); }
  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    out.rows[0] = acc.lse.value();
    out.saved[0] = out.rows[0];
  }

  struct Grad {
    T lse, weight;
  };
  PL_HD Grad grad_row(int64_t i) const { return {T(this->saved[4 * i]), this->weight[2 * i]}; }
  // clamp_min(0) passes the gradient where sq ≥ 0; ∂sq/∂s = −2.
  PL_HD T grad(const Grad& g, Kind kind, T, T sq, int64_t, int64_t) const {
    if (kind == kSkip || !(sq >= T(0))) return T(0);
    return 2 * t * g.weight * pl_exp(potential(sq) - g.lse);
  }
};

}  // namespace pairloss
