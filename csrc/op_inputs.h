// Argument checks and output shapes shared by the CPU and CUDA implementations of the pairloss::cpp_* ops.
//
// cpp_pair_forward(loss, x, y?, labels?, ref_labels?, scalars?, params, own_offset, row_params?)
//   -> (rows, saved, counts, active)
//   labels class ids (B), or multi-hot rows packed into int64 words (B × words, pairloss/_labels.py)
//   own_offset −1, or row i's own column in y is (own_offset + i) mod len(y): left out by the label losses (the
//          anchors' copies in a memory bank or a gathered batch), the positive of SigLIP
//   row_params B × k: per-anchor values of the loss's first k params (triplet: margin; contrastive: pos_margin,
//          neg_margin), read in the accumulation dtype, not differentiated
//   rows   B × 2 (x's accumulation dtype: fp32 for fp16/bf16/fp32 x, fp64 for fp64 x): per-anchor loss
//          components (column 1 is only used by contrastive: negatives)
//   saved  B × 4 float64: per-anchor statistics for the backward
//   counts 2 int64: batch counters the reduction needs (pairs, non-zero terms)
//   active ceil(B/kActiveTile) × ceil(M/kActiveTile) uint8: tiles holding a pair with a gradient
// cpp_pair_backward(loss, grad_rows, x, y?, labels?, ref_labels?, scalars?, params, own_offset, saved, active,
//                   col_offset, row_params?)
//   -> (dx, dy, dscalars); dx, dy in x's dtype, dscalars in the accumulation dtype; dy and dscalars are empty
//   when y / scalars are absent.
// Scalars (logit scale, bias) are read in the accumulation dtype, never rounded to fp16/bf16.
//   col_offset (default 0): global index of y's first row when y is one block of the references (the ring), as
//          the forward's saved column indices are global
// cpp_ring_* (CPU): the label losses over references that arrive block by block (pairloss.distributed's ring),
//   per-row statistics and accumulators carried between calls as opaque uint8 rows (see cpu/ops.cpp):
//   cpp_ring_sweeps(loss, params) -> [statistics sweep?, loss sweep?]
//   cpp_ring_begin(loss, x, labels, params) -> stats
//   cpp_ring_stats(loss, x, y, labels, ref_labels, params, own_offset, col_offset, stats) -> stats
//   cpp_ring_accumulate(loss, x, y, labels, ref_labels, params, own_offset, col_offset, stats, accs?)
//     -> (accs, active)
//   cpp_ring_finish(loss, x, labels, params, stats, accs?) -> (rows, saved, counts) as cpp_pair_forward's
//   each also takes the anchors' row_params? last (the same in every call of one loss)
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common.h"
#include "kinds.h"

