// Vectorized forms of the two-tower epilogues for the CPU engine in float32: the same arithmetic as the epilogues'
// per-pair functions (two_tower.h), applied to a row (or a whole tile) of similarities at once, with the
// transcendentals of vector_math.h. Each row pairs with one positive column, `own` (DiagonalKinds), −1 when it is
// outside the tile. The engine uses a hook when TileEpilogue<Loss> names it:
//   kStats: stats_row(loss, Stats&, own, s, n)                      pass 1 over one row of a tile
//   kRows:  acc_row(loss, Acc&, const Stats&, own, s, n, scratch)    pass 2 over one row; every pair has a gradient
//   kColumns: cols(loss, ColAcc* cols, tile, rows, n, ld, scratch)   the column hook over a whole tile
//   kGrad:  grad_tile(loss, kinds, i0, rows, j0, n, tile, grad, ld, ScalarGrads&, scratch)  G = ∂L/∂S of a tile
// `scratch` holds 4 · kTile floats.
#pragma once

#include "../epilogues/two_tower.h"
#include "../kinds.h"
#include "vector_math.h"

namespace pairloss::cpu {

template <typename Loss>
struct TileEpilogue {
  static constexpr bool kStats = false, kRows = false, kColumns = false, kGrad = false;
};

namespace tile {

inline float max_of(const float* v, int64_t n) {
  float m = -infinity<float>();
  for (int64_t c = 0; c < n; ++c) m = v[c] > m ? v[c] : m;
  return m;
}

inline float sum_of(const float* v, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += v[c];
  return sum;
}

// Σ v·s and Σ v in float over one row (≤ kTile terms), added to the scalar gradients in double.
inline void add_scalar_sums(const float* value, const float* s, int64_t n, ScalarGrads& sums) {
  float scale = 0.0f, bias = 0.0f;
#pragma omp simd reduction(+ : scale, bias)
  for (int64_t c = 0; c < n; ++c) {
    scale += value[c] * s[c];
    bias += value[c];
  }
  sums.scale += scale;
  sums.bias += bias;
}

// Row i's positive among columns [j0, j0 + n), or −1.
inline int64_t own_in(const DiagonalKinds& kinds, int64_t i, int64_t j0, int64_t n) {
  const int64_t own = kinds.own(i) - j0;
  return own >= 0 && own < n ? own : -1;
}

}  // namespace tile

template <>
struct TileEpilogue<Clip<float>> {
  static constexpr bool kStats = false, kRows = true, kColumns = true, kGrad = false;
  using Loss = Clip<float>;

  static bool acc_row(const Loss& loss, Loss::Acc& acc, const Loss::Stats&, int64_t own, const float* s, int64_t n,
                      float* scratch) {
    const float scale = loss.scale();
    for (int64_t c = 0; c < n; ++c) scratch[c] = scale * s[c];
    const float m = tile::max_of(scratch, n);
    if (own >= 0) acc.diag = scratch[own];
    for (int64_t c = 0; c < n; ++c) scratch[c] -= m;
    exp_in_place(scratch, n);
    OnlineLSE<float> part;
    part.max = m;
    part.sum = tile::sum_of(scratch, n);
    acc.lse.merge(part);
    return true;
  }

  // Each column's LSE continued over the tile's rows: the tile's column maxima first, then one rescale.
  static void cols(const Loss& loss, OnlineLSE<float>* cols, const float* tile, int64_t rows, int64_t n, int64_t ld,
                   float* scratch) {
    const float scale = loss.scale();
    float *top = scratch, *sum = scratch + n, *row = scratch + 2 * n;
    for (int64_t c = 0; c < n; ++c) top[c] = cols[c].max;
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = tile + r * ld;
      for (int64_t c = 0; c < n; ++c) top[c] = scale * s[c] > top[c] ? scale * s[c] : top[c];
    }
    for (int64_t c = 0; c < n; ++c) row[c] = cols[c].max - top[c];
    exp_in_place(row, n);
    for (int64_t c = 0; c < n; ++c) sum[c] = cols[c].sum * row[c];
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = tile + r * ld;
      for (int64_t c = 0; c < n; ++c) row[c] = scale * s[c] - top[c];
      exp_in_place(row, n);
      for (int64_t c = 0; c < n; ++c) sum[c] += row[c];
    }
    for (int64_t c = 0; c < n; ++c) cols[c] = {top[c], sum[c]};
  }
};

template <>
struct TileEpilogue<ClipGrad<float>> {
  static constexpr bool kStats = false, kRows = false, kColumns = false, kGrad = true;
  using Loss = ClipGrad<float>;

