// SmoothQuant (Xiao et al., ICML 2023) as the official code runs it
// (mit-han-lab/smoothquant: smooth.py smooth_ln_fcs, fake_quant.py):
//
//   s_j = max(a_j^α / w_j^(1−α), 1e-5),   w_j = max(max_i max_r |W_i(r, j)|, 1e-5)
//
// with a_j = max_t |X_tj| (the per-channel activation maximum, in the weight
// precision) and the weight maximum over every linear sharing the input; no
// normalization. Each linear becomes W·diag(s) and the preceding norm absorbs
// 1/s (fold_into_norm in core/channel_scaling.hpp: LayerNorm weight and bias,
// or an RMSNorm's weight alone — the reference asserts a LayerNorm, the
// arithmetic is the same). Then W8A8: int8 weights per output row and int8
// activations per token, both symmetric absmax with
// scale = max(absmax, 1e-5) / 127 and round-half-to-even
// (smoothquant_int8_weights here, quantize_activations in
// core/int8_weights.hpp), multiplied as integers by kernels/int8_gemm.hpp.
//
// This quantizer reuses absmax (quant/absmax.hpp) for its weight stage: the
// W8 of SmoothQuant is exactly per-row int8 absmax.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/quant/absmax.hpp"

namespace lowbit {

struct SmoothQuantConfig {
  double alpha = 0.5;  // migration strength in [0, 1]: 0 leaves activations alone
};

template <class Scalar>
struct SmoothQuantResult {
  VectorT<Scalar> scales;                // s, one per input channel
  std::vector<MatrixT<Scalar>> weights;  // per linear: W·diag(s)
};

namespace detail {

template <class Scalar>
void validate_smoothquant(const std::vector<MatrixRef<Scalar>>& linears,
                          const VectorRef<Scalar>& act_max, const SmoothQuantConfig& config) {
  require(!linears.empty(), "smoothquant: expected at least one linear");
  const Index in = linears[0].cols();
  for (std::size_t i = 0; i < linears.size(); ++i) {
    require_nonempty(linears[i], "smoothquant: linear weights");
    require(linears[i].cols() == in, "smoothquant: linear ", i, " has ", linears[i].cols(),
            " input features, linear 0 has ", in, " (the linears must share one input)");
    require_finite(linears[i], "smoothquant: linear weights");
  }
  require(act_max.size() == in, "smoothquant: act_max has ", act_max.size(),
          " entries, expected in_features = ", in);
  for (Index j = 0; j < in; ++j) {
    const double a = static_cast<double>(act_max(j));
    require(a >= 0 && a - a == 0.0, "smoothquant: act_max must be finite and >= 0, act_max(", j,
            ") = ", a);
  }
  require(config.alpha >= 0 && config.alpha <= 1, "SmoothQuantConfig::alpha: expected 0..1, got ",
          config.alpha);
}

template <class Scalar>
SmoothQuantResult<Scalar> smooth_linears(const std::vector<MatrixRef<Scalar>>& linears,
                                         const VectorRef<Scalar>& act_max,
                                         const SmoothQuantConfig& config) {
  validate_smoothquant(linears, act_max, config);
  const Index in = act_max.size();
  const Scalar floor = static_cast<Scalar>(1e-5);
  SmoothQuantResult<Scalar> result;
  result.scales.resize(in);
  for (Index j = 0; j < in; ++j) {
    Scalar weight_max = 0;
    for (const auto& w : linears) weight_max = std::max(weight_max, w.col(j).cwiseAbs().maxCoeff());
    weight_max = std::max(weight_max, floor);
    const Scalar s = torch_pow(act_max(j), config.alpha) / torch_pow(weight_max, 1 - config.alpha);
    result.scales(j) = std::max(s, floor);
  }
  for (const auto& w : linears) result.weights.push_back(scale_input_channels(w, result.scales));
  return result;
}

}  // namespace detail

// From the per-channel activation maximum max_t |X_tj| (Calibration::max_abs,
// the reference's act_scales), in the precision of the weights.
inline SmoothQuantResult<float> smooth_linears(const std::vector<MatrixFRef>& linears,
                                               const Eigen::Ref<const VectorF>& act_max,
                                               const SmoothQuantConfig& config = {}) {
  return detail::smooth_linears<float>(linears, act_max, config);
}
inline SmoothQuantResult<double> smooth_linears(const std::vector<MatrixDRef>& linears,
                                                const Eigen::Ref<const VectorD>& act_max,
                                                const SmoothQuantConfig& config = {}) {
  return detail::smooth_linears<double>(linears, act_max, config);
}

// SmoothQuant's weight stage (quantize_weight_per_channel_absmax): int8 per
// output row, scale = max(max|w|, 1e-5) / 127.
inline Int8Weights smoothquant_int8_weights(const MatrixFRef& smoothed_weights) {
  AbsmaxConfig config;
  config.bits = 8;
  config.granularity = AbsmaxGranularity::per_row;
  config.min_absmax = kInt8AbsmaxFloor;
  return to_int8_weights(quantize_absmax(smoothed_weights, config));
}

}  // namespace lowbit
