// The cpp_ring_* ops (block_losses.h), written once for the devices: each anchor's Stats and Acc rows travel
// between calls as opaque bytes, rows × sizeof(row), made by cpp_ring_begin / the first cpp_ring_accumulate and
// only read back by these ops (with the same loss, params and dtype, which the row width partly checks).
//
// Device: inputs(PairInputs) → the device's checked inputs; with_engine(in, f) calls f(engine) with T the
// accumulation dtype, where the engine has loss_dispatch.h's each(n, f) and
//   sweep_block(loss, kinds, Stats* stats, Acc* accs, uint8_t* active)   one sweep over this call's references,
//   continuing the carried rows: the statistics (accs null) or the accumulators (marking `active`).
#pragma once

#include <type_traits>

#include "block_losses.h"
#include "chunked/sweeps.h"

namespace pairloss {

template <typename Row>
Row* state_rows(const at::Tensor& state, const PairInputs& in, const char* what) {
  static_assert(std::is_trivially_copyable_v<Row>, "carried rows are copied as bytes");
  TORCH_CHECK(state.scalar_type() == at::kByte && state.dim() == 2 && state.size(0) == in.rows &&
                  state.size(1) == int64_t(sizeof(Row)) && state.is_contiguous() && state.device() == in.x.device() &&
                  reinterpret_cast<uintptr_t>(state.const_data_ptr()) % alignof(Row) == 0,
              "pairloss ", in.info->name, ": ", what, " must be the ", in.rows, " × ", sizeof(Row),
              " uint8 rows of this loss's previous ring call, on ", in.x.device());
  return reinterpret_cast<Row*>(state.data_ptr<uint8_t>());
}

template <typename Row>
at::Tensor new_state(const PairInputs& in) {
  return at::empty({in.rows, int64_t(sizeof(Row))}, in.x.options().dtype(at::kByte));
}

template <typename Device>
struct RingOps {
  // f(engine, epilogue, T{}) for the loss of `in`, T the accumulation dtype.
  template <typename F>
  static void with_epilogue(const PairInputs& in, F&& f) {
    Device::with_engine(in, [&](const auto& engine, auto zero) {
      using T = decltype(zero);
      with_block_loss<T>(in, [&](const auto& epilogue) { f(engine, epilogue, zero); });
    });
  }

  // Every anchor's empty statistics.
  static at::Tensor begin(c10::string_view loss, const at::Tensor& x, const at::Tensor& labels,
                          at::ArrayRef<double> params, const c10::optional<at::Tensor>& row_params) {
    const PairInputs in = Device::inputs(
        check_inputs(loss, x, c10::nullopt, labels, c10::nullopt, c10::nullopt, params, -1, 0, row_params));
    at::Tensor stats;
    with_epilogue(in, [&](const auto& engine, const auto& epilogue, auto) {
      using Loss = std::decay_t<decltype(epilogue)>;
      stats = new_state<typename Loss::Stats>(in);
      engine.each(in.rows, chunked::InitStats<Loss>{epilogue, state_rows<typename Loss::Stats>(stats, in, "stats")});
    });
    return stats;
  }

  // The statistics continued over the block y (global columns col_offset …).
  static at::Tensor stats(c10::string_view loss, const at::Tensor& x, const at::Tensor& y, const at::Tensor& labels,
                          const at::Tensor& ref_labels, at::ArrayRef<double> params, int64_t own_offset,
                          int64_t col_offset, const at::Tensor& stats_in,
                          const c10::optional<at::Tensor>& row_params) {
    const PairInputs in = Device::inputs(
        check_inputs(loss, x, y, labels, ref_labels, c10::nullopt, params, own_offset, col_offset, row_params));
    at::Tensor stats = stats_in.clone();
    with_epilogue(in, [&](const auto& engine, const auto& epilogue, auto) {
      using Loss = std::decay_t<decltype(epilogue)>;
      engine.sweep_block(epilogue, label_kinds(in), state_rows<typename Loss::Stats>(stats, in, "stats"),
                         static_cast<typename Loss::Acc*>(nullptr), nullptr);
    });
    return stats;
  }

  // The loss accumulators continued over the block y under the complete statistics (accs absent: the first
  // block), and the block's map of tiles with a gradient.
  static std::tuple<at::Tensor, at::Tensor> accumulate(c10::string_view loss, const at::Tensor& x,
                                                       const at::Tensor& y, const at::Tensor& labels,
                                                       const at::Tensor& ref_labels, at::ArrayRef<double> params,
                                                       int64_t own_offset, int64_t col_offset, const at::Tensor& stats,
                                                       const c10::optional<at::Tensor>& accs_in,
                                                       const c10::optional<at::Tensor>& row_params) {
    const PairInputs in = Device::inputs(
        check_inputs(loss, x, y, labels, ref_labels, c10::nullopt, params, own_offset, col_offset, row_params));
    at::Tensor accs, active = allocate_forward(in).active;
    with_epilogue(in, [&](const auto& engine, const auto& epilogue, auto) {
      using Loss = std::decay_t<decltype(epilogue)>;
      using Acc = typename Loss::Acc;
      auto* stat_rows = state_rows<typename Loss::Stats>(stats, in, "stats");
      if (accs_in.has_value()) {
        accs = accs_in->clone();
      } else {
        accs = new_state<Acc>(in);
        engine.each(in.rows, chunked::InitAccs<Loss>{epilogue, stat_rows, state_rows<Acc>(accs, in, "accs"), 0});
      }
      engine.sweep_block(epilogue, label_kinds(in), stat_rows, state_rows<Acc>(accs, in, "accs"),
                         active.data_ptr<uint8_t>());
    });
    return {accs, active};
  }

  // The rows, saved statistics and counters of cpp_pair_forward from the carried state (accs absent: a loss
  // without a loss sweep).
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> finish(c10::string_view loss, const at::Tensor& x,
                                                               const at::Tensor& labels, at::ArrayRef<double> params,
                                                               const at::Tensor& stats,
                                                               const c10::optional<at::Tensor>& accs_in,
                                                               const c10::optional<at::Tensor>& row_params) {
    const PairInputs in = Device::inputs(
        check_inputs(loss, x, c10::nullopt, labels, c10::nullopt, c10::nullopt, params, -1, 0, row_params));
    ForwardOutputs out = allocate_forward(in);
    with_epilogue(in, [&](const auto& engine, const auto& epilogue, auto zero) {
      using Loss = std::decay_t<decltype(epilogue)>;
      using T = decltype(zero);
      auto* stat_rows = state_rows<typename Loss::Stats>(stats, in, "stats");
      at::Tensor accs = accs_in.has_value() ? *accs_in : new_state<typename Loss::Acc>(in);
      auto* acc_rows = state_rows<typename Loss::Acc>(accs, in, "accs");
      if (!accs_in.has_value()) engine.each(in.rows, chunked::InitAccs<Loss>{epilogue, stat_rows, acc_rows, 0});
      at::Tensor row_counts = at::zeros({in.rows, 2}, in.x.options().dtype(at::kLong));
      engine.each(in.rows, chunked::FinishRows<T, Loss>{epilogue, stat_rows, acc_rows, nullptr, out.rows.data_ptr<T>(),
                                                        out.saved.data_ptr<double>(), row_counts.data_ptr<int64_t>()});
      out.counts.copy_(row_counts.sum(0));
    });
    return {out.rows, out.saved, out.counts};
  }

};

}  // namespace pairloss
