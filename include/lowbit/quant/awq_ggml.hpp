// AWQ into llama.cpp's block types: AWQ's activation-aware scale search
// (quant/awq.hpp, step 1) with a ggml type as the grid, for linears that
// share one input.
//
// For each ratio r = i / grid the candidate scales are AWQ's own
// (s = max(x̄^r, 1e-4) normalized by sqrt(max s · min s)); every linear is
// quantized as W·diag(s) by llama.cpp's quantizer (core/ggml_grid.hpp) with
// the importance matrix llama-imatrix would collect for its scaled inputs,
// Σ_t (x_tj / s_j)², and the candidate's loss is AWQ's: the mean squared
// difference of X Wᵀ and X (Q·diag(1/s))ᵀ over all the linears' outputs.
// The first strict minimum wins, and its quantization is the result.
//
// Ratio 0 gives s = 1, llama.cpp's quantizer with an importance matrix as it
// is, so on the calibration tokens the result never does worse than it.
// AWQ's clipping search is not run: it picks a clamp per group of the AWQ
// grid, where llama.cpp's quantizer already picks each block's scale (and
// min) by a weighted error search.
//
// The result works on inputs X·diag(1/s): fold 1/s into the preceding norm
// (core/channel_scaling.hpp fold_into_norm) as GGUF files need.
#pragma once

#include <limits>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_grid.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/quant/awq.hpp"

namespace lowbit {

struct AwqGgmlConfig {
  GgmlType type = GgmlType::q4_k;
  int scale_grid = 20;  // ratios i / scale_grid, i = 0..scale_grid-1
  // After each (ratio, linear): (steps done, scale_grid * linears).
  Progress progress;
};

struct AwqGgmlResult {
  // Per linear: W·diag(s) in the type, acting on X·diag(1/s).
  std::vector<GgmlWeights> weights;
  VectorF scales;  // s
  AwqSearch search;
  double seconds = 0;

  // Q·diag(1/s): the quantized linear in the original input domain.
  MatrixF effective_weight(std::size_t linear) const {
    detail::require(linear < weights.size(), "AwqGgmlResult::effective_weight: linear ", linear,
                    " out of range (", weights.size(), " linears)");
    MatrixF q = weights[linear].dequantize();
    for (Index j = 0; j < q.cols(); ++j) q.col(j) /= scales(j);
    return q;
  }
};

inline AwqGgmlResult quantize_awq_ggml(const std::vector<MatrixFRef>& linears, const MatrixFRef& x,
                                       const AwqGgmlConfig& config = {}) {
  const detail::Stopwatch stopwatch;
  AwqConfig checks;  // AWQ's own input checks; the grid is the ggml type's
  checks.scale_grid = config.scale_grid;
  checks.group_size = -1;
  checks.clip = false;
  detail::validate_awq(linears, x, checks);
  const GgmlBlockFormat& format = ggml_block_format(config.type);
  detail::require(x.cols() % format.block == 0, "quantize_awq_ggml: ", ggml_type_name(config.type),
                  " needs rows of whole blocks of ", format.block, " weights, got ", x.cols());
  const VectorF x_mean = detail::cascade_column_sums(x.cwiseAbs()) / float(x.rows());
  std::vector<MatrixF> original_out;
  double outputs = 0;
  for (const MatrixFRef& w : linears) {
    original_out.push_back(detail::product_transposed<float>(x, w));
    outputs += double(x.rows()) * double(w.rows());
  }
  detail::ProgressCounter steps(config.progress,
                                config.scale_grid * static_cast<Index>(linears.size()));
  AwqGgmlResult result;
  result.search.best_index = -1;
  result.search.best_loss = std::numeric_limits<double>::infinity();
  for (int i = 0; i < config.scale_grid; ++i) {
    const double ratio = double(i) / config.scale_grid;
    const VectorF s = detail::awq_ratio_scales(x_mean, ratio);
    const MatrixF x_scaled = divide_input_channels(x, s);
    const VectorF importance = x_scaled.cwiseAbs2().colwise().sum().transpose();
    std::vector<GgmlWeights> candidate;
    double sum = 0;
    for (std::size_t l = 0; l < linears.size(); ++l) {
      candidate.push_back(
          quantize_ggml(scale_input_channels(linears[l], s), {config.type, importance}).weights);
      const MatrixF out =
          detail::product_transposed<float>(x_scaled, candidate.back().dequantize());
      sum += (original_out[l] - out).squaredNorm();
      steps.step();
    }
    const double loss = sum / outputs;
    result.search.loss.push_back(loss);
    if (loss < result.search.best_loss) {
      result.search.best_loss = loss;
      result.search.best_index = i;
      result.search.best_ratio = ratio;
      result.scales = s;
      result.weights = std::move(candidate);
    }
  }
  detail::require(result.search.best_index >= 0,
                  "quantize_awq_ggml: no ratio gave a finite loss (overflow in X Wᵀ?)");
  result.seconds = stopwatch.seconds();
  return result;
}

}  // namespace lowbit
