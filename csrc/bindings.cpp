// Op schemas of the C++ engine (implementations: cpu/ops.cpp, cuda/ops.cu; Python fakes and autograd:
// pairloss/cpp_engine/_ops.py) and the Python module pairloss._C that loading registers them from.
#include <torch/extension.h>
#include <torch/library.h>

#include "common.h"

TORCH_LIBRARY(pairloss, m) {
  m.def(
      "cpp_pair_forward(str loss, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, Tensor? scalars, "
      "float[] params, int own_offset=-1) -> (Tensor rows, Tensor saved, Tensor counts, Tensor active)");
  m.def(
      "cpp_pair_backward(str loss, Tensor grad_rows, Tensor x, Tensor? y, Tensor? labels, Tensor? ref_labels, "
      "Tensor? scalars, float[] params, int own_offset, Tensor saved, Tensor active) "
      "-> (Tensor dx, Tensor dy, Tensor dscalars)");
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
