// The label losses whose rows are a fold of their pairs, configured in one place for the CPU engine's forward,
// backward and block-by-block ops. Block by block, the references arrive in blocks (pairloss.distributed's ring)
// and each anchor's statistics and accumulators are carried from one block to the next (cpu/ops.cpp's cpp_ring_*
// ops): every epilogue below folds pairs one at a time into per-row state, so a row continued over the blocks
// equals the row over their concatenation; the epilogues see global column indices (the batch-hard triplet's
// ties go to the lowest one whatever the order of the blocks). Not here: losses whose rows are not such a fold
// (the all-triplets list of each anchor's positives) or that also reduce columns (CLIP).
#pragma once

#include <vector>

#include "epilogues/configure.h"
#include "op_inputs.h"

namespace pairloss {

inline bool is_block_loss(LossId id) {
  return id == LossId::kMultiSimilarity || id == LossId::kTripletHard || id == LossId::kContrastive ||
         id == LossId::kCircle || id == LossId::kNTXent || id == LossId::kSupCon;
}

// Calls f(epilogue) with the loss's epilogue, for the losses with a block-by-block form: `params`, NT-Xent's and
// SupCon's positive weights, and the per-anchor values of the first params (op_inputs.h's row_params, or null).
template <typename T, typename F>
void with_block_loss(const LossInfo& info, const Params& params, const PositiveWeights& weights,
                     const T* anchor_values, F&& f) {
  switch (info.id) {
    case LossId::kMultiSimilarity:
      return f(multi_similarity<T>(params));
    case LossId::kTripletHard:
      return f(triplet<TripletHard<T>>(params, anchor_values));
    case LossId::kContrastive:
      return f(contrastive<T>(params, anchor_values));
    case LossId::kCircle:
      return f(circle<T>(params));
    case LossId::kNTXent:
      return f(softmax<NTXent<T>>(params, weights));
    case LossId::kSupCon:
      return f(softmax<SupCon<T>>(params, weights));
    default:
      TORCH_CHECK(false, "pairloss ", info.name, ": no block-by-block (ring) form; the ones with one: "
                  "multi_similarity, triplet_hard, contrastive, circle, ntxent, supcon");
  }
}

// [statistics sweep?, loss sweep?] of the loss with these params: the ring skips a sweep the loss lacks.
inline std::vector<int64_t> ring_sweeps(c10::string_view loss, at::ArrayRef<double> params) {
  const LossInfo& info = loss_info(loss);
  TORCH_CHECK(params.size() == info.params, "pairloss ", info.name, ": expected ", info.params, " params (",
              info.params_doc, "), got ", params.size());
  std::vector<int64_t> sweeps;
  with_block_loss<double>(info, params.vec(), PositiveWeights{}, nullptr, [&](const auto& epilogue) {
    sweeps = {int64_t(epilogue.stats_pass()), int64_t(epilogue.loss_pass())};
  });
  return sweeps;
}

// with_block_loss configured from one op's inputs.
template <typename T, typename F>
void with_block_loss(const PairInputs& in, F&& f) {
  with_block_loss<T>(*in.info, in.params, positive_weights(in), anchor_params<T>(in), f);
}

}  // namespace pairloss
