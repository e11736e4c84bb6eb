// Transcendentals over float arrays that the compiler vectorizes (no library calls, no branches), each compiled
// for AVX-512, AVX2 and the baseline and picked at load time (target_clones). The CPU engine's tile epilogues
// (tile_epilogues.h) call them on rows of 128 similarities: a scalar std::exp per pair costs more than the GEMM.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PL_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PL_VECTOR_CLONES
#endif

namespace pairloss::cpu {

// e^x for x ≤ 88.7 (within 2 ulp on [−87.3, 88.7]; below −87.3 it returns e^−87.3 ≈ 1e-38, which every sum it
// enters dwarfs): Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, Cephes' degree-6 polynomial, 2^n from the bits.
inline float exp_poly(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float shifter = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer (round to nearest)
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// log(1 + e) for e in [0, 1]: 2·atanh(t), t = e / (2 + e) ≤ 1/3, by its odd series to t^17 (truncation < 1e-9
// relative); no cancellation for small e.
inline float log1p_unit(float e) {
  const float t = e / (2.0f + e), t2 = t * t;
  float p = 1.0f / 17;
  p = p * t2 + 1.0f / 15;
  p = p * t2 + 1.0f / 13;
  p = p * t2 + 1.0f / 11;
  p = p * t2 + 1.0f / 9;
  p = p * t2 + 1.0f / 7;
  p = p * t2 + 1.0f / 5;
  p = p * t2 + 1.0f / 3;
  return 2.0f * t * (p * t2 + 1.0f);
}

// v[c] = e^v[c].
PL_VECTOR_CLONES inline void exp_in_place(float* v, int64_t n) {
  for (int64_t c = 0; c < n; ++c) v[c] = exp_poly(v[c]);
}

// softplus(v[c]) = max(v, 0) + log1p(e^−|v|) into out_softplus, and its derivative sigmoid(v[c]) into
// out_sigmoid (either may be null), from one exponential.
PL_VECTOR_CLONES inline void softplus_sigmoid(const float* v, int64_t n, float* out_softplus, float* out_sigmoid) {
  for (int64_t c = 0; c < n; ++c) {
    const float x = v[c], e = exp_poly(x > 0.0f ? -x : x);
    if (out_softplus != nullptr) out_softplus[c] = (x > 0.0f ? x : 0.0f) + log1p_unit(e);
    if (out_sigmoid != nullptr) out_sigmoid[c] = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
  }
}

}  // namespace pairloss::cpu
