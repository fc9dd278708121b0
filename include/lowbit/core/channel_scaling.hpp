// Per-input-channel scaling, shared by AWQ and SmoothQuant. A linear layer
// whose input is X·diag(1/s) computes the same output with W·diag(s); the 1/s
// is folded into the operation that produces X — a LayerNorm or RMSNorm
// (weight and bias divided by s) — or, when there is none, applied to the
// activations. The references divide (x / s) rather than multiplying by 1/s,
// and so do these helpers, so results match them to the last bit.
#pragma once

#include <cmath>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

// The affine parameters of a normalization layer: weight, and bias for a
// LayerNorm (empty for an RMSNorm, which has none).
template <class Scalar>
struct NormParams {
  VectorT<Scalar> weight;
  VectorT<Scalar> bias;

  bool has_bias() const { return bias.size() != 0; }
};

namespace detail {

// base^exponent as torch's pow(tensor, scalar) computes it, since the scale
// formulas of AWQ and SmoothQuant go through it: exponents 0 and 1 are exact,
// 0.5 is sqrt, ±2, 3, -0.5 and -1 are products and reciprocals, anything else
// is pow with the exponent rounded to the tensor's precision.
template <class Scalar>
Scalar torch_pow(Scalar base, double exponent) {
  if (exponent == 0.0) return 1;
  if (exponent == 1.0) return base;
  if (exponent == 0.5) return std::sqrt(base);
  if (exponent == 2.0) return base * base;
  if (exponent == 3.0) return base * base * base;
  if (exponent == -0.5) return 1 / std::sqrt(base);
  if (exponent == -1.0) return 1 / base;
  if (exponent == -2.0) return 1 / (base * base);
  return std::pow(base, static_cast<Scalar>(exponent));
}

template <class Derived>
void require_channel_scales(const Eigen::MatrixBase<Derived>& s, Index channels, const char* who) {
  require(s.size() == channels, who, ": scales has ", s.size(), " entries, expected ", channels,
          " (one per input channel)");
  for (Index j = 0; j < s.size(); ++j) {
    const double v = static_cast<double>(s(j));
    require(v > 0 && v - v == 0.0, who, ": scales must be positive and finite, scales(", j,
            ") = ", v);
  }
}

}  // namespace detail

// W·diag(s): column j of the weight (out x in) multiplied by s(j).
template <class DerivedW, class DerivedS>
MatrixT<typename DerivedW::Scalar> scale_input_channels(const Eigen::MatrixBase<DerivedW>& weights,
                                                        const Eigen::MatrixBase<DerivedS>& s) {
  using Scalar = typename DerivedW::Scalar;
  detail::require_channel_scales(s, weights.cols(), "scale_input_channels");
  MatrixT<Scalar> out = weights;
  for (Index j = 0; j < out.cols(); ++j) out.col(j) *= static_cast<Scalar>(s(j));
  return out;
}

// X·diag(1/s), computed as x / s: the activations a scaled linear expects when
// no preceding operation absorbs 1/s.
template <class DerivedX, class DerivedS>
MatrixT<typename DerivedX::Scalar> divide_input_channels(const Eigen::MatrixBase<DerivedX>& x,
                                                         const Eigen::MatrixBase<DerivedS>& s) {
  using Scalar = typename DerivedX::Scalar;
  detail::require_channel_scales(s, x.cols(), "divide_input_channels");
  MatrixT<Scalar> out = x;
  for (Index j = 0; j < out.cols(); ++j) out.col(j) /= static_cast<Scalar>(s(j));
  return out;
}

// The norm that produces X·diag(1/s) instead of X: weight / s and bias / s.
template <class Scalar, class DerivedS>
NormParams<Scalar> fold_into_norm(const NormParams<Scalar>& norm,
                                  const Eigen::MatrixBase<DerivedS>& s) {
  const Index channels = norm.weight.size();
  detail::require(channels > 0, "fold_into_norm: the norm weight is empty");
  detail::require(!norm.has_bias() || norm.bias.size() == channels, "fold_into_norm: bias has ",
                  norm.bias.size(), " entries, expected 0 (RMSNorm) or ", channels);
  detail::require_channel_scales(s, channels, "fold_into_norm");
  detail::require_finite(norm.weight, "fold_into_norm: norm weight");
  if (norm.has_bias()) detail::require_finite(norm.bias, "fold_into_norm: norm bias");
  NormParams<Scalar> out = norm;
  for (Index j = 0; j < channels; ++j) {
    const Scalar sj = static_cast<Scalar>(s(j));
    out.weight(j) /= sj;
    if (out.has_bias()) out.bias(j) /= sj;
  }
  return out;
}

}  // namespace lowbit
