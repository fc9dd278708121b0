// GPTQ (Frantar et al., ICLR 2023) on one weight matrix, as the official
// IST-DASLab gptq `fasterquant` runs it (GPTQModel's GPTQ.quantize is the
// same), with TaCQ's mask of weights kept exact.
//
// The reference, step by step (reproduced here; the golden files pin it):
//   1. without groups, the per-row grid is found on the whole original row;
//   2. dead columns (diag H == 0) get H[d, d] = 1 and W[:, d] = 0;
//   3. static groups: every group's grid is found now, in the original order;
//   4. act-order: columns by descending diag(H) (torch's unstable argsort);
//   5. U = upper Cholesky factor of (H + percdamp * mean(diag H) * I)^-1
//      (steps 2, 4 and 5 are the Hessian prologue shared with BPDQ,
//      core/hessian.hpp);
//   6. columns in blocks of 128: quantize column i with its group's grid,
//      err = (w - q) / U(i, i), feed it back into the rest of the block, and
//      into the later blocks at the end of the block
//      (core/detail/error_feedback.hpp).
//      Without static groups a group's grid is found when its first column is
//      reached, on the weights as they stood at the START of the block: the
//      in-block updates of earlier columns of the same block are not seen, so
//      the result depends on the block size. `fresh_group_params` instead uses
//      the weights as updated up to that column (independent of block size).
//   The loss is sum((w - q)^2 / U(i, i)^2) / 2, fasterquant's printed "error".
//
// Outliers (TaCQ, "Task-Circuit Quantization", Xiao et al. 2025, official
// code gptq/gptq.py): a mask marks weights kept in full precision. As the
// official code does:
//   * when a grid is found, a row's masked entries are replaced by the mean of
//     its unmasked entries in that group (0 if all are masked): they do not
//     stretch the min-max range (the MSE search sees them as that mean);
//   * a masked weight is quantized as 0 plus its current value: its code is the
//     zero point (it dequantizes to exactly 0), its error is 0 so nothing is
//     fed back from it, and the value kept is the weight as UPDATED by the
//     error feedback of the earlier columns (it absorbs their compensation),
//     not the original weight. `GptqResult::outliers` holds those values;
//     dense part + outliers = the official Q.
//   The mask is given in the original column order and follows the columns
//   through act-order. (The official code indexes its unpermuted mask with
//   permuted positions under act-order; its scripts never combine the two.)
//
// Numerics: the working matrix is float32 like the reference's (measured in
// benchmarks/bench_gptq.cpp: double is slower and agrees no better with the
// golden files); the inverse-Hessian factor is computed in double and rounded.
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
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

struct GptqConfig {
  int bits = 4;                // 2..8
  GridConfig grid;             // sym, mse: the reference Quantizer's options
  int group_size = -1;         // -1: one grid per row; else a divisor of in_features
  bool act_order = false;      // desc_act: process columns by descending diag(H)
  bool static_groups = false;  // fix every group's grid up front (no effect with group_size -1)
  // Group grids from the weights as updated up to the group, not at its block's start.
  bool fresh_group_params = false;
  int block_size = 128;   // lazy-update block width (the reference's)
  DampingConfig damping;  // percdamp 0.01; escalation when the Cholesky fails
  Progress progress;      // after every block: (columns done, in_features)
};

struct GptqReport {
  HessianReport hessian;  // dead columns, act-order's column_order, the damping used
  double loss = 0;        // sum (w - q)^2 / U(i,i)^2 / 2: fasterquant's "error"
  double seconds = 0;
};

struct GptqResult {
  // Codes, scale and zero in the ORIGINAL column order; g_idx is set when
  // act-order without static groups makes the groups non-contiguous.
  // Outlier positions hold their zero point and dequantize to 0 here.
  UniformWeights weights;
  SparseOutliers outliers;  // the values kept at the outlier mask (f32; none without a mask)
  GptqReport report;

  // The reference Q: the dense part with the outliers written in.
  MatrixF dequantize() const {
    MatrixF q = weights.dequantize();
    outliers.overwrite(q);
    return q;
  }
};

