// Multi-similarity loss with its miner (PML MultiSimilarityLoss + MultiSimilarityMiner).
#pragma once

#include "epilogue.h"

namespace pairloss {

template <typename T>
struct MultiSimilarity : BackwardInputs<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;
  T alpha, beta, base, epsilon;
  bool mining;

  PL_HD bool stats_pass() const { return mining; }
  PL_HD bool loss_pass() const { return true; }

  // Mining thresholds over the unmined sets.
  struct Stats {
    T max_neg, min_pos;
  };
  PL_HD Stats stats_init(int64_t) const { return {-infinity<T>(), infinity<T>()}; }
  PL_HD void stats_add(Stats& st, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind == kPos && s < st.min_pos) st.min_pos = s;
    if (kind == kNeg && s > st.max_neg) st.max_neg = s;
  }
  PL_HD void stats_merge(Stats& st, const Stats& other) const {
    if (other.min_pos < st.min_pos) st.min_pos = other.min_pos;
    if (other.max_neg > st.max_neg) st.max_neg = other.max_neg;
  }

  PL_HD bool kept_pos(Kind kind, T s, const Stats& st) const {
    return kind == kPos && (!mining || s - epsilon < st.max_neg);
  }
  PL_HD bool kept_neg(Kind kind, T s, const Stats& st) const {
    return kind == kNeg && (!mining || s + epsilon > st.min_pos);
  }

  // Σ e^z of both sets. With mining the thresholds bound every kept exponent, so the accumulators
  // start at that bound and never rescale; without mining they follow the running maximum.
  struct Acc {
    OnlineLSE<T> pos, neg;
  };
  PL_HD Acc acc_init(const Stats& st, int64_t) const {
    Acc acc;
    if (mining) {
      const T pos_bound = -alpha * (st.min_pos - base), neg_bound = beta * (st.max_neg - base);
      acc.pos.max = pos_bound > T(0) ? pos_bound : T(0);
      acc.neg.max = neg_bound > T(0) ? neg_bound : T(0);
    }
    return acc;
  }
  PL_HD bool acc_add(Acc& acc, const Stats& st, Kind kind, T s, T, int64_t, int64_t) const {
    if (kept_pos(kind, s, st)) {
      acc.pos.add(-alpha * (s - base));
      return true;
    }
    if (kept_neg(kind, s, st)) {
      acc.neg.add(beta * (s - base));
      return true;
    }
    return false;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& other) const {
    acc.pos.merge(other.pos);
    acc.neg.merge(other.neg);
  }

  PL_HD void finish(const Stats& st, const Acc& acc, RowResult<T>& out) const {
    OnlineLSE<T> pos = acc.pos, neg = acc.neg;
    pos.add(T(0));  // the "1 +" of log(1 + Σ e^z)
    neg.add(T(0));
    const T lse_pos = pos.value(), lse_neg = neg.value();
    out.rows[0] = lse_pos / alpha + lse_neg / beta;
    out.saved[0] = st.max_neg;
    out.saved[1] = st.min_pos;
    out.saved[2] = lse_pos;
    out.saved[3] = lse_neg;
  }

  struct Grad {
    Stats st;
    T lse_pos, lse_neg, weight;
  };
  PL_HD Grad grad_row(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    return {{T(saved[0]), T(saved[1])}, T(saved[2]), T(saved[3]), this->weight[2 * i]};
  }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t, int64_t) const {
    if (kept_pos(kind, s, g.st)) return -g.weight * pl_exp(-alpha * (s - base) - g.lse_pos);
    if (kept_neg(kind, s, g.st)) return g.weight * pl_exp(beta * (s - base) - g.lse_neg);
    return T(0);
  }
};

}  // namespace pairloss
