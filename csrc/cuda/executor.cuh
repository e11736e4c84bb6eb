// The chunked engine's sweeps on CUDA (chunked/sweeps.h), on the current stream: a warp per row, its lanes on
// interleaved columns (coalesced reads of the row of S_c), their states merged by shuffles in a fixed tree order
// (deterministic); a thread per row for the losses that fold a row serially; a thread per element otherwise.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstring>
#include <type_traits>

namespace pairloss::cuda {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

// A trivially copyable state moved down the warp by `offset` lanes, 32 bits at a time.
template <typename State>
__device__ __forceinline__ State shuffle_down(const State& state, int offset) {
  static_assert(std::is_trivially_copyable_v<State>, "row states are shuffled as raw words");
  constexpr int kWords = (sizeof(State) + 3) / 4;
  unsigned in[kWords] = {}, out[kWords];
  memcpy(in, &state, sizeof(State));
#pragma unroll
  for (int w = 0; w < kWords; ++w) out[w] = __shfl_down_sync(0xffffffffu, in[w], offset);
  State result;
  memcpy(&result, out, sizeof(State));
  return result;
}

template <typename F>
__global__ void each_kernel(int64_t n, F f) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}

template <typename Sweep>
__global__ void serial_rows_kernel(int64_t n, Sweep sweep) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r < n) sweep.store(r, sweep.fold(r, 0, 1));
}

template <typename Sweep>
__global__ void warp_rows_kernel(int64_t n, Sweep sweep) {
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= n) return;  // uniform over the warp
  auto state = sweep.fold(r, lane, kWarp);
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const auto other = shuffle_down(state, offset);
    if (lane + offset < kWarp) sweep.merge(state, other);
  }
  if (lane == 0) sweep.store(r, state);
}

inline unsigned grid(int64_t n, int64_t per_block) { return unsigned((n + per_block - 1) / per_block); }

struct CudaExecutor {
  template <typename F>
  void each(int64_t n, const F& f) const {
    each_kernel<<<grid(n, kThreads), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename Sweep>
  void rows(int64_t n, const Sweep& sweep) const {
    if (n == 0) return;
    const auto stream = c10::cuda::getCurrentCUDAStream();
    if constexpr (Sweep::kSerial) {
      serial_rows_kernel<<<grid(n, kThreads), kThreads, 0, stream>>>(n, sweep);
    } else {
      warp_rows_kernel<<<grid(n, kThreads / kWarp), kThreads, 0, stream>>>(n, sweep);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace pairloss::cuda