namespace detail {

// TaCQ's grid sample: each row's masked entries replaced by the mean of its
// unmasked entries (0 when all are masked; the mean is taken in double).
inline MatrixF grid_sample_without_kept(MatrixF sample, const CodeMatrix& keep) {
  for (Index r = 0; r < sample.rows(); ++r) {
    double sum = 0;
    Index count = 0;
    for (Index c = 0; c < sample.cols(); ++c)
      if (!keep(r, c)) {
        sum += sample(r, c);
        ++count;
      }
    const float mean = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
    for (Index c = 0; c < sample.cols(); ++c)
      if (keep(r, c)) sample(r, c) = mean;
  }
  return sample;
}

// Where a group's grid is found (one per output of `sample`, outputs x the
// group's columns): the reference Quantizer, after the outliers (nonzero in
// `keep`, same shape, or empty) are replaced by their row's mean.
inline GridParams find_group_grid(MatrixF sample, const CodeMatrix& keep,
                                  const GptqConfig& config) {
  if (keep.size() != 0) sample = grid_sample_without_kept(std::move(sample), keep);
  return find_grid_params(sample, config.bits, config.grid);
}

// Stores `grid` as group g's scale and zero for the outputs from `first` on.
inline void store_group_grid(UniformWeights& q, Index g, Index first, const GridParams& grid) {
  q.scale.row(g).segment(first, grid.scale.size()) = grid.scale.transpose();
  q.zero.row(g).segment(first, grid.zero.size()) = grid.zero.transpose();
}

// Validates the arguments (`who` names the caller in the messages); returns
// the resolved group size.
inline Index validate_gptq(const MatrixFRef& weights, const MatrixDRef& hessian,
                           const GptqConfig& config, const CodeMatrix& outlier_mask,
                           const char* who = "quantize_gptq") {
  require_nonempty(weights, concat(who, ": weights").c_str());
  require_finite(weights, concat(who, ": weights").c_str());
  validate_hessian(hessian, weights.cols(), who);
  require_bits(config.bits, 2, 8, "GptqConfig::bits");
  validate_grid_config(config.grid);
  require(config.block_size > 0, "GptqConfig::block_size: expected > 0, got ", config.block_size);
  if (outlier_mask.size() != 0)
    require_shape(outlier_mask, weights.rows(), weights.cols(),
                  concat(who, ": outlier_mask").c_str());
  return resolve_group_size(config.group_size, weights.cols(), "GptqConfig::group_size");
}

// Static groups: every group's grid up front, on `w` in the original column
// order (after dead columns were zeroed, as the reference).
inline void find_static_group_grids(UniformWeights& q, const MatrixF& w,
                                    const CodeMatrix& outlier_mask, const GptqConfig& config) {
  const Index group_size = q.group_size;
  for (Index g = 0; g < q.groups(); ++g) {
    const CodeMatrix keep = outlier_mask.size() != 0
                                ? CodeMatrix(outlier_mask.middleCols(g * group_size, group_size))
                                : CodeMatrix();
    const GridParams grid = find_group_grid(w.middleCols(g * group_size, group_size), keep, config);
    store_group_grid(q, g, 0, grid);
  }
}

// The column sweep: blocks of columns, each run over fixed panels of outputs.
// All matrices are in processing order; Wt, codes and the outlier mask
// transposed (in x out). Every panel touches only its own outputs.
class GptqSweep {
 public:
  GptqSweep(const GptqConfig& config, UniformWeights& q, const Permutation& column_order,
            MatrixF factor, const MatrixF& w, const CodeMatrix& outlier_mask)
      : config_(config), q_(q), column_order_(column_order), u_(std::move(factor)) {
    const Index out = w.rows(), in = w.cols();
    const bool masked = outlier_mask.size() != 0;
    if (column_order.empty()) {
      transpose_tiled(wt_, w);
      if (masked) transpose_tiled(keep_t_, outlier_mask);
    } else {
      transpose_tiled(wt_, permute_columns(w, column_order));
      if (masked) transpose_tiled(keep_t_, permute_columns(outlier_mask, column_order));
    }
    codes_t_.resize(in, out);
    errors_.resize(std::min<Index>(config.block_size, in), out);
    panel_loss_.assign(static_cast<std::size_t>(panel_count(out)), 0.0);
    outliers_.resize(static_cast<std::size_t>(masked ? out : 0));
  }

  // Every block in turn; progress after each.
  void run() {
    const Index in = wt_.rows(), block = errors_.rows();
    for (Index i1 = 0; i1 < in; i1 += block) {
      const Index i2 = std::min(i1 + block, in);
      for_each_panel(wt_.cols(),
                     [&](Index first, Index count) { run_panel(i1, i2, first, count); });
      if (config_.progress) config_.progress(i2, in);
    }
  }

  // The loss summed over the panels in a fixed order.
  double loss() const {
    double loss = 0;
    for (double l : panel_loss_) loss += l;
    return loss / 2;
  }

  // The codes, out x in in processing order.
  CodeMatrix codes() const {
    CodeMatrix codes;
    transpose_tiled(codes, codes_t_);
    return codes;
  }

