// CUDA implementations of pairloss::cpp_pair_forward / cpp_pair_backward for the losses with kernels
// (multi_similarity, triplet_hard, ntxent, supcon, clip), on the current stream of the inputs' device. The
// kernels read X and Y in their dtype (fp32, or fp16/bf16 through tensor cores: see engine.cuh) and compute
// everything else in fp32.
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

// The device type of an input dtype: T = float, __half or __nv_bfloat16 (same layouts as ATen's).
template <typename T>
struct Element {
  using type = T;
};

// body(Element<T>{}) for the inputs' dtype (check_cuda admits these three).
template <typename Body>
void dispatch_element(at::ScalarType dtype, Body&& body) {
  static_assert(sizeof(__half) == sizeof(at::Half) && sizeof(__nv_bfloat16) == sizeof(at::BFloat16));
  switch (dtype) {
    case at::kFloat:
      return body(Element<float>{});
    case at::kHalf:
      return body(Element<__half>{});
    case at::kBFloat16:
      return body(Element<__nv_bfloat16>{});
    default:
      TORCH_CHECK(false, "pairloss: no CUDA kernels for ", dtype, " inputs");
  }
}

// fp32 squared row norms of a rows × dim matrix: one warp per row, a fixed summation order.
template <typename T>
__global__ void squared_norms_kernel(const T* x, int64_t rows, int64_t dim, float* out) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform over the warp
  float sum = 0.f;
  for (int64_t d = lane; d < dim; d += 32) {
    const float v = to_float(x[row * dim + d]);
    sum = fmaf(v, v, sum);
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) out[row] = sum;
}

