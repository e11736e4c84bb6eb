// Which epilogue and pair kinds each loss runs with, and how a loss needing more than one engine run composes,
// written once for the engines (the tiled CPU engine of cpu/ops.cpp and the chunked engine of chunked/engine.h).
// T is the accumulation dtype; an Engine provides
//   each(n, f)                      f(i) for every i < n, on the inputs' device
//   forward(loss, kinds, out)       the forward sweeps into the op's outputs
//   backward(loss, kinds, dx, dy)   adds ∂L/∂X, ∂L/∂Y (dy is dx when X = Y); returns the float64 scalar sums
//                                   (Σ ∂L/∂l·s, Σ ∂L/∂l) on the device
#pragma once

#include <ATen/ATen.h>

#include <type_traits>

#include "block_losses.h"

namespace pairloss {

inline PositiveListKinds positive_kinds(const PairInputs& in) {
  return {in.labels.data_ptr<int64_t>(), in.labels.size(1)};
}

// The learnable logit scale (and bias) where they live: the epilogues read them on the device.
template <typename T>
const T* logit_scalars(const PairInputs& in) {
  return in.scalars.data_ptr<T>();
}

// Each anchor's positives under multi-hot labels, counted pair by pair (O(B·M·words), no B×M tensor).
struct CountPositives {
  LabelKinds kinds;
  int64_t cols;
  int64_t* counts;
  PL_HD void operator()(int64_t i) const {
    int64_t n = 0;
    for (int64_t j = 0; j < cols; ++j) n += kinds(i, j) == kPos;
    counts[i] = n;
  }
};

// Each anchor's positives are listed by the first pass of TripletAll: size the list from the label counts, less
// the anchor's own column where that holds its label (the column is left out, not a positive). Sizing reads the
// total on the host (a sync on CUDA: the list length is data-dependent).
template <typename T>
struct TripletLists {
  at::Tensor offsets, pos_d, pos_j, pos_grad;

  template <typename Engine>
  TripletLists(const PairInputs& in, const Engine& engine) {
    const at::Tensor counts = label_words(in) > 0 ? counted_positives(in, engine) : sorted_positives(in);
    offsets = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)});
    const int64_t total = offsets[-1].item<int64_t>();
    const auto options = in.x.options().dtype(c10::CppTypeToScalarType<T>::value);
    pos_d = at::empty({total}, options);
    pos_j = at::empty({total}, counts.options());
    pos_grad = at::zeros({total}, options);
  }
  // Class ids: each anchor's label count among the sorted references.
  static at::Tensor sorted_positives(const PairInputs& in) {
    const at::Tensor& refs = in.self() ? in.labels : in.ref_labels;
    const at::Tensor sorted = std::get<0>(refs.sort());
    at::Tensor counts =
        at::searchsorted(sorted, in.labels, false, /*right=*/true) - at::searchsorted(sorted, in.labels);
    if (in.own.offset >= 0) {
      const at::Tensor own = (at::arange(in.rows, counts.options()) + in.own.offset).remainder(in.own.cols);
      counts -= (refs.index_select(0, own) == in.labels).to(at::kLong);
    }
    return counts;
  }
  template <typename Engine>
  static at::Tensor counted_positives(const PairInputs& in, const Engine& engine) {
    at::Tensor counts = at::empty({in.rows}, in.labels.options());
    engine.each(in.rows, CountPositives{label_kinds(in), in.cols, counts.data_ptr<int64_t>()});
    return counts;
  }

  void attach(TripletAll<T>& loss) const {
    loss.offsets = offsets.data_ptr<int64_t>();
    loss.pos_d = pos_d.data_ptr<T>();
    loss.pos_j = pos_j.data_ptr<int64_t>();
    loss.pos_grad = pos_grad.data_ptr<T>();
  }
};

template <typename T, typename Engine>
void forward_losses(const PairInputs& in, const Engine& engine, ForwardOutputs& out) {
  if (is_block_loss(in.info->id)) {
    return with_block_loss<T>(in, [&](const auto& loss) { engine.forward(loss, label_kinds(in), out); });
  }
  const Params& prm = in.params;
  switch (in.info->id) {
    case LossId::kTripletAll: {
      auto loss = triplet<TripletAll<T>>(prm, anchor_params<T>(in));
      const TripletLists<T> lists(in, engine);
      lists.attach(loss);
      return engine.forward(loss, label_kinds(in), out);
    }
    case LossId::kDecoupledSoftmax:
      return engine.forward(softmax<NTXent<T>>(prm), positive_kinds(in), out);
    case LossId::kClip: {  // both directions in one sweep: row LSEs (image→text) and column LSEs (text→image)
      Clip<T> loss;
      loss.logit = logit_scalars<T>(in);
      return engine.forward(loss, diagonal_kinds(in), out);
    }
    case LossId::kSigLip: {
      SigLip<T> loss;
      loss.logit = logit_scalars<T>(in);
      return engine.forward(loss, diagonal_kinds(in), out);
    }
    case LossId::kUniformity:
      return engine.forward(uniformity<T>(prm), OffDiagonalKinds{}, out);
    case LossId::kMannWhitney:
      return engine.forward(mann_whitney<T>(prm, in.cols), diagonal_kinds(in), out);
    default:
      TORCH_CHECK(false, "pairloss ", in.info->name, ": no forward");
  }
}