  // The kept values as CSR, f32, in the original column order.
  SparseOutliers collect_outliers() {
    SparseOutliers s;
    s.rows = wt_.cols();
    s.cols = wt_.rows();
    s.precision = OutlierPrecision::f32;
    s.row_ptr.assign(1, 0);
    for (Index r = 0; r < s.rows; ++r) {
      if (!outliers_.empty()) {
        auto& row = outliers_[static_cast<std::size_t>(r)];
        std::sort(row.begin(), row.end());
        for (const auto& [c, v] : row) {
          s.col.push_back(c);
          s.values.push_back(v);
        }
      }
      s.row_ptr.push_back(static_cast<std::int32_t>(s.values.size()));
    }
    return s;
  }

 private:
  bool grouped() const { return config_.group_size != -1; }

  Index original_column(Index j) const {
    return column_order_.empty() ? j : column_order_[static_cast<std::size_t>(j)];
  }

  // The group of processing position j: its grid's row in scale and zero.
  Index group_at(Index j) const {
    if (!grouped()) return 0;
    return (config_.static_groups ? original_column(j) : j) / q_.group_size;
  }

  // The grid of the group starting at processing position c, found on
  // `sample` (outputs [first, first + sample.rows()) x group_size).
  void find_grid(Index c, Index first, MatrixF sample) const {
    const CodeMatrix keep =
        keep_t_.size() != 0
            ? CodeMatrix(keep_t_.block(c, first, q_.group_size, sample.rows()).transpose())
            : CodeMatrix();
    store_group_grid(q_, c / q_.group_size, first,
                     find_group_grid(std::move(sample), keep, config_));
  }

  // The up-to-date weights of the group starting at c (inside block [i1, i2)):
  // in-block columns have all feedback so far; columns past the block still
  // lack this block's deferred update from columns i1 .. c - 1.
  MatrixF current_group(Index c, Index i1, Index i2, Index first, Index count) const {
    const Index group_size = q_.group_size;
    MatrixF t(group_size, count);
    const Index inside = std::min(c + group_size, i2) - c;
    t.topRows(inside) = wt_.block(c, first, inside, count);
    if (inside < group_size) {
      const Index beyond = group_size - inside;
      t.bottomRows(beyond) = wt_.block(i2, first, beyond, count);
      subtract_transposed_product(t.bottomRows(beyond), u_.block(i1, i2, c - i1, beyond),
                                  errors_.block(0, first, c - i1, count));
    }
    return t.transpose();
  }

  // Where column c is quantized on its group's grid, as the reference
  // quantizer does elementwise (divide, round half to even, clamp). An
  // outlier takes its zero point (quantize(0)) and no error, and keeps its
  // current weight. Leaves the codes and w - q.
  void quantize_column(Index c, Index first, Index count, Eigen::ArrayXf& code,
                       Eigen::ArrayXf& diff) {
    const float maxq = grid_maxq(config_.bits);
    const Index g = group_at(c);
    const auto scale = q_.scale.row(g).segment(first, count).transpose().array();
    const auto zero = q_.zero.row(g).segment(first, count).transpose().array();
    const auto w = wt_.row(c).segment(first, count).transpose().array();
    code = ((w / scale).rint() + zero).max(0.0f).min(maxq);
    diff = w - scale * (code - zero);
    if (keep_t_.size() == 0) return;
    for (Index r = 0; r < count; ++r) {
      if (!keep_t_(c, first + r)) continue;
      code(r) = std::clamp(zero(r), 0.0f, maxq);
      diff(r) = 0;
      outliers_[static_cast<std::size_t>(first + r)].emplace_back(
          static_cast<std::int32_t>(original_column(c)), w(r));
    }
  }

  // Block [i1, i2) for the outputs [first, first + count).
  void run_panel(Index i1, Index i2, Index first, Index count) {
    const Index width = i2 - i1, columns = wt_.rows(), group_size = q_.group_size;
    const bool sweep_groups = grouped() && !config_.static_groups;
    if (sweep_groups && !config_.fresh_group_params)  // the reference: block-start weights
      for (Index c = (i1 + group_size - 1) / group_size * group_size; c < i2; c += group_size)
        find_grid(c, first, wt_.block(c, first, group_size, count).transpose());

    Eigen::ArrayXf code(count), diff(count);
    double loss = 0;
    for (Index k = 0; k < width; ++k) {
      const Index c = i1 + k;
      if (sweep_groups && config_.fresh_group_params && c % group_size == 0)
        find_grid(c, first, current_group(c, i1, i2, first, count));
      quantize_column(c, first, count, code, diff);
      const float d = u_(c, c);
      loss += (diff.square() / (d * d)).cast<double>().sum();
      errors_.row(k).segment(first, count) = (diff / d).transpose();
      codes_t_.row(c).segment(first, count) = code.cast<std::uint8_t>().transpose();
      feed_back_in_block(wt_.block(i1, first, width, count), k,
                         u_.row(c).segment(i1, width).transpose(),
                         errors_.row(k).segment(first, count));
    }
    propagate_block_errors(wt_.block(i2, first, columns - i2, count),
                           u_.block(i1, i2, width, columns - i2),
                           errors_.block(0, first, width, count));
    panel_loss_[static_cast<std::size_t>(first / error_feedback_panel)] += loss;
  }

