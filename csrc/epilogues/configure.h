// Epilogues configured from an op's `params` list (order documented in op_inputs.h's loss table), shared by the
// CPU and CUDA ops so that forward and backward always build the same loss.
#pragma once

#include <algorithm>
#include <vector>

#include "circle.h"
#include "contrastive.h"
#include "multi_similarity.h"
#include "softmax.h"
#include "triplet.h"
#include "two_tower.h"
#include "uniformity.h"

namespace pairloss {

using Params = std::vector<double>;

template <typename T>
MultiSimilarity<T> multi_similarity(const Params& p) {
  MultiSimilarity<T> loss;
  loss.alpha = p[0], loss.beta = p[1], loss.base = p[2], loss.epsilon = p[3], loss.mining = p[4] != 0;
  return loss;
}

// Per-anchor margins (the op's row_params) replace the params' numbers when given.
template <typename Triplet>
Triplet triplet(const Params& p, const typename Triplet::Value* row_margins = nullptr) {
  Triplet loss;
  loss.margin = {typename Triplet::Value(p[0]), row_margins, 1};
  loss.soft = p[1] != 0;
  return loss;
}

template <typename T>
Contrastive<T> contrastive(const Params& p, const T* row_margins = nullptr) {
  Contrastive<T> loss;
  loss.pos_margin = {T(p[0]), row_margins, 2};
  loss.neg_margin = {T(p[1]), row_margins == nullptr ? nullptr : row_margins + 1, 2};
  return loss;
}

template <typename T>
Circle<T> circle(const Params& p) {
  Circle<T> loss;
  loss.m = p[0], loss.gamma = p[1];
  return loss;
}

// NT-Xent, decoupled softmax and SupCon: params = (temperature, …); the positive weights from the labels
// (op_inputs.h's positive_weights; uniform when omitted).
template <typename Softmax>
Softmax softmax(const Params& p, const PositiveWeights& weights = {}) {
  Softmax loss;
  loss.inv_temperature = 1 / p[0];
  loss.weights = weights;
  return loss;
}

template <typename T>
Uniformity<T> uniformity(const Params& p) {
  Uniformity<T> loss;
  loss.t = p[0];
  return loss;
}

template <typename T>
MannWhitney<T> mann_whitney(const Params& p, int64_t docs) {
  MannWhitney<T> loss;
  loss.inv_temperature = 1 / p[0], loss.inv_count = T(1) / T(std::max<int64_t>(docs - 1, 1));
  return loss;
}

}  // namespace pairloss
