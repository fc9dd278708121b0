// The W8A8 representation: int8 weights with one scale per output row, and
// int8 activations with one scale per token (dynamic absmax, quantized when
// the activations arrive), and the per-row absmax that produces both.
// kernels/int8_gemm.hpp multiplies the two as integers. Values are limited
// to -127..127, the symmetric absmax levels: the kernels rely on it (no
// -128, so sign tricks and 16-bit pair sums cannot overflow).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

using Int8Matrix = Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The floor SmoothQuant's fake quantization puts under every absmax
// (scale = clamp(absmax, 1e-5) / 127) for weights and activations alike.
inline constexpr float kInt8AbsmaxFloor = 1e-5f;

namespace detail {

// Symmetric absmax step: max(absmax, floor) / qmax. Without a floor an
// all-zero block gets 1 (its values quantize to 0 with any scale).
inline float absmax_scale(float absmax, float qmax, float floor = 0.0f) noexcept {
  const float range = std::max(absmax, floor);
  return range > 0 ? range / qmax : 1.0f;
}

inline void require_int8_levels(const Int8Matrix& values, const char* name) {
  for (Index r = 0; r < values.rows(); ++r)
    for (Index c = 0; c < values.cols(); ++c)
      require(values(r, c) != -128, name, "(", r, ", ", c,
              ") = -128: expected -127..127 (symmetric int8 levels)");
}

}  // namespace detail

// W(r, j) ~= scale(r) * values(r, j).
struct Int8Weights {
  Int8Matrix values;  // out x in, -127..127
  VectorF scale;      // out

  Index rows() const { return values.rows(); }
  Index cols() const { return values.cols(); }

  void validate() const {
    detail::require_nonempty(values, "Int8Weights::values");
    detail::require(scale.size() == rows(), "Int8Weights::scale: expected ", rows(),
                    " entries (one per row), got ", scale.size());
    detail::require_finite(scale, "Int8Weights::scale");
    detail::require_int8_levels(values, "Int8Weights::values");
  }

  MatrixF dequantize() const {
    validate();
    MatrixF w(rows(), cols());
    for (Index r = 0; r < rows(); ++r)
      for (Index c = 0; c < cols(); ++c) w(r, c) = scale(r) * static_cast<float>(values(r, c));
    return w;
  }
};

// From an 8-bit symmetric per-row result (quantize_absmax with bits = 8,
// per row or per tensor): codes are offset by the zero point 128.
inline Int8Weights to_int8_weights(const UniformWeights& q) {
  q.validate();
  detail::require(q.bits == 8, "to_int8_weights: expected 8-bit weights, got ", q.bits, " bits");
  detail::require(q.groups() == 1 && q.g_idx.empty(),
                  "to_int8_weights: expected one group per row, got ", q.groups(), " groups");
  Int8Weights out;
  out.values.resize(q.rows(), q.cols());
  out.scale = q.scale.row(0).transpose();
  for (Index r = 0; r < q.rows(); ++r) {
    detail::require(q.zero(0, r) == 128.0f, "to_int8_weights: row ", r, " has zero point ",
                    q.zero(0, r), ", expected 128 (symmetric absmax)");
    for (Index c = 0; c < q.cols(); ++c) {
      detail::require(q.codes(r, c) != 0, "to_int8_weights: codes(", r, ", ", c,
                      ") = 0 is level -128, outside the symmetric range -127..127");
      out.values(r, c) = static_cast<std::int8_t>(static_cast<int>(q.codes(r, c)) - 128);
    }
  }
  return out;
}

// X(t, j) ~= scale(t) * values(t, j).
struct Int8Activations {
  Int8Matrix values;  // tokens x in, -127..127
  VectorF scale;      // tokens

  Index rows() const { return values.rows(); }
  Index cols() const { return values.cols(); }

  MatrixF dequantize() const {
    MatrixF x(rows(), cols());
    for (Index t = 0; t < rows(); ++t)
      for (Index c = 0; c < cols(); ++c) x(t, c) = scale(t) * static_cast<float>(values(t, c));
    return x;
  }
};

namespace detail {

// One row (a token, or an output row of W), symmetric int8 absmax as
// SmoothQuant's quantize_activation_per_token_absmax and
// quantize_weight_per_channel_absmax both compute it: scale =
// max(max|x|, 1e-5) / 127, q = round-half-even(x / scale). |x / scale| never
// rounds past 127, so no clamp is needed. Requires finite x.
inline float quantize_row_int8(const float* x, Index n, std::int8_t* q) noexcept {
  float absmax = 0;
  for (Index j = 0; j < n; ++j) absmax = std::max(absmax, std::abs(x[j]));
  const float scale = absmax_scale(absmax, 127.0f, kInt8AbsmaxFloor);
  for (Index j = 0; j < n; ++j) q[j] = static_cast<std::int8_t>(std::nearbyint(x[j] / scale));
  return scale;
}

}  // namespace detail

// Per-token int8 quantization into `out`, reusing its storage when the shape
// is unchanged (an engine calls this once per step).
inline void quantize_activations(const MatrixFRef& x, Int8Activations& out) {
  detail::require_nonempty(x, "quantize_activations: x");
  detail::require_finite(x, "quantize_activations: x");
  out.values.resize(x.rows(), x.cols());
  out.scale.resize(x.rows());
  for (Index t = 0; t < x.rows(); ++t)
    out.scale(t) = detail::quantize_row_int8(x.row(t).data(), x.cols(), out.values.row(t).data());
}

inline Int8Activations quantize_activations(const MatrixFRef& x) {
  Int8Activations out;
  quantize_activations(x, out);
  return out;
}

// Int8 weights per output row, symmetric absmax with the 1e-5 floor
// (SmoothQuant's quantize_weight_per_channel_absmax): the W8 of W8A8.
inline Int8Weights int8_absmax_per_row(const MatrixFRef& weights) {
  detail::require_nonempty(weights, "int8_absmax_per_row: weights");
  detail::require_finite(weights, "int8_absmax_per_row: weights");
  Int8Weights out;
  out.values.resize(weights.rows(), weights.cols());
  out.scale.resize(weights.rows());
  for (Index r = 0; r < weights.rows(); ++r)
    out.scale(r) =
        detail::quantize_row_int8(weights.row(r).data(), weights.cols(), out.values.row(r).data());
  return out;
}

}  // namespace lowbit