  const GptqConfig& config_;
  UniformWeights& q_;                // scale and zero are filled in as grids are found
  const Permutation& column_order_;  // empty without act-order
  MatrixF u_;                        // the inverse-Hessian factor
  MatrixF wt_;                       // working weights
  CodeMatrix keep_t_;                // empty without an outlier mask
  CodeMatrix codes_t_;
  MatrixF errors_;  // block width x out: the block's scaled errors
  std::vector<double> panel_loss_;
  // Per output: (original column, value) of its outliers.
  std::vector<std::vector<std::pair<std::int32_t, float>>> outliers_;
};

// Codes and the column-to-group map in the original column order.
inline void restore_original_order(UniformWeights& q, CodeMatrix codes,
                                   const Permutation& column_order, const GptqConfig& config) {
  if (column_order.empty()) {
    q.codes = std::move(codes);
    return;
  }
  q.codes = permute_columns(codes, inverse_permutation(column_order));
  if (config.group_size == -1 || config.static_groups || q.groups() == 1) return;
  q.g_idx.resize(column_order.size());
  for (std::size_t j = 0; j < column_order.size(); ++j)
    q.g_idx[static_cast<std::size_t>(column_order[j])] =
        static_cast<std::int32_t>(static_cast<Index>(j) / q.group_size);
}

}  // namespace detail

// quantize_gptq below, taking H by move: its storage becomes the Hessian
// prologue's and then the inverse factor's, so no other in x in double matrix
// is allocated (whole-model quantization, where a wide layer's H is the
// largest allocation). The results are the same bit for bit.
inline GptqResult quantize_gptq_consuming_hessian(const MatrixFRef& weights, MatrixD&& hessian,
                                                  const GptqConfig& config = {},
                                                  const CodeMatrix& outlier_mask = CodeMatrix()) {
  const detail::Stopwatch stopwatch;
  const Index group_size = detail::validate_gptq(weights, hessian, config, outlier_mask);
  GptqResult result;
  UniformWeights& q = result.weights;
  q.bits = config.bits;
  q.group_size = group_size;
  q.scale.resize(weights.cols() / group_size, weights.rows());
  q.zero.resize(q.scale.rows(), q.scale.cols());

  MatrixF w = weights;
  const bool grouped = config.group_size != -1;
  if (!grouped)  // one grid per row, on the original rows (dead columns not yet zeroed)
    detail::store_group_grid(q, 0, 0, detail::find_group_grid(w, outlier_mask, config));
  detail::HessianPrologue prologue =
      detail::hessian_prologue(std::move(hessian), w, config.damping, [&](const MatrixD& h) {
        return config.act_order ? act_order_permutation(h) : Permutation();
      });
  if (grouped && config.static_groups) detail::find_static_group_grids(q, w, outlier_mask, config);
  result.report.hessian = std::move(prologue.report);
  const Permutation& column_order = result.report.hessian.column_order;

  detail::GptqSweep sweep(config, q, column_order, std::move(prologue.factor), w, outlier_mask);
  w.resize(0, 0);
  sweep.run();
  detail::restore_original_order(q, sweep.codes(), column_order, config);
  result.outliers = sweep.collect_outliers();
  result.report.loss = sweep.loss();
  result.report.seconds = stopwatch.seconds();
  return result;
}

// GPTQ of `weights` (out x in) with the Hessian proxy `hessian` (in x in,
// symmetric; H = 2/N sum X^T X or any positive multiple: only the loss scales
// with it). `outlier_mask` (out x in, nonzero = keep in full precision) is
// optional.
inline GptqResult quantize_gptq(const MatrixFRef& weights, const MatrixDRef& hessian,
                                const GptqConfig& config = {},
                                const CodeMatrix& outlier_mask = CodeMatrix()) {
  return quantize_gptq_consuming_hessian(weights, MatrixD(hessian), config, outlier_mask);
}

// The same with the statistics of a Calibration (its H = 2/N sum X^T X).
inline GptqResult quantize_gptq(const MatrixFRef& weights, const Calibration& calibration,
                                const GptqConfig& config = {},
                                const CodeMatrix& outlier_mask = CodeMatrix()) {
  detail::require(calibration.in_features() == weights.cols(), "quantize_gptq: calibration has ",
                  calibration.in_features(), " input features, weights have ", weights.cols());
  return quantize_gptq_consuming_hessian(weights, calibration.hessian(), config, outlier_mask);
}

}  // namespace lowbit
