// CPU implementations of pairloss::cpp_pair_forward / cpp_pair_backward: pick the epilogue and pair kinds of the
// loss and run the engine (cpu/engine.h). Losses needing more than one engine run are composed here.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <type_traits>

#include "../block_losses.h"
#include "engine.h"

namespace pairloss::cpu {
namespace {

// The engine's view of the inputs, owning the squared row norms that distance losses read (only computed for
// those).
template <typename T>
struct Operands {
  at::Tensor x_sq, y_sq;
  Problem<T> problem;

  Operands(const PairInputs& in, bool distance) {
    const at::Tensor& y = in.refs();
    problem = {in.x.data_ptr<T>(), y.data_ptr<T>(), in.rows, in.cols, in.dim, in.self()};
    problem.col_offset = in.col_offset;
    if (distance) {
      x_sq = (in.x * in.x).sum(1);
      y_sq = in.self() ? x_sq : (y * y).sum(1);
      problem.x_sq = x_sq.data_ptr<T>();
      problem.y_sq = y_sq.data_ptr<T>();
    }
  }
};

PositiveListKinds positive_kinds(const PairInputs& in) {
  return {in.labels.data_ptr<int64_t>(), in.labels.size(1)};
}

template <typename T>
void store(const std::vector<RowResult<T>>& results, ForwardOutputs& out) {
  auto rows = out.rows.accessor<T, 2>();
  auto saved = out.saved.accessor<double, 2>();
  int64_t counts[2] = {0, 0};
  for (size_t i = 0; i < results.size(); ++i) {
    for (int k = 0; k < 2; ++k) {
      rows[i][k] = results[i].rows[k];
      counts[k] += results[i].counts[k];
    }
    for (int k = 0; k < 4; ++k) saved[i][k] = results[i].saved[k];
  }
  out.counts[0] = counts[0];
  out.counts[1] = counts[1];
}

template <typename T, typename Loss, typename Kinds>
void run_forward(const PairInputs& in, const Loss& loss, const Kinds& kinds, ForwardOutputs& out) {
  Operands<T> ops(in, Loss::kDistance);
  std::vector<RowResult<T>> results(in.rows);
  forward(ops.problem, loss, kinds, results.data(), out.active.data_ptr<uint8_t>());
  store(results, out);
}

// Each anchor's positives are listed by the first pass of TripletAll: size the list from the label counts, less
// the anchor's own column where that holds its label (the column is left out, not a positive).
template <typename T>
struct TripletLists {
  at::Tensor offsets, pos_d, pos_j, pos_grad;

  explicit TripletLists(const PairInputs& in) {
    const at::Tensor counts = label_words(in) > 0 ? counted_positives(in) : sorted_positives(in);
    offsets = at::cat({at::zeros({1}, counts.options()), counts.cumsum(0)});
    const int64_t total = offsets[-1].item<int64_t>();
    pos_d = at::empty({total}, in.x.options());
    pos_j = at::empty({total}, counts.options());
    pos_grad = at::zeros({total}, in.x.options());
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

  // Multi-hot rows: the pairs' kinds counted one anchor at a time (O(B·M·words) bit tests, no B×M tensor).
  static at::Tensor counted_positives(const PairInputs& in) {
    at::Tensor counts = at::zeros({in.rows}, in.labels.options());
    int64_t* out = counts.data_ptr<int64_t>();
    const LabelKinds kinds = label_kinds(in);
    at::parallel_for(0, in.rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < in.cols; ++j) out[i] += kinds(i, j) == kPos;
      }
    });
    return counts;
  }

  void attach(TripletAll<T>& loss) const {
    loss.offsets = offsets.data_ptr<int64_t>();
    loss.pos_d = pos_d.data_ptr<T>();
    loss.pos_j = pos_j.data_ptr<int64_t>();
    loss.pos_grad = pos_grad.data_ptr<T>();
  }
};

template <typename T>
T scalar(const PairInputs& in, int64_t k) {
  return in.scalars[k].item<T>();
}

