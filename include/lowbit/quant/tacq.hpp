// TACQ: Task-Circuit Quantization (Xiao et al., arXiv 2504.07389). A small
// fraction p of the weights (0.35% in the paper) stays in 16 bits, the rest
// is GPTQ-quantized to 2-3 bits with those weights kept exact.
//
// Which weights: the saliency
//
//     S = | G ⊙ (W − Q(W)) ⊙ W |
//
// where G = Σ_samples |∂L/∂W| is the accumulated absolute per-sample gradient
// of the task loss (GradientMagnitudes, core/calibration.hpp), Q(W) a uniform
// quantization of W at the target bits (GPTQ by default, as the official
// pipeline's "corrupt model"; round-to-nearest optional), and ⊙ is
// element-wise. The official
// code (measure_importances: `sample_abs` accumulation, then
// `weight_prod_contrastive_postprocess`) forms G·(W − Wq)·W, and the mask step
// takes its absolute value and keeps the global top fraction
// (`importances_to_mask_top_p_sparse`: k = int(fraction · n), torch.topk).
//
// Here the selection is per matrix: exactly ⌊p · out · in⌋ weights (Python's
// int() of the same product), and ties are broken by the lower row-major flat
// index (torch.topk leaves their order unspecified). The official scripts
// take the fraction of the whole model's parameters over all matrices at once
// (--proportional_total_params); per-matrix selection keeps every layer's
// budget exact and is what a one-matrix-at-a-time tool can do.
//
// The kept weights: GPTQ runs with them as its outlier mask (quant/gptq.hpp
// documents the official behaviour reproduced there): they do not stretch the
// grid, contribute no error and feed nothing back, and the value kept is the
// weight as updated by the error feedback of the columns processed before it
// (it absorbs their compensation), as the official TaCQ GPTQ keeps it. With
// fp16 storage (the default, the paper's 16 bits) that value is rounded to
// fp16. The result is the dense uniform part plus SparseOutliers holding those
// values; dequantization = dense part with the kept positions overwritten.
//
// Without gradients (an engine that cannot backpropagate),
// quantize_tacq_without_gradients uses G[r, c] = H[c, c]: the activation
// energy of input c broadcast along the rows. That is NOT the paper's method
// (it has no task signal; it ranks by H-weighted quantization damage times
// magnitude) and its report says so (TacqReport::gradient_free).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/quant/gptq.hpp"

