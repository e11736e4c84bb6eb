// Label-aware softmax losses on logits s/τ: NT-Xent (PML NTXentLoss; with PositiveListKinds it is DEXML's
// decoupled softmax) and SupCon (PML SupConLoss). Each positive pair's term carries its weight w_ip (`weights`:
// 1, or the Jaccard similarity of multi-hot label sets), and the means are over Σ w_ip.
#pragma once

#include "../kinds.h"
#include "epilogue.h"

namespace pairloss {

// Per positive pair (i, p): w_ip · softplus(LSE_{N_i} l − l_p); pass 1 is the negatives' LSE.
template <typename T>
struct NTXent : BackwardInputs<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;
  T inv_temperature;
  PositiveWeights weights;

  PL_HD bool stats_pass() const { return true; }
  PL_HD bool loss_pass() const { return true; }

  struct Stats {
    OnlineLSE<T> neg;
  };
  PL_HD Stats stats_init(int64_t) const { return {}; }
  PL_HD void stats_add(Stats& st, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind == kNeg) st.neg.add(s * inv_temperature);
  }
  PL_HD void stats_merge(Stats& st, const Stats& o) const { st.neg.merge(o.neg); }

  // An anchor without negatives has ratio 1: loss 0 for each of its positives (which still count).
  struct Acc {
    T sum = T(0), slope_sum = T(0), weight_sum = T(0);  // Σ_p w·softplus(·), Σ_p w·softplus'(·), Σ_p w
    int64_t pairs = 0;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats& st, Kind kind, T s, T, int64_t i, int64_t j) const {
    if (kind != kPos) return kind == kNeg;  // negatives get a gradient through the LSE
    const T w = weights.at<T>(i, j);
    ++acc.pairs;
    acc.weight_sum += w;
    if (st.neg.sum > T(0)) {
      const T v = st.neg.value() - s * inv_temperature;
      acc.sum += w * softplus(v);
      acc.slope_sum += w * softplus_grad(v);
    }
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.sum += o.sum;
    acc.slope_sum += o.slope_sum;
    acc.weight_sum += o.weight_sum;
    acc.pairs += o.pairs;
  }

  // rows: the weighted sum, and Σ_p w_ip (the mean's denominator; not differentiated).
  PL_HD void finish(const Stats& st, const Acc& acc, RowResult<T>& out) const {
    const bool has_neg = st.neg.sum > T(0);
    out.rows[0] = acc.sum;
    out.rows[1] = acc.weight_sum;
    out.saved[0] = has_neg ? st.neg.value() : 0.0;
    out.saved[1] = acc.slope_sum;
    out.saved[2] = has_neg;
    out.counts[0] = acc.pairs;
  }

  struct Grad {
    T lse_neg, neg_scale, weight;
    bool has_neg;
  };
  PL_HD Grad grad_row(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    const T weight = this->weight[2 * i] * inv_temperature;
    return {T(saved[0]), weight * T(saved[1]), weight, saved[2] != 0};
  }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t i, int64_t j) const {
    if (!g.has_neg) return T(0);
    const T l = s * inv_temperature;
    if (kind == kPos) return -g.weight * weights.at<T>(i, j) * softplus_grad(g.lse_neg - l);
    if (kind == kNeg) return g.neg_scale * pl_exp(l - g.lse_neg);
    return T(0);
  }
};

// L_i = LSE_{P_i ∪ N_i} l − Σ_{P_i} w l / Σ_{P_i} w; one pass. The batch-level "no positive or no negative pair
// → 0" rule is applied on the counters by the caller.
template <typename T>
struct SupCon : LossPassOnly<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;
  T inv_temperature;
  PositiveWeights weights;

  using Stats = NoStats;

  struct Acc {
    OnlineLSE<T> all;
    T pos_sum = T(0), weight_sum = T(0);  // Σ_p w·l, Σ_p w
    int64_t pos = 0, neg = 0;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T s, T, int64_t i, int64_t j) const {
    if (kind == kSkip) return false;
    const T l = s * inv_temperature;
    acc.all.add(l);
    if (kind == kPos) {
      const T w = weights.at<T>(i, j);
      acc.pos_sum += w * l;
      acc.weight_sum += w;
      ++acc.pos;
    } else {
      ++acc.neg;
    }
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.all.merge(o.all);
    acc.pos_sum += o.pos_sum;
    acc.weight_sum += o.weight_sum;
    acc.pos += o.pos;
    acc.neg += o.neg;
  }

  // A positive's weight is never 0 (it shares a label), so Σ_p w > 0 exactly when the row has positives.
  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    const T lse = acc.all.value();
    out.rows[0] = acc.pos > 0 ? lse - acc.pos_sum / acc.weight_sum : T(0);
    out.saved[0] = acc.pos > 0 ? lse : 0.0;
    out.saved[1] = acc.pos > 0 ? double(acc.weight_sum) : 0.0;
    out.counts[0] = acc.pos;
    out.counts[1] = acc.neg;
  }

  struct Grad {
    T lse, weight, pos_share;  // pos_share: 1 / Σ_p w
  };
  PL_HD Grad grad_row(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    const T weight = saved[1] > 0 ? this->weight[2 * i] * inv_temperature : T(0);
    return {T(saved[0]), weight, saved[1] > 0 ? T(1) / T(saved[1]) : T(0)};
  }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t i, int64_t j) const {
    if (kind == kSkip || g.weight == T(0)) return T(0);
    const T softmax = pl_exp(s * inv_temperature - g.lse);
    return g.weight * (kind == kPos ? softmax - weights.at<T>(i, j) * g.pos_share : softmax);
  }
};

}  // namespace pairloss