template <typename T>
void forward_impl(const PairInputs& in, ForwardOutputs& out) {
  const std::vector<double>& prm = in.params;
  if (is_block_loss(in.info->id)) {
    return with_block_loss<T>(in, [&](const auto& loss) { run_forward<T>(in, loss, label_kinds(in), out); });
  }
  switch (in.info->id) {
    case LossId::kTripletAll: {
      auto loss = triplet<TripletAll<T>>(prm, anchor_params<T>(in));
      TripletLists<T> lists(in);
      lists.attach(loss);
      return run_forward<T>(in, loss, label_kinds(in), out);
    }
    case LossId::kDecoupledSoftmax:
      return run_forward<T>(in, softmax<NTXent<T>>(prm), positive_kinds(in), out);
    case LossId::kClip: {  // both directions in one sweep: row LSEs (image→text) and column LSEs (text→image)
      Clip<T> loss;
      loss.scale = scalar<T>(in, 0);
      return run_forward<T>(in, loss, diagonal_kinds(in), out);
    }
    case LossId::kSigLip: {
      SigLip<T> loss;
      loss.scale = scalar<T>(in, 0), loss.bias = scalar<T>(in, 1);
      return run_forward<T>(in, loss, diagonal_kinds(in), out);
    }
    case LossId::kUniformity:
      return run_forward<T>(in, uniformity<T>(prm), OffDiagonalKinds{}, out);
    case LossId::kMannWhitney:
      return run_forward<T>(in, mann_whitney<T>(prm, in.cols), diagonal_kinds(in), out);
    default:
      TORCH_CHECK(false, "pairloss ", in.info->name, ": no CPU forward");
  }
}

