// The chunked engine's work on one chunk of S held in memory (chunked/engine.h), written once for every device.
//
// A row sweep is a functor with
//   State fold(r, lane, lanes)   chunk row r over its columns lane, lane + lanes, …
//   merge(State&, const State&)  two lanes' states of one row (the lower lane first)
//   store(r, const State&)       the row's state, written back
// and kSerial: the loss folds each row in column order with one thread (SerialRows). The executors run it as a
// 32-lane warp per row merged in a fixed tree order: on CUDA (cuda/executor.cuh), and emulated on the CPU
// (cpu_executor.h).
// Element-wise work (one call per row or column) is a functor with operator()(index).
#pragma once

#include "../epilogues/epilogue.h"
#include "../kinds.h"

namespace pairloss::chunked {

// Rows [i0, i0 + rows) of the anchors against references [j0, j0 + cols), row-major; the backward overwrites S
// with ∂L/∂S.
template <typename T>
struct Chunk {
  T* s;
  int64_t i0, rows, cols;
  int64_t j0 = 0;           // the first reference held (X = Y backward: the chunk's first row)
  const T* x_sq = nullptr;  // every anchor's squared norm (distance losses)
  const T* y_sq = nullptr;  // every reference's
  int64_t col_offset = 0;   // global index of reference 0: the epilogues see global columns, the kinds local ones

  PL_HD T at(int64_t r, int64_t c) const { return s[r * cols + c]; }
  template <typename Loss>
  PL_HD T sq(int64_t r, int64_t j, T s_rj) const {  // j: a reference index
    if constexpr (Loss::kDistance) {
      return gram_squared_distance(x_sq[i0 + r], y_sq[j], s_rj);
    } else {
      return T(0);
    }
  }
};

// Pass 1: the rows' statistics, continued from `stats` (indexed by global anchor row).
template <typename T, typename Loss, typename Kinds>
struct StatsSweep {
  using State = typename Loss::Stats;
  static constexpr bool kSerial = SerialRows<Loss>::value;
  Loss loss;
  Kinds kinds;
  Chunk<T> chunk;
  State* stats;

  PL_HD State fold(int64_t r, int lane, int lanes) const {
    const int64_t i = chunk.i0 + r;
    State st = lane == 0 ? stats[i] : loss.stats_init(i);
    for (int64_t c = lane; c < chunk.cols; c += lanes) {
      const int64_t j = chunk.j0 + c;
      const T s = chunk.at(r, c);
      loss.stats_add(st, kinds(i, j), s, chunk.template sq<Loss>(r, j, s), i, chunk.col_offset + j);
    }
    return st;
  }
  PL_HD void merge(State& st, const State& other) const { loss.stats_merge(st, other); }
  PL_HD void store(int64_t r, const State& st) const { stats[chunk.i0 + r] = st; }
};

// Pass 2: the rows' accumulators under their statistics, continued from `accs`; marks the active map's tiles
// (kActiveTile × kActiveTile, `active_cols` per row of tiles) that hold a pair with a gradient.
template <typename T, typename Loss, typename Kinds>
struct LossSweep {
  using State = typename Loss::Acc;
  static constexpr bool kSerial = SerialRows<Loss>::value;
  Loss loss;
  Kinds kinds;
  Chunk<T> chunk;
  const typename Loss::Stats* stats;
  State* accs;
  uint8_t* active;  // null: not wanted
  int64_t active_cols;

  PL_HD State fold(int64_t r, int lane, int lanes) const {
    const int64_t i = chunk.i0 + r;
    const auto st = stats[i];
    State acc = lane == 0 ? accs[i] : loss.acc_init(st, i);
    uint8_t* active_row = active == nullptr ? nullptr : active + (i / kActiveTile) * active_cols;
    int64_t marked = -1;  // the tile last marked: one store per tile, not per pair
    for (int64_t c = lane; c < chunk.cols; c += lanes) {
      const int64_t j = chunk.j0 + c;
      const T s = chunk.at(r, c);
      const bool has_grad =
          loss.acc_add(acc, st, kinds(i, j), s, chunk.template sq<Loss>(r, j, s), i, chunk.col_offset + j);
      const int64_t tile = j / kActiveTile;
      if (has_grad && active_row != nullptr && tile != marked) {
        active_row[tile] = 1;
        marked = tile;
      }
    }
    return acc;
  }
  PL_HD void merge(State& acc, const State& other) const { loss.acc_merge(acc, other); }
  PL_HD void store(int64_t r, const State& acc) const { accs[chunk.i0 + r] = acc; }
};

// The column hook (epilogue.h): column j folds the chunk's rows in order into cols[j].
template <typename T, typename Loss, typename Kinds>
struct ColumnSweep {
  Loss loss;
  Kinds kinds;
  Chunk<T> chunk;
  typename HasColumns<Loss>::ColAcc* cols;

