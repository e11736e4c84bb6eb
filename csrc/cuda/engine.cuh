// The CUDA engine: the same passes as the CPU engine (cpu/engine.h) with the same epilogues, in fp32.
//
// Forward: one block per 64-row block; for each 64-column tile the block computes S = X_blk·Y_tileᵀ through
// shared memory (a plain fp32 tiled GEMM, 4×4 outputs per thread), then 4 threads per row apply the epilogue
// to interleaved columns; their partial row states are merged in a fixed order (deterministic).
// Backward, deterministic and atomic-free: a row-parallel kernel (dX_blk += G·Y_tile over all column tiles)
// and a column-parallel one (dY_tile += Gᵀ·X_blk over all row blocks), both recomputing S and G = ∂L/∂S tile
// by tile in shared memory and skipping tiles the forward found inactive. When X = Y the second kernel adds
// into dX after the first (same stream, so no race).
#pragma once

#include <cfloat>
#include <cuda_runtime.h>

#include "../common.h"
#include "../kinds.h"

namespace pairloss::cuda {

constexpr int kBlock = 64;    // rows and columns of a tile
constexpr int kDepth = 16;    // features per shared-memory stage of the similarity GEMM
constexpr int kChunk = 64;    // features per stage of the gradient GEMMs
constexpr int kThreads = 256;
constexpr int kLanes = kThreads / kBlock;  // forward threads sharing one row
static_assert(kActiveTile % kBlock == 0, "active bits must cover whole tiles");

struct Problem {
  const float* x;
  const float* y;
  int64_t rows, cols, dim;
  const float* x_sq;  // squared row norms (distance losses only)
  const float* y_sq;
};

struct TileScratch {
  float x[kDepth][kBlock];
  float y[kDepth][kBlock];
};

// tile[r][c] = x_{i0+r} · y_{j0+c} (0 outside the matrices). Every thread of the block must call it.
__device__ inline void similarity_tile(const Problem& p, int64_t i0, int64_t j0, float (*tile)[kBlock + 1],
                                       TileScratch& scratch) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t d0 = 0; d0 < p.dim; d0 += kDepth) {
    for (int e = threadIdx.x; e < kBlock * kDepth; e += kThreads) {
      const int r = e / kDepth, k = e % kDepth;
      const int64_t d = d0 + k;
      scratch.x[k][r] = (i0 + r < p.rows && d < p.dim) ? p.x[(i0 + r) * p.dim + d] : 0.f;
      scratch.y[k][r] = (j0 + r < p.cols && d < p.dim) ? p.y[(j0 + r) * p.dim + d] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kDepth; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a[u] = scratch.x[k][ty * 4 + u];
        b[u] = scratch.y[k][tx * 4 + u];
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(a[u], b[v], acc[u][v]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int u = 0; u < 4; ++u) {
#pragma unroll
    for (int v = 0; v < 4; ++v) tile[ty * 4 + u][tx * 4 + v] = acc[u][v];
  }
  __syncthreads();
}

template <typename Loss>
__device__ inline float squared_distance(const Problem& p, float x_sq, int64_t j, float s) {
  if constexpr (Loss::kDistance) {
    const float norms = x_sq + p.y_sq[j];
    const float sq = norms - 2 * s;
    return sq > kZeroDistanceUlps * FLT_EPSILON * norms ? sq : 0.f;
  } else {
    return 0.f;
  }
}

// The row state merged over the kLanes threads of a row; every lane merges in the same order.
template <typename State, typename Merge>
__device__ State merge_row(const State& state, Merge merge, unsigned char* buffer) {
  State* slots = reinterpret_cast<State*>(buffer);
  slots[threadIdx.x] = state;
  __syncthreads();
  const int first = threadIdx.x - threadIdx.x % kLanes;
  State merged = slots[first];
  for (int k = 1; k < kLanes; ++k) merge(merged, slots[first + k]);
  __syncthreads();
  return merged;
}

template <typename A, typename B>
constexpr size_t max_size() {
  return sizeof(A) > sizeof(B) ? sizeof(A) : sizeof(B);
}

// Outputs as in op_inputs.h; `row_counts` is B × 2 (summed by the launcher).
template <typename Loss, typename Kinds>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Problem p, Loss loss, Kinds kinds, float* rows, double* saved, int64_t* row_counts,
                   uint8_t* active, int64_t active_cols) {
  using Stats = typename Loss::Stats;
  using Acc = typename Loss::Acc;
  __shared__ float tile[kBlock][kBlock + 1];
  __shared__ TileScratch scratch;
  __shared__ alignas(16) unsigned char merge_buffer[kThreads * max_size<Stats, Acc>()];

  const int r = threadIdx.x / kLanes, lane = threadIdx.x % kLanes;
  const int64_t i0 = int64_t(blockIdx.x) * kBlock, i = i0 + r;
  const bool valid = i < p.rows;
  const float x_sq = (Loss::kDistance && valid) ? p.x_sq[i] : 0.f;

  // visit(kind, s, sq, j) on this thread's columns of every tile; marks tiles where some pair is active.
  auto sweep = [&](auto&& visit) {
    for (int64_t j0 = 0; j0 < p.cols; j0 += kBlock) {
      similarity_tile(p, i0, j0, tile, scratch);
      bool any = false;
      if (valid) {
        for (int c = lane; c < kBlock && j0 + c < p.cols; c += kLanes) {
          const int64_t j = j0 + c;
          const float s = tile[r][c];
          any |= visit(kinds(i, j), s, squared_distance<Loss>(p, x_sq, j, s), j);
        }
      }
      if (__syncthreads_or(any) && threadIdx.x == 0 && active != nullptr) {
        active[(i0 / kActiveTile) * active_cols + j0 / kActiveTile] = 1;
      }
    }
  };

  Stats stats = loss.stats_init(valid ? i : 0);
  if (loss.stats_pass()) {
    sweep([&](Kind kind, float s, float sq, int64_t j) {
      loss.stats_add(stats, kind, s, sq, i, j);
      return false;
    });
    stats = merge_row(stats, [&](Stats& a, const Stats& b) { loss.stats_merge(a, b); }, merge_buffer);
  }
  Acc acc = loss.acc_init(stats, valid ? i : 0);
  if (loss.loss_pass()) {
    sweep([&](Kind kind, float s, float sq, int64_t j) { return loss.acc_add(acc, stats, kind, s, sq, i, j); });
    acc = merge_row(acc, [&](Acc& a, const Acc& b) { loss.acc_merge(a, b); }, merge_buffer);
  }
  if (valid && lane == 0) {
    RowResult<float> out;
    loss.finish(stats, acc, out);
    for (int k = 0; k < 2; ++k) {
      rows[2 * i + k] = out.rows[k];
      row_counts[2 * i + k] = out.counts[k];
    }
    for (int k = 0; k < 4; ++k) saved[4 * i + k] = out.saved[k];
  }
}

