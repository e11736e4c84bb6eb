// Two-tower losses where row i of one tower is paired with row i of the other (DiagonalKinds): CLIP
// (OpenCLIP ClipLoss), SigLIP (OpenCLIP SigLipLoss) and the pairwise AUC / Mann–Whitney surrogate.
//
// CLIP and SigLIP work on logits l = scale·s (+ bias) with learnable scale and bias: their grad() returns
// ∂L/∂l (kLogits), and the engine turns it into ∂L/∂s and the scalar gradients Σ ∂L/∂l·s and Σ ∂L/∂l.
#pragma once

#include "epilogue.h"

namespace pairloss {

// The learnable logit scale and bias (op `scalars`, the accumulation dtype), read where they live (a device
// pointer on CUDA: no host sync).
template <typename T>
struct LogitScalars {
  const T* logit = nullptr;  // scale, then bias where the loss has one

  PL_HD T scale() const { return logit[0]; }
};

// CLIP's symmetric cross-entropy in one sweep: each row's LSE of the logits l = scale·s (image→text, saved[0])
// and the diagonal logit (saved[2]); the column hook takes each column's LSE (text j against the images,
// saved[1]) from the same tiles, and row i's loss is ((lse_row_i − l_ii) + (lse_col_i − l_ii)) / 2.
template <typename T>
struct Clip : LossPassOnly<T>, LogitScalars<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;

  using Stats = NoStats;

  struct Acc {
    OnlineLSE<T> lse;
    T diag = T(0);
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T s, T, int64_t, int64_t) const {
    const T l = this->scale() * s;
    acc.lse.add(l);
    if (kind == kPos) acc.diag = l;
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.lse.merge(o.lse);
    acc.diag += o.diag;
  }
  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    out.saved[0] = acc.lse.value();
    out.saved[2] = acc.diag;
  }

  using ColAcc = OnlineLSE<T>;
  PL_HD ColAcc col_init(int64_t) const { return {}; }
  PL_HD void col_add(ColAcc& acc, Kind, T s, T, int64_t, int64_t) const { acc.add(this->scale() * s); }
  PL_HD void col_merge(ColAcc& acc, const ColAcc& o) const { acc.merge(o); }
  PL_HD void col_finish(const ColAcc& acc, RowResult<T>& out) const {
    const T lse_row = T(out.saved[0]), lse_col = acc.value(), diag = T(out.saved[2]);
    out.saved[1] = lse_col;
    out.rows[0] = ((lse_row - diag) + (lse_col - diag)) / 2;
  }
};

// CLIP backward: rows_i = (lse_row_i + lse_col_i)/2 − l_ii, so
// ∂L/∂l_ij = w_i/2 · softmax_row_ij + w_j/2 · softmax_col_ij − [i = j] w_i.
template <typename T>
struct ClipGrad : BackwardInputs<T>, LogitScalars<T> {  // bias = 0
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = true;

  struct Grad {
    T lse_row, half_weight;
  };
  PL_HD Grad grad_row(int64_t i) const { return {T(this->saved[4 * i]), this->weight[2 * i] / 2}; }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t, int64_t j) const {
    const T l = this->scale() * s;
    const T col = this->weight[2 * j] / 2 * pl_exp(l - T(this->saved[4 * j + 1]));
    const T row = g.half_weight * pl_exp(l - g.lse_row);
    return kind == kPos ? row + col - 2 * g.half_weight : row + col;
  }
};

// SigLIP: Σ_j −log σ(z_ij · (scale·s_ij + bias)), z = +1 on the diagonal and −1 elsewhere.
template <typename T>
struct SigLip : LossPassOnly<T>, LogitScalars<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = true;

  PL_HD T bias() const { return this->logit[1]; }

  using Stats = NoStats;

  struct Acc {
    T sum = T(0);
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T s, T, int64_t, int64_t) const {
    const T l = this->scale() * s + bias();
    acc.sum += softplus(kind == kPos ? -l : l);
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const { acc.sum += o.sum; }
  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const { out.rows[0] = acc.sum; }

  struct Grad {
    T weight;
  };
  PL_HD Grad grad_row(int64_t i) const { return {this->weight[2 * i]}; }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t, int64_t) const {
    const T l = this->scale() * s + bias();
    return kind == kPos ? -g.weight * sigmoid(-l) : g.weight * sigmoid(l);
  }
};

// MW: per query, the mean over the other documents of softplus((s_in − s_ii)/τ); pass 1 reads s_ii.
template <typename T>
struct MannWhitney : BackwardInputs<T> {
  static constexpr bool kDistance = false;
  static constexpr bool kLogits = false;
  T inv_temperature, inv_count;  // 1/τ, 1/max(M − 1, 1)

  PL_HD bool stats_pass() const { return true; }
  PL_HD bool loss_pass() const { return true; }

  struct Stats {
    T pos_logit = T(0);
  };
  PL_HD Stats stats_init(int64_t) const { return {}; }
  PL_HD void stats_add(Stats& st, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind == kPos) st.pos_logit = s * inv_temperature;
  }
  PL_HD void stats_merge(Stats& st, const Stats& o) const { st.pos_logit += o.pos_logit; }

  struct Acc {
    T sum = T(0), slope_sum = T(0);
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats& st, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind != kNeg) return kind == kPos;
    const T v = s * inv_temperature - st.pos_logit;
    acc.sum += softplus(v);
    acc.slope_sum += softplus_grad(v);
    return true;
  }
  PL_HD void acc_merge(Acc& acc, const Acc& o) const {
    acc.sum += o.sum;
    acc.slope_sum += o.slope_sum;
  }
  PL_HD void finish(const Stats& st, const Acc& acc, RowResult<T>& out) const {
    out.rows[0] = acc.sum * inv_count;
    out.saved[0] = st.pos_logit;
    out.saved[1] = acc.slope_sum;
  }

  struct Grad {
    T pos_logit, slope_sum, weight;
  };
  PL_HD Grad grad_row(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    return {T(saved[0]), T(saved[1]), this->weight[2 * i] * inv_temperature * inv_count};
  }
  PL_HD T grad(const Grad& g, Kind kind, T s, T, int64_t, int64_t) const {
    if (kind == kPos) return -g.weight * g.slope_sum;
    return g.weight * softplus_grad(s * inv_temperature - g.pos_logit);
  }
};

}  // namespace pairloss
