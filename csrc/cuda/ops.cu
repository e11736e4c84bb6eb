// CUDA implementations of pairloss::cpp_pair_forward / cpp_pair_backward for the losses with kernels
// (multi_similarity, triplet_hard, ntxent, supcon, clip): compute in fp32 (fp16/bf16 inputs are widened), on
// the current stream of the inputs' device.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../epilogues/configure.h"
#include "../op_inputs.h"
#include "engine.cuh"

namespace pairloss::cuda {
namespace {

int64_t tiles(int64_t n) { return (n + kBlock - 1) / kBlock; }

// fp32 operands (and squared norms for distance losses) of one call.
struct Operands {
  at::Tensor x, y, x_sq, y_sq;
  Problem problem;

  Operands(const PairInputs& in, bool distance, bool swap = false) {
    x = (swap ? in.y : in.x).to(at::kFloat).contiguous();
    y = in.self() ? x : (swap ? in.x : in.y).to(at::kFloat).contiguous();
    if (distance) {
      x_sq = (x * x).sum(1);
      y_sq = in.self() ? x_sq : (y * y).sum(1);
    }
    problem = {x.data_ptr<float>(), y.data_ptr<float>(), x.size(0), y.size(0), x.size(1),
               distance ? x_sq.data_ptr<float>() : nullptr, distance ? y_sq.data_ptr<float>() : nullptr};
  }
};

void check_cuda(const PairInputs& in) {
  const char* name = in.info->name;
  TORCH_CHECK(in.x.is_cuda(), "pairloss ", name, ": the CUDA kernel got a ", in.x.device(), " tensor");
  const auto dtype = in.x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "pairloss ", name,
              ": the CUDA kernels compute in float32 from float32/float16/bfloat16 inputs, got ", dtype);
  const LossId id = in.info->id;
  TORCH_CHECK(id == LossId::kMultiSimilarity || id == LossId::kTripletHard || id == LossId::kNTXent ||
                  id == LossId::kSupCon || id == LossId::kClip,
              "pairloss ", name, ": no CUDA kernel for this loss (CUDA covers multi_similarity, triplet_hard, "
              "ntxent, supcon, clip); use the triton or reference backend on the GPU");
}

// One forward kernel launch writing rows (fp32), saved and per-row counters.
template <typename Loss, typename Kinds>
void launch_forward(const Problem& p, const Loss& loss, const Kinds& kinds, at::Tensor& rows, at::Tensor& saved,
                    at::Tensor& row_counts, uint8_t* active, int64_t active_cols) {
  static_assert(!HasColumns<Loss>::value, "column statistics are a CPU engine hook: run one direction per launch");
  const auto stream = c10::cuda::getCurrentCUDAStream();
  forward_kernel<<<tiles(p.rows), kThreads, 0, stream>>>(p, loss, kinds, rows.data_ptr<float>(),
                                                         saved.data_ptr<double>(), row_counts.data_ptr<int64_t>(),
                                                         active, active_cols);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pair_forward(
    c10::string_view name, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset) {
  const PairInputs in = check_inputs(name, x, y, labels, ref_labels, scalars, params, own_offset);
  check_cuda(in);
  const c10::cuda::CUDAGuard guard(x.device());
  ForwardOutputs out = allocate_forward(in);
  at::Tensor rows = at::zeros({in.rows, 2}, x.options().dtype(at::kFloat));
  at::Tensor row_counts = at::zeros({in.rows, 2}, x.options().dtype(at::kLong));
  uint8_t* active = out.active.data_ptr<uint8_t>();
  const int64_t active_cols = out.active.size(1);
  const Params& prm = in.params;
  switch (in.info->id) {
    case LossId::kMultiSimilarity:
      launch_forward(Operands(in, false).problem, multi_similarity<float>(prm), label_kinds(in), rows, out.saved,
                     row_counts, active, active_cols);
      break;
    case LossId::kTripletHard:
      launch_forward(Operands(in, true).problem, triplet<TripletHard<float>>(prm), label_kinds(in), rows,
                     out.saved, row_counts, active, active_cols);
      break;
    case LossId::kNTXent:
      launch_forward(Operands(in, false).problem, softmax<NTXent<float>>(prm), label_kinds(in), rows, out.saved,
                     row_counts, active, active_cols);
      break;
    case LossId::kSupCon:
      launch_forward(Operands(in, false).problem, softmax<SupCon<float>>(prm), label_kinds(in), rows, out.saved,
                     row_counts, active, active_cols);
      break;
    case LossId::kClip: {
      // One direction per launch (the CPU engine takes the column LSEs in the same sweep): the column LSE is the
      // row LSE of (text, image); rows_i = ((lse_r − l_ii) + (lse_c − l_ii)) / 2.
      ClipRows<float> loss;
      loss.scale = in.scalars[0].item<float>();  // a host sync: the epilogue takes the scale by value
      at::Tensor text_saved = at::zeros_like(out.saved);
      launch_forward(Operands(in, false).problem, loss, diagonal_kinds(in), rows, out.saved, row_counts, active,
                     active_cols);
      launch_forward(Operands(in, false, /*swap=*/true).problem, loss, diagonal_kinds(in), rows, text_saved,
                     row_counts, nullptr, active_cols);
      const at::Tensor lse_row = out.saved.select(1, 0), diag = out.saved.select(1, 2);
      const at::Tensor lse_col = text_saved.select(1, 0);
      rows.select(1, 0).copy_(((lse_row - diag) + (lse_col - diag)) / 2);
      out.saved.select(1, 1).copy_(lse_col);
      break;
    }
    default:
      TORCH_CHECK(false, "pairloss ", in.info->name, ": unreachable");
  }
  out.rows.copy_(rows);
  out.counts.copy_(row_counts.sum(0));
  return {out.rows, out.saved, out.counts, out.active};
}

// dX (and dY, or dX again when X = Y) of one loss with the two gradient kernels; returns the kLogits sums.
template <typename Loss, typename Kinds>
at::Tensor launch_backward(const Operands& ops, const Loss& loss, const Kinds& kinds, const at::Tensor& active,
                           at::Tensor& dx, at::Tensor& dy, bool self) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const Problem& p = ops.problem;
  at::Tensor scalar_parts = at::zeros({tiles(p.rows), 2}, dx.options().dtype(at::kDouble));
  const uint8_t* tiles_active = active.data_ptr<uint8_t>();
  backward_kernel<false><<<tiles(p.rows), kThreads, 0, stream>>>(p, loss, kinds, tiles_active, active.size(1),
                                                                 dx.data_ptr<float>(),
                                                                 scalar_parts.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  float* column_out = self ? dx.data_ptr<float>() : dy.data_ptr<float>();
  backward_kernel<true><<<tiles(p.cols), kThreads, 0, stream>>>(p, loss, kinds, tiles_active, active.size(1),
                                                                column_out, nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return scalar_parts.sum(0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pair_backward(
    c10::string_view name, const at::Tensor& grad_rows, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const at::Tensor& saved_in, const at::Tensor& active_in) {
  const PairInputs in = check_inputs(name, x, y, labels, ref_labels, scalars, params, own_offset);
  check_cuda(in);
  check_backward_inputs(in, grad_rows, saved_in, active_in);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor weight = grad_rows.to(at::kFloat).contiguous();
  const at::Tensor saved = saved_in.contiguous(), active = active_in.contiguous();
  const auto options = x.options().dtype(at::kFloat);
  at::Tensor dx = at::zeros({in.rows, in.dim}, options);
  at::Tensor dy = in.self() ? at::empty({0}, options) : at::zeros({in.cols, in.dim}, options);
  at::Tensor dscalars = at::zeros({int64_t(in.info->scalars)}, options);
  const Params& prm = in.params;
  auto attach = [&](auto loss) {
    loss.saved = saved.data_ptr<double>();
    loss.weight = weight.data_ptr<float>();
    return loss;
  };
  switch (in.info->id) {
    case LossId::kMultiSimilarity:
      launch_backward(Operands(in, false), attach(multi_similarity<float>(prm)), label_kinds(in), active, dx, dy,
                      in.self());
      break;
    case LossId::kTripletHard: {
      const Operands ops(in, false);
      const auto stream = c10::cuda::getCurrentCUDAStream();
      float* dy_data = in.self() ? dx.data_ptr<float>() : dy.data_ptr<float>();
      triplet_hard_backward_kernel<<<in.rows, 128, 0, stream>>>(ops.problem, attach(triplet<TripletHard<float>>(prm)),
                                                                dx.data_ptr<float>(), dy_data);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      break;
    }
    case LossId::kNTXent:
      launch_backward(Operands(in, false), attach(softmax<NTXent<float>>(prm)), label_kinds(in), active, dx, dy,
                      in.self());
      break;
    case LossId::kSupCon:
      launch_backward(Operands(in, false), attach(softmax<SupCon<float>>(prm)), label_kinds(in), active, dx, dy,
                      in.self());
      break;
    case LossId::kClip: {
      ClipGrad<float> loss;
      loss.scale = in.scalars[0].item<float>();
      const at::Tensor sums = launch_backward(Operands(in, false), attach(loss), diagonal_kinds(in), active, dx, dy,
                                              in.self());
      dscalars.copy_(sums.slice(0, 0, 1));
      break;
    }
    default:
      TORCH_CHECK(false, "pairloss ", in.info->name, ": unreachable");
  }
  const auto dtype = x.scalar_type();
  return {dx.to(dtype), dy.to(dtype), dscalars.to(dtype)};
}

}  // namespace

TORCH_LIBRARY_IMPL(pairloss, CUDA, m) {
  m.impl("cpp_pair_forward", &pair_forward);
  m.impl("cpp_pair_backward", &pair_backward);
}

}  // namespace pairloss::cuda
