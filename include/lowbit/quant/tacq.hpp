// TACQ: Task-Circuit Quantization (Xiao et al., arXiv 2504.07389). A small
// fraction p of the weights (0.35% in the paper) stays in 16 bits, the rest
// is GPTQ-quantized to 2-3 bits with those weights kept exact.
//
// Which weights: the saliency
//
//     S = | G ⊙ (W − Q(W)) ⊙ W |
//
// where G = Σ_samples |∂L/∂W| is the accumulated absolute per-sample gradient
// of the task loss (GradientMagnitudes), Q(W) a uniform quantization of W at
// the target bits (GPTQ by default, as the official pipeline's "corrupt
// model"; round-to-nearest optional), and ⊙ is element-wise. The official
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
// The kept weights: GPTQ runs with them as its keep-exact mask (quant/gptq.hpp
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
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/quant/gptq.hpp"
#include "lowbit/quant/rtn.hpp"

namespace lowbit {

// Streaming G = Σ_samples |∂L/∂W| for one weight matrix (out x in): one call
// per calibration sample (a sequence, in the official pipeline), whatever the
// number of samples. Accumulates in float like the reference (a whole model's
// accumulators are alive at once during backpropagation; float halves that).
class GradientMagnitudes {
 public:
  GradientMagnitudes(Index out_features, Index in_features) {
    detail::require(out_features > 0 && in_features > 0,
                    "GradientMagnitudes: expected a positive shape, got ", out_features, " x ", in_features);
    sum_.setZero(out_features, in_features);
  }

  // Adds |gradient| of one sample (out x in).
  void add(const MatrixFRef& gradient) {
    detail::require_shape(gradient, sum_.rows(), sum_.cols(), "GradientMagnitudes::add: gradient");
    detail::require_finite(gradient, "GradientMagnitudes::add: gradient");
    sum_ += gradient.cwiseAbs();
    ++samples_;
  }

  // Adds the sample's gradient of a linear layer y = W x from what backward
  // sees: dL/dY (tokens x out) and the input X (tokens x in); the weight
  // gradient is dL/dYᵀ X, and its absolute value is accumulated.
  void add_linear(const MatrixFRef& output_gradient, const MatrixFRef& input) {
    detail::require(output_gradient.rows() == input.rows(), "GradientMagnitudes::add_linear: output_gradient has ",
                    output_gradient.rows(), " tokens, input has ", input.rows());
    detail::require(output_gradient.cols() == sum_.rows(), "GradientMagnitudes::add_linear: output_gradient has ",
                    output_gradient.cols(), " columns, expected out_features = ", sum_.rows());
    detail::require(input.cols() == sum_.cols(), "GradientMagnitudes::add_linear: input has ", input.cols(),
                    " columns, expected in_features = ", sum_.cols());
    detail::require_finite(output_gradient, "GradientMagnitudes::add_linear: output_gradient");
    detail::require_finite(input, "GradientMagnitudes::add_linear: input");
    const MatrixF gradient = output_gradient.transpose() * input;
    detail::require_finite(gradient, "GradientMagnitudes::add_linear: the gradient (float overflow)");
    sum_ += gradient.cwiseAbs();
    ++samples_;
  }

  Index rows() const { return sum_.rows(); }
  Index cols() const { return sum_.cols(); }
  std::int64_t samples() const { return samples_; }

  // G: the accumulated magnitudes.
  const MatrixF& sum() const {
    detail::require(samples_ > 0, "GradientMagnitudes::sum: no gradients were added yet");
    return sum_;
  }

