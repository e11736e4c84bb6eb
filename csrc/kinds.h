// Which pairs are positives, negatives or left out, computed on the fly from O(B) inputs (never a B×M mask).
#pragma once

#include "common.h"

namespace pairloss {

// Class labels: positive = same class, negative = other class; the self-pair is left out when X = Y.
struct LabelKinds {
  const int64_t* row_labels;
  const int64_t* col_labels;
  bool self;

  PL_HD Kind operator()(int64_t i, int64_t j) const {
    if (self && i == j) return kSkip;
    return row_labels[i] == col_labels[j] ? kPos : kNeg;
  }
};

// Row i is paired with column i (CLIP, SigLIP, MW): positive on the diagonal, negative elsewhere.
struct DiagonalKinds {
  PL_HD Kind operator()(int64_t i, int64_t j) const { return i == j ? kPos : kNeg; }
};

// Every ordered pair of distinct rows of one set (uniformity).
struct OffDiagonalKinds {
  PL_HD Kind operator()(int64_t i, int64_t j) const { return i == j ? kSkip : kNeg; }
};

// Positives given as a B×P index tensor padded with −1 (decoupled softmax); everything else is negative.
// A repeated index marks the same column, so it counts once.
struct PositiveListKinds {
  const int64_t* positives;
  int64_t width;
};

// The kinds of row i against columns [j0, j0 + n) (host side, used by the CPU engine).
template <typename Kinds>
inline void fill_kinds(const Kinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = kinds(i, j0 + c);
}

inline void fill_kinds(const PositiveListKinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = kNeg;
  const int64_t* row = kinds.positives + i * kinds.width;
  for (int64_t p = 0; p < kinds.width; ++p) {
    if (row[p] >= j0 && row[p] < j0 + n) out[row[p] - j0] = kPos;
  }
}

}  // namespace pairloss
