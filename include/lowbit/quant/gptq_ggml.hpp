// GPTQ into llama.cpp's block types: GPTQ's column sweep with its error
// feedback over the full H (quant/gptq.hpp, core/detail/error_feedback.hpp),
// where every weight is rounded on the grid its ggml block can store
// (core/ggml_types.hpp): an fp16 d (and dmin or m) per block, and for the
// K-quants the integer scale (and min) of each sub-block. The result is a
// GgmlWeights, so io/ggml_blocks.hpp writes exactly the bytes ggml reads.
//
// The grids come from llama.cpp's own quantizer (core/ggml_grid.hpp) with
// diag(H) as its importance matrix (llama-imatrix's statistic up to scale):
//   * in the natural column order, a block's grid is found when the sweep
//     reaches its first column, on the weights as updated by the feedback so
//     far (the lazy-update blocks are whole ggml blocks, so nothing is still
//     pending), and each sub-block's integer scale (and min) is re-picked for
//     its updated weights when the sweep reaches it: the candidates within
//     `sub_scale_radius` of the stored integers, by diag(H)-weighted squared
//     error, d and dmin fixed;
//   * with act-order (columns by descending diag H), a GGUF file has no g_idx
//     to map the order back, so every block keeps its place and its grid is
//     fixed up front from the original weights: the sweep only changes the
//     order in which columns are rounded and compensated.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/detail/error_feedback.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_grid.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/quant/gptq.hpp"

namespace lowbit {

struct GptqGgmlConfig {
  GgmlType type = GgmlType::q4_k;
  bool act_order = false;  // columns by descending diag(H), grids fixed up front
  int sub_scale_radius = 4;
  DampingConfig damping;  // percdamp 0.01, as GPTQ
  Progress progress;      // after every lazy-update block: (columns done, in_features)
};

struct GptqGgmlResult {
  GgmlWeights weights;  // in the original column order, as ggml stores the tensor
  GptqReport report;    // hessian (column_order under act-order), loss, seconds
  MatrixF dequantize() const { return weights.dequantize(); }
};

namespace detail {

// The code whose value (ggml_value) is nearest x on a sub-block grid S, B.
inline std::uint8_t nearest_ggml_code(const GgmlBlockFormat& f, float scale, float bias, float x) {
  if (f.table()) {
    int best = 0;
    float best_error = INFINITY;
    for (int code = 0; code < 16; ++code) {
      const float error =
          std::fabs(x - ggml_value(f, scale, bias, static_cast<std::uint8_t>(code)));
      if (error < best_error) {
        best_error = error;
        best = code;
      }
    }
    return static_cast<std::uint8_t>(best);
  }
  const float lowest = static_cast<float>(-f.code_offset);
  const float highest = static_cast<float>((1 << f.code_bits) - 1 - f.code_offset);
  float level = scale == 0.0f ? 0.0f : std::nearbyint((x - bias) / scale);
  if (std::isnan(level)) level = 0.0f;  // an overflowed d: quantize_gptq_ggml reports it
  return static_cast<std::uint8_t>(std::clamp(level, lowest, highest) +
                                   static_cast<float>(f.code_offset));
}

// diag(H) scaled to a largest entry of 1, in float: llama.cpp's importance
// matrix up to scale (its searches are invariant to that scale).
inline VectorF hessian_importance(const MatrixDRef& hessian) {
  const VectorD diagonal = hessian.diagonal().cwiseMax(0.0);
  const double largest = diagonal.maxCoeff();
  return (largest > 0 ? VectorD(diagonal / largest) : VectorD::Ones(diagonal.size())).cast<float>();
}

// The column sweep into a GgmlWeights; like GptqSweep (quant/gptq.hpp) the
// working matrices are in processing order and transposed (in x out), and
// every panel of outputs is independent.
class GgmlGptqSweep {
 public:
  GgmlGptqSweep(const GptqGgmlConfig& config, GgmlWeights& q, const Permutation& column_order,
                const MatrixF& factor, const MatrixF& w, const VectorF& importance)
      : config_(config),
        f_(ggml_block_format(config.type)),
        q_(q),
        column_order_(column_order),
        u_(factor),
        importance_(importance) {
    transpose_tiled(wt_, column_order.empty() ? w : permute_columns(w, column_order));
    errors_.resize(std::min(lazy_block_width(), w.cols()), w.rows());
    panel_loss_.assign(static_cast<std::size_t>(panel_count(w.rows())), 0.0);
  }

