// Triplet margin loss on L2 distances (PML TripletMarginLoss): batch-hard mining (PML BatchHardMiner) or all
// valid triplets; hinge relu, or softplus for the soft-margin variant.
#pragma once

#include "epilogue.h"

namespace pairloss {

template <typename T>
struct TripletHinge {
  using Value = T;
  PerAnchor<T> margin;
  bool soft;

  PL_HD T hinge(T v) const { return soft ? softplus(v) : (v > T(0) ? v : T(0)); }
  // relu' is 0 at 0, as PyTorch's.
  PL_HD T hinge_grad(T v) const { return soft ? softplus_grad(v) : (v > T(0) ? T(1) : T(0)); }
};

// Batch-hard: the farthest positive and the closest negative of each anchor (first index on ties, like argmax).
// The loss needs no second sweep and its gradient reaches two pairs per anchor, so the backward applies them
// directly instead of recomputing tiles (see triplet_hard_backward).
template <typename T>
struct TripletHard : BackwardInputs<T>, TripletHinge<T> {
  static constexpr bool kDistance = true;
  static constexpr bool kLogits = false;

  PL_HD bool stats_pass() const { return true; }
  PL_HD bool loss_pass() const { return false; }

  struct Stats {
    T pos_d;
    int64_t pos_j;
    T neg_d;
    int64_t neg_j;
    T margin;  // the anchor's
  };
  PL_HD Stats stats_init(int64_t i) const { return {-infinity<T>(), -1, infinity<T>(), -1, this->margin(i)}; }
  PL_HD void stats_add(Stats& st, Kind kind, T, T sq, int64_t, int64_t j) const {
    const T d = distance(sq);
    if (kind == kPos && (d > st.pos_d || (d == st.pos_d && j < st.pos_j))) {
      st.pos_d = d;
      st.pos_j = j;
    }
    if (kind == kNeg && (d < st.neg_d || (d == st.neg_d && (st.neg_j < 0 || j < st.neg_j)))) {
      st.neg_d = d;
      st.neg_j = j;
    }
  }
  PL_HD void stats_merge(Stats& st, const Stats& o) const {
    if (o.pos_j >= 0 && (st.pos_j < 0 || o.pos_d > st.pos_d || (o.pos_d == st.pos_d && o.pos_j < st.pos_j))) {
      st.pos_d = o.pos_d;
      st.pos_j = o.pos_j;
    }
    if (o.neg_j >= 0 && (st.neg_j < 0 || o.neg_d < st.neg_d || (o.neg_d == st.neg_d && o.neg_j < st.neg_j))) {
      st.neg_d = o.neg_d;
      st.neg_j = o.neg_j;
    }
  }

  using Acc = NoStats;
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc&, const Stats&, Kind, T, T, int64_t, int64_t) const { return false; }
  PL_HD void acc_merge(Acc&, const Acc&) const {}

  PL_HD void finish(const Stats& st, const Acc&, RowResult<T>& out) const {
    const bool has_triplet = st.pos_j >= 0 && st.neg_j >= 0;
    out.rows[0] = has_triplet ? this->hinge(st.pos_d - st.neg_d + st.margin) : T(0);
    out.saved[0] = double(st.pos_j);
    out.saved[1] = double(st.neg_j);
    out.saved[2] = st.pos_d;
    out.saved[3] = st.neg_d;
  }

  // ∂L/∂d of the anchor's hardest positive (the hardest negative gets the opposite); 0 without a triplet.
  PL_HD T grad_d(int64_t i) const {
    const double* saved = this->saved + 4 * i;
    if (saved[0] < 0 || saved[1] < 0) return T(0);
    return this->weight[2 * i] * this->hinge_grad(T(saved[2]) - T(saved[3]) + this->margin(i));
  }
};

// All triplets without a B×M×M tensor: pass 1 lists each anchor's positive distances (CSR, sized from the label
// counts: O(#positive pairs) memory); pass 2 streams the negatives against that list and also sums, per
// positive, the hinge derivatives over its negatives (the positive's gradient). A row's pairs are visited in column
// order by one thread (kSerialRows): the list is filled in order and the positives' sums have one writer.
template <typename T>
struct TripletAll : BackwardInputs<T>, TripletHinge<T> {
  static constexpr bool kDistance = true;
  static constexpr bool kLogits = false;
  static constexpr bool kSerialRows = true;
  const int64_t* offsets;  // B + 1
  T* pos_d;
  int64_t* pos_j;
  T* pos_grad;  // Σ_n hinge'(d_p − d_n + margin), zero before pass 2

  PL_HD bool stats_pass() const { return true; }
  PL_HD bool loss_pass() const { return true; }

  struct Stats {
    int64_t next;
  };
  PL_HD Stats stats_init(int64_t i) const { return {offsets[i]}; }
  PL_HD void stats_add(Stats& st, Kind kind, T, T sq, int64_t, int64_t j) const {
    if (kind != kPos) return;
    pos_d[st.next] = distance(sq);
    pos_j[st.next] = j;
    ++st.next;
  }

  struct Acc {
    T sum = T(0);
    int64_t nonzero = 0;
  };
  PL_HD Acc acc_init(const Stats&, int64_t) const { return {}; }
  PL_HD bool acc_add(Acc& acc, const Stats&, Kind kind, T, T sq, int64_t i, int64_t) const {
    if (kind != kNeg) return kind == kPos;  // a positive's gradient is only known after the whole row
    const T d_neg = distance(sq), margin = this->margin(i);
    bool active = false;
    for (int64_t p = offsets[i]; p < offsets[i + 1]; ++p) {
      const T v = pos_d[p] - d_neg + margin;
      const T term = this->hinge(v), slope = this->hinge_grad(v);
      acc.sum += term;
      acc.nonzero += term > T(0);
      pos_grad[p] += slope;
      active |= slope != T(0);
    }
    return active;
  }

  PL_HD void finish(const Stats&, const Acc& acc, RowResult<T>& out) const {
    out.rows[0] = acc.sum;
    out.counts[0] = acc.nonzero;
  }

  struct Grad {
    int64_t begin, end;
    T weight, margin;
  };
  PL_HD Grad grad_row(int64_t i) const { return {offsets[i], offsets[i + 1], this->weight[2 * i], this->margin(i)}; }
  PL_HD T grad(const Grad& g, Kind kind, T, T sq, int64_t, int64_t j) const {
    if (kind == kPos) {
      int64_t lo = g.begin, hi = g.end;  // the slot of column j in the anchor's sorted positive list
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (pos_j[mid] < j) lo = mid + 1; else hi = mid;
      }
      return distance_grad_to_sim(g.weight * pos_grad[lo], sq);
    }
    if (kind != kNeg) return T(0);
    const T d_neg = distance(sq);
    T slope = T(0);
    for (int64_t p = g.begin; p < g.end; ++p) slope += this->hinge_grad(pos_d[p] - d_neg + g.margin);
    return distance_grad_to_sim(-g.weight * slope, sq);
  }
};

}  // namespace pairloss