// Sum of `value` over the block, in a fixed order (thread 0 gets the result).
__device__ inline double block_sum(double value, double* buffer) {
  buffer[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) buffer[threadIdx.x] += buffer[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = buffer[0];
  __syncthreads();
  return total;
}

// kColumns = false: block b owns rows [64b, 64b + 64) and adds G·Y into out (= dX);
// kColumns = true: block b owns columns [64b, 64b + 64) and adds Gᵀ·X into out (= dY, or dX when X = Y).
// kLogits losses: the row kernel writes each block's Σ ∂L/∂l·s and Σ ∂L/∂l to scalar_parts[2b], [2b + 1].
template <bool kColumns, typename Loss, typename Kinds>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Problem p, Loss loss, Kinds kinds, const uint8_t* active, int64_t active_cols, float* out,
                    double* scalar_parts) {
  static_assert(!Loss::kDistance, "distance losses need the |x|², |y|² gradient terms: not on CUDA");
  using Grad = typename Loss::Grad;
  __shared__ float tile[kBlock][kBlock + 1];  // S, then G
  __shared__ TileScratch scratch;
  __shared__ float operand[kBlock][kChunk + 1];  // a feature chunk of Y_tile (rows kernel) or X_blk (columns)
  __shared__ alignas(16) unsigned char grad_buffer[kBlock * sizeof(Grad)];
  __shared__ double reduce_buffer[kThreads];
  Grad* grads = reinterpret_cast<Grad*>(grad_buffer);

  const int64_t own0 = int64_t(blockIdx.x) * kBlock;
  const int64_t own_count = kColumns ? p.cols : p.rows, other_count = kColumns ? p.rows : p.cols;
  const float* operand_src = kColumns ? p.x : p.y;
  double scale_sum = 0, bias_sum = 0;

  auto load_grads = [&](int64_t i0) {  // per-row backward context of rows i0 …
    for (int r = threadIdx.x; r < kBlock; r += kThreads) {
      if (i0 + r < p.rows) grads[r] = loss.grad_row(i0 + r);
    }
    __syncthreads();
  };
  if (!kColumns) load_grads(own0);

  for (int64_t o0 = 0; o0 < other_count; o0 += kBlock) {
    const int64_t i0 = kColumns ? o0 : own0, j0 = kColumns ? own0 : o0;
    if (active[(i0 / kActiveTile) * active_cols + j0 / kActiveTile] == 0) continue;  // uniform over the block
    if (kColumns) load_grads(i0);
    similarity_tile(p, i0, j0, tile, scratch);
    for (int e = threadIdx.x; e < kBlock * kBlock; e += kThreads) {
      const int r = e / kBlock, c = e % kBlock;
      const int64_t i = i0 + r, j = j0 + c;
      float g = 0.f;
      if (i < p.rows && j < p.cols) {
        const float s = tile[r][c];
        g = loss.grad(grads[r], kinds(i, j), s, 0.f, i, j);
        if constexpr (Loss::kLogits) {
          scale_sum += double(g) * s;
          bias_sum += g;
          g *= loss.scale;
        }
      }
      tile[r][c] = g;
    }
    __syncthreads();
    const int64_t src0 = kColumns ? i0 : j0, src_rows = kColumns ? p.rows : p.cols;
    for (int64_t d0 = 0; d0 < p.dim; d0 += kChunk) {
      for (int e = threadIdx.x; e < kBlock * kChunk; e += kThreads) {
        const int m = e / kChunk, k = e % kChunk;
        operand[m][k] = (src0 + m < src_rows && d0 + k < p.dim) ? operand_src[(src0 + m) * p.dim + d0 + k] : 0.f;
      }
      __syncthreads();
      for (int e = threadIdx.x; e < kBlock * kChunk; e += kThreads) {
        const int q = e / kChunk, k = e % kChunk;
        if (own0 + q >= own_count || d0 + k >= p.dim) continue;
        float sum = 0.f;
#pragma unroll 8
        for (int m = 0; m < kBlock; ++m) sum = fmaf(kColumns ? tile[m][q] : tile[q][m], operand[m][k], sum);
        out[(own0 + q) * p.dim + d0 + k] += sum;
      }
      __syncthreads();
    }
  }
  if constexpr (Loss::kLogits) {
    if (!kColumns) {
      const double scale_total = block_sum(scale_sum, reduce_buffer);
      const double bias_total = block_sum(bias_sum, reduce_buffer);
      if (threadIdx.x == 0) {
        scalar_parts[2 * blockIdx.x] = scale_total;
        scalar_parts[2 * blockIdx.x + 1] = bias_total;
      }
    }
  }
}

