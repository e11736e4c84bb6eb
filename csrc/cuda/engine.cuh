// The CUDA engine: the same passes as the CPU engine (cpu/engine.h) with the same epilogues, in fp32.
//
// Forward: one block per 64-row block; for each 64-column tile the block computes S = X_blk·Y_tileᵀ into an
// fp32 shared-memory tile (similarity_tile), then 4 threads per row apply the epilogue to interleaved columns;
// their partial row states are merged in a fixed order (deterministic).
// Backward, deterministic and atomic-free: a row-parallel kernel (dX_blk += G·Y_tile over all column tiles)
// and a column-parallel one (dY_tile += Gᵀ·X_blk over all row blocks), both recomputing S and G = ∂L/∂S tile
// by tile in shared memory and skipping tiles the forward found inactive. When X = Y the second kernel adds
// into dX after the first (same stream, so no race).
//
// Element types: the kernels are templated once on the inputs' element type T (Problem<T>: X, Y stay in their
// dtype on the device). Everything after the similarity tile is fp32 whatever T: the epilogues, the squared
// norms of the distance losses, and the gradient GEMMs G·Y, Gᵀ·X (their operands are widened on load); dX, dY
// are fp32 accumulators. Only the similarity tile depends on T:
//   float: a plain fp32 shared-memory GEMM (kDepth features per stage, stored feature-major, 4×4 outputs per
//          thread), exact fp32 as before.
//   __half, __nv_bfloat16: tensor cores (nvcuda::wmma 16×16×16, fp32 accumulators). kMmaDepth features of the
//          64 rows of X_blk and of Y_tile are staged row-major in T (zero outside the matrices and past D; row
//          pitch kMmaLd = kMmaDepth + 8 elements: a multiple of 8 as wmma needs, padded so that the 16 rows of
//          a fragment load do not share banks); Y's rows are read as the col-major B = Yᵀ. The 8 warps cover the 4×4 grid of 16×16 output
//          fragments, warp w owning row w / 2 and columns 2·(w % 2), 2·(w % 2) + 1 (one A and two B fragments
//          per 16 features); the accumulators are stored into the fp32 tile. Where the architecture has no
//          tensor cores for T (fp16 below sm_70, bf16 below sm_80) the fp32 GEMM runs instead, widening T on
//          load (tensor_cores<T>()).
// The fp32 tile has row pitch kTileLd = 68 for every T: a multiple of 4 floats (wmma stores) whose offset of 4
// banks per row keeps the forward's epilogue reads (8 rows × 4 lanes per warp) free of bank conflicts.
#pragma once

#include <cfloat>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <type_traits>

#include "../common.h"
#include "../kinds.h"

