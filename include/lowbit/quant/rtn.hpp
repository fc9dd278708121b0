// Round-to-nearest on the reference GPTQ grid (core/uniform_grid.hpp), per
// row or per group of input columns: the baseline every method is compared to.
#pragma once

#include "lowbit/core/error.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

struct RtnConfig {
  int bits = 4;         // 1..8
  GridConfig grid;      // sym, mse: the reference Quantizer's options
  int group_size = -1;  // -1: one group per row
};

struct RtnReport {
  double seconds = 0;
};

struct RtnResult {
  UniformWeights weights;
  RtnReport report;
};

inline RtnResult quantize_rtn(const MatrixFRef& weights, const RtnConfig& config = {}) {
  const detail::Stopwatch stopwatch;
  detail::require_nonempty(weights, "quantize_rtn: weights");
  detail::require_finite(weights, "quantize_rtn: weights");
  detail::require_bits(config.bits, 1, 8, "RtnConfig::bits");
  detail::validate_grid_config(config.grid);
  const Index group_size =
      detail::resolve_group_size(config.group_size, weights.cols(), "RtnConfig::group_size");
  RtnResult result;
  result.weights = detail::round_to_nearest(weights, config.bits, config.grid, group_size);
  result.report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace lowbit