// Batch-hard triplets: two pairs per anchor carry a gradient, c · (x_i − y_j) on x_i and the opposite on y_j, with
// c = (∂L/∂d) / d (0 where d = 0, the oracle's sqrt convention, and for a column outside this call's references
// [col_offset, col_offset + cols): the saved columns are global). Per anchor: coefficient and local column.
template <typename T>
struct HardTripletCoefficients {
  TripletHard<T> loss;
  int64_t col_offset, cols;
  T* coefficients;  // B × 2: hardest positive, hardest negative
  int64_t* columns;

  PL_HD void operator()(int64_t i) const {
    const double* saved = loss.saved + 4 * i;
    const T grad_d = loss.grad_d(i);
    for (int k = 0; k < 2; ++k) {
      const int64_t j = int64_t(saved[k]) - col_offset;
      const bool here = j >= 0 && j < cols && saved[2 + k] > 0;
      coefficients[2 * i + k] = here ? (k == 0 ? grad_d : -grad_d) / T(saved[2 + k]) : T(0);
      columns[2 * i + k] = here ? j : 0;  // a zero coefficient on a valid row
    }
  }
};

// Applies them directly (O(B·D), no tiles); dY's scatter is index_add_ (float atomics on CUDA: not bitwise
// deterministic there).
template <typename T, typename Engine>
void triplet_hard_backward(const PairInputs& in, const Engine& engine, const TripletHard<T>& loss, at::Tensor dx,
                           at::Tensor dy) {
  const auto dtype = c10::CppTypeToScalarType<T>::value;
  at::Tensor coefficients = at::empty({in.rows, 2}, in.x.options().dtype(dtype));
  at::Tensor columns = at::empty({in.rows, 2}, in.x.options().dtype(at::kLong));
  engine.each(in.rows, HardTripletCoefficients<T>{loss, in.col_offset, in.cols, coefficients.data_ptr<T>(),
                                                  columns.data_ptr<int64_t>()});
  const at::Tensor x = in.x.to(dtype), y = in.self() ? x : in.y.to(dtype);
  for (int k = 0; k < 2; ++k) {
    const at::Tensor c = coefficients.select(1, k).unsqueeze(1), j = columns.select(1, k);
    const at::Tensor y_j = y.index_select(0, j);
    dx.add_(c * (x - y_j));
    dy.index_add_(0, j, c * (y_j - x));
  }
}

// Adds the gradients into dx, dy (T; dy is dx when X = Y) and returns dscalars (T, one per scalar).
template <typename T, typename Engine>
at::Tensor backward_losses(const PairInputs& in, const Engine& engine, const at::Tensor& grad_rows,
                           const at::Tensor& saved, at::Tensor dx, at::Tensor dy) {
  const auto dtype = c10::CppTypeToScalarType<T>::value;
  const at::Tensor weight = grad_rows.to(dtype).contiguous();
  const Params& prm = in.params;
  at::Tensor sums = at::zeros({2}, in.x.options().dtype(at::kDouble));
  auto attach = [&](auto& loss) {
    loss.saved = saved.data_ptr<double>();
    loss.weight = weight.data_ptr<T>();
  };
  auto run = [&](auto loss, const auto& kinds) {
    attach(loss);
    sums = engine.backward(loss, kinds, dx, dy);
  };
  if (is_block_loss(in.info->id)) {
    with_block_loss<T>(in, [&](auto loss) {
      if constexpr (std::is_same_v<decltype(loss), TripletHard<T>>) {
        attach(loss);
        triplet_hard_backward<T>(in, engine, loss, dx, dy);
      } else {
        run(loss, label_kinds(in));
      }
    });
  } else {
    switch (in.info->id) {
      case LossId::kTripletAll: {
        // Rebuild the positive lists and their hinge-derivative sums (passes 1–2), then the gradient pass.
        auto loss = triplet<TripletAll<T>>(prm, anchor_params<T>(in));
        const TripletLists<T> lists(in, engine);
        lists.attach(loss);
        ForwardOutputs unused = allocate_forward(in);
        engine.forward(loss, label_kinds(in), unused);
        run(loss, label_kinds(in));
        break;
      }
      case LossId::kDecoupledSoftmax:
        run(softmax<NTXent<T>>(prm), positive_kinds(in));
        break;
      case LossId::kClip: {
        ClipGrad<T> loss;
        loss.logit = logit_scalars<T>(in);
        run(loss, diagonal_kinds(in));
        break;
      }
      case LossId::kSigLip: {
        SigLip<T> loss;
        loss.logit = logit_scalars<T>(in);
        run(loss, diagonal_kinds(in));
        break;
      }
      case LossId::kUniformity:
        run(uniformity<T>(prm), OffDiagonalKinds{});
        break;
      case LossId::kMannWhitney:
        run(mann_whitney<T>(prm, in.cols), diagonal_kinds(in));
        break;
      default:
        TORCH_CHECK(false, "pairloss ", in.info->name, ": no backward");
    }
  }
  return sums.slice(0, 0, int64_t(in.info->scalars)).to(dtype);
}

}  // namespace pairloss
