// The pair ops on the chunked engine (chunked/engine.h) with a device's executor: cpp_pair_* on CUDA, and
// cpp_chunked_* (the same ops with an explicit chunk budget in bytes) on CPU and CUDA.
#pragma once

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

}  // namespace pairloss::chunked