  void run() {
    const Index in = wt_.rows(), width = errors_.rows();
    for (Index i1 = 0; i1 < in; i1 += width) {
      const Index i2 = std::min(i1 + width, in);
      for_each_panel(wt_.cols(),
                     [&](Index first, Index count) { run_panel(i1, i2, first, count); });
      if (config_.progress) config_.progress(i2, in);
    }
  }

  double loss() const {
    double loss = 0;
    for (double l : panel_loss_) loss += l;
    return loss / 2;
  }

 private:
  // GPTQ's 128 columns, or a whole super-block: a multiple of the ggml block,
  // so a block's columns have all their feedback when the sweep reaches it.
  Index lazy_block_width() const { return (std::max<Index>(128, f_.block) / f_.block) * f_.block; }

  Index original_column(Index j) const {
    return column_order_.empty() ? j : column_order_[static_cast<std::size_t>(j)];
  }

  // Block b's grid for every output of the panel, from the weights at
  // processing positions c .. c + block - 1 (natural order: c = b * block).
  void find_block_grid(Index c, Index first, Index count) {
    const Index b = c / f_.block;
    std::vector<float> x(static_cast<std::size_t>(f_.block));
    for (Index r = first; r < first + count; ++r) {
      for (Index k = 0; k < f_.block; ++k) x[static_cast<std::size_t>(k)] = wt_(c + k, r);
      ggml::encode_row(f_, x.data(), importance_.data() + c, f_.block, ggml::RowOut(q_, r, b));
    }
  }

  // Sub-block s's integer scale (and min) of every output of the panel
  // re-picked for the weights at c .. c + sub_block - 1, d and dmin fixed, by
  // exhaustive search: over the whole range of a scale without a min (at most
  // 256 values), jointly over scale and min within kMinRefitRadius of the
  // stored pair otherwise (a wider window gained nothing measurable on the
  // golden layers; the whole 64 x 64 square costs 16 times as much).
  void refit_sub_block(Index c, Index first, Index count) {
    constexpr int kMinRefitRadius = 8;
    const Index s = c / f_.sub_block, b = c / f_.block, n = f_.sub_block;
    const int lowest = ggml_sub_scale_min(f_.sub_scales),
              highest = ggml_sub_scale_max(f_.sub_scales);
    const float* importance = importance_.data() + c;
    std::vector<float> x(static_cast<std::size_t>(n));
    for (Index r = first; r < first + count; ++r) {
      for (Index k = 0; k < n; ++k) x[static_cast<std::size_t>(k)] = wt_(c + k, r);
      const float d = half_to_float(q_.d(r, b));
      const float dmin = f_.sub_mins ? half_to_float(q_.dmin(r, b)) : 0.0f;
      const int scale0 = q_.sub_scales(r, s), min0 = f_.sub_mins ? q_.sub_mins(r, s) : 0;
      const int radius = f_.sub_mins ? kMinRefitRadius : highest - lowest;
      const int min_lo = f_.sub_mins ? std::max(0, min0 - radius) : 0;
      const int min_hi = f_.sub_mins ? std::min(highest, min0 + radius) : 0;
      double best = INFINITY;
      for (int scale = std::max(lowest, scale0 - radius);
           scale <= std::min(highest, scale0 + radius); ++scale)
        for (int min = min_lo; min <= min_hi; ++min) {
          // S and B exactly as GgmlWeights::sub_block_scale and sub_block_bias form them.
          const float error = grid_error(x.data(), importance, n, d * static_cast<float>(scale),
                                         -(dmin * static_cast<float>(min)));
          if (error < best) {
            best = error;
            q_.sub_scales(r, s) = static_cast<std::int8_t>(scale);
            if (f_.sub_mins) q_.sub_mins(r, s) = static_cast<std::uint8_t>(min);
          }
        }
    }
  }

  // sum importance * (x - nearest value)^2 on the grid S, B.
  float grid_error(const float* x, const float* importance, Index n, float scale,
                   float bias) const {
    float error = 0;
    for (Index k = 0; k < n; ++k) {
      const float e = x[k] - ggml_value(f_, scale, bias, nearest_ggml_code(f_, scale, bias, x[k]));
      error += importance[k] * e * e;
    }
    return error;
  }

