// SmoothQuant (Xiao et al., ICML 2023) as the official code runs it
// (mit-han-lab/smoothquant: smooth.py smooth_ln_fcs, fake_quant.py):
//
//   s_j = max(a_j^α / w_j^(1−α), 1e-5),   w_j = max(max_i max_r |W_i(r, j)|, 1e-5)
//
// with a_j = max_t |X_tj| (the per-channel activation maximum, rounded to the
// weight precision) and the weight maximum over every linear sharing the
// input; no normalization. Each linear becomes W·diag(s) and the preceding
// norm absorbs 1/s (fold_into_norm in core/channel_scaling.hpp: LayerNorm
// weight and bias, or an RMSNorm's weight alone — the reference asserts a
// LayerNorm, the arithmetic is the same). Then W8A8: int8 weights per output
// row and int8 activations per token, both symmetric absmax with
// scale = max(absmax, 1e-5) / 127 and round-half-to-even
// (int8_absmax_per_row and quantize_activations in core/int8_weights.hpp),
// multiplied as integers by kernels/int8_gemm.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

struct SmoothQuantConfig {
  double alpha = 0.5;  // migration strength in [0, 1]: 0 leaves activations alone
};

struct SmoothQuantReport {
  double seconds = 0;
};

template <class Scalar>
struct SmoothQuantResult {
  // Per linear: int8 per row of W·diag(s) (rounded to float first), acting on
  // X·diag(1/s).
  std::vector<Int8Weights> weights;
  VectorT<Scalar> scales;  // s, one per input channel
  SmoothQuantReport report;
};

namespace detail {

template <class Scalar>
void validate_smoothquant(const std::vector<MatrixRef<Scalar>>& linears, const VectorD& act_max,
                          const SmoothQuantConfig& config) {
  require(!linears.empty(), "quantize_smoothquant: expected at least one linear");
  const Index in = linears[0].cols();
  for (std::size_t i = 0; i < linears.size(); ++i) {
    require_nonempty(linears[i], "quantize_smoothquant: linear weights");
    require(linears[i].cols() == in, "quantize_smoothquant: linear ", i, " has ", linears[i].cols(),
            " input features, linear 0 has ", in, " (the linears must share one input)");
    require_finite(linears[i], "quantize_smoothquant: linear weights");
  }
  require(act_max.size() == in, "quantize_smoothquant: act_max has ", act_max.size(),
          " entries, expected in_features = ", in);
  for (Index j = 0; j < in; ++j)
    require(act_max(j) >= 0 && std::isfinite(act_max(j)),
            "quantize_smoothquant: act_max must be finite and >= 0, act_max(", j,
            ") = ", act_max(j));
  require(config.alpha >= 0 && config.alpha <= 1, "SmoothQuantConfig::alpha: expected 0..1, got ",
          config.alpha);
}

// smooth_ln_fcs's scales, in the weights' precision (act_max is rounded to it).
template <class Scalar>
VectorT<Scalar> smoothquant_scales(const std::vector<MatrixRef<Scalar>>& linears,
                                   const VectorD& act_max, const SmoothQuantConfig& config) {
  const Scalar floor = static_cast<Scalar>(1e-5);
  VectorT<Scalar> scales(act_max.size());
  for (Index j = 0; j < scales.size(); ++j) {
    Scalar weight_max = 0;
    for (const auto& w : linears) weight_max = std::max(weight_max, w.col(j).cwiseAbs().maxCoeff());
    weight_max = std::max(weight_max, floor);
    const Scalar s = torch_pow(static_cast<Scalar>(act_max(j)), config.alpha) /
                     torch_pow(weight_max, 1 - config.alpha);
    scales(j) = std::max(s, floor);
  }
  return scales;
}

template <class Scalar>
SmoothQuantResult<Scalar> quantize_smoothquant(const std::vector<MatrixRef<Scalar>>& linears,
                                               const VectorD& act_max,
                                               const SmoothQuantConfig& config) {
  const Stopwatch stopwatch;
  validate_smoothquant(linears, act_max, config);
  SmoothQuantResult<Scalar> result;
  result.scales = smoothquant_scales(linears, act_max, config);
  for (const auto& w : linears)
    result.weights.push_back(
        int8_absmax_per_row(scale_input_channels(w, result.scales).template cast<float>()));
  result.report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace detail

// SmoothQuant of the linears sharing one input, from that input's
// per-channel maximum max_t |X_tj| (Calibration::max_abs, the reference's
// act_scales): smoothing, then int8 weights per row. Float or double weights.
inline SmoothQuantResult<float> quantize_smoothquant(const std::vector<MatrixFRef>& linears,
                                                     const Eigen::Ref<const VectorD>& act_max,
                                                     const SmoothQuantConfig& config = {}) {
  return detail::quantize_smoothquant<float>(linears, act_max, config);
}
inline SmoothQuantResult<double> quantize_smoothquant(const std::vector<MatrixDRef>& linears,
                                                      const Eigen::Ref<const VectorD>& act_max,
                                                      const SmoothQuantConfig& config = {}) {
  return detail::quantize_smoothquant<double>(linears, act_max, config);
}
inline SmoothQuantResult<float> quantize_smoothquant(const std::vector<MatrixFRef>& linears,
                                                     const Calibration& calibration,
                                                     const SmoothQuantConfig& config = {}) {
  return quantize_smoothquant(linears, calibration.max_abs(), config);
}

}  // namespace lowbit