namespace lowbit {

// S = |G ⊙ (W − Q) ⊙ W|, in double (no overflow for any finite float inputs).
inline MatrixD tacq_saliency(const MatrixFRef& weights, const MatrixFRef& gradients,
                             const MatrixFRef& quantized) {
  detail::require_nonempty(weights, "tacq_saliency: weights");
  detail::require_shape(gradients, weights.rows(), weights.cols(),
                        "tacq_saliency: G (out x in, W's shape)");
  detail::require_shape(quantized, weights.rows(), weights.cols(),
                        "tacq_saliency: Q (out x in, W's shape)");
  detail::require_finite(weights, "tacq_saliency: weights");
  detail::require_finite(gradients, "tacq_saliency: G");
  detail::require_finite(quantized, "tacq_saliency: Q");
  const MatrixD w = weights.cast<double>();
  return (gradients.cast<double>().array() * (w - quantized.cast<double>()).array() * w.array())
      .abs()
      .matrix();
}

// ⌊fraction · rows · cols⌋ for fraction in [0, 1).
inline Index tacq_outlier_count(Index rows, Index cols, double fraction) {
  detail::require(std::isfinite(fraction) && fraction >= 0.0 && fraction < 1.0,
                  "TACQ fraction: expected a value in [0, 1), got ", fraction);
  return static_cast<Index>(
      std::floor(fraction * static_cast<double>(rows) * static_cast<double>(cols)));
}

// The `count` largest entries of `saliency` (mask out x in, 1 = selected);
// among equal values the lower row-major flat index wins.
inline CodeMatrix select_top_count(const MatrixDRef& saliency, Index count) {
  detail::require_finite(saliency, "select_top_count: saliency");
  const Index n = saliency.size();
  detail::require(count >= 0 && count <= n, "select_top_count: count must be in [0, ", n, "], got ",
                  count);
  CodeMatrix mask = CodeMatrix::Zero(saliency.rows(), saliency.cols());
  if (count == 0) return mask;
  // The count-th largest value, then everything above it and the first
  // (count - above) entries equal to it in flat order.
  std::vector<double> values(static_cast<std::size_t>(n));
  for (Index r = 0, i = 0; r < saliency.rows(); ++r)
    for (Index c = 0; c < saliency.cols(); ++c, ++i)
      values[static_cast<std::size_t>(i)] = saliency(r, c);
  const auto kth = values.begin() + (count - 1);
  std::nth_element(values.begin(), kth, values.end(), std::greater<double>());
  const double threshold = *kth;
  Index above = 0;
  for (Index r = 0; r < saliency.rows(); ++r)
    for (Index c = 0; c < saliency.cols(); ++c)
      if (saliency(r, c) > threshold) {
        mask(r, c) = 1;
        ++above;
      }
  Index ties = count - above;
  for (Index r = 0; r < saliency.rows() && ties > 0; ++r)
    for (Index c = 0; c < saliency.cols() && ties > 0; ++c)
      if (saliency(r, c) == threshold) {
        mask(r, c) = 1;
        --ties;
      }
  return mask;
}

// The top ⌊fraction · out · in⌋ entries of `saliency`.
inline CodeMatrix select_top_fraction(const MatrixDRef& saliency, double fraction) {
  return select_top_count(saliency, tacq_outlier_count(saliency.rows(), saliency.cols(), fraction));
}

// The gradient-free stand-in for G (NOT the paper's method): G[r, c] = H[c, c],
// the energy of input c broadcast along the rows.
inline MatrixF activation_energy_proxy(const MatrixDRef& hessian, Index out_features) {
  detail::require(hessian.rows() == hessian.cols() && hessian.rows() > 0,
                  "activation_energy_proxy: H must be square and non-empty, got ", hessian.rows(),
                  " x ", hessian.cols());
  detail::require(out_features > 0, "activation_energy_proxy: out_features must be positive, got ",
                  out_features);
  detail::require_finite(hessian.diagonal().transpose(), "activation_energy_proxy: diag(H)");
  // G is float: a diagonal beyond float's range would become inf there and be
  // refused as a non-finite G, which would hide where it came from.
  for (Index c = 0; c < hessian.rows(); ++c)
    detail::require(std::abs(hessian(c, c)) <= std::numeric_limits<float>::max(),
                    "activation_energy_proxy: diag(H)(", c, ") = ", hessian(c, c),
                    " overflows float, the precision of the gradient-free G (scale X or H down)");
  const Eigen::RowVectorXf energy = hessian.diagonal().transpose().cast<float>();
  return energy.replicate(out_features, 1);
}

// Where Q(W) in the saliency comes from.
enum class SaliencyReference {
  gptq,  // GPTQ with the same configuration (the official pipeline's corrupt model)
  rtn,   // round-to-nearest on the same grid and groups (cheaper: no second GPTQ pass)
};

struct TacqConfig {
  // The dense part; Q(W) for the saliency uses the same configuration. Its
  // progress stays empty: TACQ reports both GPTQ passes through `progress`.
  GptqConfig gptq;
  double fraction = 0.0035;  // kept in full precision, of all out x in weights; [0, 1)
  SaliencyReference reference = SaliencyReference::gptq;
  OutlierPrecision precision = OutlierPrecision::f16;  // storage of the kept values
  // After every block of each GPTQ pass: (columns done, total), counted over
  // both passes (total = 2 * in_features; in_features with the RTN reference).
  Progress progress;
};

struct TacqReport {
  GptqReport gptq;                    // of the final GPTQ pass (with the outlier mask)
  Index outliers = 0;                 // ⌊fraction · out · in⌋
  double dense_bits_per_weight = 0;   // codes + per-group scale and zero (+ g_idx)
  double sparse_bits_per_weight = 0;  // per outlier a value and an int32 column; row pointers
  double bits_per_weight = 0;         // the sum: what the layer costs to store
  bool gradient_free = false;         // G was the activation-energy proxy, not gradients
  double seconds = 0;
};

struct TacqResult {
  // Codes, scale and zero in the original column order (g_idx with act-order);
  // the outlier positions hold their zero point (dequantize to 0 here).
  UniformWeights weights;
  SparseOutliers outliers;  // the kept values, CSR (outlier_mask gives their positions)
  TacqReport report;

