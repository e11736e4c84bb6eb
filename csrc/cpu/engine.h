// The CPU engine: every loss is a row reduction over pair terms f(s_ij, kinds, row statistics).
//
// Forward: row blocks in parallel; per block, sweep the column tiles (S tile = X_blk·Y_tileᵀ by a GEMM into a
// per-thread buffer), pass 1 (row statistics) then pass 2 (loss, and the column statistics of a loss with the
// column hook: per-thread column accumulators, merged at the end); when both passes run and the block's row
// stripe fits kStripeElements, pass 2 reuses pass 1's tiles instead of recomputing them.
// Backward: recompute each tile that had an active pair, form G = ∂L/∂S in a per-thread buffer, then
// dX_blk += G·Y_tile and dY_tile += Gᵀ·X_blk into per-thread accumulators (no races; summed at the end). When
// X = Y only tiles j ≥ i run: the tile's G also holds the transposed pairs' gradient, half the GEMMs.
// Extra memory: O(threads · (tile·stripe + (B + M)·D)); never B×M.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "../epilogues/epilogue.h"
#include "../kinds.h"
#include "tile_epilogues.h"

namespace pairloss::cpu {

constexpr int64_t kTile = kActiveTile;
constexpr int64_t kStripeElements = int64_t(1) << 22;

// Anchors X (rows × dim) and references Y (cols × dim), both contiguous; Y is X when `self`. The squared row
// norms are set for distance losses.
template <typename T>
struct Problem {
  const T* x;
  const T* y;
  int64_t rows, cols, dim;
  bool self;
  const T* x_sq = nullptr;
  const T* y_sq = nullptr;
  // Global index of column 0, passed to the epilogue (a block of a larger reference set; the pair kinds use the
  // block's own indices).
  int64_t col_offset = 0;
};

// Per-row state continued over successive reference blocks (the distributed ring): a forward call given one
// runs a single sweep over its block, starting from and writing back these rows. Without `accs` it is the
// statistics sweep; with them the loss sweep, under the (complete) statistics.
template <typename Loss>
struct CarriedRows {
  typename Loss::Stats* stats;
  typename Loss::Acc* accs;
};

template <typename T>
at::Tensor matrix_view(const T* data, int64_t rows, int64_t cols, int64_t ld) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  return at::from_blob(const_cast<T*>(data), {rows, cols}, {ld, 1}, options);
}

// out[r][c] (row stride ld) = x_{i0 + r} · y_{j0 + c}
template <typename T>
void similarity_tile(const Problem<T>& p, int64_t i0, int64_t nr, int64_t j0, int64_t nc, T* out, int64_t ld) {
  auto result = matrix_view(out, nr, nc, ld);
  const auto x = matrix_view(p.x + i0 * p.dim, nr, p.dim, p.dim);
  at::mm_out(result, x, matrix_view(p.y + j0 * p.dim, nc, p.dim, p.dim).t());
}

// Squared distance of the oracle's Gram formula (only read by distance losses).
template <typename T, typename Loss>
inline T squared_distance(const Problem<T>& p, int64_t i, int64_t j, T s) {
  if constexpr (Loss::kDistance) {
    return gram_squared_distance(p.x_sq[i], p.y_sq[j], s);
  } else {
    return T(0);
  }
}

inline int64_t blocks(int64_t n) { return (n + kTile - 1) / kTile; }

