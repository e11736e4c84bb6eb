// The chunked engine's sweeps on the CPU, rows and elements spread over the ATen threads. A row sweep runs as the
// CUDA executor's warp would (cuda/executor.cuh): 32 lanes on interleaved columns, their states merged in the
// same tree order, so that the CPU tests check the merges and the lanes' starting states too.
#pragma once

#include <ATen/Parallel.h>

#include <array>

namespace pairloss::chunked {

struct CpuExecutor {
  template <typename F>
  void each(int64_t n, const F& f) const {
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) f(i);
    });
  }

  static constexpr int kLanes = 32;

  template <typename Sweep>
  void rows(int64_t n, const Sweep& sweep) const {
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if constexpr (Sweep::kSerial) {
          sweep.store(r, sweep.fold(r, 0, 1));
        } else {
          std::array<typename Sweep::State, kLanes> lanes;
          for (int lane = 0; lane < kLanes; ++lane) lanes[lane] = sweep.fold(r, lane, kLanes);
          // The warp's shuffle-down tree: lane l takes lane l + offset's state of the previous round.
          for (int offset = kLanes / 2; offset > 0; offset /= 2) {
            for (int lane = 0; lane + offset < kLanes; ++lane) sweep.merge(lanes[lane], lanes[lane + offset]);
          }
          sweep.store(r, lanes[0]);
        }
      }
    });
  }
};

}  // namespace pairloss::chunked