  // The dense part with the kept values written in.
  MatrixF dequantize() const {
    MatrixF q = weights.dequantize();
    outliers.overwrite(q);
    return q;
  }
};

namespace detail {

inline void validate_tacq(const MatrixFRef& weights, const MatrixDRef& hessian,
                          const MatrixFRef& gradients, const TacqConfig& config) {
  tacq_outlier_count(weights.rows(), weights.cols(), config.fraction);  // validates the fraction
  validate_gptq(weights, hessian, config.gptq, CodeMatrix(), "quantize_tacq");
  require(!config.gptq.progress,
          "TacqConfig::gptq.progress: expected empty; TACQ reports its GPTQ passes through "
          "TacqConfig::progress");
  require_shape(gradients, weights.rows(), weights.cols(),
                "quantize_tacq: G (out x in, W's shape)");
  require_finite(gradients, "quantize_tacq: G");
}

// config.gptq reporting to config.progress as pass `pass` of `passes`.
inline GptqConfig gptq_pass(const TacqConfig& config, Index pass, Index passes) {
  GptqConfig gptq = config.gptq;
  if (config.progress)
    gptq.progress = [&config, pass, passes](Index done, Index in) {
      config.progress(pass * in + done, passes * in);
    };
  return gptq;
}

inline Index gptq_passes(const TacqConfig& config) {
  return config.reference == SaliencyReference::gptq ? 2 : 1;
}

// Q(W) at the target grid, as the saliency sees it (the first GPTQ pass).
inline MatrixF saliency_reference(const MatrixFRef& weights, const MatrixDRef& hessian,
                                  const TacqConfig& config) {
  if (config.reference == SaliencyReference::gptq)
    return quantize_gptq(weights, hessian, gptq_pass(config, 0, gptq_passes(config))).dequantize();
  const Index group_size =
      resolve_group_size(config.gptq.group_size, weights.cols(), "GptqConfig::group_size");
  return round_to_nearest(weights, config.gptq.bits, config.gptq.grid, group_size).dequantize();
}

inline CodeMatrix tacq_mask(const MatrixFRef& weights, const MatrixDRef& hessian,
                            const MatrixFRef& gradients, const TacqConfig& config) {
  const MatrixF reference = saliency_reference(weights, hessian, config);
  return select_top_fraction(tacq_saliency(weights, gradients, reference), config.fraction);
}

inline SparseOutliers stored_outliers(SparseOutliers kept, OutlierPrecision precision) {
  if (precision == OutlierPrecision::f16) {
    for (std::size_t i = 0; i < kept.values.size(); ++i) {
      const float v = kept.values[i];
      const float h = half_to_float(float_to_half(v));
      require(std::isfinite(h), "quantize_tacq: kept weight ", v,
              " overflows fp16; use OutlierPrecision::f32");
      kept.values[i] = h;
    }
  }
  kept.precision = precision;
  return kept;
}

inline TacqResult run_tacq(const MatrixFRef& weights, const MatrixDRef& hessian,
                           const MatrixFRef& gradients, const TacqConfig& config,
                           bool gradient_free) {
  const Stopwatch stopwatch;
  validate_tacq(weights, hessian, gradients, config);
  const CodeMatrix mask = tacq_mask(weights, hessian, gradients, config);
  const Index passes = gptq_passes(config);
  GptqResult gptq = quantize_gptq(weights, hessian, gptq_pass(config, passes - 1, passes), mask);
  TacqResult result;
  result.weights = std::move(gptq.weights);
  result.outliers = stored_outliers(std::move(gptq.outliers), config.precision);
  TacqReport& report = result.report;
  report.gptq = std::move(gptq.report);
  report.outliers = result.outliers.nnz();
  report.dense_bits_per_weight = bits_per_weight(result.weights);
  report.sparse_bits_per_weight = sparse_bits_per_weight(result.outliers);
  report.bits_per_weight = report.dense_bits_per_weight + report.sparse_bits_per_weight;
  report.gradient_free = gradient_free;
  report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace detail

// The mask TACQ keeps (out x in, 1 = kept): the top fraction of the saliency.
inline CodeMatrix tacq_mask(const MatrixFRef& weights, const MatrixDRef& hessian,
                            const MatrixFRef& gradients, const TacqConfig& config = {}) {
  detail::validate_tacq(weights, hessian, gradients, config);
  return detail::tacq_mask(weights, hessian, gradients, config);
}

// TACQ of `weights` (out x in) with the Hessian proxy (in x in, as for
// quantize_gptq) and the accumulated gradient magnitudes G (out x in).
inline TacqResult quantize_tacq(const MatrixFRef& weights, const MatrixDRef& hessian,
                                const MatrixFRef& gradients, const TacqConfig& config = {}) {
  return detail::run_tacq(weights, hessian, gradients, config, false);
}

inline TacqResult quantize_tacq(const MatrixFRef& weights, const Calibration& calibration,
                                const GradientMagnitudes& gradients,
                                const TacqConfig& config = {}) {
  detail::require(calibration.in_features() == weights.cols(), "quantize_tacq: calibration has ",
                  calibration.in_features(), " input features, weights have ", weights.cols());
  return quantize_tacq(weights, calibration.hessian(), gradients.sum(), config);
}

// Gradient-free fallback, NOT the paper's method: G = diag(H) along the rows
// (activation_energy_proxy). report.gradient_free is set.
inline TacqResult quantize_tacq_without_gradients(const MatrixFRef& weights,
                                                  const MatrixDRef& hessian,
                                                  const TacqConfig& config = {}) {
  detail::require_nonempty(weights, "quantize_tacq_without_gradients: weights");
  detail::require_shape(hessian, weights.cols(), weights.cols(),
                        "quantize_tacq_without_gradients: H (in x in)");
  return detail::run_tacq(weights, hessian, activation_energy_proxy(hessian, weights.rows()),
                          config, true);
}

}  // namespace lowbit