// Batch-hard triplets: anchor i's two pairs, applied directly (float atomics: X = Y rows may collide).
template <typename Loss>
__global__ void triplet_hard_backward_kernel(Problem p, Loss loss, float* dx, float* dy) {
  const int64_t i = blockIdx.x;
  const float grad_d = loss.grad_d(i);
  if (grad_d == 0.f) return;
  const double* saved = loss.saved + 4 * i;
  const int64_t pos_j = int64_t(saved[0]), neg_j = int64_t(saved[1]);
  const float pos_c = saved[2] > 0 ? grad_d / float(saved[2]) : 0.f;
  const float neg_c = saved[3] > 0 ? -grad_d / float(saved[3]) : 0.f;
  for (int64_t d = threadIdx.x; d < p.dim; d += blockDim.x) {
    const float xi = p.x[i * p.dim + d], yp = p.y[pos_j * p.dim + d], yn = p.y[neg_j * p.dim + d];
    atomicAdd(dx + i * p.dim + d, pos_c * (xi - yp) + neg_c * (xi - yn));
    atomicAdd(dy + pos_j * p.dim + d, pos_c * (yp - xi));
    atomicAdd(dy + neg_j * p.dim + d, neg_c * (yn - xi));
  }
}

}  // namespace pairloss::cuda