// Batch-hard triplets: two pairs per anchor carry a gradient, applied directly (O(B·D)). Columns are global
// (saved) and only those in this call's references [col_offset, col_offset + cols) are applied.
template <typename T>
void triplet_hard_backward(const Problem<T>& p, const TripletHard<T>& loss, at::Tensor dx, at::Tensor dy) {
  T* dx_data = dx.data_ptr<T>();
  T* dy_data = p.self ? dx_data : dy.data_ptr<T>();
  const int64_t dim = p.dim;
  // ∂L/∂d · ∂d/∂x_i = c · (x_i − y_j) with c = (∂L/∂d) / d, 0 where d = 0 (the oracle's sqrt convention), and
  // 0 for a column outside the references at hand. Returns the local columns.
  auto coefficients = [&](int64_t i, int64_t& pos_j, T& pos_c, int64_t& neg_j, T& neg_c) {
    const double* saved = loss.saved + 4 * i;
    const T grad_d = loss.grad_d(i);
    pos_j = int64_t(saved[0]) - p.col_offset, neg_j = int64_t(saved[1]) - p.col_offset;
    const bool pos_here = pos_j >= 0 && pos_j < p.cols, neg_here = neg_j >= 0 && neg_j < p.cols;
    pos_c = pos_here && saved[2] > 0 ? grad_d / T(saved[2]) : T(0);
    neg_c = neg_here && saved[3] > 0 ? -grad_d / T(saved[3]) : T(0);
    pos_j = pos_here ? pos_j : 0, neg_j = neg_here ? neg_j : 0;  // a zero coefficient on a valid row
    return pos_c != T(0) || neg_c != T(0);
  };
  at::parallel_for(0, p.rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t pj, nj;
      T pc, nc;
      if (!coefficients(i, pj, pc, nj, nc)) continue;
      for (int64_t k = 0; k < dim; ++k) {
        const T xi = p.x[i * dim + k];
        dx_data[i * dim + k] += pc * (xi - p.y[pj * dim + k]) + nc * (xi - p.y[nj * dim + k]);
      }
    }
  });
  for (int64_t i = 0; i < p.rows; ++i) {  // the references' side scatters: serial, so no two rows collide
    int64_t pj, nj;
    T pc, nc;
    if (!coefficients(i, pj, pc, nj, nc)) continue;
    for (int64_t k = 0; k < dim; ++k) {
      const T xi = p.x[i * dim + k];
      dy_data[pj * dim + k] += pc * (p.y[pj * dim + k] - xi);
      dy_data[nj * dim + k] += nc * (p.y[nj * dim + k] - xi);
    }
  }
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(const PairInputs& in, const at::Tensor& grad_rows,
                                                             const at::Tensor& saved, const at::Tensor& active) {
  at::Tensor dx = at::zeros_like(in.x);
  at::Tensor dy = in.self() ? at::empty({0}, in.x.options()) : at::zeros_like(in.y);
  at::Tensor dscalars = at::zeros({int64_t(in.info->scalars)}, in.x.options());
  const at::Tensor weight = grad_rows.to(in.x.scalar_type()).contiguous();
  const uint8_t* tiles = active.data_ptr<uint8_t>();
  const std::vector<double>& prm = in.params;
  auto attach = [&](auto& loss) {
    loss.saved = saved.data_ptr<double>();
    loss.weight = weight.data_ptr<T>();
  };
  auto run = [&](auto& loss, const auto& kinds) {
    attach(loss);
    return backward(Operands<T>(in, loss.kDistance).problem, loss, kinds, tiles, dx, dy);
  };
  if (is_block_loss(in.info->id)) {
    with_block_loss<T>(in, [&](auto loss) {
      if constexpr (std::is_same_v<decltype(loss), TripletHard<T>>) {
        attach(loss);
        triplet_hard_backward(Operands<T>(in, /*distance=*/false).problem, loss, dx, dy);
      } else {
        run(loss, label_kinds(in));
      }
    });
    return {dx, dy, dscalars};
  }
  switch (in.info->id) {
    case LossId::kTripletAll: {
      // Rebuild the positive lists and their hinge-derivative sums (passes 1–2), then the gradient pass.
      auto loss = triplet<TripletAll<T>>(prm, anchor_params<T>(in));
      TripletLists<T> lists(in);
      lists.attach(loss);
      std::vector<RowResult<T>> unused(in.rows);
      forward(Operands<T>(in, loss.kDistance).problem, loss, label_kinds(in), unused.data(), nullptr);
      run(loss, label_kinds(in));
      break;
    }
    case LossId::kDecoupledSoftmax: {
      auto loss = softmax<NTXent<T>>(prm);
      run(loss, positive_kinds(in));
      break;
    }
    case LossId::kClip: {
      ClipGrad<T> loss;
      loss.scale = scalar<T>(in, 0);
      const auto sums = run(loss, diagonal_kinds(in));
      dscalars[0] = sums.scale;
      break;
    }
    case LossId::kSigLip: {
      SigLip<T> loss;
      loss.scale = scalar<T>(in, 0), loss.bias = scalar<T>(in, 1);
      const auto sums = run(loss, diagonal_kinds(in));
      dscalars[0] = sums.scale;
      dscalars[1] = sums.bias;
      break;
    }
    case LossId::kUniformity: {
      auto loss = uniformity<T>(prm);
      run(loss, OffDiagonalKinds{});
      break;
    }
    case LossId::kMannWhitney: {
      auto loss = mann_whitney<T>(prm, in.cols);
      run(loss, diagonal_kinds(in));
      break;
    }
    default:
      TORCH_CHECK(false, "pairloss ", in.info->name, ": no CPU backward");
  }
  return {dx, dy, dscalars};
}

