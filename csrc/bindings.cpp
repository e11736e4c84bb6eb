// Op schemas of the C++ engine (implementations: cpu/ops.cpp, cuda/ops.cu; Python fakes and autograd:
// pairloss/cpp_engine/_ops.py) and the Python module pairloss._C that loading registers them from.
#include <torch/extension.h>
#include <torch/library.h>

#include "common.h"
#include "block_losses.h"

TORCH_LIBRARY(pairloss, m) {
  m.def(
      "cpp_pair_forward(str loss, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, Tensor? scalars, "
      "float[] params, int own_offset=-1, Tensor? row_params=None) "
      "-> (Tensor rows, Tensor saved, Tensor counts, Tensor active)");
  m.def(
      "cpp_pair_backward(str loss, Tensor grad_rows, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, "
      "Tensor? scalars, float[] params, int own_offset, Tensor saved, Tensor active, int col_offset=0, "
      "Tensor? row_params=None) -> (Tensor dx, Tensor dy, Tensor dscalars)");
  // The same ops on the chunked engine (CUDA's) with an explicit chunk budget in bytes (tests: tiny chunks).
  m.def(
      "cpp_chunked_forward(str loss, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, Tensor? scalars, "
      "float[] params, int own_offset, Tensor? row_params, int budget) "
      "-> (Tensor rows, Tensor saved, Tensor counts, Tensor active)");
  m.def(
      "cpp_chunked_backward(str loss, Tensor grad_rows, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, "
      "Tensor? scalars, float[] params, int own_offset, Tensor saved, Tensor active, int col_offset, "
      "Tensor? row_params, int budget) -> (Tensor dx, Tensor dy, Tensor dscalars)");
  m.def("cpp_ring_sweeps(str loss, float[] params) -> int[]", &pairloss::ring_sweeps);
  m.def("cpp_ring_begin(str loss, Tensor x, Tensor labels, float[] params, Tensor? row_params=None) -> Tensor stats");
  m.def(
      "cpp_ring_stats(str loss, Tensor x, Tensor y, Tensor labels, Tensor ref_labels, float[] params, "
      "int own_offset, int col_offset, Tensor stats, Tensor? row_params=None) -> Tensor stats");
  m.def(
      "cpp_ring_accumulate(str loss, Tensor x, Tensor y, Tensor labels, Tensor ref_labels, float[] params, "
      "int own_offset, int col_offset, Tensor stats, Tensor? accs, Tensor? row_params=None) "
      "-> (Tensor accs, Tensor active)");
  m.def(
      "cpp_ring_finish(str loss, Tensor x, Tensor labels, float[] params, Tensor stats, Tensor? accs, "
      "Tensor? row_params=None) -> (Tensor rows, Tensor saved, Tensor counts)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pairloss C++/CUDA engine: registers the torch.ops.pairloss.cpp_* operators";
#ifdef PAIRLOSS_WITH_CUDA
  m.attr("with_cuda") = pybind11::bool_(true);
#else
  m.attr("with_cuda") = pybind11::bool_(false);
#endif
  m.attr("active_tile") = pybind11::int_(pairloss::kActiveTile);
}