namespace pairloss::cuda {

constexpr int kBlock = 64;             // rows and columns of a tile
constexpr int kTileLd = kBlock + 4;    // row pitch of the fp32 similarity tile (floats)
constexpr int kDepth = 16;             // features per shared-memory stage of the fp32 similarity GEMM
constexpr int kMmaDepth = 32;          // features per stage of the tensor-core similarity GEMM
constexpr int kMmaLd = kMmaDepth + 8;  // row pitch of its staged rows (elements)
constexpr int kMma = 16;               // wmma fragment size (m = n = k)
constexpr int kChunk = 64;             // features per stage of the gradient GEMMs
constexpr int kThreads = 256;
constexpr int kLanes = kThreads / kBlock;  // forward threads sharing one row
static_assert(kActiveTile % kBlock == 0, "active bits must cover whole tiles");
static_assert(kTileLd % 4 == 0 && kMmaLd % 8 == 0 && kMmaDepth % kMma == 0, "wmma leading dimensions");
static_assert(kThreads / 32 * 2 == (kBlock / kMma) * (kBlock / kMma), "8 warps × 2 fragments cover the tile");

template <typename T>
struct Problem {
  const T* x;
  const T* y;
  int64_t rows, cols, dim;
  const float* x_sq;  // squared row norms in fp32 (distance losses only)
  const float* y_sq;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void set_zero(__half& v) { v = __ushort_as_half(0); }
__device__ __forceinline__ void set_zero(__nv_bfloat16& v) { v = __ushort_as_bfloat16(0); }

// Whether the similarity tile of T inputs runs on tensor cores in the pass being compiled (the host pass
// answers for the newest architectures; it never runs device code).
template <typename T>
__host__ __device__ constexpr bool tensor_cores() {
  if constexpr (std::is_same_v<T, float>) {
    return false;
  } else {
    static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "fp32, fp16 or bf16 inputs");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
    return false;
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    return std::is_same_v<T, __half>;
#else
    return true;
#endif
  }
}

// Staged features of X_blk and Y_tile: fp32 GEMM, feature-major.
struct FmaScratch {
  float x[kDepth][kBlock];
  float y[kDepth][kBlock];
};

// Tensor cores: row-major in T (32-byte aligned fragment pointers: the rows are 80 bytes apart and
// fragments start at multiples of 16 features).
template <typename T>
struct MmaScratch {
  static_assert(sizeof(T) == 2, "fp16 or bf16");
  alignas(32) T x[kBlock][kMmaLd];
  alignas(32) T y[kBlock][kMmaLd];
};

template <typename T>
using TileScratch = std::conditional_t<tensor_cores<T>(), MmaScratch<T>, FmaScratch>;

// fp32 GEMM (fp16/bf16 widened on load where there are no tensor cores for them).
template <typename T>
__device__ inline void similarity_tile_fma(const Problem<T>& p, int64_t i0, int64_t j0, float (*tile)[kTileLd],
                                           FmaScratch& scratch) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t d0 = 0; d0 < p.dim; d0 += kDepth) {
    for (int e = threadIdx.x; e < kBlock * kDepth; e += kThreads) {
      const int r = e / kDepth, k = e % kDepth;
      const int64_t d = d0 + k;
      scratch.x[k][r] = (i0 + r < p.rows && d < p.dim) ? to_float(p.x[(i0 + r) * p.dim + d]) : 0.f;
      scratch.y[k][r] = (j0 + r < p.cols && d < p.dim) ? to_float(p.y[(j0 + r) * p.dim + d]) : 0.f;
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

// Tensor cores, fp32 accumulators (only instantiated where tensor_cores<T>()).
template <typename T>
__device__ inline void similarity_tile_mma(const Problem<T>& p, int64_t i0, int64_t j0, float (*tile)[kTileLd],
                                           MmaScratch<T>& scratch) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
  namespace wmma = nvcuda::wmma;
  const int warp = threadIdx.x / 32;
  const int fr = warp / 2, fc = (warp % 2) * 2;  // this warp's fragments: (fr, fc), (fr, fc + 1)
  T zero;
  set_zero(zero);
  wmma::fragment<wmma::accumulator, kMma, kMma, kMma, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  for (int64_t d0 = 0; d0 < p.dim; d0 += kMmaDepth) {
    for (int e = threadIdx.x; e < kBlock * kMmaDepth; e += kThreads) {
      const int r = e / kMmaDepth, k = e % kMmaDepth;
      const int64_t d = d0 + k;
      scratch.x[r][k] = (i0 + r < p.rows && d < p.dim) ? p.x[(i0 + r) * p.dim + d] : zero;
      scratch.y[r][k] = (j0 + r < p.cols && d < p.dim) ? p.y[(j0 + r) * p.dim + d] : zero;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kMmaDepth; k += kMma) {
      wmma::fragment<wmma::matrix_a, kMma, kMma, kMma, T, wmma::row_major> a;  // X rows × features
      wmma::load_matrix_sync(a, &scratch.x[fr * kMma][k], kMmaLd);
#pragma unroll
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, kMma, kMma, kMma, T, wmma::col_major> b;  // features × Y rows: Yᵀ
        wmma::load_matrix_sync(b, &scratch.y[(fc + f) * kMma][k], kMmaLd);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int f = 0; f < 2; ++f) {
    wmma::store_matrix_sync(&tile[fr * kMma][(fc + f) * kMma], acc[f], kTileLd, wmma::mem_row_major);
  }
  __syncthreads();
#endif
}

// tile[r][c] = x_{i0+r} · y_{j0+c} in fp32 (0 outside the matrices). Every thread of the block must call it.
template <typename T>
__device__ inline void similarity_tile(const Problem<T>& p, int64_t i0, int64_t j0, float (*tile)[kTileLd],
                                       TileScratch<T>& scratch) {
  if constexpr (tensor_cores<T>()) {
    similarity_tile_mma(p, i0, j0, tile, scratch);
  } else {
    similarity_tile_fma(p, i0, j0, tile, scratch);
  }
}

template <typename Loss, typename T>
__device__ inline float squared_distance(const Problem<T>& p, float x_sq, int64_t j, float s) {
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
template <typename Loss, typename Kinds, typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(Problem<T> p, Loss loss, Kinds kinds, float* rows, double* saved, int64_t* row_counts,
                   uint8_t* active, int64_t active_cols) {
  using Stats = typename Loss::Stats;
  using Acc = typename Loss::Acc;
  __shared__ alignas(32) float tile[kBlock][kTileLd];  // 32-byte aligned for the wmma stores
  __shared__ TileScratch<T> scratch;
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
template <bool kColumns, typename Loss, typename Kinds, typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(Problem<T> p, Loss loss, Kinds kinds, const uint8_t* active, int64_t active_cols, float* out,
                    double* scalar_parts) {
  static_assert(!Loss::kDistance, "distance losses need the |x|², |y|² gradient terms: not on CUDA");
  using Grad = typename Loss::Grad;
  __shared__ alignas(32) float tile[kBlock][kTileLd];  // S, then G (32-byte aligned for the wmma stores)
  __shared__ TileScratch<T> scratch;
  __shared__ float operand[kBlock][kChunk + 1];  // a feature chunk of Y_tile (rows kernel) or X_blk (columns)
  __shared__ alignas(16) unsigned char grad_buffer[kBlock * sizeof(Grad)];
  __shared__ double reduce_buffer[kThreads];
  Grad* grads = reinterpret_cast<Grad*>(grad_buffer);

  const int64_t own0 = int64_t(blockIdx.x) * kBlock;
  const int64_t own_count = kColumns ? p.cols : p.rows, other_count = kColumns ? p.rows : p.cols;
  const T* operand_src = kColumns ? p.x : p.y;
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
        const int64_t d = d0 + k;
        operand[m][k] = (src0 + m < src_rows && d < p.dim) ? to_float(operand_src[(src0 + m) * p.dim + d]) : 0.f;
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
template <typename Loss, typename T>
__global__ void triplet_hard_backward_kernel(Problem<T> p, Loss loss, float* dx, float* dy) {
  const int64_t i = blockIdx.x;
  const float grad_d = loss.grad_d(i);
  if (grad_d == 0.f) return;
  const double* saved = loss.saved + 4 * i;
  const int64_t pos_j = int64_t(saved[0]), neg_j = int64_t(saved[1]);
  const float pos_c = saved[2] > 0 ? grad_d / float(saved[2]) : 0.f;
  const float neg_c = saved[3] > 0 ? -grad_d / float(saved[3]) : 0.f;
  for (int64_t d = threadIdx.x; d < p.dim; d += blockDim.x) {
    const float xi = to_float(p.x[i * p.dim + d]), yp = to_float(p.y[pos_j * p.dim + d]);
    const float yn = to_float(p.y[neg_j * p.dim + d]);
    atomicAdd(dx + i * p.dim + d, pos_c * (xi - yp) + neg_c * (xi - yn));
    atomicAdd(dy + pos_j * p.dim + d, pos_c * (yp - xi));
    atomicAdd(dy + neg_j * p.dim + d, neg_c * (yn - xi));
  }
}

}  // namespace pairloss::cuda