// The CPU engine computes in float32 or float64: fp16/bf16 operands are converted to float32 (their
// accumulation dtype) here, an O(B·D) copy; the backward converts its gradients back.
PairInputs cpu_inputs(PairInputs in) {
  TORCH_CHECK(in.x.device().is_cpu(), "pairloss ", in.info->name, ": the CPU kernel got a ", in.x.device(), " tensor");
  const auto dtype = in.x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "pairloss ", in.info->name, ": the CPU engine takes float64, float32, float16 or bfloat16, got ", dtype);
  in.x = in.x.to(accumulation_type(dtype));
  if (in.y.defined()) in.y = in.y.to(accumulation_type(dtype));
  return in;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pair_forward(
    c10::string_view loss, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const c10::optional<at::Tensor>& row_params) {
  const PairInputs in =
      cpu_inputs(check_inputs(loss, x, y, labels, ref_labels, scalars, params, own_offset, 0, row_params));
  ForwardOutputs out = allocate_forward(in);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_forward", [&] { forward_impl<scalar_t>(in, out); });
  return {out.rows, out.saved, out.counts, out.active};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pair_backward(
    c10::string_view loss, const at::Tensor& grad_rows, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const at::Tensor& saved, const at::Tensor& active, int64_t col_offset, const c10::optional<at::Tensor>& row_params) {
  const PairInputs in =
      cpu_inputs(check_inputs(loss, x, y, labels, ref_labels, scalars, params, own_offset, col_offset, row_params));
  check_backward_inputs(in, grad_rows, saved, active);
  at::Tensor dx, dy, dscalars;
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_backward", [&] {
    std::tie(dx, dy, dscalars) = backward_impl<scalar_t>(in, grad_rows, saved.contiguous(), active.contiguous());
  });
  return {dx.to(x.scalar_type()), dy.to(x.scalar_type()), dscalars};
}


// ------------------------------------------------------------------------------------------ block by block
// The cpp_ring_* ops (block_losses.h): each anchor's Stats and Acc rows travel between calls as opaque bytes,
// rows × sizeof(row), made by cpp_ring_begin / the first cpp_ring_accumulate and only read back by these ops
// (with the same loss, params and dtype, which the row width partly checks).

template <typename Row>
Row* state_rows(const at::Tensor& state, const PairInputs& in, const char* what) {
  static_assert(std::is_trivially_copyable_v<Row>, "carried rows are copied as bytes");
  TORCH_CHECK(state.scalar_type() == at::kByte && state.dim() == 2 && state.size(0) == in.rows &&
                  state.size(1) == int64_t(sizeof(Row)) && state.is_contiguous() && state.device().is_cpu(),
              "pairloss ", in.info->name, ": ", what, " must be the ", in.rows, " × ", sizeof(Row),
              " uint8 rows of this loss's previous ring call");
  return reinterpret_cast<Row*>(state.data_ptr<uint8_t>());
}

template <typename Row>
at::Tensor new_state(const PairInputs& in) {
  return at::empty({in.rows, int64_t(sizeof(Row))}, in.x.options().dtype(at::kByte));
}

// Calls f(epilogue) with T the dtype of x.
template <typename F>
void with_block_epilogue(const PairInputs& in, F&& f) {
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_ring", [&] {
    with_block_loss<scalar_t>(in, [&](const auto& epilogue) { f(scalar_t(0), epilogue); });
  });
}

// Every anchor's empty statistics.
at::Tensor ring_begin(c10::string_view loss, const at::Tensor& x, const at::Tensor& labels,
                      at::ArrayRef<double> params, const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = cpu_inputs(
      check_inputs(loss, x, c10::nullopt, labels, c10::nullopt, c10::nullopt, params, -1, 0, row_params));
  at::Tensor stats;
  with_block_epilogue(in, [&](auto, const auto& epilogue) {
    using Stats = typename std::decay_t<decltype(epilogue)>::Stats;
    stats = new_state<Stats>(in);
    Stats* rows = state_rows<Stats>(stats, in, "stats");
    for (int64_t i = 0; i < in.rows; ++i) rows[i] = epilogue.stats_init(i);
  });
  return stats;
}

// The statistics continued over the block y (global columns col_offset …).
at::Tensor ring_stats(c10::string_view loss, const at::Tensor& x, const at::Tensor& y, const at::Tensor& labels,
                      const at::Tensor& ref_labels, at::ArrayRef<double> params, int64_t own_offset,
                      int64_t col_offset, const at::Tensor& stats_in, const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = cpu_inputs(
      check_inputs(loss, x, y, labels, ref_labels, c10::nullopt, params, own_offset, col_offset, row_params));
  at::Tensor stats = stats_in.clone();
  with_block_epilogue(in, [&](auto zero, const auto& epilogue) {
    using T = decltype(zero);
    using Loss = std::decay_t<decltype(epilogue)>;
    const CarriedRows<Loss> carried{state_rows<typename Loss::Stats>(stats, in, "stats"), nullptr};
    forward<T>(Operands<T>(in, Loss::kDistance).problem, epilogue, label_kinds(in), nullptr, nullptr, &carried);
  });
  return stats;
}

