// Scalar helpers shared by the CPU engine and the CUDA kernels: pair kinds, an online log-sum-exp, and
// softplus/sigmoid without thresholds (exact to rounding in fp64, as the reference oracles' torch.logaddexp).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#ifdef __CUDACC__
#define PL_HD __host__ __device__ __forceinline__
#else
#define PL_HD inline
#endif

namespace pairloss {

// What a pair (anchor i, reference j) is for the loss: left out (the self-pair when X = Y), positive, negative.
enum Kind : uint8_t { kSkip = 0, kPos = 1, kNeg = 2 };

// Granularity (rows × columns) of the forward's "any active pair?" bits that let the backward skip tiles.
constexpr int64_t kActiveTile = 128;

template <typename T>
PL_HD T infinity() {
  return std::numeric_limits<T>::infinity();
}

#ifndef __CUDACC__
// Float overloads on the host (CUDA provides them in the global namespace).
using std::exp;
using std::log;
using std::log1p;
using std::sqrt;
#endif

template <typename T>
PL_HD T pl_exp(T x) {
  return exp(x);
}
template <typename T>
PL_HD T pl_log(T x) {
  return log(x);
}
template <typename T>
PL_HD T pl_log1p(T x) {
  return log1p(x);
}
template <typename T>
PL_HD T pl_sqrt(T x) {
  return sqrt(x);
}
// Squared distances below this many ulps of |x|² + |y|² are rounding noise of the Gram form and count as 0, so
// identical rows are at distance exactly 0 (the rule of pairloss/_numerics.py, shared by every backend).
constexpr int kZeroDistanceUlps = 64;

// The squared distance of the Gram form, |x|² + |y|² − 2s, with that rule applied.
template <typename T>
PL_HD T gram_squared_distance(T x_sq, T y_sq, T s) {
  const T norms = x_sq + y_sq;
  const T sq = norms - 2 * s;
  return sq > kZeroDistanceUlps * std::numeric_limits<T>::epsilon() * norms ? sq : T(0);
}

// Distance of the Gram-matrix formula as the oracle: sqrt of the squared distance where it is positive, else 0
// (the oracle's square root has a zero gradient there, so duplicate rows give finite gradients).
template <typename T>
PL_HD T distance(T sq) {
  return sq > T(0) ? pl_sqrt(sq) : T(0);
}

// ∂L/∂s for a loss term with ∂L/∂d = grad_d on d = sqrt(|x|² + |y|² − 2s); the |x|², |y|² part of the gradient
// is added by the engine from the row and column sums of ∂L/∂s.
template <typename T>
PL_HD T distance_grad_to_sim(T grad_d, T sq) {
  return sq > T(0) ? -grad_d / pl_sqrt(sq) : T(0);
}

// softplus(x) = log(1 + e^x) = −logsigmoid(−x) as max(x, 0) + log1p(e^{−|x|}): no threshold (F.softplus returns
// x above 20, off by up to 2e-9), and its derivative sigmoid(x).
template <typename T>
PL_HD T softplus(T x) {
  return (x > T(0) ? x : T(0)) + pl_log1p(pl_exp(-(x > T(0) ? x : -x)));
}
template <typename T>
PL_HD T sigmoid(T x) {
  return x >= T(0) ? T(1) / (T(1) + pl_exp(-x)) : pl_exp(x) / (T(1) + pl_exp(x));
}
template <typename T>
PL_HD T softplus_grad(T x) {
  return sigmoid(x);
}

// Streaming log Σ e^z. Preset `max` to a known upper bound of the terms and the rescaling branch is never
// taken; otherwise the running maximum follows the terms (needed for unbounded logits).
template <typename T>
struct OnlineLSE {
  T max = -infinity<T>();
  T sum = T(0);

  PL_HD void add(T z) {
    if (z > max) {
      sum = sum * pl_exp(max - z);
      max = z;
    }
    sum += pl_exp(z - max);
  }
  PL_HD void merge(const OnlineLSE& other) {
    if (other.max == -infinity<T>()) return;
    if (other.max > max) {
      sum = sum * pl_exp(max - other.max) + other.sum;
      max = other.max;
    } else {
      sum += other.sum * pl_exp(other.max - max);
    }
  }
  // −inf when empty.
  PL_HD T value() const { return max + pl_log(sum); }
};

// A hyper-parameter that is one number, or one value per anchor (`rows[i · stride]`, e.g. a column of the
// op's row_params).
template <typename T>
struct PerAnchor {
  T value = T(0);
  const T* rows = nullptr;
  int64_t stride = 1;

  PL_HD T operator()(int64_t i) const { return rows == nullptr ? value : rows[i * stride]; }
};

// A row's results: up to two loss components, four saved statistics for the backward, two global counters.
template <typename T>
struct RowResult {
  T rows[2] = {T(0), T(0)};
  double saved[4] = {0, 0, 0, 0};
  int64_t counts[2] = {0, 0};
};

}  // namespace pairloss
