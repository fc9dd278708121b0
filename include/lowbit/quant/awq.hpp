// AWQ: activation-aware weight quantization (Lin et al., MLSys 2024), as the
// official llm-awq code runs it (mit-han-lab/llm-awq: awq/quantize/
// auto_scale.py, auto_clip.py, quantizer.py) for a set of linears that share
// one input — q/k/v after the attention norm, gate/up after the MLP norm, or
// a single linear:
//
//  1. Scale search. x̄_j = mean_t |x_tj| (the mean, not the max). For each
//     ratio r = i / grid, i = 0..grid-1 (never 1): s = max(x̄^r, 1e-4),
//     s /= sqrt(max s · min s); every linear becomes Q(W·diag(s))·diag(1/s)
//     and the loss is mean((X Wᵀ − X Qᵀ)²) over the whole output of all the
//     linears, the difference taken in the input precision and squared in
//     float (even for double inputs). The first strict minimum wins.
//  2. Clipping search, per linear, on the scaled weights W·diag(s) with the
//     scaled inputs X·diag(1/s), tokens sampled with step n / 512: per row
//     and group, max_val = max|w|·(1 − i/20) for i = 0..9 (shrinking to at
//     most 0.55), error = mean over tokens of (Σ_group x·(q − w))², first
//     strict minimum below 1e9; the weights are clamped to ±max_val
//     (symmetric, although the grid is asymmetric).
//  3. The final quantization of the clipped W·diag(s) on the AWQ grid.
//
// The AWQ grid (pseudo_quantize_tensor, zero_point=True) is not the GPTQ
// grid: min/max do not include 0, scale = max(max − min, 1e-5) / maxq,
// zero = clamp(−round(min / scale), 0, maxq), code = clamp(round(w / scale)
// + zero, 0, maxq). Rounding is half to even; values are divided by scales.
//
// The result works on inputs X·diag(1/s): fold 1/s into the preceding norm
// (fold_into_norm) or into the activations (divide_input_channels), both in
// core/channel_scaling.hpp; effective_weight() gives Wq·diag(1/s) for
// comparison with the original W.
//
// Deviations from the reference, all where it crashes or refuses:
//  * sym (the reference's zero_point = false): its symmetric branch raises
//    before doing anything (`assert min_val is None` on an unbound name). We
//    implement what it spells out: scale = max(max|w|, 1e-5) / (2^(b-1) − 1), levels
//    −2^(b-1) .. 2^(b-1) − 1, zero 0 (stored as codes offset by 2^(b-1)).
//  * Fewer tokens than clip_sample_tokens: the reference's step n / 512 is 0
//    and slicing fails; we use every token (step 1).
//  * Any out_features: the reference processes rows in batches of 256 or 64
//    and asserts out is divisible; the batches only bound memory, rows are
//    independent, so no such restriction here.
//  * Several linears: the reference scores the output of the enclosing
//    module (the attention block for q/k/v, the MLP for gate/up); a layer-level
//    library has no such module, so the loss is over the concatenated outputs
//    of the linears. For one linear this is exactly the reference.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/detail/parallel.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

struct AwqConfig {
  int bits = 4;                    // 1..8 (2..8 with sym)
  int group_size = 128;            // -1: one group per row
  bool sym = false;                // the reference's zero_point = false branch (see above)
  int scale_grid = 20;             // scale search ratios i / scale_grid, i = 0..scale_grid-1
  bool clip = true;                // run the clipping search
  int clip_grid = 20;              // shrink steps 1 - i / clip_grid ...
  double clip_max_shrink = 0.5;    // ... for i < int(clip_max_shrink * clip_grid)
  Index clip_sample_tokens = 512;  // clip search uses every (tokens / this)-th token
  // Linears (indices into the list) left out of the clipping search: the
  // reference skips q and k, whose product in attention makes the output
  // error of each a poor guide.
  std::vector<std::size_t> skip_clip;
  // After each (ratio, linear) of the scale search and each linear's clip
  // search: (steps done, scale_grid * linears + linears clipped).
  Progress progress;
};

