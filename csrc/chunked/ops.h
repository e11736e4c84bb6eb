// The pair ops on the chunked engine (chunked/engine.h) with a device's executor: cpp_pair_* on CUDA, and
// cpp_chunked_* (the same ops with an explicit chunk budget in bytes) on CPU and CUDA.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/DeviceGuard.h>

#include <tuple>

#include "../loss_dispatch.h"
#include "engine.h"

namespace pairloss::chunked {

// body(T{}) with T the accumulation dtype of x (float, or double for float64 inputs).
template <typename Body>
void with_accumulation(const PairInputs& in, Body&& body) {
  AT_DISPATCH_FLOATING_TYPES(accumulation_type(in.x.scalar_type()), "pairloss_chunked", [&] { body(scalar_t(0)); });
}

template <typename Executor>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const PairInputs& in, const Executor& executor,
                                                                   int64_t budget) {
  ForwardOutputs out = allocate_forward(in);
  with_accumulation(in, [&](auto zero) {
    using T = decltype(zero);
    forward_losses<T>(in, Engine<T, Executor>(in, executor, budget), out);
  });
  return {out.rows, out.saved, out.counts, out.active};
}

// `dtype`: the op's input dtype, the gradients' (in.x may be a widened copy).
template <typename Executor>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const PairInputs& in, const Executor& executor,
                                                        int64_t budget, const at::Tensor& grad_rows,
                                                        const at::Tensor& saved, const at::Tensor& active,
                                                        at::ScalarType dtype) {
  check_backward_inputs(in, grad_rows, saved, active);
  const Gradients grads(in);
  at::Tensor dscalars;
  with_accumulation(in, [&](auto zero) {
    using T = decltype(zero);
    const Engine<T, Executor> engine(in, executor, budget);
    dscalars = backward_losses<T>(in, engine, grad_rows, saved.contiguous(), grads.dx, grads.dy_or_dx());
  });
  return grads.outputs(dtype, dscalars);
}

// The cpp_chunked_* ops for a Device: Device::inputs(PairInputs) checks the inputs for it, Device::Executor runs
// the sweeps there. The engine's GEMMs write into buffers (out= forms): below autograd, also when the op is
// called with grad mode on (a double backward reaches the backward op so).
template <typename Device>
struct ChunkedOps {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
      c10::string_view loss, const at::Tensor& x, const c10::optional<at::Tensor>& y,
      const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
      const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
      const c10::optional<at::Tensor>& row_params, int64_t budget) {
    const c10::OptionalDeviceGuard guard(x.device());
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const PairInputs in =
        Device::inputs(check_inputs(loss, x, y, labels, ref_labels, scalars, params, own_offset, 0, row_params));
    return chunked::forward(in, typename Device::Executor(), budget);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
      c10::string_view loss, const at::Tensor& grad_rows, const at::Tensor& x, const c10::optional<at::Tensor>& y,
      const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
      const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
      const at::Tensor& saved, const at::Tensor& active, int64_t col_offset,
      const c10::optional<at::Tensor>& row_params, int64_t budget) {
    const c10::OptionalDeviceGuard guard(x.device());
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    const PairInputs in = Device::inputs(
        check_inputs(loss, x, y, labels, ref_labels, scalars, params, own_offset, col_offset, row_params));
    return chunked::backward(in, typename Device::Executor(), budget, grad_rows, saved, active, x.scalar_type());
  }
};

}  // namespace pairloss::chunked