  PL_HD void operator()(int64_t c) const {
    const int64_t j = chunk.j0 + c;
    auto acc = cols[j];
    for (int64_t r = 0; r < chunk.rows; ++r) {
      const int64_t i = chunk.i0 + r;
      const T s = chunk.at(r, c);
      loss.col_add(acc, kinds(i, j), s, chunk.template sq<Loss>(r, j, s), i, j);
    }
    cols[j] = acc;
  }
};

// The backward's G = ∂L/∂S, written over S; for kLogits losses ∂L/∂l·scale, with the scalar sums per row. X = Y:
// from reference `mirror_from` on, a pair also carries its mirror's gradient, ∂L/∂s_ji (s_ji = s_ij), so that the
// engine can skip the chunk's lower part (the CPU engine's symmetric tiles, chunk by chunk).
template <typename T, typename Loss, typename Kinds>
struct GradSweep {
  using State = ScalarGrads;
  static constexpr bool kSerial = SerialRows<Loss>::value;
  Loss loss;
  Kinds kinds;
  Chunk<T> chunk;
  ScalarGrads* row_scalars;  // per anchor row (kLogits), or null
  int64_t mirror_from;       // no mirrors: past the last reference

  PL_HD State fold(int64_t r, int lane, int lanes) const {
    const int64_t i = chunk.i0 + r;
    const auto g = loss.grad_row(i);
    State sums;
    for (int64_t c = lane; c < chunk.cols; c += lanes) {
      const int64_t j = chunk.j0 + c;
      const T s = chunk.at(r, c), sq = chunk.template sq<Loss>(r, j, s);
      T value = loss.grad(g, kinds(i, j), s, sq, i, chunk.col_offset + j);
      if constexpr (Loss::kLogits) {
        sums.scale += double(value) * double(s);
        sums.bias += double(value);
        value *= loss.scale();
      } else {
        if (j >= mirror_from) value += loss.grad(loss.grad_row(j), kinds(j, i), s, sq, j, chunk.col_offset + i);
      }
      chunk.s[r * chunk.cols + c] = value;
    }
    return sums;
  }
  PL_HD void merge(State& sums, const State& other) const {
    sums.scale += other.scale;
    sums.bias += other.bias;
  }
  PL_HD void store(int64_t r, const State& sums) const {
    if (row_scalars != nullptr) row_scalars[chunk.i0 + r] = sums;
  }
};

// Every row's empty statistics, and its accumulators once the statistics are complete.
template <typename Loss>
struct InitStats {
  Loss loss;
  typename Loss::Stats* stats;
  PL_HD void operator()(int64_t i) const { stats[i] = loss.stats_init(i); }
};

template <typename Loss>
struct InitAccs {
  Loss loss;
  const typename Loss::Stats* stats;
  typename Loss::Acc* accs;
  int64_t i0;  // the first row
  PL_HD void operator()(int64_t r) const { accs[i0 + r] = loss.acc_init(stats[i0 + r], i0 + r); }
};

template <typename Loss>
struct InitColumns {
  Loss loss;
  typename HasColumns<Loss>::ColAcc* cols;
  PL_HD void operator()(int64_t j) const { cols[j] = loss.col_init(j); }
};

// A row's results (epilogue finish, then its column's col_finish) into the op's outputs.
template <typename T, typename Loss>
struct FinishRows {
  Loss loss;
  const typename Loss::Stats* stats;
  const typename Loss::Acc* accs;
  const typename HasColumns<Loss>::ColAcc* cols;  // column hook only
  T* rows;                                        // B × 2
  double* saved;                                  // B × 4
  int64_t* counts;                                // B × 2, summed by the caller

  PL_HD void operator()(int64_t i) const {
    RowResult<T> out;
    loss.finish(stats[i], accs[i], out);
    if constexpr (HasColumns<Loss>::value) loss.col_finish(cols[i], out);
    for (int k = 0; k < 2; ++k) {
      rows[2 * i + k] = out.rows[k];
      counts[2 * i + k] = out.counts[k];
    }
    for (int k = 0; k < 4; ++k) saved[4 * i + k] = out.saved[k];
  }
};

}  // namespace pairloss::chunked
