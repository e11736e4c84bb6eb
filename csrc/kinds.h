// Which pairs are positives, negatives or left out, computed on the fly from O(B) inputs (never a B×M mask).
#pragma once

#include "common.h"

namespace pairloss {

// Anchor i's own column among the references: (offset + i) mod cols, or none (offset < 0). Label losses leave it
// out (the anchor's copy in X = Y, a memory bank or a gathered batch); diagonal kinds make it the positive.
struct OwnColumn {
  int64_t offset;  // in [0, cols), or −1: no own column
  int64_t cols;

  PL_HD int64_t operator()(int64_t i) const {
    if (offset < 0) return -1;
    const int64_t j = offset + i;
    return j < cols ? j : j % cols;  // no division unless the ring wraps
  }
};

PL_HD int popcount64(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __popcll(bits);
#else
  return __builtin_popcountll(bits);
#endif
}

// Class labels: positive = same class, negative = other class; the own column is left out. With `words` > 0 the
// labels are multi-hot rows packed into that many 64-bit words (pairloss/_labels.py): positive = at least one
// label shared, negative = none shared.
struct LabelKinds {
  const int64_t* row_labels;
  const int64_t* col_labels;
  OwnColumn own;
  int64_t words = 0;  // 0: one class id per row

  PL_HD bool shared(int64_t i, int64_t j) const {
    if (words == 0) return row_labels[i] == col_labels[j];
    const int64_t *a = row_labels + i * words, *b = col_labels + j * words;
    for (int64_t w = 0; w < words; ++w) {
      if ((a[w] & b[w]) != 0) return true;
    }
    return false;
  }
  PL_HD Kind operator()(int64_t i, int64_t j) const {
    if (j == own(i)) return kSkip;
    return shared(i, j) ? kPos : kNeg;
  }
};

// Soft positives: a positive pair's weight, 1 (uniform: no words) or the Jaccard similarity |L_i ∩ L_j| /
// |L_i ∪ L_j| of the multi-hot rows. Columns come as the epilogues see them, global (col_offset + local).
struct PositiveWeights {
  const int64_t* row_words = nullptr;
  const int64_t* col_words = nullptr;
  int64_t words = 0;
  int64_t col_offset = 0;

  template <typename T>
  PL_HD T at(int64_t i, int64_t global_j) const {
    if (row_words == nullptr) return T(1);
    const int64_t *a = row_words + i * words, *b = col_words + (global_j - col_offset) * words;
    int common = 0, either = 0;
    for (int64_t w = 0; w < words; ++w) {
      common += popcount64(uint64_t(a[w] & b[w]));
      either += popcount64(uint64_t(a[w] | b[w]));
    }
    return either > 0 ? T(common) / T(either) : T(0);
  }
};

// Row i is paired with its own column (CLIP, SigLIP, MW: column i, or SigLIP's positive offset): positive
// there, negative elsewhere.
struct DiagonalKinds {
  OwnColumn own;

  PL_HD Kind operator()(int64_t i, int64_t j) const { return j == own(i) ? kPos : kNeg; }
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

  PL_HD Kind operator()(int64_t i, int64_t j) const {
    const int64_t* row = positives + i * width;
    for (int64_t p = 0; p < width; ++p) {
      if (row[p] == j) return kPos;
    }
    return kNeg;
  }
};

// The kinds of row i against columns [j0, j0 + n) (host side, used by the CPU engine).
template <typename Kinds>
inline void fill_kinds(const Kinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = kinds(i, j0 + c);
}

// Label and diagonal kinds: the own column once per row rather than once per pair.
inline void fill_kinds(const LabelKinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  const int64_t own = kinds.own(i);
  if (kinds.words == 0) {
    const int64_t label = kinds.row_labels[i];
    for (int64_t c = 0; c < n; ++c) out[c] = kinds.col_labels[j0 + c] == label ? kPos : kNeg;
  } else {
    for (int64_t c = 0; c < n; ++c) out[c] = kinds.shared(i, j0 + c) ? kPos : kNeg;
  }
  if (own >= j0 && own < j0 + n) out[own - j0] = kSkip;
}

inline void fill_kinds(const DiagonalKinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  const int64_t own = kinds.own(i);
  for (int64_t c = 0; c < n; ++c) out[c] = kNeg;
  if (own >= j0 && own < j0 + n) out[own - j0] = kPos;
}

inline void fill_kinds(const PositiveListKinds& kinds, int64_t i, int64_t j0, int64_t n, uint8_t* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = kNeg;
  const int64_t* row = kinds.positives + i * kinds.width;
  for (int64_t p = 0; p < kinds.width; ++p) {
    if (row[p] >= j0 && row[p] < j0 + n) out[row[p] - j0] = kPos;
  }
}

}  // namespace pairloss