namespace pairloss {

// The dtype the engines accumulate x's Gram form and compute everything else in (pairloss/_numerics.py).
inline at::ScalarType accumulation_type(at::ScalarType dtype) { return at::promote_types(dtype, at::kFloat); }

enum class LossId {
  kMultiSimilarity,
  kTripletHard,
  kTripletAll,
  kContrastive,
  kCircle,
  kNTXent,
  kSupCon,
  kClip,
  kSigLip,
  kDecoupledSoftmax,
  kUniformity,
  kMannWhitney,
};

struct LossInfo {
  const char* name;
  LossId id;
  size_t params;         // length of `params`
  bool labels;           // needs labels (class ids, or positive indices for decoupled softmax)
  size_t scalars;        // length of `scalars` (learnable logit scale / bias)
  const char* params_doc;
  size_t row_params = 0;  // columns of the optional per-anchor `row_params` (the first params they replace)
};

inline const LossInfo& loss_info(c10::string_view name) {
  static const LossInfo table[] = {
      {"multi_similarity", LossId::kMultiSimilarity, 5, true, 0, "alpha, beta, base, epsilon, mining"},
      {"triplet_hard", LossId::kTripletHard, 2, true, 0, "margin, soft", 1},
      {"triplet_all", LossId::kTripletAll, 2, true, 0, "margin, soft", 1},
      {"contrastive", LossId::kContrastive, 2, true, 0, "pos_margin, neg_margin", 2},
      {"circle", LossId::kCircle, 2, true, 0, "m, gamma"},
      {"ntxent", LossId::kNTXent, 2, true, 0, "temperature, jaccard"},
      {"supcon", LossId::kSupCon, 2, true, 0, "temperature, jaccard"},
      {"clip", LossId::kClip, 0, false, 1, ""},
      {"siglip", LossId::kSigLip, 0, false, 2, ""},
      {"decoupled_softmax", LossId::kDecoupledSoftmax, 1, true, 0, "temperature"},
      {"uniformity", LossId::kUniformity, 1, false, 0, "t"},
      {"mw", LossId::kMannWhitney, 1, false, 0, "temperature"},
  };
  for (const auto& info : table) {
    if (name == info.name) return info;
  }
  std::string known;
  for (const auto& info : table) known += std::string(known.empty() ? "" : ", ") + info.name;
  TORCH_CHECK(false, "pairloss: unknown loss '", std::string(name), "'; known: ", known);
}

// Checked, contiguous operands of one call.
struct PairInputs {
  const LossInfo* info;
  at::Tensor x, y;  // y undefined when the references are the anchors
  at::Tensor labels, ref_labels, scalars;
  at::Tensor row_params;  // undefined: the params' numbers hold for every anchor
  std::vector<double> params;
  int64_t rows, cols, dim;
  OwnColumn own;  // label losses: left out (the diagonal when X = Y); diagonal losses: the positive
  int64_t col_offset = 0;  // global index of y's first row (a block of the references)
  bool self() const { return !y.defined(); }
  const at::Tensor& refs() const { return self() ? x : y; }
};

inline PairInputs check_inputs(c10::string_view loss, const at::Tensor& x, const c10::optional<at::Tensor>& y,
                               const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
                               const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params,
                               int64_t own_offset, int64_t col_offset = 0,
                               const c10::optional<at::Tensor>& row_params = c10::nullopt) {
  PairInputs in;
  in.info = &loss_info(loss);
  const char* name = in.info->name;
  TORCH_CHECK(x.dim() == 2, "pairloss ", name, ": x must be 2-D (rows × features), got shape ", x.sizes());
  TORCH_CHECK(x.is_floating_point(), "pairloss ", name, ": x must be floating-point, got ", x.scalar_type());
  TORCH_CHECK(x.size(0) > 0 && x.size(1) > 0, "pairloss ", name, ": x is empty (shape ", x.sizes(), ")");
  TORCH_CHECK(params.size() == in.info->params, "pairloss ", name, ": expected ", in.info->params, " params (",
              in.info->params_doc, "), got ", params.size());
  in.params = params.vec();
  in.x = x.contiguous();
  in.rows = x.size(0);
  in.dim = x.size(1);
  in.cols = in.rows;
  if (y.has_value()) {
    TORCH_CHECK(y->dim() == 2 && y->size(1) == in.dim && y->size(0) > 0, "pairloss ", name,
                ": y must be 2-D with ", in.dim, " features like x, got shape ", y->sizes());
    TORCH_CHECK(y->scalar_type() == x.scalar_type(), "pairloss ", name, ": y is ", y->scalar_type(), " but x is ",
                x.scalar_type());
    TORCH_CHECK(y->device() == x.device(), "pairloss ", name, ": y is on ", y->device(), " but x on ", x.device());
    in.y = y->contiguous();
    in.cols = y->size(0);
  }
  if (in.info->labels) {
    TORCH_CHECK(labels.has_value(), "pairloss ", name, ": labels are required");
    TORCH_CHECK(!at::isFloatingType(labels->scalar_type()) && labels->scalar_type() != at::kBool, "pairloss ", name,
                ": labels must be integers, got ", labels->scalar_type());
    TORCH_CHECK(labels->device() == x.device(), "pairloss ", name, ": labels are on ", labels->device(),
                " but x on ", x.device());
    TORCH_CHECK(labels->dim() >= 1 && labels->size(0) == in.rows, "pairloss ", name, ": labels must have ",
                in.rows, " rows (one per row of x), got shape ", labels->sizes());
    in.labels = labels->to(at::kLong).contiguous();
    if (in.info->id == LossId::kDecoupledSoftmax) {
      TORCH_CHECK(labels->dim() == 2 && in.y.defined(), "pairloss ", name,
                  ": labels must be the B × P positive key indices (−1 padded) and y the keys");
    } else {
      // Class ids (1-D), or multi-hot rows packed into int64 words (2-D, pairloss/_labels.py).
      TORCH_CHECK(labels->dim() == 1 || (labels->dim() == 2 && labels->scalar_type() == at::kLong), "pairloss ",
                  name, ": labels must be 1-D class ids or 2-D int64 packed multi-hot words, got shape ",
                  labels->sizes());
      TORCH_CHECK(ref_labels.has_value() == y.has_value(), "pairloss ", name,
                  ": ref_labels must be given exactly when y is");
      if (ref_labels.has_value()) {
        TORCH_CHECK(ref_labels->dim() == labels->dim() && ref_labels->size(0) == in.cols &&
                        (labels->dim() == 1 || ref_labels->size(1) == labels->size(1)),
                    "pairloss ", name, ": ref_labels must have one row per row of y (", in.cols,
                    ") in the form of labels (shape ", labels->sizes(), "), got shape ", ref_labels->sizes());
        TORCH_CHECK(ref_labels->device() == x.device(), "pairloss ", name, ": ref_labels are on ",
                    ref_labels->device(), " but x on ", x.device());
        in.ref_labels = ref_labels->to(at::kLong).contiguous();
      }
    }
  }
  if (in.info->scalars > 0) {
    TORCH_CHECK(scalars.has_value() && scalars->numel() == int64_t(in.info->scalars), "pairloss ", name,
                ": scalars must hold ", in.info->scalars, " values (logit scale, bias)");
    TORCH_CHECK(scalars->device() == x.device(), "pairloss ", name, ": scalars are on ", scalars->device(),
                " but x on ", x.device());
    in.scalars = scalars->to(accumulation_type(x.scalar_type())).reshape({-1}).contiguous();
  }
  const bool two_towers = in.info->id == LossId::kClip || in.info->id == LossId::kSigLip ||
                          in.info->id == LossId::kMannWhitney || in.info->id == LossId::kDecoupledSoftmax;
  TORCH_CHECK(!two_towers || in.y.defined(), "pairloss ", name, ": needs the second tower y");
  TORCH_CHECK(in.info->id != LossId::kUniformity || !in.y.defined(), "pairloss ", name, ": takes no y");
  const bool label_classes = in.info->labels && in.info->id != LossId::kDecoupledSoftmax;
  TORCH_CHECK(own_offset >= -1, "pairloss ", name, ": own_offset must be ≥ 0, or −1 for none; got ", own_offset);
  TORCH_CHECK(own_offset < 0 || (in.y.defined() && (label_classes || in.info->id == LossId::kSigLip)), "pairloss ",
              name, ": own_offset is only for the label losses and siglip, with y given");
  TORCH_CHECK(in.info->id != LossId::kClip || in.cols == in.rows, "pairloss ", name,
              ": both towers need the same number of rows, got ", in.rows, " and ", in.cols);
  TORCH_CHECK(in.info->id != LossId::kSigLip || own_offset >= 0 || in.cols == in.rows, "pairloss ", name,
              ": both towers need the same number of rows without a positive offset, got ", in.rows, " and ",
              in.cols);
  TORCH_CHECK(in.info->id != LossId::kMannWhitney || in.cols >= in.rows, "pairloss ", name,
              ": needs at least one document per query");
  // Label losses leave the own column out (X = Y: the diagonal; given y: only with an offset); the diagonal
  // losses make it the positive (column i unless SigLIP's offset moves it).
  const int64_t offset = own_offset >= 0 ? own_offset % in.cols : (in.self() || !label_classes ? 0 : -1);
  in.own = {offset, in.cols};
  TORCH_CHECK(col_offset >= 0, "pairloss ", name, ": col_offset must be ≥ 0, got ", col_offset);
  in.col_offset = col_offset;
  if (row_params.has_value()) {
    const int64_t width = in.info->row_params;
    TORCH_CHECK(width > 0, "pairloss ", name, ": takes no per-anchor row_params");
    TORCH_CHECK(row_params->dim() == 2 && row_params->size(0) == in.rows && row_params->size(1) == width &&
                    row_params->is_floating_point(),
                "pairloss ", name, ": row_params must be floating, one row of ", width, " (", in.info->params_doc,
                ") per row of x (", in.rows, "), got shape ", row_params->sizes());
    TORCH_CHECK(row_params->device() == x.device(), "pairloss ", name, ": row_params are on ", row_params->device(),
                " but x on ", x.device());
    in.row_params = row_params->to(accumulation_type(x.scalar_type())).contiguous();
  }
  return in;
}

// The per-anchor hyper-parameters as the epilogues read them (in T, x's accumulation dtype), or null.
template <typename T>
const T* anchor_params(const PairInputs& in) {
  return in.row_params.defined() ? in.row_params.data_ptr<T>() : nullptr;
}

inline int64_t label_words(const PairInputs& in) { return in.labels.dim() == 2 ? in.labels.size(1) : 0; }

inline LabelKinds label_kinds(const PairInputs& in) {
  const int64_t* labels = in.labels.data_ptr<int64_t>();
  return {labels, in.self() ? labels : in.ref_labels.data_ptr<int64_t>(), in.own, label_words(in)};
}

// NT-Xent's and SupCon's positive weights: Jaccard (their second param, multi-hot labels) or uniform.
inline PositiveWeights positive_weights(const PairInputs& in) {
  const bool softmax = in.info->id == LossId::kNTXent || in.info->id == LossId::kSupCon;
  if (!softmax || in.params[1] == 0) return {};
  TORCH_CHECK(label_words(in) > 0, "pairloss ", in.info->name, ": Jaccard positive weights need multi-hot labels");
  const LabelKinds kinds = label_kinds(in);
  return {kinds.row_labels, kinds.col_labels, kinds.words, in.col_offset};
}

inline DiagonalKinds diagonal_kinds(const PairInputs& in) { return {in.own}; }

struct ForwardOutputs {
  at::Tensor rows, saved, counts, active;
};

inline ForwardOutputs allocate_forward(const PairInputs& in) {
  const auto options = in.x.options();
  const auto blocks = [](int64_t n) { return (n + kActiveTile - 1) / kActiveTile; };
  return {at::zeros({in.rows, 2}, options.dtype(accumulation_type(in.x.scalar_type()))),
          at::zeros({in.rows, 4}, options.dtype(at::kDouble)),
          at::zeros({2}, options.dtype(at::kLong)),
          at::zeros({blocks(in.rows), blocks(in.cols)}, options.dtype(at::kByte))};
}

// The backward's accumulators in the accumulation dtype: dx, and dy unless X = Y (then ∂L/∂Y adds into dx).
struct Gradients {
  at::Tensor dx, dy;

