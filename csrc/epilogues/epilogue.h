// The contract between the engines (CPU loop, CUDA kernels) and a loss. An epilogue is a small struct:
//
//   kDistance                    the loss reads sq = |x_i|² + |y_j|² − 2 s_ij (L2-distance losses)
//   kLogits                      grad() returns ∂L/∂l for l = scale·s + bias; the engine applies the scale
//                                and sums the scalar gradients
//   stats_pass(), loss_pass()    which forward sweeps it needs (pass 1: row thresholds; pass 2: the loss)
//   Stats  stats_init(i); stats_add(Stats&, kind, s, sq, i, j); stats_merge(Stats&, const Stats&)
//   Acc    acc_init(stats, i); bool acc_add(Acc&, stats, kind, s, sq, i, j)  → "this pair has a gradient"
//          acc_merge(Acc&, const Acc&)
//   finish(stats, acc, RowResult&)  per-row loss components, saved statistics, counters
//   Grad   grad_row(i); T grad(const Grad&, kind, s, sq, i, j)  → ∂L/∂s_ij, recomputed in the backward
//
// Optional: kSerialRows = true when a row's pairs must be folded in column order by one thread (no Stats/Acc
// merges: e.g. a row state that writes lists); see SerialRows.
// Optional column reduction (see HasColumns): a loss that also reduces every column of a square
// problem (rows = cols) in the same loss sweep, e.g. CLIP's text→image LSE, names
//   ColAcc col_init(j)   an empty column (neutral for col_merge)
//   col_add(ColAcc&, kind, s, sq, i, j); col_merge(ColAcc&, const ColAcc&)
//   col_finish(const ColAcc&, RowResult& out)   column j's result, into row j's result after that row's finish()
//
// The merges combine partial rows (CUDA threads that share a row) and partial columns (CPU threads that share a
// column). Backward inputs (saved statistics and per-row upstream gradients) are reached through BackwardInputs.
#pragma once

#include <type_traits>

#include "../common.h"

namespace pairloss {

struct NoStats {};

// Whether Loss has the column hook, and its column accumulator (NoStats when it has none).
template <typename Loss, typename = void>
struct HasColumns : std::false_type {
  using ColAcc = NoStats;
};
template <typename Loss>
struct HasColumns<Loss, std::void_t<typename Loss::ColAcc>> : std::true_type {
  using ColAcc = typename Loss::ColAcc;
};

template <typename Loss, typename = void>
struct SerialRows : std::false_type {};
template <typename Loss>
struct SerialRows<Loss, std::enable_if_t<Loss::kSerialRows>> : std::true_type {};

// Σ ∂L/∂l · s and Σ ∂L/∂l over all pairs: the logit scale's and bias's gradients (kLogits losses).
struct ScalarGrads {
  double scale = 0, bias = 0;
};

template <typename T>
struct BackwardInputs {
  const double* saved = nullptr;  // B × 4, written by finish()
  const T* weight = nullptr;      // B × 2: ∂(reduced loss)/∂rows
};

// The stats half of the contract for losses that need no row thresholds: the loss sweep alone. Such a loss
// still names `using Stats = NoStats;` (a dependent base's types are not visible to unqualified lookup).
template <typename T>
struct LossPassOnly : BackwardInputs<T> {
  PL_HD bool stats_pass() const { return false; }
  PL_HD bool loss_pass() const { return true; }
  PL_HD NoStats stats_init(int64_t) const { return {}; }
  PL_HD void stats_add(NoStats&, Kind, T, T, int64_t, int64_t) const {}
  PL_HD void stats_merge(NoStats&, const NoStats&) const {}
};

}  // namespace pairloss
