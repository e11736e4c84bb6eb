// The chunked engine's sweeps on the CPU: one lane per row, rows and elements spread over the ATen threads.
#pragma once

#include <ATen/Parallel.h>

namespace pairloss::chunked {

struct CpuExecutor {
  template <typename F>
  void each(int64_t n, const F& f) const {
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) f(i);
    });
  }

  template <typename Sweep>
  void rows(int64_t n, const Sweep& sweep) const {
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) sweep.store(r, sweep.fold(r, 0, 1));
    });
  }
};

}  // namespace pairloss::chunked