  // ∂L/∂l_ij = w_i/2 · e^(l − lse_row_i) + w_j/2 · e^(l − lse_col_j) − [j = own(i)] w_i.
  static bool grad_tile(const Loss& loss, const DiagonalKinds& kinds, int64_t i0, int64_t rows, int64_t j0,
                        int64_t n, const float* tile, float* grad, int64_t ld, ScalarGrads& sums, float* scratch) {
    const float scale = loss.scale();
    float *col_lse = scratch, *col_half_weight = scratch + n, *row = scratch + 2 * n, *col = scratch + 3 * n;
    for (int64_t c = 0; c < n; ++c) {
      col_lse[c] = float(loss.saved[4 * (j0 + c) + 1]);
      col_half_weight[c] = loss.weight[2 * (j0 + c)] / 2;
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = tile + r * ld;
      float* g = grad + r * ld;
      const auto row_state = loss.grad_row(i0 + r);
      for (int64_t c = 0; c < n; ++c) {
        row[c] = scale * s[c] - row_state.lse_row;
        col[c] = scale * s[c] - col_lse[c];
      }
      exp_in_place(row, n);
      exp_in_place(col, n);
      for (int64_t c = 0; c < n; ++c) g[c] = row_state.half_weight * row[c] + col_half_weight[c] * col[c];
      const int64_t own = tile::own_in(kinds, i0 + r, j0, n);
      if (own >= 0) g[own] -= 2 * row_state.half_weight;
      tile::add_scalar_sums(g, s, n, sums);
      for (int64_t c = 0; c < n; ++c) g[c] *= scale;
    }
    return true;
  }
};

template <>
struct TileEpilogue<SigLip<float>> {
  static constexpr bool kStats = false, kRows = true, kColumns = false, kGrad = true;
  using Loss = SigLip<float>;

  // z = ±(scale·s + bias): − on the positive.
  static void signed_logits(const Loss& loss, int64_t own, const float* s, int64_t n, float* z) {
    const float scale = loss.scale(), bias = loss.bias();
    for (int64_t c = 0; c < n; ++c) z[c] = scale * s[c] + bias;
    if (own >= 0) z[own] = -z[own];
  }

  static bool acc_row(const Loss& loss, Loss::Acc& acc, const Loss::Stats&, int64_t own, const float* s, int64_t n,
                      float* scratch) {
    signed_logits(loss, own, s, n, scratch);
    softplus_sigmoid(scratch, n, scratch + n, nullptr);
    acc.sum += tile::sum_of(scratch + n, n);
    return true;
  }

  // ∂L/∂l = w·σ(l) on negatives, −w·σ(−l) on the positive: ±w·σ(z).
  static bool grad_tile(const Loss& loss, const DiagonalKinds& kinds, int64_t i0, int64_t rows, int64_t j0,
                        int64_t n, const float* tile, float* grad, int64_t ld, ScalarGrads& sums, float* scratch) {
    const float scale = loss.scale();
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = tile + r * ld;
      float* g = grad + r * ld;
      const int64_t own = tile::own_in(kinds, i0 + r, j0, n);
      signed_logits(loss, own, s, n, scratch);
      softplus_sigmoid(scratch, n, nullptr, g);
      const float weight = loss.grad_row(i0 + r).weight;
      for (int64_t c = 0; c < n; ++c) g[c] *= weight;
      if (own >= 0) g[own] = -g[own];
      tile::add_scalar_sums(g, s, n, sums);
      for (int64_t c = 0; c < n; ++c) g[c] *= scale;
    }
    return true;
  }
};

template <>
struct TileEpilogue<MannWhitney<float>> {
  static constexpr bool kStats = true, kRows = true, kColumns = false, kGrad = true;
  using Loss = MannWhitney<float>;

  static void stats_row(const Loss& loss, Loss::Stats& st, int64_t own, const float* s, int64_t) {
    if (own >= 0) st.pos_logit = s[own] * loss.inv_temperature;
  }

  // v = s/τ − s_ii/τ over the negatives: Σ softplus(v) and Σ σ(v) (the positive's gradient).
  static bool acc_row(const Loss& loss, Loss::Acc& acc, const Loss::Stats& st, int64_t own, const float* s,
                      int64_t n, float* scratch) {
    float *v = scratch, *softplus = scratch + n, *slope = scratch + 2 * n;
    for (int64_t c = 0; c < n; ++c) v[c] = s[c] * loss.inv_temperature - st.pos_logit;
    softplus_sigmoid(v, n, softplus, slope);
    if (own >= 0) softplus[own] = slope[own] = 0.0f;
    acc.sum += tile::sum_of(softplus, n);
    acc.slope_sum += tile::sum_of(slope, n);
    return true;
  }

  static bool grad_tile(const Loss& loss, const DiagonalKinds& kinds, int64_t i0, int64_t rows, int64_t j0,
                        int64_t n, const float* tile, float* grad, int64_t ld, ScalarGrads&, float* scratch) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* s = tile + r * ld;
      float* g = grad + r * ld;
      const auto row_state = loss.grad_row(i0 + r);
      for (int64_t c = 0; c < n; ++c) scratch[c] = s[c] * loss.inv_temperature - row_state.pos_logit;
      softplus_sigmoid(scratch, n, nullptr, g);
      for (int64_t c = 0; c < n; ++c) g[c] *= row_state.weight;
      const int64_t own = tile::own_in(kinds, i0 + r, j0, n);
      if (own >= 0) g[own] = -row_state.weight * row_state.slope_sum;
    }
    return true;
  }
};

}  // namespace pairloss::cpu