 private:
  MatrixF sum_;
  std::int64_t samples_ = 0;
};

// S = |G ⊙ (W − Q) ⊙ W|, in double (no overflow for any finite float inputs).
inline MatrixD tacq_saliency(const MatrixFRef& weights, const MatrixFRef& gradients, const MatrixFRef& quantized) {
  detail::require_nonempty(weights, "tacq_saliency: weights");
  detail::require_shape(gradients, weights.rows(), weights.cols(), "tacq_saliency: G (out x in, W's shape)");
  detail::require_shape(quantized, weights.rows(), weights.cols(), "tacq_saliency: Q (out x in, W's shape)");
  detail::require_finite(weights, "tacq_saliency: weights");
  detail::require_finite(gradients, "tacq_saliency: G");
  detail::require_finite(quantized, "tacq_saliency: Q");
  const MatrixD w = weights.cast<double>();
  return (gradients.cast<double>().array() * (w - quantized.cast<double>()).array() * w.array()).abs().matrix();
}

// ⌊fraction · rows · cols⌋ for fraction in [0, 1).
inline Index tacq_outlier_count(Index rows, Index cols, double fraction) {
  detail::require(std::isfinite(fraction) && fraction >= 0.0 && fraction < 1.0,
                  "TACQ fraction: expected a value in [0, 1), got ", fraction);
  return static_cast<Index>(std::floor(fraction * static_cast<double>(rows) * static_cast<double>(cols)));
}

// The `count` largest entries of `saliency` (mask out x in, 1 = selected);
// among equal values the lower row-major flat index wins.
inline CodeMatrix select_top_count(const MatrixDRef& saliency, Index count) {
  detail::require_finite(saliency, "select_top_count: saliency");
  const Index n = saliency.size();
  detail::require(count >= 0 && count <= n, "select_top_count: count must be in [0, ", n, "], got ", count);
  CodeMatrix mask = CodeMatrix::Zero(saliency.rows(), saliency.cols());
  if (count == 0) return mask;
  // The count-th largest value, then everything above it and the first
  // (count - above) entries equal to it in flat order.
  std::vector<double> values(static_cast<std::size_t>(n));
  for (Index r = 0, i = 0; r < saliency.rows(); ++r)
    for (Index c = 0; c < saliency.cols(); ++c, ++i) values[static_cast<std::size_t>(i)] = saliency(r, c);
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
                  "activation_energy_proxy: H must be square and non-empty, got ", hessian.rows(), " x ",
                  hessian.cols());
  detail::require(out_features > 0, "activation_energy_proxy: out_features must be positive, got ", out_features);
  detail::require_finite(hessian.diagonal().transpose(), "activation_energy_proxy: diag(H)");
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
  // progress callback runs through both GPTQ passes (Q(W), then the masked one).
  GptqConfig gptq;
  double fraction = 0.0035;      // kept in full precision, of all out x in weights; [0, 1)
  SaliencyReference reference = SaliencyReference::gptq;
  OutlierPrecision precision = OutlierPrecision::f16;  // storage of the kept values
};

struct TacqReport {
  GptqReport gptq;                    // of the final GPTQ pass (with the mask)
  Index outliers = 0;                 // ⌊fraction · out · in⌋
  double dense_bits_per_weight = 0;   // codes + per-group scale and zero (+ g_idx)
  double sparse_bits_per_weight = 0;  // per outlier a value and an int32 column; int32 row pointers
  double bits_per_weight = 0;         // the sum: what the layer costs to store
  bool gradient_free = false;         // G was the activation-energy proxy, not gradients
  double seconds = 0;
};

struct TacqResult {
  // Codes, scale and zero in the original column order (g_idx with act-order);
  // the kept positions hold their zero point (dequantize to 0 here).
  UniformWeights weights;
  SparseOutliers outliers;  // the kept values, CSR
  CodeMatrix mask;          // out x in, 1 = kept
  Permutation perm;         // act-order processing order; else empty
  TacqReport report;

  // The dense part with the kept values written in.
  MatrixF dequantize() const {
    MatrixF q = weights.dequantize();
    outliers.overwrite(q);
    return q;
  }
};

