// The chunked engine: the CUDA implementation of the pair ops, and a second engine on the CPU (where the tests
// check it against the tiled engine of cpu/engine.h; it is only reached through the cpp_chunked_* ops there).
//
// Forward, per chunk of anchor rows: S_c = X_c·Yᵀ by the device's GEMM (ATen: cuBLAS on CUDA, fp16/bf16
// operands with an fp32 result), then the epilogue's sweeps over S_c in memory (sweeps.h, run by the Executor):
// statistics, accumulators, the column hook; every row is finished at the end.
// Backward, per chunk: S_c again, G_c = ∂L/∂S_c written over it (fp32), then dX_c += G_c·Y and dY += G_cᵀ·X_c
// by GEMMs into fp32 accumulators. G_c enters those GEMMs in the operand dtype: bf16 as is, fp16 scaled by a power
// of two so that small gradients do not flush (undone on the products). X = Y: dY is dX.
// The chunk height comes from a memory budget for S_c (and G_c's operand copy): never B×M. Forward and backward
// use the same height, hence, for other references, the same GEMM shapes and the same S (the miners compare them
// exactly). X = Y: the backward's narrower GEMMs and its mirrored pairs (s_ji taken as s_ij) may round a pair's S
// an ulp away from the forward's on a GPU, which can flip a pair lying exactly on a mining threshold. fp32 GEMMs
// follow torch's TF32 setting, as torch.mm does.
// No host syncs: the logit scalars are read on the device and the scalar gradients summed there.
//
// Executor: each(n, f) runs f(i) for i < n; rows(n, sweep) runs a row sweep (sweeps.h) over chunk rows < n.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "../op_inputs.h"
#include "sweeps.h"

namespace pairloss::chunked {

constexpr int64_t kDefaultBudget = int64_t(256) << 20;  // bytes for S_c and G_c

// Chunk rows for a budget: whole 128-row GEMM tiles when at least one fits.
inline int64_t chunk_rows(const PairInputs& in, int64_t budget) {
  const int64_t acc_bytes = at::elementSize(accumulation_type(in.x.scalar_type()));
  const int64_t operand_bytes = in.x.element_size();
  const int64_t per_row = in.cols * (acc_bytes + (operand_bytes < acc_bytes ? operand_bytes : 0));
  int64_t rows = std::max<int64_t>(1, budget / per_row);
  if (rows >= 128) rows = rows / 128 * 128;
  return std::min(rows, in.rows);
}

// out += a·b in out's (accumulation) dtype, whatever a's and b's: fp16/bf16 operands through mm's out_dtype form
// (cuBLAS with an fp32 result; its addmm form wants `self` in the operands' dtype, so the product is added after).
inline void add_product(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == out.scalar_type()) {
    out.addmm_(a, b);
  } else {
    out.add_(at::mm(a, b, out.scalar_type()));
  }
}

// An array of n trivially copyable T on the inputs' device (the rows' Stats, Acc and column states).
template <typename T>
at::Tensor device_array(const at::Tensor& like, int64_t n) {
  static_assert(std::is_trivially_copyable_v<T>, "state arrays are raw bytes");
  return at::empty({std::max<int64_t>(n, 1) * int64_t(sizeof(T))}, like.options().dtype(at::kByte));
}
template <typename T>
T* array_data(at::Tensor& bytes) {
  return reinterpret_cast<T*>(bytes.data_ptr<uint8_t>());
}

// One call's engine: T is the accumulation dtype (fp32 for fp16/bf16/fp32 inputs, fp64 for fp64).
template <typename T, typename Executor>
class Engine {
 public:
  Engine(const PairInputs& in, const Executor& executor, int64_t budget)
      : in_(in), executor_(executor), chunk_(chunk_rows(in, budget)) {
    TORCH_CHECK(budget > 0, "pairloss ", in.info->name, ": the chunk budget must be positive, got ", budget);
  }

  template <typename F>
  void each(int64_t n, const F& f) const {
    if (n > 0) executor_.each(n, f);
  }