  explicit Gradients(const PairInputs& in) {
    const auto options = in.x.options().dtype(accumulation_type(in.x.scalar_type()));
    dx = at::zeros({in.rows, in.dim}, options);
    if (!in.self()) dy = at::zeros({in.cols, in.dim}, options);
  }
  const at::Tensor& dy_or_dx() const { return dy.defined() ? dy : dx; }
  // The op's (dx, dy, dscalars): gradients in the inputs' dtype, dy empty when X = Y.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> outputs(at::ScalarType dtype, const at::Tensor& dscalars) const {
    return {dx.to(dtype), dy.defined() ? dy.to(dtype) : at::empty({0}, dx.options().dtype(dtype)), dscalars};
  }
};

inline void check_backward_inputs(const PairInputs& in, const at::Tensor& grad_rows, const at::Tensor& saved,
                                  const at::Tensor& active) {
  const char* name = in.info->name;
  for (const auto& [tensor, what] : {std::pair{&grad_rows, "grad_rows"}, {&saved, "saved"}, {&active, "active"}}) {
    TORCH_CHECK(tensor->device() == in.x.device(), "pairloss ", name, ": ", what, " is on ", tensor->device(),
                " but x on ", in.x.device());
  }
  TORCH_CHECK(grad_rows.dim() == 2 && grad_rows.size(0) == in.rows && grad_rows.size(1) == 2, "pairloss ", name,
              ": grad_rows must be ", in.rows, " × 2, got ", grad_rows.sizes());
  TORCH_CHECK(saved.dim() == 2 && saved.size(0) == in.rows && saved.size(1) == 4 &&
                  saved.scalar_type() == at::kDouble,
              "pairloss ", name, ": saved must be the forward's ", in.rows, " × 4 float64 statistics");
  TORCH_CHECK(active.dim() == 2 && active.scalar_type() == at::kByte &&
                  active.size(0) == (in.rows + kActiveTile - 1) / kActiveTile &&
                  active.size(1) == (in.cols + kActiveTile - 1) / kActiveTile,
              "pairloss ", name, ": active must be the forward's uint8 tile map");
}

}  // namespace pairloss
