// GPTQ (Frantar et al., ICLR 2023) on one weight matrix, as the official
// IST-DASLab gptq `fasterquant` runs it (GPTQModel's GPTQ.quantize is the
// same), with TaCQ's mask of weights kept exact.
//
// The reference, step by step (reproduced here; the golden files pin it):
//   1. without groups, the per-row grid is found on the whole original row;
//   2. dead columns (diag H == 0) get H[d, d] = 1 and W[:, d] = 0;
//   3. static groups: every group's grid is found now, in the original order;
//   4. act-order: columns by descending diag(H) (torch's unstable argsort);
//   5. U = upper Cholesky factor of (H + percdamp * mean(diag H) * I)^-1;
//   6. columns in blocks of 128: quantize column i with its group's grid,
//      err = (w - q) / U(i, i), feed it back into the rest of the block, and
//      into the later blocks at the end of the block (core/error_feedback.hpp).
//      Without static groups a group's grid is found when its first column is
//      reached, on the weights as they stood at the START of the block: the
//      in-block updates of earlier columns of the same block are not seen, so
//      the result depends on the block size. `fresh_group_params` instead uses
//      the weights as updated up to that column (independent of block size).
//   The loss is sum((w - q)^2 / U(i, i)^2) / 2, fasterquant's printed "error".
//
// Kept weights (TaCQ, "Task-Circuit Quantization", Xiao et al. 2025, official
// code gptq/gptq.py): a mask marks weights that stay in full precision. As
// the official code does:
//   * when a grid is found, a row's masked entries are replaced by the mean of
//     its unmasked entries in that group (0 if all are masked): they do not
//     stretch the min-max range (the MSE search sees them as that mean);
//   * a masked weight is quantized as 0 plus its current value: its code is the
//     zero point (it dequantizes to exactly 0), its error is 0 so nothing is
//     fed back from it, and the value kept is the weight as UPDATED by the
//     error feedback of the earlier columns (it absorbs their compensation),
//     not the original weight. `GptqResult::kept` holds those values;
//     dense part + kept = the official Q.
//   The mask is given in the original column order and follows the columns
//   through act-order. (The official code indexes its unpermuted mask with
//   permuted positions under act-order; its scripts never combine the two.)
//
// Numerics: the working matrix is float32 like the reference's (measured in
// benchmarks/bench_gptq.cpp: double is slower and agrees no better with the
// golden files); the inverse-Hessian factor is computed in double and rounded.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/error_feedback.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

struct GptqConfig {
  GridConfig grid;                  // bits 2..8, sym, mse: the reference Quantizer
  int group_size = -1;              // -1: one grid per row; else a divisor of in_features
  bool act_order = false;           // desc_act: process columns by descending diag(H)
  bool static_groups = false;       // fix every group's grid up front (no effect with group_size -1)
  bool fresh_group_params = false;  // group grids from the updated weights, not the block-start ones
  int block_size = 128;             // lazy-update block width (the reference's)
  DampingConfig damping;            // percdamp 0.01; escalation when the Cholesky fails
  // Called after every block with (columns done, in_features), on the calling thread.
  std::function<void(Index, Index)> progress;
};

struct GptqReport {
  double loss = 0;                 // sum (w - q)^2 / U(i,i)^2 / 2: fasterquant's "error"
  double seconds = 0;
  double percdamp = 0;             // the damping that factorized H
  double diagonal_floor = 0;       // > 0 when H's diagonal had to be floored
  int failed_factorizations = 0;   // damping escalations before success
  std::vector<Index> dead_columns; // inputs with diag(H) == 0 (weights zeroed)
};

struct GptqResult {
  // Codes, scale and zero in the ORIGINAL column order; g_idx is set when
  // act-order without static groups makes the groups non-contiguous.
  // Kept (masked) weights hold their zero point and dequantize to 0 here.
  UniformWeights weights;
  Permutation perm;       // act-order: processing position i holds column perm[i]; else empty
  SparseOutliers kept;    // the kept weights' values (f32; empty without a mask)
  GptqReport report;