// Runs the forward sweeps and writes one RowResult per anchor (or, with `carried`, one sweep continuing the
// carried rows, without results). `active` (blocks(rows) × blocks(cols)) marks the tiles where pass 2 found a
// pair with a gradient. The row blocks are split into one contiguous part per thread;
// a loss with the column hook (epilogue.h) also folds pass 2's pairs into its part's column accumulators, merged
// and finished once every row is done (O(threads · cols) extra memory).
template <typename T, typename Loss, typename Kinds>
void forward(const Problem<T>& p, const Loss& loss, const Kinds& kinds, RowResult<T>* results, uint8_t* active,
             const CarriedRows<Loss>* carried = nullptr) {
  using Stats = typename Loss::Stats;
  using Acc = typename Loss::Acc;
  const int64_t row_blocks = blocks(p.rows), col_blocks = blocks(p.cols);
  const bool stats_sweep = loss.stats_pass() && (carried == nullptr || carried->accs == nullptr);
  const bool loss_sweep = loss.loss_pass() && (carried == nullptr || carried->accs != nullptr);
  const bool stripe = stats_sweep && loss_sweep && kTile * col_blocks * kTile <= kStripeElements;
  constexpr bool kColumns = HasColumns<Loss>::value;
  TORCH_CHECK(!kColumns || carried == nullptr, "pairloss: a loss with column statistics has no block-wise form");
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), row_blocks));
  std::vector<typename HasColumns<Loss>::ColAcc> col_parts;  // parts × cols
  if constexpr (kColumns) {
    TORCH_CHECK(p.rows == p.cols, "pairloss: column statistics need as many rows as columns");
    col_parts.reserve(parts * p.cols);
    for (int64_t part = 0; part < parts; ++part) {
      for (int64_t j = 0; j < p.cols; ++j) col_parts.push_back(loss.col_init(j));
    }
  }

  using Tile = TileEpilogue<Loss>;
  at::parallel_for(0, parts, 1, [&](int64_t part_begin, int64_t part_end) {
    std::vector<T> sim(kTile * kTile * (stripe ? col_blocks : 1));
    std::vector<float> scratch(4 * kTile);
    std::vector<uint8_t> kind(kTile);
    std::vector<Stats> stats(kTile);
    std::vector<Acc> accs(kTile);
    // Column accumulators of the first part: a call given several parts folds them all into these.
    auto* columns = kColumns ? col_parts.data() + part_begin * p.cols : nullptr;
    for (int64_t bi = part_begin * row_blocks / parts; bi < part_end * row_blocks / parts; ++bi) {
      const int64_t i0 = bi * kTile, nr = std::min(kTile, p.rows - i0);
      // visit(bj, r, i, j0, nc, similarities of row r, kinds (filled when `with_kinds`)) for every row of every
      // column tile, then visit_tile(j0, nc, tile) once per tile.
      auto sweep = [&](bool reuse, bool with_kinds, auto&& visit, auto&& visit_tile) {
        for (int64_t bj = 0; bj < col_blocks; ++bj) {
          const int64_t j0 = bj * kTile, nc = std::min(kTile, p.cols - j0);
          T* tile = sim.data() + (stripe ? bj * kTile * kTile : 0);
          if (!reuse) similarity_tile(p, i0, nr, j0, nc, tile, kTile);
          for (int64_t r = 0; r < nr; ++r) {
            if (with_kinds) fill_kinds(kinds, i0 + r, j0, nc, kind.data());
            visit(bj, r, i0 + r, j0, nc, tile + r * kTile, kind.data());
          }
          visit_tile(j0, nc, tile);
        }
      };
      const auto no_tile_visit = [](int64_t, int64_t, const T*) {};
      const int64_t to_global = p.col_offset;  // the epilogue sees global column indices
      for (int64_t r = 0; r < nr; ++r) stats[r] = carried ? carried->stats[i0 + r] : loss.stats_init(i0 + r);
      if (stats_sweep) {
        sweep(false, !Tile::kStats, [&](int64_t, int64_t r, int64_t i, int64_t j0, int64_t nc, const T* s,
                                        const uint8_t* k) {
          if constexpr (Tile::kStats) {
            Tile::stats_row(loss, stats[r], tile::own_in(kinds, i, j0, nc), s, nc);
          } else {
            for (int64_t c = 0; c < nc; ++c) {
              const T sq = squared_distance<T, Loss>(p, i, j0 + c, s[c]);
              loss.stats_add(stats[r], Kind(k[c]), s[c], sq, i, to_global + j0 + c);
            }
          }
        }, no_tile_visit);
      }
      if (carried != nullptr && carried->accs == nullptr) {
        for (int64_t r = 0; r < nr; ++r) carried->stats[i0 + r] = stats[r];
        continue;
      }
      for (int64_t r = 0; r < nr; ++r) accs[r] = carried ? carried->accs[i0 + r] : loss.acc_init(stats[r], i0 + r);
      if (loss_sweep) {
        const auto visit = [&](int64_t bj, int64_t r, int64_t i, int64_t j0, int64_t nc, const T* s,
                               const uint8_t* k) {
          bool any = false;
          if constexpr (Tile::kRows) {
            any = Tile::acc_row(loss, accs[r], stats[r], tile::own_in(kinds, i, j0, nc), s, nc, scratch.data());
          } else {
            for (int64_t c = 0; c < nc; ++c) {
              const T sq = squared_distance<T, Loss>(p, i, j0 + c, s[c]);
              any |= loss.acc_add(accs[r], stats[r], Kind(k[c]), s[c], sq, i, to_global + j0 + c);
              if constexpr (kColumns && !Tile::kColumns) {
                loss.col_add(columns[j0 + c], Kind(k[c]), s[c], sq, i, j0 + c);
              }
            }
          }
          if (any && active != nullptr) active[bi * col_blocks + bj] = 1;
        };
        const auto visit_tile = [&](int64_t j0, int64_t nc, const T* tile) {
          if constexpr (kColumns && Tile::kColumns) Tile::cols(loss, columns + j0, tile, nr, nc, kTile, scratch.data());
        };
        sweep(stripe, !Tile::kRows, visit, visit_tile);
      }
      if (carried != nullptr) {
        for (int64_t r = 0; r < nr; ++r) carried->accs[i0 + r] = accs[r];
        continue;
      }
      for (int64_t r = 0; r < nr; ++r) loss.finish(stats[r], accs[r], results[i0 + r]);
    }
  });

  if constexpr (kColumns) {
    for (int64_t j = 0; j < p.cols; ++j) {
      for (int64_t part = 1; part < parts; ++part) loss.col_merge(col_parts[j], col_parts[part * p.cols + j]);
      loss.col_finish(col_parts[j], results[j]);
    }
  }
}