template <typename T>
at::Tensor squared_norms(const at::Tensor& x) {
  at::Tensor out = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  constexpr int kWarps = 8;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  squared_norms_kernel<<<(x.size(0) + kWarps - 1) / kWarps, 32 * kWarps, 0, stream>>>(
      static_cast<const T*>(x.const_data_ptr()), x.size(0), x.size(1), out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// The operands of one call in their dtype T (the contiguous inputs themselves, no copies), and fp32 squared
// norms for distance losses.
template <typename T>
struct Operands {
  at::Tensor x, y, x_sq, y_sq;
  Problem<T> problem;

  Operands(const PairInputs& in, bool distance, bool swap = false) {
    x = swap ? in.y : in.x;
    y = in.self() ? x : (swap ? in.x : in.y);
    if (distance) {
      x_sq = squared_norms<T>(x);
      y_sq = in.self() ? x_sq : squared_norms<T>(y);
    }
    problem = {static_cast<const T*>(x.const_data_ptr()), static_cast<const T*>(y.const_data_ptr()), x.size(0),
               y.size(0), x.size(1), distance ? x_sq.data_ptr<float>() : nullptr,
               distance ? y_sq.data_ptr<float>() : nullptr};
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
template <typename T, typename Loss, typename Kinds>
void launch_forward(const Problem<T>& p, const Loss& loss, const Kinds& kinds, at::Tensor& rows, at::Tensor& saved,
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
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = check_inputs(name, x, y, labels, ref_labels, scalars, params, own_offset, 0, row_params);
  check_cuda(in);
  const c10::cuda::CUDAGuard guard(x.device());
  ForwardOutputs out = allocate_forward(in);
  at::Tensor& rows = out.rows;  // fp32, the accumulation dtype of every dtype the kernels take
  at::Tensor row_counts = at::zeros({in.rows, 2}, x.options().dtype(at::kLong));
  uint8_t* active = out.active.data_ptr<uint8_t>();
  const int64_t active_cols = out.active.size(1);
  const Params& prm = in.params;
  dispatch_element(x.scalar_type(), [&](auto element) {
    using T = typename decltype(element)::type;
    switch (in.info->id) {
      case LossId::kMultiSimilarity:
        launch_forward(Operands<T>(in, false).problem, multi_similarity<float>(prm), label_kinds(in), rows, out.saved,
                       row_counts, active, active_cols);
        break;
      case LossId::kTripletHard:
        launch_forward(Operands<T>(in, true).problem,
                       triplet<TripletHard<float>>(prm, anchor_params<float>(in)), label_kinds(in), rows, out.saved,
                       row_counts, active, active_cols);
        break;
      case LossId::kNTXent:
        launch_forward(Operands<T>(in, false).problem, softmax<NTXent<float>>(prm, positive_weights(in)),
                       label_kinds(in), rows, out.saved, row_counts, active, active_cols);
        break;
      case LossId::kSupCon:
        launch_forward(Operands<T>(in, false).problem, softmax<SupCon<float>>(prm, positive_weights(in)),
                       label_kinds(in), rows, out.saved, row_counts, active, active_cols);
        break;
      case LossId::kClip: {
        // One direction per launch (the CPU engine takes the column LSEs in the same sweep): the column LSE is the
        // row LSE of (text, image); rows_i = ((lse_r − l_ii) + (lse_c − l_ii)) / 2.
        ClipRows<float> loss;
        loss.scale = in.scalars[0].item<float>();  // a host sync: the epilogue takes the scale by value
        at::Tensor text_saved = at::zeros_like(out.saved);
        launch_forward(Operands<T>(in, false).problem, loss, diagonal_kinds(in), rows, out.saved, row_counts, active,
                       active_cols);
        launch_forward(Operands<T>(in, false, /*swap=*/true).problem, loss, diagonal_kinds(in), rows, text_saved,
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
  });
  out.counts.copy_(row_counts.sum(0));
  return {out.rows, out.saved, out.counts, out.active};
}

// dX (and dY, or dX again when X = Y) of one loss with the two gradient kernels; returns the kLogits sums.
template <typename T, typename Loss, typename Kinds>
at::Tensor launch_backward(const Operands<T>& ops, const Loss& loss, const Kinds& kinds, const at::Tensor& active,
                           at::Tensor& dx, at::Tensor& dy, bool self) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const Problem<T>& p = ops.problem;
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
    const at::Tensor& saved_in, const at::Tensor& active_in, int64_t col_offset,
    const c10::optional<at::Tensor>& row_params) {
  const PairInputs in = check_inputs(name, x, y, labels, ref_labels, scalars, params, own_offset, 0, row_params);
  check_cuda(in);
  TORCH_CHECK(col_offset == 0, "pairloss ", name, ": the CUDA kernels take the whole reference set (col_offset 0)");
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
  dispatch_element(x.scalar_type(), [&](auto element) {
    using T = typename decltype(element)::type;
    switch (in.info->id) {
      case LossId::kMultiSimilarity:
        launch_backward(Operands<T>(in, false), attach(multi_similarity<float>(prm)), label_kinds(in), active, dx, dy,
                        in.self());
        break;
      case LossId::kTripletHard: {
        const Operands<T> ops(in, false);
        const auto stream = c10::cuda::getCurrentCUDAStream();
        float* dy_data = in.self() ? dx.data_ptr<float>() : dy.data_ptr<float>();
        const auto loss = attach(triplet<TripletHard<float>>(prm, anchor_params<float>(in)));
        triplet_hard_backward_kernel<<<in.rows, 128, 0, stream>>>(ops.problem, loss, dx.data_ptr<float>(), dy_data);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        break;
      }
      case LossId::kNTXent:
        launch_backward(Operands<T>(in, false), attach(softmax<NTXent<float>>(prm, positive_weights(in))),
                        label_kinds(in), active, dx, dy, in.self());
        break;
      case LossId::kSupCon:
        launch_backward(Operands<T>(in, false), attach(softmax<SupCon<float>>(prm, positive_weights(in))),
                        label_kinds(in), active, dx, dy, in.self());
        break;
      case LossId::kClip: {
        ClipGrad<float> loss;
        loss.scale = in.scalars[0].item<float>();
        const at::Tensor sums = launch_backward(Operands<T>(in, false), attach(loss), diagonal_kinds(in), active,
                                                dx, dy, in.self());
        dscalars.copy_(sums.slice(0, 0, 1));
        break;
      }
      default:
        TORCH_CHECK(false, "pairloss ", in.info->name, ": unreachable");
    }
  });
  const auto dtype = x.scalar_type();
  return {dx.to(dtype), dy.to(dtype), dscalars};  // dscalars: fp32, the scalars' dtype
}

}  // namespace

TORCH_LIBRARY_IMPL(pairloss, CUDA, m) {
  m.impl("cpp_pair_forward", &pair_forward);
  m.impl("cpp_pair_backward", &pair_backward);
}

}  // namespace pairloss::cuda