  // The reference Q: the dense part with the kept weights written in.
  MatrixF dequantize() const {
    MatrixF q = weights.dequantize();
    kept.overwrite(q);
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

// Compares H with its transpose tile by tile (a column walk over a large
// row-major matrix is slow).
inline void require_symmetric(const MatrixDRef& h) {
  constexpr Index tile = 32;
  const double tolerance = 1e-5 * std::max(h.diagonal().cwiseAbs().maxCoeff(), 1e-300);
  for (Index i = 0; i < h.rows(); i += tile)
    for (Index j = i; j < h.cols(); j += tile) {
      const Index rows = std::min(tile, h.rows() - i), cols = std::min(tile, h.cols() - j);
      const MatrixD difference = h.block(i, j, rows, cols) - h.block(j, i, cols, rows).transpose();
      Index r = 0, c = 0;
      if (difference.cwiseAbs().maxCoeff(&r, &c) > tolerance)
        fail("quantize_gptq: H must be symmetric, but H(", i + r, ", ", j + c, ") = ", h(i + r, j + c),
             " and H(", j + c, ", ", i + r, ") = ", h(j + c, i + r));
    }
}

// The column sweep over one block of columns for one panel of outputs. All
// matrices are in processing order; Wt, codes and the kept mask transposed
// (in x out). Every panel touches only its own outputs.
struct GptqSweep {
  const GptqConfig& config;
  Index group_size;
  bool grouped;                  // group_size was given (not -1)
  const Permutation& perm;       // empty without act-order
  const MatrixF& u;              // the inverse-Hessian factor, float
  MatrixF& wt;                   // working weights
  const CodeMatrix& keep_t;      // empty without a mask
  UniformWeights& result;        // scale / zero rows are filled here
  CodeMatrix& codes_t;
  MatrixF& errors;               // block width x out: the block's scaled errors
  std::vector<double>& panel_loss;
  std::vector<std::vector<std::pair<std::int32_t, float>>>& kept;  // per output: (column, value)

  Index original_column(Index j) const { return perm.empty() ? j : perm[static_cast<std::size_t>(j)]; }

  Index group_at(Index j) const {
    if (!grouped) return 0;
    return (config.static_groups ? original_column(j) : j) / group_size;
  }

  // The grid of the group starting at processing position c, from `sample`
  // (outputs x group_size).
  void set_group_params(Index c, Index first, MatrixF sample) const {
    if (keep_t.size() != 0)
      sample = grid_sample_without_kept(std::move(sample),
                                        keep_t.block(c, first, group_size, sample.rows()).transpose());
    const GridParams params = find_grid_params(sample, config.grid);
    result.scale.row(c / group_size).segment(first, sample.rows()) = params.scale.transpose();
    result.zero.row(c / group_size).segment(first, sample.rows()) = params.zero.transpose();
  }

  // The up-to-date weights of the group starting at c (inside block [i1, i2)):
  // in-block columns have all feedback so far; columns past the block still
  // lack this block's deferred update from columns i1 .. c - 1.
  MatrixF current_group(Index c, Index i1, Index i2, Index first, Index count) const {
    MatrixF t(group_size, count);
    const Index inside = std::min(c + group_size, i2) - c;
    t.topRows(inside) = wt.block(c, first, inside, count);
    if (inside < group_size) {
      const Index beyond = group_size - inside;
      t.bottomRows(beyond) = wt.block(i2, first, beyond, count);
      subtract_transposed_product(t.bottomRows(beyond), u.block(i1, i2, c - i1, beyond),
                                  errors.block(0, first, c - i1, count));
    }
    return t.transpose();
  }

  void run(Index i1, Index i2, Index first, Index count) const {
    const Index width = i2 - i1;
    const Index columns = wt.rows();
    const float maxq = grid_maxq(config.grid.bits);
    const bool fresh_groups = grouped && !config.static_groups;
    if (fresh_groups && !config.fresh_group_params)  // the reference: block-start weights
      for (Index c = (i1 + group_size - 1) / group_size * group_size; c < i2; c += group_size)
        set_group_params(c, first, wt.block(c, first, group_size, count).transpose());

    Eigen::ArrayXf code(count), value(count), diff(count);
    double loss = 0;
    for (Index k = 0; k < width; ++k) {
      const Index c = i1 + k;
      if (fresh_groups && config.fresh_group_params && c % group_size == 0)
        set_group_params(c, first, current_group(c, i1, i2, first, count));
      const Index g = group_at(c);
      const auto scale = result.scale.row(g).segment(first, count).transpose().array();
      const auto zero = result.zero.row(g).segment(first, count).transpose().array();
      const auto w = wt.row(c).segment(first, count).transpose().array();
      const float d = u(c, c);
      // The reference quantizer, elementwise: divide, round half to even.
      code = ((w / scale).rint() + zero).max(0.0f).min(maxq);
      value = scale * (code - zero);
      diff = w - value;
      if (keep_t.size() != 0)
        for (Index r = 0; r < count; ++r) {
          if (!keep_t(c, first + r)) continue;
          code(r) = std::clamp(zero(r), 0.0f, maxq);  // quantize(0): its zero point
          diff(r) = 0;
          kept[static_cast<std::size_t>(first + r)].emplace_back(
              static_cast<std::int32_t>(original_column(c)), w(r));
        }
      loss += (diff.square() / (d * d)).cast<double>().sum();
      errors.row(k).segment(first, count) = (diff / d).transpose();
      codes_t.row(c).segment(first, count) = code.cast<std::uint8_t>().transpose();
      feed_back_in_block(wt.block(i1, first, width, count), k, u.row(c).segment(i1, width).transpose(),
                         errors.row(k).segment(first, count));
    }
    propagate_block_errors(wt.block(i2, first, columns - i2, count), u.block(i1, i2, width, columns - i2),
                           errors.block(0, first, width, count));
    panel_loss[static_cast<std::size_t>(first / error_feedback_panel)] += loss;
  }
};

}  // namespace detail

// GPTQ of `weights` (out x in) with the Hessian proxy `hessian` (in x in,
// symmetric; H = 2/N sum X^T X or any positive multiple: only the loss scales
// with it). `keep_mask` (out x in, nonzero = keep exact) is optional.
inline GptqResult quantize_gptq(const MatrixFRef& weights, const MatrixDRef& hessian,
                                const GptqConfig& config = {}, const CodeMatrix& keep_mask = CodeMatrix()) {
  const auto start = std::chrono::steady_clock::now();
  detail::require_nonempty(weights, "quantize_gptq: weights");
  detail::require_finite(weights, "quantize_gptq: weights");
  const Index out = weights.rows(), in = weights.cols();
  detail::require_shape(hessian, in, in, "quantize_gptq: H (in_features x in_features)");
  detail::require_finite(hessian, "quantize_gptq: H");
  detail::require_symmetric(hessian);
  detail::require_bits(config.grid.bits, 2, 8, "GptqConfig::grid.bits");
  detail::validate_grid_config(config.grid);
  const Index group_size = detail::resolve_group_size(config.group_size, in, "GptqConfig::group_size");
  detail::require(config.block_size > 0, "GptqConfig::block_size: expected > 0, got ", config.block_size);
  const bool masked = keep_mask.size() != 0;
  if (masked) detail::require_shape(keep_mask, out, in, "quantize_gptq: keep_mask");
  const bool grouped = config.group_size != -1;
  const Index groups = in / group_size;

  GptqResult result;
  UniformWeights& q = result.weights;
  q.bits = config.grid.bits;
  q.group_size = group_size;
  q.scale.resize(groups, out);
  q.zero.resize(groups, out);
  auto set_params = [&](Index g, const MatrixF& sample, const CodeMatrix& keep) {
    const GridParams params =
        find_grid_params(masked ? detail::grid_sample_without_kept(sample, keep) : sample, config.grid);
    q.scale.row(g) = params.scale.transpose();
    q.zero.row(g) = params.zero.transpose();
  };

  // 1-3: per-row grid on the original rows, dead columns, static groups.
  MatrixF w = weights;
  if (!grouped) set_params(0, w, keep_mask);
  MatrixD h = hessian;
  result.report.dead_columns = dead_columns(h);
  set_dead_diagonal(h, result.report.dead_columns);
  for (Index d : result.report.dead_columns) w.col(d).setZero();
  if (grouped && config.static_groups)
    for (Index g = 0; g < groups; ++g)
      set_params(g, w.middleCols(g * group_size, group_size),
                 masked ? CodeMatrix(keep_mask.middleCols(g * group_size, group_size)) : CodeMatrix());

  // 4-5: act-order and the inverse-Hessian factor.
  if (config.act_order) {
    result.perm = act_order_permutation(h);
    h = permute_symmetric(h, result.perm);
  }
  MatrixF u;
  {
    const InverseHessian inverse = inverse_hessian_factor(h, config.damping);
    u = inverse.factor.cast<float>();
    result.report.percdamp = inverse.percdamp;
    result.report.diagonal_floor = inverse.diagonal_floor;
    result.report.failed_factorizations = inverse.failed_factorizations;
  }
  h.resize(0, 0);

  // 6: the sweep, on W^T in processing order.
  MatrixF wt;
  CodeMatrix keep_t;
  if (config.act_order) {
    detail::transpose_tiled(wt, permute_columns(w, result.perm));
    if (masked) detail::transpose_tiled(keep_t, permute_columns(keep_mask, result.perm));
  } else {
    detail::transpose_tiled(wt, w);
    if (masked) detail::transpose_tiled(keep_t, keep_mask);
  }
  w.resize(0, 0);
  CodeMatrix codes_t(in, out);
  const Index block = std::min<Index>(config.block_size, in);
  MatrixF errors(block, out);
  std::vector<double> panel_loss(static_cast<std::size_t>(detail::panel_count(out)), 0.0);
  std::vector<std::vector<std::pair<std::int32_t, float>>> kept(static_cast<std::size_t>(masked ? out : 0));
  const detail::GptqSweep sweep{config, group_size, grouped, result.perm, u,    wt,         keep_t,
                                q,      codes_t,    errors,  panel_loss,  kept};
  for (Index i1 = 0; i1 < in; i1 += block) {
    const Index i2 = std::min(i1 + block, in);
    detail::for_each_panel(out, [&](Index first, Index count) { sweep.run(i1, i2, first, count); });
    if (config.progress) config.progress(i2, in);
  }

  // Results in the original column order.
  detail::transpose_tiled(q.codes, codes_t);
  if (config.act_order) {
    q.codes = permute_columns(q.codes, inverse_permutation(result.perm));
    if (grouped && !config.static_groups && groups > 1) {
      q.g_idx.resize(static_cast<std::size_t>(in));
      for (Index j = 0; j < in; ++j)
        q.g_idx[static_cast<std::size_t>(result.perm[static_cast<std::size_t>(j)])] =
            static_cast<std::int32_t>(j / group_size);
    }
  }
  SparseOutliers& s = result.kept;
  s.rows = out;
  s.cols = in;
  s.precision = OutlierPrecision::f32;
  s.row_ptr.assign(1, 0);
  for (Index r = 0; r < out; ++r) {
    if (masked) {
      auto& row = kept[static_cast<std::size_t>(r)];
      std::sort(row.begin(), row.end());
      for (const auto& [c, v] : row) {
        s.col.push_back(c);
        s.values.push_back(v);
      }
    }
    s.row_ptr.push_back(static_cast<std::int32_t>(s.values.size()));
  }
  for (double l : panel_loss) result.report.loss += l;
  result.report.loss /= 2;
  result.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// The same with the statistics of a Calibration (its H = 2/N sum X^T X).
inline GptqResult quantize_gptq(const MatrixFRef& weights, const Calibration& calibration,
                                const GptqConfig& config = {}, const CodeMatrix& keep_mask = CodeMatrix()) {
  detail::require(calibration.in_features() == weights.cols(), "quantize_gptq: calibration has ",
                  calibration.in_features(), " input features, weights have ", weights.cols());
  return quantize_gptq(weights, calibration.hessian(), config, keep_mask);
}

}  // namespace lowbit