  template <typename Loss, typename Kinds>
  void forward(const Loss& loss, const Kinds& kinds, ForwardOutputs& out) const {
    using Stats = typename Loss::Stats;
    using Acc = typename Loss::Acc;
    using ColAcc = typename HasColumns<Loss>::ColAcc;
    constexpr bool kColumns = HasColumns<Loss>::value;
    const int64_t rows = in_.rows, cols = in_.cols;
    const Norms norms(in_, Loss::kDistance);
    at::Tensor stats_bytes = device_array<Stats>(in_.x, rows), acc_bytes = device_array<Acc>(in_.x, rows);
    at::Tensor col_bytes = device_array<ColAcc>(in_.x, kColumns ? cols : 0);
    Stats* stats = array_data<Stats>(stats_bytes);
    Acc* accs = array_data<Acc>(acc_bytes);
    ColAcc* col_accs = array_data<ColAcc>(col_bytes);
    each(rows, InitStats<Loss>{loss, stats});
    if constexpr (kColumns) {
      TORCH_CHECK(rows == cols, "pairloss: column statistics need as many rows as columns");
      each(cols, InitColumns<Loss>{loss, col_accs});
    }
    at::Tensor sim = at::empty({chunk_, cols}, in_.x.options().dtype(c10::CppTypeToScalarType<T>::value));
    for (int64_t i0 = 0; i0 < rows; i0 += chunk_) {
      const Chunk<T> chunk = similarities(sim, i0, norms);
      if (loss.stats_pass()) executor_.rows(chunk.rows, StatsSweep<T, Loss, Kinds>{loss, kinds, chunk, stats});
      each(chunk.rows, InitAccs<Loss>{loss, stats, accs, i0});
      if (loss.loss_pass()) {
        executor_.rows(chunk.rows, LossSweep<T, Loss, Kinds>{loss, kinds, chunk, stats, accs,
                                                             out.active.data_ptr<uint8_t>(), out.active.size(1)});
        if constexpr (kColumns) each(cols, ColumnSweep<T, Loss, Kinds>{loss, kinds, chunk, col_accs});
      }
    }
    at::Tensor row_counts = at::zeros({rows, 2}, in_.x.options().dtype(at::kLong));
    each(rows, FinishRows<T, Loss>{loss, stats, accs, col_accs, out.rows.data_ptr<T>(),
                                   out.saved.data_ptr<double>(), row_counts.data_ptr<int64_t>()});
    out.counts.copy_(row_counts.sum(0));
  }

  // Adds ∂L/∂X to dx and ∂L/∂Y to dy (dy is dx when X = Y; both in T); returns (Σ ∂L/∂l·s, Σ ∂L/∂l) as a
  // float64 tensor on the device (zeros unless kLogits). X = Y: each chunk takes only the references from its
  // first row on, its later columns carrying their mirrors' gradients (GradSweep): 1.5 GEMM-passes, not 3.
  template <typename Loss, typename Kinds>
  at::Tensor backward(const Loss& loss, const Kinds& kinds, at::Tensor dx, at::Tensor dy) const {
    const int64_t rows = in_.rows, cols = in_.cols;
    const bool symmetric = in_.self() && !Loss::kLogits;
    const Norms norms(in_, Loss::kDistance);
    const auto acc_options = in_.x.options().dtype(c10::CppTypeToScalarType<T>::value);
    at::Tensor row_scalars = at::zeros({rows, 2}, in_.x.options().dtype(at::kDouble));
    static_assert(sizeof(ScalarGrads) == 2 * sizeof(double), "row_scalars rows are ScalarGrads");
    at::Tensor row_sums = at::zeros({rows}, acc_options), col_sums = at::zeros({cols}, acc_options);
    at::Tensor sim = at::empty({chunk_, cols}, acc_options);
    const bool widened = in_.x.scalar_type() != sim.scalar_type();
    at::Tensor operand = widened ? at::empty({chunk_, cols}, in_.x.options()) : at::Tensor();
    const at::Tensor& x = in_.x;
    for (int64_t i0 = 0; i0 < rows; i0 += chunk_) {
      const int64_t j0 = symmetric ? i0 : 0;
      const Chunk<T> chunk = similarities(sim, i0, norms, j0);
      const int64_t mirror_from = symmetric ? i0 + chunk.rows : cols;
      executor_.rows(chunk.rows, GradSweep<T, Loss, Kinds>{loss, kinds, chunk, scalar_rows(row_scalars),
                                                           mirror_from});
      const at::Tensor grad = sim.view(-1).narrow(0, 0, chunk.rows * chunk.cols).view({chunk.rows, chunk.cols});
      const at::Tensor x_c = x.narrow(0, i0, chunk.rows), y_c = in_.refs().narrow(0, j0, chunk.cols);
      if constexpr (Loss::kDistance) {
        row_sums.narrow(0, i0, chunk.rows).add_(grad.sum(1));
        col_sums.narrow(0, j0, chunk.cols).add_(grad.sum(0));
      }
      add_gradients(grad, operand, x_c, y_c, dx.narrow(0, i0, chunk.rows), dy.narrow(0, j0, chunk.cols));
    }
    if constexpr (Loss::kDistance) {
      // d|x_i|²/dx_i = 2x_i and ∂L/∂|x_i|² = −½ Σ_j ∂L/∂s_ij (likewise for y_j).
      if (in_.self()) {
        dx.sub_((row_sums + col_sums).unsqueeze(1) * x.to(dx.scalar_type()));
      } else {
        dx.sub_(row_sums.unsqueeze(1) * x.to(dx.scalar_type()));
        dy.sub_(col_sums.unsqueeze(1) * in_.refs().to(dy.scalar_type()));
      }
    }
    return row_scalars.sum(0);
  }