// The scale search: the loss of every ratio and the one chosen.
struct AwqSearch {
  std::vector<double>
      loss;  // loss[i] for ratio i / grid (float values, as the reference's .item())
  int best_index = 0;
  double best_ratio = 0;
  double best_loss = 0;
};

template <class Scalar>
struct AwqReport {
  AwqSearch search;
  // Per linear: the clip threshold per (row, group), out x groups (the
  // reference's [out, groups] layout); empty for a linear not clipped.
  std::vector<MatrixT<Scalar>> clip_max_val;
  double seconds = 0;
};

template <class Scalar>
struct AwqResult {
  // Per linear: the quantized clip(W·diag(s)) (AWQ grid, contiguous groups),
  // acting on X·diag(1/s). Codes are exact in either precision; scale and
  // zero are stored in float, the format engines keep.
  std::vector<UniformWeights> weights;
  VectorT<Scalar> scales;  // s: the linears were quantized as W·diag(s)
  AwqReport<Scalar> report;

  // Wq·diag(1/s): the quantized linear in the original input domain.
  MatrixT<Scalar> effective_weight(std::size_t linear) const {
    detail::require(linear < weights.size(), "AwqResult::effective_weight: linear ", linear,
                    " out of range (", weights.size(), " linears)");
    MatrixT<Scalar> q = weights[linear].dequantize().template cast<Scalar>();
    for (Index j = 0; j < q.cols(); ++j) q.col(j) /= scales(j);
    return q;
  }
};

namespace detail {

// One group on the AWQ grid (pseudo_quantize_tensor), in the input precision.
template <class Scalar>
struct AwqGrid {
  Scalar scale, zero, min_int, max_int;

  AwqGrid(const Scalar* w, Index n, int bits, bool zero_point) {
    if (zero_point) {
      const Scalar hi = *std::max_element(w, w + n);
      const Scalar lo = *std::min_element(w, w + n);
      min_int = 0;
      max_int = static_cast<Scalar>((1 << bits) - 1);
      scale = std::max(hi - lo, static_cast<Scalar>(1e-5)) / max_int;
      zero = std::clamp(-std::nearbyint(lo / scale), min_int, max_int);
    } else {
      Scalar absmax = 0;
      for (Index j = 0; j < n; ++j) absmax = std::max(absmax, std::abs(w[j]));
      max_int = static_cast<Scalar>((1 << (bits - 1)) - 1);
      min_int = -max_int - 1;
      scale = std::max(absmax, static_cast<Scalar>(1e-5)) / max_int;
      zero = 0;
    }
  }

  Scalar level(Scalar w) const {
    return std::clamp(std::nearbyint(w / scale) + zero, min_int, max_int);
  }
  Scalar value(Scalar w) const { return (level(w) - zero) * scale; }
};

// pseudo_quantize_tensor on every group of w, in place.
template <class Scalar>
void awq_fake_quantize(MatrixT<Scalar>& w, Index group_size, int bits, bool zero_point) {
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c0 = 0; c0 < w.cols(); c0 += group_size) {
      Scalar* group = w.row(r).data() + c0;
      const AwqGrid<Scalar> grid(group, group_size, bits, zero_point);
      for (Index j = 0; j < group_size; ++j) group[j] = grid.value(group[j]);
    }
}

// The final quantization as UniformWeights. Codes are exact in any precision;
// scale and zero are stored in float (the engine's format).
template <class Scalar>
UniformWeights awq_uniform_weights(const MatrixT<Scalar>& w, Index group_size, int bits,
                                   bool zero_point) {
  UniformWeights out;
  out.bits = bits;
  out.group_size = group_size;
  out.codes.resize(w.rows(), w.cols());
  out.scale.resize(w.cols() / group_size, w.rows());
  out.zero.resize(w.cols() / group_size, w.rows());
  // The symmetric grid stores level + 2^(bits-1) with that as its zero point.
  const Scalar offset = zero_point ? 0 : static_cast<Scalar>(1 << (bits - 1));
  for (Index r = 0; r < w.rows(); ++r)
    for (Index g = 0; g < out.groups(); ++g) {
      const Scalar* group = w.row(r).data() + g * group_size;
      const AwqGrid<Scalar> grid(group, group_size, bits, zero_point);
      out.scale(g, r) = static_cast<float>(grid.scale);
      out.zero(g, r) = static_cast<float>(grid.zero + offset);
      for (Index j = 0; j < group_size; ++j)
        out.codes(r, g * group_size + j) = static_cast<std::uint8_t>(grid.level(group[j]) + offset);
    }
  return out;
}