  // Column c rounded on its sub-block's grid; leaves w - q.
  void quantize_column(Index c, Index first, Index count, Eigen::ArrayXf& diff) {
    const Index column = original_column(c), s = column / f_.sub_block;
    for (Index i = 0; i < count; ++i) {
      const Index r = first + i;
      const float scale = q_.sub_block_scale(r, s), bias = q_.sub_block_bias(r, s);
      const float w = wt_(c, r);
      const std::uint8_t code = nearest_ggml_code(f_, scale, bias, w);
      q_.codes(r, column) = code;
      diff(i) = w - ggml_value(f_, scale, bias, code);
    }
  }

  void run_panel(Index i1, Index i2, Index first, Index count) {
    const Index width = i2 - i1, columns = wt_.rows();
    const bool refit = f_.sub_scales != GgmlSubScales::none;
    Eigen::ArrayXf diff(count);
    double loss = 0;
    for (Index k = 0; k < width; ++k) {
      const Index c = i1 + k;
      if (!config_.act_order) {
        if (c % f_.block == 0) find_block_grid(c, first, count);
        if (refit && c % f_.sub_block == 0) refit_sub_block(c, first, count);
      }
      quantize_column(c, first, count, diff);
      const float d = u_(c, c);
      loss += (diff.square() / (d * d)).cast<double>().sum();
      errors_.row(k).segment(first, count) = (diff / d).transpose();
      feed_back_in_block(wt_.block(i1, first, width, count), k,
                         u_.row(c).segment(i1, width).transpose(),
                         errors_.row(k).segment(first, count));
    }
    propagate_block_errors(wt_.block(i2, first, columns - i2, count),
                           u_.block(i1, i2, width, columns - i2),
                           errors_.block(0, first, width, count));
    panel_loss_[static_cast<std::size_t>(first / error_feedback_panel)] += loss;
  }

  const GptqGgmlConfig& config_;
  const GgmlBlockFormat& f_;
  GgmlWeights& q_;  // grids and codes, in the original column order
  const Permutation& column_order_;
  const MatrixF& u_;           // the inverse-Hessian factor, processing order
  const VectorF& importance_;  // diag(H) scaled (grids are searched only in the natural order)
  MatrixF wt_;                 // working weights, in x out
  MatrixF errors_;             // lazy block width x out: the block's scaled errors
  std::vector<double> panel_loss_;
};

}  // namespace detail

// GPTQ of `weights` (out x in; in a multiple of the type's block) with the
// Hessian proxy `hessian` (in x in, symmetric, e.g. 2/N sum X^T X) into the
// ggml type `config.type`.
inline GptqGgmlResult quantize_gptq_ggml(const MatrixFRef& weights, const MatrixDRef& hessian,
                                         const GptqGgmlConfig& config = {}) {
  const detail::Stopwatch stopwatch;
  const GgmlBlockFormat& f = ggml_block_format(config.type);
  const char* name = ggml_type_name(config.type);
  detail::require_nonempty(weights, "quantize_gptq_ggml: weights");
  detail::require_finite(weights, "quantize_gptq_ggml: weights");
  detail::validate_hessian(hessian, weights.cols(), "quantize_gptq_ggml");
  detail::require(weights.cols() % f.block == 0, "quantize_gptq_ggml: ", name,
                  " needs in_features to be a multiple of ", f.block, ", got ", weights.cols());

  GptqGgmlResult result{GgmlWeights::zeros(config.type, weights.rows(), weights.cols()), {}};
  MatrixF w = weights;
  detail::HessianPrologue prologue =
      detail::hessian_prologue(hessian, w, config.damping, [&](const MatrixD& h) {
        return config.act_order ? act_order_permutation(h) : Permutation();
      });
  result.report.hessian = std::move(prologue.report);
  const Permutation& column_order = result.report.hessian.column_order;
  const VectorF importance = detail::hessian_importance(hessian);
  if (config.act_order)  // every grid fixed up front, from the original weights
    result.weights = quantize_ggml(w, {config.type, importance}).weights;
  detail::GgmlGptqSweep sweep(config, result.weights, column_order, prologue.factor, w, importance);
  sweep.run();
  detail::ggml::require_fp16_range(result.weights, weights);
  result.report.loss = sweep.loss();
  result.report.seconds = stopwatch.seconds();
  return result;
}

// The same with the statistics of a Calibration (its H = 2/N sum X^T X).
inline GptqGgmlResult quantize_gptq_ggml(const MatrixFRef& weights, const Calibration& calibration,
                                         const GptqGgmlConfig& config = {}) {
  return quantize_gptq_ggml(weights, calibration.hessian(), config);
}

}  // namespace lowbit