// The loss accumulators continued over the block y under the complete statistics (accs absent: the first
// block), and the block's map of tiles with a gradient.
std::tuple<at::Tensor, at::Tensor> ring_accumulate(c10::string_view loss, const at::Tensor& x, const at::Tensor& y,
                                                   const at::Tensor& labels, const at::Tensor& ref_labels,
                                                   at::ArrayRef<double> params, int64_t own_offset,
                                                   int64_t col_offset, const at::Tensor& stats,
                                                   const c10::optional<at::Tensor>& accs_in,
                                                   const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = cpu_inputs(
      check_inputs(loss, x, y, labels, ref_labels, c10::nullopt, params, own_offset, col_offset, row_params));
  at::Tensor accs, active = allocate_forward(in).active;
  with_block_epilogue(in, [&](auto zero, const auto& epilogue) {
    using T = decltype(zero);
    using Loss = std::decay_t<decltype(epilogue)>;
    using Acc = typename Loss::Acc;
    auto* stat_rows = state_rows<typename Loss::Stats>(stats, in, "stats");
    if (accs_in.has_value()) {
      accs = accs_in->clone();
    } else {
      accs = new_state<Acc>(in);
      Acc* rows = state_rows<Acc>(accs, in, "accs");
      for (int64_t i = 0; i < in.rows; ++i) rows[i] = epilogue.acc_init(stat_rows[i], i);
    }
    const CarriedRows<Loss> carried{stat_rows, state_rows<Acc>(accs, in, "accs")};
    forward<T>(Operands<T>(in, Loss::kDistance).problem, epilogue, label_kinds(in), nullptr,
            active.data_ptr<uint8_t>(), &carried);
  });
  return {accs, active};
}

// The rows, saved statistics and counters of cpp_pair_forward from the carried state (accs absent: a loss
// without a loss sweep).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ring_finish(c10::string_view loss, const at::Tensor& x,
                                                           const at::Tensor& labels, at::ArrayRef<double> params,
                                                           const at::Tensor& stats,
                                                           const c10::optional<at::Tensor>& accs,
                                                           const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = cpu_inputs(
      check_inputs(loss, x, c10::nullopt, labels, c10::nullopt, c10::nullopt, params, -1, 0, row_params));
  ForwardOutputs out = allocate_forward(in);
  with_block_epilogue(in, [&](auto zero, const auto& epilogue) {
    using T = decltype(zero);
    using Loss = std::decay_t<decltype(epilogue)>;
    auto* stat_rows = state_rows<typename Loss::Stats>(stats, in, "stats");
    auto* acc_rows = accs.has_value() ? state_rows<typename Loss::Acc>(*accs, in, "accs") : nullptr;
    std::vector<RowResult<T>> results(in.rows);
    for (int64_t i = 0; i < in.rows; ++i) {
      const auto acc = acc_rows != nullptr ? acc_rows[i] : epilogue.acc_init(stat_rows[i], i);
      epilogue.finish(stat_rows[i], acc, results[i]);
    }
    store(results, out);
  });
  return {out.rows, out.saved, out.counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(pairloss, CPU, m) {
  m.impl("cpp_pair_forward", &pair_forward);
  m.impl("cpp_pair_backward", &pair_backward);
  m.impl("cpp_ring_begin", &ring_begin);
  m.impl("cpp_ring_stats", &ring_stats);
  m.impl("cpp_ring_accumulate", &ring_accumulate);
  m.impl("cpp_ring_finish", &ring_finish);
}

}  // namespace pairloss::cpu
