// The uniform min-max grid of the reference GPTQ `Quantizer` (IST-DASLab
// gptq quant.py; GPTQModel uses the same code), reproduced operation for
// operation in float so codes match the reference exactly:
//   * the range always includes 0: xmin = min(min x, 0), xmax = max(max x, 0);
//   * an all-zero row uses [-1, 1];
//   * "sym" is not symmetric: xmin = -max(|xmin|, xmax) only where xmin < 0,
//     zero = (maxq + 1) / 2, so levels run -(maxq+1)/2 .. (maxq-1)/2;
//   * asym zero = round(-xmin / scale), unclamped (0 is always in range);
//   * optional MSE search over shrunk ranges p = 1 - i/grid with the error
//     sum |q - x|^norm, keeping the first strict minimum;
//   * rounding is half to even and values are divided by the scale.
// One option departs from the reference (off by default): `positive_zero`
// keeps every asymmetric zero point >= 1, which GPTQ v1 checkpoints need
// (they store zero - 1; io/gptq_format.hpp). A range whose zero would round
// to 0 (weights all >= 0, or nearly) gets zero 1 and the smallest scale that
// still covers it, so one level lies below 0. The quantizers choose the grid
// this way before quantizing, and GPTQ's error feedback sees its rounding.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

// The grid's shape; its width (bits) belongs to each method's config.
struct GridConfig {
  bool sym = false;  // the reference "symmetric" variant (see above)
  bool mse = false;  // search shrunk ranges for the smallest |q - x|^norm error
  double mse_norm = 2.4;
  int mse_grid = 100;
  double mse_max_shrink = 0.8;  // tries p = 1, 1 - 1/grid, ... for max_shrink * grid steps
  bool positive_zero = false;   // asymmetric zero points >= 1 (needs bits >= 2; see above)
};

// One scale and zero point per row of the block the parameters were found on.
struct GridParams {
  VectorF scale;
  VectorF zero;  // integral values (may be -0.0, as in the reference)
};

namespace detail {

inline void validate_grid_config(const GridConfig& config) {
  if (config.mse) {
    require(config.mse_grid > 0, "GridConfig::mse_grid: expected > 0, got ", config.mse_grid);
    require(config.mse_max_shrink > 0.0 && config.mse_max_shrink <= 1.0,
            "GridConfig::mse_max_shrink: expected in (0, 1], got ", config.mse_max_shrink);
    require(config.mse_norm > 0.0 && std::isfinite(config.mse_norm),
            "GridConfig::mse_norm: expected a positive finite value, got ", config.mse_norm);
  }
}

}  // namespace detail

inline float grid_maxq(int bits) { return static_cast<float>((1 << bits) - 1); }

// The integer code of x on the grid (returned as a float holding an integer).
inline float grid_code(float x, float scale, float zero, float maxq) {
  return std::clamp(std::nearbyint(x / scale) + zero, 0.0f, maxq);
}

inline float grid_value(float code, float scale, float zero) { return scale * (code - zero); }

namespace detail {

// The asymmetric (scale, zero) of [xmin, xmax] (xmin <= 0 <= xmax, not both 0).
inline std::pair<float, float> asym_grid(float xmin, float xmax, float maxq, bool positive_zero) {
  const float scale = (xmax - xmin) / maxq;
  const float zero = std::nearbyint(-xmin / scale);
  if (!positive_zero || zero >= 1) return {scale, zero};
  // Zero 1: levels span [-scale, (maxq - 1) * scale]. -xmin < scale / 2 < xmax /
  // (maxq - 1) here (zero rounded to 0), so the level below 0 reaches xmin.
  return {xmax / (maxq - 1), 1.0f};
}

}  // namespace detail

// Reference find_params(x, weight=True) with perchannel=True: one (scale, zero)
// per row of `block` on a `bits`-wide grid (1..8). Rows must be finite.
inline GridParams find_grid_params(const MatrixFRef& block, int bits, const GridConfig& config) {
  detail::require_bits(bits, 1, 8, "find_grid_params: bits");
  detail::validate_grid_config(config);
  detail::require(block.cols() > 0, "find_grid_params: block has no columns");
  detail::require(!config.positive_zero || bits >= 2,
                  "find_grid_params: GridConfig::positive_zero needs bits >= 2, got ", bits);
  const float maxq = grid_maxq(bits);
  const Index rows = block.rows();
  GridParams params{VectorF(rows), VectorF(rows)};
  for (Index r = 0; r < rows; ++r) {
    float xmin = std::min(block.row(r).minCoeff(), 0.0f);
    float xmax = std::max(block.row(r).maxCoeff(), 0.0f);
    if (config.sym) {
      xmax = std::max(std::abs(xmin), xmax);
      if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) {
      xmin = -1;
      xmax = 1;
    }
    const float sym_zero = (maxq + 1) / 2;
    auto [scale, zero] = config.sym ? std::pair((xmax - xmin) / maxq, sym_zero)
                                    : detail::asym_grid(xmin, xmax, maxq, config.positive_zero);

    if (config.mse) {
      double best = INFINITY;
      const int steps = static_cast<int>(config.mse_max_shrink * config.mse_grid);
      for (int i = 0; i < steps; ++i) {
        // The reference multiplies float tensors by a Python float: p is
        // computed in double and applied in float.
        const float p = static_cast<float>(1.0 - static_cast<double>(i) / config.mse_grid);
        const float xmin1 = p * xmin;
        const float xmax1 = p * xmax;
        const auto [scale1, zero1] =
            config.sym ? std::pair((xmax1 - xmin1) / maxq, sym_zero)
                       : detail::asym_grid(xmin1, xmax1, maxq, config.positive_zero);
        double err = 0;
        for (Index c = 0; c < block.cols(); ++c) {
          const float x = block(r, c);
          const float q = grid_value(grid_code(x, scale1, zero1, maxq), scale1, zero1);
          err += std::pow(std::abs(q - x), static_cast<float>(config.mse_norm));
        }
        if (err < best) {
          best = err;
          scale = scale1;
          zero = zero1;
        }
      }
    }
    params.scale(r) = scale;
    params.zero(r) = zero;
  }
  return params;
}

namespace detail {

// Round-to-nearest of `weights` on the grid, one grid per row and group of
// `group_size` columns (resolved, a divisor of in_features): RTN itself, and
// TACQ's cheaper saliency reference.
inline UniformWeights round_to_nearest(const MatrixFRef& weights, int bits,
                                       const GridConfig& config, Index group_size) {
  const float maxq = grid_maxq(bits);
  UniformWeights out;
  out.bits = bits;
  out.group_size = group_size;
  const Index groups = weights.cols() / group_size;
  out.codes.resize(weights.rows(), weights.cols());
  out.scale.resize(groups, weights.rows());
  out.zero.resize(groups, weights.rows());
  for (Index g = 0; g < groups; ++g) {
    const auto block = weights.middleCols(g * group_size, group_size);
    const GridParams params = find_grid_params(block, bits, config);
    out.scale.row(g) = params.scale.transpose();
    out.zero.row(g) = params.zero.transpose();
    for (Index r = 0; r < weights.rows(); ++r)
      for (Index c = 0; c < group_size; ++c)
        out.codes(r, g * group_size + c) = static_cast<std::uint8_t>(
            grid_code(block(r, c), params.scale(r), params.zero(r), maxq));
  }
  return out;
}

}  // namespace detail
}  // namespace lowbit