namespace detail {

inline void validate_tacq_inputs(const MatrixFRef& weights, const MatrixFRef& gradients, const TacqConfig& config) {
  tacq_outlier_count(weights.rows(), weights.cols(), config.fraction);  // validates the fraction
  require_nonempty(weights, "quantize_tacq: weights");
  require_shape(gradients, weights.rows(), weights.cols(), "quantize_tacq: G (out x in, W's shape)");
  require_finite(gradients, "quantize_tacq: G");
}

// Q(W) at the target grid, as the saliency sees it.
inline MatrixF saliency_reference(const MatrixFRef& weights, const MatrixDRef& hessian, const TacqConfig& config) {
  if (config.reference == SaliencyReference::gptq) return quantize_gptq(weights, hessian, config.gptq).dequantize();
  RtnConfig rtn;
  rtn.grid = config.gptq.grid;
  rtn.group_size = config.gptq.group_size;
  return quantize_rtn(weights, rtn).dequantize();
}

inline SparseOutliers stored_outliers(SparseOutliers kept, OutlierPrecision precision) {
  if (precision == OutlierPrecision::f16) {
    for (std::size_t i = 0; i < kept.values.size(); ++i) {
      const float v = kept.values[i];
      const float h = half_to_float(float_to_half(v));
      require(std::isfinite(h), "quantize_tacq: kept weight ", v, " overflows fp16; use OutlierPrecision::f32");
      kept.values[i] = h;
    }
  }
  kept.precision = precision;
  return kept;
}

inline TacqResult run_tacq(const MatrixFRef& weights, const MatrixDRef& hessian, const MatrixFRef& gradients,
                           const TacqConfig& config, bool gradient_free) {
  const auto start = std::chrono::steady_clock::now();
  validate_tacq_inputs(weights, gradients, config);
  TacqResult result;
  result.mask = select_top_fraction(tacq_saliency(weights, gradients, saliency_reference(weights, hessian, config)),
                                    config.fraction);
  GptqResult gptq = quantize_gptq(weights, hessian, config.gptq, result.mask);
  result.weights = std::move(gptq.weights);
  result.outliers = stored_outliers(std::move(gptq.kept), config.precision);
  result.perm = std::move(gptq.perm);
  TacqReport& report = result.report;
  report.gptq = std::move(gptq.report);
  report.outliers = result.outliers.nnz();
  report.dense_bits_per_weight = bits_per_weight(result.weights);
  report.sparse_bits_per_weight = sparse_bits_per_weight(result.outliers);
  report.bits_per_weight = report.dense_bits_per_weight + report.sparse_bits_per_weight;
  report.gradient_free = gradient_free;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace detail

// The mask TACQ keeps (out x in, 1 = kept): the top fraction of the saliency.
inline CodeMatrix tacq_mask(const MatrixFRef& weights, const MatrixDRef& hessian, const MatrixFRef& gradients,
                            const TacqConfig& config = {}) {
  detail::validate_tacq_inputs(weights, gradients, config);
  return select_top_fraction(
      tacq_saliency(weights, gradients, detail::saliency_reference(weights, hessian, config)), config.fraction);
}

// TACQ of `weights` (out x in) with the Hessian proxy (in x in, as for
// quantize_gptq) and the accumulated gradient magnitudes G (out x in).
inline TacqResult quantize_tacq(const MatrixFRef& weights, const MatrixDRef& hessian, const MatrixFRef& gradients,
                                const TacqConfig& config = {}) {
  return detail::run_tacq(weights, hessian, gradients, config, false);
}

inline TacqResult quantize_tacq(const MatrixFRef& weights, const Calibration& calibration,
                                const GradientMagnitudes& gradients, const TacqConfig& config = {}) {
  detail::require(calibration.in_features() == weights.cols(), "quantize_tacq: calibration has ",
                  calibration.in_features(), " input features, weights have ", weights.cols());
  return quantize_tacq(weights, calibration.hessian(), gradients.sum(), config);
}

// Gradient-free fallback, NOT the paper's method: G = diag(H) along the rows
// (activation_energy_proxy). report.gradient_free is set.
inline TacqResult quantize_tacq_without_gradients(const MatrixFRef& weights, const MatrixDRef& hessian,
                                                  const TacqConfig& config = {}) {
  detail::require_nonempty(weights, "quantize_tacq_without_gradients: weights");
  detail::require_shape(hessian, weights.cols(), weights.cols(), "quantize_tacq_without_gradients: H (in x in)");
  return detail::run_tacq(weights, hessian, activation_energy_proxy(hessian, weights.rows()), config, true);
}

}  // namespace lowbit
