// CPU implementations of pairloss::cpp_pair_forward / cpp_pair_backward (the tiled engine of cpu/engine.h, each
// loss's epilogue picked by loss_dispatch.h) and of the block-by-block cpp_ring_* ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <type_traits>

#include "../chunked/cpu_executor.h"
#include "../chunked/ops.h"
#include "../loss_dispatch.h"
#include "../ring_ops.h"
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

// The tiled engine as loss_dispatch.h's Engine; `active` (the forward's map) lets the backward skip tiles.
template <typename T>
struct TiledEngine {
  const PairInputs& in;
  const uint8_t* active = nullptr;

  template <typename F>
  void each(int64_t n, const F& f) const {
    chunked::CpuExecutor().each(n, f);
  }
  template <typename Loss, typename Kinds>
  void forward(const Loss& loss, const Kinds& kinds, ForwardOutputs& out) const {
    Operands<T> ops(in, Loss::kDistance);
    std::vector<RowResult<T>> results(in.rows);
    cpu::forward(ops.problem, loss, kinds, results.data(), out.active.data_ptr<uint8_t>());
    store(results, out);
  }
  template <typename Loss, typename Kinds>
  at::Tensor backward(const Loss& loss, const Kinds& kinds, at::Tensor dx, at::Tensor dy) const {
    const ScalarGrads sums = cpu::backward(Operands<T>(in, Loss::kDistance).problem, loss, kinds, active, dx, dy);
    return at::tensor({sums.scale, sums.bias}, at::kDouble);
  }
  template <typename Loss, typename Kinds>
  void sweep_block(const Loss& loss, const Kinds& kinds, typename Loss::Stats* stats, typename Loss::Acc* accs,
                   uint8_t* block_active) const {
    const CarriedRows<Loss> carried{stats, accs};
    cpu::forward<T>(Operands<T>(in, Loss::kDistance).problem, loss, kinds, nullptr, block_active, &carried);
  }
};

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
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_forward", [&] {
    forward_losses<scalar_t>(in, TiledEngine<scalar_t>{in}, out);
  });
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
  const at::Tensor tiles = active.contiguous();
  const Gradients grads(in);
  at::Tensor dscalars;
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_backward", [&] {
    const TiledEngine<scalar_t> engine{in, tiles.data_ptr<uint8_t>()};
    dscalars = backward_losses<scalar_t>(in, engine, grad_rows, saved.contiguous(), grads.dx, grads.dy_or_dx());
  });
  return grads.outputs(x.scalar_type(), dscalars);
}

// The CPU for the ring ops (ring_ops.h: the tiled engine) and the chunked ops (the chunked engine, CUDA's, run on
// the CPU, where the tests compare it with the tiled engine).
struct CpuDevice {
  using Executor = chunked::CpuExecutor;
  static PairInputs inputs(const PairInputs& in) { return cpu_inputs(in); }
  template <typename F>
  static void with_engine(const PairInputs& in, F&& f) {
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "pairloss_cpu_ring", [&] { f(TiledEngine<scalar_t>{in}, scalar_t(0)); });
  }
};

using Ring = RingOps<CpuDevice>;

}  // namespace

TORCH_LIBRARY_IMPL(pairloss, CPU, m) {
  m.impl("cpp_pair_forward", &pair_forward);
  m.impl("cpp_pair_backward", &pair_backward);
  m.impl("cpp_chunked_forward", &chunked::ChunkedOps<CpuDevice>::forward);
  m.impl("cpp_chunked_backward", &chunked::ChunkedOps<CpuDevice>::backward);
  m.impl("cpp_ring_begin", &Ring::begin);
  m.impl("cpp_ring_stats", &Ring::stats);
  m.impl("cpp_ring_accumulate", &Ring::accumulate);
  m.impl("cpp_ring_finish", &Ring::finish);
}

}  // namespace pairloss::cpu
