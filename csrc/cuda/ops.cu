// CUDA implementations of the pair and ring ops, every loss: the chunked engine (chunked/engine.h: cuBLAS GEMMs on row
// chunks, the epilogue sweeps as kernels of cuda/executor.cuh) on the current stream of the inputs' device.
// cpp_pair_* use a budget of PAIRLOSS_CHUNK_MIB MiB (default 256) for a chunk's S and G; cpp_chunked_* take one.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>

#include "../chunked/ops.h"
#include "../ring_ops.h"
#include "executor.cuh"

namespace pairloss::cuda {
namespace {

int64_t default_budget() {
  const char* mib = std::getenv("PAIRLOSS_CHUNK_MIB");
  if (mib == nullptr || *mib == '\0') return chunked::kDefaultBudget;
  char* end = nullptr;
  const long long value = std::strtoll(mib, &end, 10);
  TORCH_CHECK(*end == '\0' && value > 0, "pairloss: PAIRLOSS_CHUNK_MIB must be a positive number of MiB, got '",
              mib, "'");
  return int64_t(value) << 20;
}

PairInputs cuda_inputs(const PairInputs& in) {
  const char* name = in.info->name;
  TORCH_CHECK(in.x.is_cuda(), "pairloss ", name, ": the CUDA kernel got a ", in.x.device(), " tensor");
  const auto dtype = in.x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, "pairloss ",
              name, ": the CUDA engine takes float64, float32, float16 or bfloat16, got ", dtype);
  return in;
}

// The GPU for the chunked ops (chunked/ops.h) and the ring ops (ring_ops.h).
struct CudaDevice {
  using Executor = CudaExecutor;
  static PairInputs inputs(const PairInputs& in) { return cuda_inputs(in); }
  template <typename F>
  static void with_engine(const PairInputs& in, F&& f) {
    const c10::cuda::CUDAGuard guard(in.x.device());
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // see chunked/ops.h
    chunked::with_accumulation(in, [&](auto zero) {
      using T = decltype(zero);
      f(chunked::Engine<T, CudaExecutor>(in, CudaExecutor(), default_budget()), zero);
    });
  }
};

using Chunked = chunked::ChunkedOps<CudaDevice>;
using Ring = RingOps<CudaDevice>;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> pair_forward(
    c10::string_view loss, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const c10::optional<at::Tensor>& row_params) {
  return Chunked::forward(loss, x, y, labels, ref_labels, scalars, params, own_offset, row_params, default_budget());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pair_backward(
    c10::string_view loss, const at::Tensor& grad_rows, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& labels, const c10::optional<at::Tensor>& ref_labels,
    const c10::optional<at::Tensor>& scalars, at::ArrayRef<double> params, int64_t own_offset,
    const at::Tensor& saved, const at::Tensor& active, int64_t col_offset,
    const c10::optional<at::Tensor>& row_params) {
  return Chunked::backward(loss, grad_rows, x, y, labels, ref_labels, scalars, params, own_offset, saved, active,
                           col_offset, row_params, default_budget());
}

}  // namespace

TORCH_LIBRARY_IMPL(pairloss, CUDA, m) {
  m.impl("cpp_pair_forward", &pair_forward);
  m.impl("cpp_pair_backward", &pair_backward);
  m.impl("cpp_chunked_forward", &Chunked::forward);
  m.impl("cpp_chunked_backward", &Chunked::backward);
  m.impl("cpp_ring_begin", &Ring::begin);
  m.impl("cpp_ring_stats", &Ring::stats);
  m.impl("cpp_ring_accumulate", &Ring::accumulate);
  m.impl("cpp_ring_finish", &Ring::finish);
}

}  // namespace pairloss::cuda