// Column sums in the order of torch's CPU sum over a non-contiguous dimension
// (a four-level cascade: rows are added in runs of 2^p, p = max(4,
// ceil(log2 n) / 4), each level collecting 2^p sums of the level below). The
// scale search starts from mean|x|, and the reference's summation order makes
// the scales — and through them the clipping decisions — bit-identical.
template <class Derived>
VectorT<typename Derived::Scalar> cascade_column_sums(const Eigen::MatrixBase<Derived>& a) {
  using Scalar = typename Derived::Scalar;
  constexpr int levels = 4;
  const Index n = a.rows();
  int log2_n = 0;
  while ((Index(1) << log2_n) < n) ++log2_n;
  const int power = std::max(4, log2_n / levels);
  const Index step = Index(1) << power;
  std::vector<VectorT<Scalar>> acc(levels, VectorT<Scalar>::Zero(a.cols()));
  Index i = 0;
  while (i + step <= n) {
    for (Index j = 0; j < step; ++j, ++i) acc[0] += a.row(i).transpose();
    for (int level = 1; level < levels; ++level) {
      acc[level] += acc[level - 1];
      acc[level - 1].setZero();
      if ((i & ((step - 1) << (level * power))) != 0) break;
    }
  }
  for (; i < n; ++i) acc[0] += a.row(i).transpose();
  for (int level = 1; level < levels; ++level) acc[0] += acc[level];
  return acc[0];
}

template <class Scalar>
VectorT<Scalar> awq_ratio_scales(const VectorT<Scalar>& x_mean, double ratio) {
  VectorT<Scalar> s(x_mean.size());
  for (Index j = 0; j < s.size(); ++j)
    s(j) = std::max(torch_pow(x_mean(j), ratio), static_cast<Scalar>(1e-4));
  const Scalar norm = std::sqrt(s.maxCoeff() * s.minCoeff());
  for (Index j = 0; j < s.size(); ++j) s(j) /= norm;
  return s;
}

template <class Scalar>
void validate_awq(const std::vector<MatrixRef<Scalar>>& linears, const MatrixRef<Scalar>& x,
                  const AwqConfig& config) {
  require(!linears.empty(), "quantize_awq: expected at least one linear");
  const Index in = linears[0].cols();
  for (std::size_t i = 0; i < linears.size(); ++i) {
    require_nonempty(linears[i], "quantize_awq: linear weights");
    require(linears[i].cols() == in, "quantize_awq: linear ", i, " has ", linears[i].cols(),
            " input features, linear 0 has ", in, " (the linears must share one input)");
    require_finite(linears[i], "quantize_awq: linear weights");
  }
  require(x.rows() > 0, "quantize_awq: x has no tokens");
  require(x.cols() == in, "quantize_awq: x has ", x.cols(),
          " columns, expected in_features = ", in);
  require_finite(x, "quantize_awq: x");
  require_bits(config.bits, config.sym ? 2 : 1, 8, "AwqConfig::bits");
  resolve_group_size(config.group_size, in, "AwqConfig::group_size");
  require(config.scale_grid >= 1, "AwqConfig::scale_grid: expected >= 1, got ", config.scale_grid);
  if (config.clip) {
    require(config.clip_grid >= 1, "AwqConfig::clip_grid: expected >= 1, got ", config.clip_grid);
    require(config.clip_max_shrink > 0 && config.clip_max_shrink < 1 &&
                static_cast<int>(config.clip_max_shrink * config.clip_grid) >= 1,
            "AwqConfig::clip_max_shrink: expected in (0, 1) with at least one step of 1 / "
            "clip_grid, got ",
            config.clip_max_shrink);
    require(config.clip_sample_tokens >= 1, "AwqConfig::clip_sample_tokens: expected >= 1, got ",
            config.clip_sample_tokens);
  }
  for (std::size_t i : config.skip_clip)
    require(i < linears.size(), "AwqConfig::skip_clip: linear ", i, " out of range (",
            linears.size(), " linears)");
}

