// Symmetric absmax quantization (int8, int4, any 2..8 bits): scale = max|w| / qmax
// with qmax = 2^(bits-1) - 1, per tensor, per output row or per group of input
// columns. Codes are stored offset by 2^(bits-1) (the zero point), so the
// result is an ordinary UniformWeights whose levels are -qmax..qmax; an
// 8-bit per-row result converts to Int8Weights for the W8A8 kernel
// (to_int8_weights; int8_absmax_per_row in core/int8_weights.hpp computes
// that case directly).
#pragma once

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

enum class AbsmaxGranularity { per_tensor, per_row, per_group };

struct AbsmaxConfig {
  int bits = 8;
  AbsmaxGranularity granularity = AbsmaxGranularity::per_row;
  int group_size = 128;  // used with per_group only
  // Floor under every absmax: scale = max(absmax, min_absmax) / qmax. 0 keeps
  // the plain formula (an all-zero block gets scale 1); SmoothQuant's
  // reference uses kInt8AbsmaxFloor (1e-5).
  float min_absmax = 0.0f;
};

struct AbsmaxReport {
  double seconds = 0;
};

struct AbsmaxResult {
  UniformWeights weights;  // code = level + 2^(bits-1), levels -qmax..qmax
  AbsmaxReport report;
};

inline AbsmaxResult quantize_absmax(const MatrixFRef& weights, const AbsmaxConfig& config = {}) {
  const detail::Stopwatch stopwatch;
  detail::require_bits(config.bits, 2, 8, "AbsmaxConfig::bits");
  detail::require_nonempty(weights, "quantize_absmax: weights");
  detail::require_finite(weights, "quantize_absmax: weights");
  detail::require(config.min_absmax >= 0 && std::isfinite(config.min_absmax),
                  "AbsmaxConfig::min_absmax: expected a finite value >= 0, got ",
                  config.min_absmax);
  const Index rows = weights.rows();
  const Index cols = weights.cols();
  const Index group_size =
      config.granularity == AbsmaxGranularity::per_group
          ? detail::resolve_group_size(config.group_size, cols, "AbsmaxConfig::group_size")
          : cols;
  const Index groups = cols / group_size;
  const float offset = static_cast<float>(1 << (config.bits - 1));
  const float qmax = offset - 1;

  AbsmaxResult result;
  UniformWeights& out = result.weights;
  out.bits = config.bits;
  out.group_size = group_size;
  out.codes.resize(rows, cols);
  out.scale.resize(groups, rows);
  out.zero.setConstant(groups, rows, offset);
  for (Index g = 0; g < groups; ++g)
    for (Index r = 0; r < rows; ++r)
      out.scale(g, r) = weights.block(r, g * group_size, 1, group_size).cwiseAbs().maxCoeff();
  if (config.granularity == AbsmaxGranularity::per_tensor)
    out.scale.setConstant(out.scale.maxCoeff());
  out.scale = out.scale.unaryExpr(
      [&](float a) { return detail::absmax_scale(a, qmax, config.min_absmax); });

  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      const float q =
          std::clamp(std::nearbyint(weights(r, c) / out.scale(c / group_size, r)), -qmax, qmax);
      out.codes(r, c) = static_cast<std::uint8_t>(q + offset);
    }
  result.report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace lowbit