  // One sweep over this call's references continuing the carried rows (ring_ops.h): the statistics (accs null)
  // or the accumulators, marking `active`.
  template <typename Loss, typename Kinds>
  void sweep_block(const Loss& loss, const Kinds& kinds, typename Loss::Stats* stats, typename Loss::Acc* accs,
                   uint8_t* active) const {
    const Norms norms(in_, Loss::kDistance);
    at::Tensor sim = at::empty({chunk_, in_.cols}, in_.x.options().dtype(c10::CppTypeToScalarType<T>::value));
    const int64_t active_cols = (in_.cols + kActiveTile - 1) / kActiveTile;
    for (int64_t i0 = 0; i0 < in_.rows; i0 += chunk_) {
      const Chunk<T> chunk = similarities(sim, i0, norms);
      if (accs == nullptr) {
        executor_.rows(chunk.rows, StatsSweep<T, Loss, Kinds>{loss, kinds, chunk, stats});
      } else {
        executor_.rows(chunk.rows, LossSweep<T, Loss, Kinds>{loss, kinds, chunk, stats, accs, active, active_cols});
      }
    }
  }

 private:
  // Squared row norms in T (distance losses).
  struct Norms {
    at::Tensor x_sq, y_sq;
    Norms(const PairInputs& in, bool distance) {
      if (!distance) return;
      const auto dtype = accumulation_type(in.x.scalar_type());
      x_sq = in.x.to(dtype).square().sum(1);
      y_sq = in.self() ? x_sq : in.y.to(dtype).square().sum(1);
    }
  };

  static ScalarGrads* scalar_rows(at::Tensor& row_scalars) {
    return reinterpret_cast<ScalarGrads*>(row_scalars.data_ptr<double>());
  }

  // S_c of the rows from i0 against the references from j0, packed at the start of `sim`.
  Chunk<T> similarities(at::Tensor& sim, int64_t i0, const Norms& norms, int64_t j0 = 0) const {
    const int64_t n = std::min(chunk_, in_.rows - i0), width = in_.cols - j0;
    at::Tensor s = sim.view(-1).narrow(0, 0, n * width).view({n, width});
    const at::Tensor x_c = in_.x.narrow(0, i0, n), y_t = in_.refs().narrow(0, j0, width).t();
    if (x_c.scalar_type() == s.scalar_type()) {
      at::mm_out(s, x_c, y_t);
    } else {
      at::mm_out(s, x_c, y_t, s.scalar_type());
    }
    Chunk<T> chunk{s.data_ptr<T>(), i0, n, width, j0};
    if (norms.x_sq.defined()) {
      chunk.x_sq = norms.x_sq.template data_ptr<T>();
      chunk.y_sq = norms.y_sq.template data_ptr<T>();
    }
    chunk.col_offset = in_.col_offset;
    return chunk;
  }

  // dx_c += G_c·Y_c and dy_c += G_cᵀ·X_c with fp32 (T) results. G_c enters the GEMMs in the operand dtype: bf16
  // as is; fp16 (5 exponent bits) scaled by a power of two that puts its largest magnitude near 2^14 (exact,
  // undone on the products), so that a mean over a large batch does not flush to zero.
  static void add_gradients(const at::Tensor& grad, at::Tensor& operand, const at::Tensor& x_c, const at::Tensor& y_c,
                            at::Tensor dx_c, at::Tensor dy_c) {
    if (!operand.defined()) {
      dx_c.addmm_(grad, y_c);
      dy_c.addmm_(grad.t(), x_c);
      return;
    }
    at::Tensor g = operand.view(-1).narrow(0, 0, grad.numel()).view(grad.sizes());
    if (x_c.scalar_type() == at::kHalf) {
      const auto [low, high] = at::aminmax(grad);  // the largest magnitude without a chunk-sized |G| temporary
      const at::Tensor scale = at::exp2(at::floor(at::log2(16384.0 / at::maximum(-low, high))).clamp(-100, 100));
      g.copy_(grad.mul_(scale));
      dx_c.addcdiv_(at::mm(g, y_c, dx_c.scalar_type()), scale);
      dy_c.addcdiv_(at::mm(g.t(), x_c, dy_c.scalar_type()), scale);
    } else {
      g.copy_(grad);
      add_product(dx_c, g, y_c);
      add_product(dy_c, g.t(), x_c);
    }
  }

  const PairInputs& in_;
  Executor executor_;
  int64_t chunk_;
};

}  // namespace pairloss::chunked