template <class Scalar>
AwqSearch awq_search_scales(const std::vector<MatrixRef<Scalar>>& linears,
                            const MatrixRef<Scalar>& x, const AwqConfig& config, Index group_size,
                            VectorT<Scalar>& best_scales, ProgressCounter& steps) {
  const Index in = x.cols();
  const VectorT<Scalar> x_mean = cascade_column_sums(x.cwiseAbs()) / static_cast<Scalar>(x.rows());
  std::vector<MatrixT<Scalar>> original_out;
  double outputs = 0;
  for (const auto& w : linears) {
    original_out.push_back(product_transposed<Scalar>(x, w));
    outputs += static_cast<double>(x.rows()) * static_cast<double>(w.rows());
  }

  AwqSearch search;
  search.best_index = -1;
  search.best_loss = std::numeric_limits<double>::infinity();
  for (int i = 0; i < config.scale_grid; ++i) {
    const double ratio = static_cast<double>(i) / config.scale_grid;
    const VectorT<Scalar> s = awq_ratio_scales(x_mean, ratio);
    double sum = 0;
    for (std::size_t l = 0; l < linears.size(); ++l) {
      MatrixT<Scalar> q = scale_input_channels(linears[l], s);
      awq_fake_quantize(q, group_size, config.bits, !config.sym);
      for (Index j = 0; j < in; ++j) q.col(j) /= s(j);
      const MatrixT<Scalar> out = product_transposed<Scalar>(x, q);
      for (Index k = 0; k < out.size(); ++k) {
        const float d = static_cast<float>(original_out[l].data()[k] - out.data()[k]);
        sum += static_cast<double>(d * d);
      }
      steps.step();
    }
    // The reference's loss is a float mean.
    const double loss = static_cast<double>(static_cast<float>(sum / outputs));
    search.loss.push_back(loss);
    if (loss < search.best_loss) {
      search.best_loss = loss;
      search.best_index = i;
      search.best_ratio = ratio;
      best_scales = s;
    }
  }
  require(search.best_index >= 0, "quantize_awq: no ratio gave a finite loss (overflow in X Wᵀ?)");
  return search;
}

// auto_clip_layer for one linear: the best max_val per (row, group), out x groups.
template <class Scalar>
MatrixT<Scalar> awq_search_clip(const MatrixT<Scalar>& w, const MatrixT<Scalar>& x_sampled,
                                const AwqConfig& config, Index group_size) {
  const Index rows = w.rows(), groups = w.cols() / group_size, tokens = x_sampled.rows();
  const int steps = static_cast<int>(config.clip_max_shrink * config.clip_grid);
  MatrixT<Scalar> best(rows, groups);
  MatrixT<Scalar> candidate(rows, group_size);
  for (Index g = 0; g < groups; ++g) {
    const auto xg = x_sampled.middleCols(g * group_size, group_size);
    const auto wg = w.middleCols(g * group_size, group_size);
    const MatrixT<Scalar> original_out = product_transposed<Scalar>(wg, xg);  // rows x tokens
    const VectorT<Scalar> original_max = wg.cwiseAbs().rowwise().maxCoeff();
    VectorT<Scalar> min_err = VectorT<Scalar>::Constant(rows, static_cast<Scalar>(1e9));
    best.col(g) = original_max;
    for (int i = 0; i < steps; ++i) {
      const Scalar shrink = static_cast<Scalar>(1.0 - static_cast<double>(i) / config.clip_grid);
      for (Index r = 0; r < rows; ++r) {
        const Scalar max_val = original_max(r) * shrink;
        for (Index j = 0; j < group_size; ++j)
          candidate(r, j) = std::clamp(wg(r, j), -max_val, max_val);
      }
      awq_fake_quantize(candidate, group_size, config.bits, !config.sym);
      const MatrixT<Scalar> out = product_transposed<Scalar>(candidate, xg);
      for (Index r = 0; r < rows; ++r) {
        double sum = 0;
        for (Index t = 0; t < tokens; ++t) {
          const Scalar d = out(r, t) - original_out(r, t);
          sum += static_cast<double>(d * d);
        }
        const Scalar err = static_cast<Scalar>(sum / static_cast<double>(tokens));
        if (err < min_err(r)) {
          min_err(r) = err;
          best(r, g) = original_max(r) * shrink;
        }
      }
    }
  }
  return best;
}