// Accumulates ∂L/∂X into dx and ∂L/∂Y into dy (both zero-initialised; dy unused when self). `active` (from the
// forward; null: every tile) lets whole tiles be skipped.
template <typename T, typename Loss, typename Kinds>
ScalarGrads backward(const Problem<T>& p, const Loss& loss, const Kinds& kinds, const uint8_t* active, at::Tensor dx,
                        at::Tensor dy) {
  const int64_t row_blocks = blocks(p.rows), col_blocks = blocks(p.cols);
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t bi = 0; bi < row_blocks; ++bi) {
    for (int64_t bj = p.self ? bi : 0; bj < col_blocks; ++bj) {
      const bool used = active == nullptr || active[bi * col_blocks + bj] ||
                        (p.self && active[bj * col_blocks + bi]);
      if (used) tiles.emplace_back(bi, bj);
    }
  }
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tiles.size()));
  const auto options = dx.options();
  // Per-thread accumulators: gradients, and the row/column sums of G for the |x|², |y|² terms of distances.
  at::Tensor dx_parts = at::zeros({threads, p.rows, p.dim}, options);
  at::Tensor dy_parts = p.self ? dx_parts : at::zeros({threads, p.cols, p.dim}, options);
  at::Tensor rs_parts = at::zeros({threads, p.rows}, options);
  at::Tensor cs_parts = p.self ? rs_parts : at::zeros({threads, p.cols}, options);
  std::vector<ScalarGrads> scalar_parts(threads);

  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sim(kTile * kTile), grad(kTile * kTile);
    std::vector<float> scratch(4 * kTile);
    std::vector<uint8_t> kind(kTile);
    for (int64_t t = begin; t < end; ++t) {
      T* dx_acc = dx_parts[t].data_ptr<T>();
      T* dy_acc = dy_parts[t].data_ptr<T>();
      T* rs = rs_parts[t].data_ptr<T>();
      T* cs = cs_parts[t].data_ptr<T>();
      ScalarGrads scalars;  // summed locally: the parts share a cache line, written once at the end
      // ∂L/∂s (or ∂L/∂l) of pair (i, j) whose similarity is s; scale/bias sums taken on the way.
      auto pair_grad = [&](const auto& g, Kind k, T s, int64_t i, int64_t j) {
        T value = loss.grad(g, k, s, squared_distance<T, Loss>(p, i, j, s), i, j + p.col_offset);
        if constexpr (Loss::kLogits) {
          scalars.scale += double(value) * double(s);
          scalars.bias += double(value);
          value *= loss.scale();
        }
        return value;
      };
      for (size_t n = t; n < tiles.size(); n += threads) {
        const auto [bi, bj] = tiles[n];
        const int64_t i0 = bi * kTile, nr = std::min(kTile, p.rows - i0);
        const int64_t j0 = bj * kTile, nc = std::min(kTile, p.cols - j0);
        similarity_tile(p, i0, nr, j0, nc, sim.data(), kTile);
        bool any = false;
        if constexpr (TileEpilogue<Loss>::kGrad) {  // two-tower losses: never X = Y, no transposed pairs
          any = TileEpilogue<Loss>::grad_tile(loss, kinds, i0, nr, j0, nc, sim.data(), grad.data(), kTile, scalars,
                                              scratch.data());
        } else {
          for (int64_t r = 0; r < nr; ++r) {
            const auto g = loss.grad_row(i0 + r);
            fill_kinds(kinds, i0 + r, j0, nc, kind.data());
            for (int64_t c = 0; c < nc; ++c) {
              const T value = pair_grad(g, Kind(kind[c]), sim[r * kTile + c], i0 + r, j0 + c);
              grad[r * kTile + c] = value;
              any |= value != T(0);
            }
          }
          if (p.self && bi != bj) {  // the transposed pairs (j, i) of the skipped tile (bj, bi)
            for (int64_t c = 0; c < nc; ++c) {
              const auto g = loss.grad_row(j0 + c);
              fill_kinds(kinds, j0 + c, i0, nr, kind.data());
              for (int64_t r = 0; r < nr; ++r) {
                const T value = pair_grad(g, Kind(kind[r]), sim[r * kTile + c], j0 + c, i0 + r);
                grad[r * kTile + c] += value;
                any |= value != T(0);
              }
            }
          }
        }
        if (!any) continue;
        const auto g = matrix_view(grad.data(), nr, nc, kTile);
        const auto x_blk = matrix_view(p.x + i0 * p.dim, nr, p.dim, p.dim);
        const auto y_tile = matrix_view(p.y + j0 * p.dim, nc, p.dim, p.dim);
        matrix_view(dx_acc + i0 * p.dim, nr, p.dim, p.dim).addmm_(g, y_tile);
        matrix_view(dy_acc + j0 * p.dim, nc, p.dim, p.dim).addmm_(g.t(), x_blk);
        if constexpr (Loss::kDistance) {
          for (int64_t r = 0; r < nr; ++r) {
            for (int64_t c = 0; c < nc; ++c) {
              rs[i0 + r] += grad[r * kTile + c];
              cs[j0 + c] += grad[r * kTile + c];
            }
          }
        }
      }
      scalar_parts[t] = scalars;
    }
  });

  dx.add_(dx_parts.sum(0));
  if (!p.self) dy.add_(dy_parts.sum(0));
  if constexpr (Loss::kDistance) {
    // d|x_i|²/dx_i = 2x_i and ∂L/∂|x_i|² = −½ Σ_j ∂L/∂s_ij (likewise for y_j).
    const auto x = matrix_view(p.x, p.rows, p.dim, p.dim), y = matrix_view(p.y, p.cols, p.dim, p.dim);
    if (p.self) {
      dx.sub_(rs_parts.sum(0).unsqueeze(1) * x);
    } else {
      dx.sub_(rs_parts.sum(0).unsqueeze(1) * x);
      dy.sub_(cs_parts.sum(0).unsqueeze(1) * y);
    }
  }
  ScalarGrads total;
  for (const auto& part : scalar_parts) {
    total.scale += part.scale;
    total.bias += part.bias;
  }
  return total;
}

}  // namespace pairloss::cpu