// The inputs the clip search sees: X·diag(1/s), every (tokens / clip_sample_tokens)-th token.
template <class Scalar>
MatrixT<Scalar> awq_clip_sample(const MatrixRef<Scalar>& x, const VectorT<Scalar>& scales,
                                const AwqConfig& config) {
  const MatrixT<Scalar> x_scaled = divide_input_channels(x, scales);
  const Index step = std::max<Index>(1, x.rows() / config.clip_sample_tokens);
  MatrixT<Scalar> sample((x.rows() + step - 1) / step, x.cols());
  for (Index t = 0; t < sample.rows(); ++t) sample.row(t) = x_scaled.row(t * step);
  return sample;
}

inline bool awq_clips(const AwqConfig& config, std::size_t linear) {
  return config.clip && std::find(config.skip_clip.begin(), config.skip_clip.end(), linear) ==
                            config.skip_clip.end();
}

template <class Scalar>
AwqResult<Scalar> quantize_awq(const std::vector<MatrixRef<Scalar>>& linears,
                               const MatrixRef<Scalar>& x, const AwqConfig& config) {
  const Stopwatch stopwatch;
  validate_awq(linears, x, config);
  const Index group_size = resolve_group_size(config.group_size, x.cols(), "AwqConfig::group_size");
  Index clipped = 0;
  for (std::size_t l = 0; l < linears.size(); ++l) clipped += awq_clips(config, l);
  ProgressCounter steps(config.progress,
                        config.scale_grid * static_cast<Index>(linears.size()) + clipped);
  AwqResult<Scalar> result;
  result.report.search = awq_search_scales(linears, x, config, group_size, result.scales, steps);

  const MatrixT<Scalar> x_sampled =
      clipped > 0 ? awq_clip_sample(x, result.scales, config) : MatrixT<Scalar>();
  for (std::size_t l = 0; l < linears.size(); ++l) {
    MatrixT<Scalar> w = scale_input_channels(linears[l], result.scales);
    MatrixT<Scalar> clip;
    if (awq_clips(config, l)) {
      clip = awq_search_clip(w, x_sampled, config, group_size);
      for (Index r = 0; r < w.rows(); ++r)
        for (Index j = 0; j < w.cols(); ++j) {
          const Scalar max_val = clip(r, j / group_size);
          w(r, j) = std::clamp(w(r, j), -max_val, max_val);
        }
      steps.step();
    }
    result.weights.push_back(awq_uniform_weights(w, group_size, config.bits, !config.sym));
    result.report.clip_max_val.push_back(std::move(clip));
  }
  result.report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace detail

// The linears sharing input x (tokens x in_features), float or double.
inline AwqResult<float> quantize_awq(const std::vector<MatrixFRef>& linears, const MatrixFRef& x,
                                     const AwqConfig& config = {}) {
  return detail::quantize_awq<float>(linears, x, config);
}
inline AwqResult<double> quantize_awq(const std::vector<MatrixDRef>& linears, const MatrixDRef& x,
                                      const AwqConfig& config = {}) {
  return detail::quantize_awq<double>(linears, x, config);
}
inline AwqResult<float> quantize_awq(const MatrixFRef& weights, const MatrixFRef& x,
                                     const AwqConfig& config = {}) {
  return detail::quantize_awq<float>({weights}, x, config);
}
inline AwqResult<double> quantize_awq(const MatrixDRef& weights, const MatrixDRef& x,
                                      const AwqConfig& config = {}) {
  return detail::quantize_awq<double>({weights}, x, config);
}

}  // namespace lowbit
