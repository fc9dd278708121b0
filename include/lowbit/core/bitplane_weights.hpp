// BitPlaneWeights: the one representation every low-bit format converts to.
//   W[r, j] ~= c[g, k, r] + sum_{p < k} c[g, p, r] * b_p[r, j],  g = group of column j
// Plane p of weight (r, j) is bit p of codes(r, j). The coefficients follow the
// official BPDQ `c` layout [groups, k + 1, out] with the bias last. They are
// held in double so that every uniform grid converts exactly: scale * 2^p and
// scale * zero are exact products of floats in double, and the dequantized
// sum rounds once, giving bit for bit the float scale * (code - zero).
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <cstdint>

#include "lowbit/core/detail/grouping.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

namespace lowbit {

struct BitPlaneWeights {
  int planes = 0;        // k, 1..8
  Index group_size = 0;  // input columns per group
  CodeMatrix codes;      // out x in; bit p is plane p
  MatrixD coeffs;        // (groups * (k + 1)) x out; row g * (k + 1) + p, p == k is the bias
  GroupIndex g_idx;      // empty: column j is in group j / group_size

  Index rows() const { return codes.rows(); }
  Index cols() const { return codes.cols(); }
  Index groups() const { return coeffs.rows() / (planes + 1); }
  Index group_of(Index col) const { return detail::group_of(g_idx, group_size, col); }

  double coeff(Index group, int plane, Index row) const {
    return coeffs(group * (planes + 1) + plane, row);
  }
  double& coeff(Index group, int plane, Index row) {
    return coeffs(group * (planes + 1) + plane, row);
  }
  double bias(Index group, Index row) const { return coeff(group, planes, row); }

  void validate() const {
    detail::require_bits(planes, 1, 8, "BitPlaneWeights::planes");
    detail::require_nonempty(codes, "BitPlaneWeights::codes");
    detail::validate_grouping(g_idx, group_size, cols(), "BitPlaneWeights");
    detail::require_shape(coeffs, (cols() / group_size) * (planes + 1), rows(),
                          "BitPlaneWeights::coeffs");
    detail::require_finite(coeffs, "BitPlaneWeights::coeffs");
    const unsigned limit = 1u << planes;
    for (Index r = 0; r < rows(); ++r)
      for (Index c = 0; c < cols(); ++c)
        detail::require(codes(r, c) < limit, "BitPlaneWeights::codes(", r, ", ", c,
                        ") = ", int(codes(r, c)), " has bits above plane ", planes - 1);
  }

  // bias + sum_p c_p b_p, summed in double and rounded to float once.
  MatrixF dequantize() const {
    validate();
    MatrixF w(rows(), cols());
    for (Index c = 0; c < cols(); ++c) {
      const Index g = group_of(c);
      for (Index r = 0; r < rows(); ++r) {
        double value = bias(g, r);
        for (int p = 0; p < planes; ++p)
          if ((codes(r, c) >> p) & 1u) value += coeff(g, p, r);
        w(r, c) = static_cast<float>(value);
      }
    }
    return w;
  }
};

// Lossless: c_p = scale * 2^p, bias = -scale * zero, the same codes and g_idx.
inline BitPlaneWeights to_bitplanes(const UniformWeights& w) {
  w.validate();
  BitPlaneWeights out;
  out.planes = w.bits;
  out.group_size = w.group_size;
  out.codes = w.codes;
  out.g_idx = w.g_idx;
  out.coeffs.resize(w.groups() * (w.bits + 1), w.rows());
  for (Index g = 0; g < w.groups(); ++g)
    for (Index r = 0; r < w.rows(); ++r) {
      const double scale = w.scale(g, r);
      for (int p = 0; p < w.bits; ++p) out.coeff(g, p, r) = scale * static_cast<double>(1u << p);
      out.coeff(g, w.bits, r) = -scale * static_cast<double>(w.zero(g, r));
    }
  return out;
}

// Any-precision: keeps the `keep` most significant planes (the highest
// indices) of the same weights. Each dropped plane is replaced by its expected
// value 1/2, so its coefficient moves half into the bias; the dequantized
// weights then move by at most sum_dropped |c_p| / 2.
inline BitPlaneWeights truncate_planes(const BitPlaneWeights& w, int keep) {
  w.validate();
  detail::require(keep >= 1 && keep <= w.planes, "truncate_planes: keep must be in 1..", w.planes,
                  ", got ", keep);
  const int drop = w.planes - keep;
  BitPlaneWeights out;
  out.planes = keep;
  out.group_size = w.group_size;
  out.g_idx = w.g_idx;
  out.codes = w.codes.unaryExpr(
      [drop](std::uint8_t code) { return static_cast<std::uint8_t>(code >> drop); });
  out.coeffs.resize(w.groups() * (keep + 1), w.rows());
  for (Index g = 0; g < w.groups(); ++g)
    for (Index r = 0; r < w.rows(); ++r) {
      double bias = w.bias(g, r);
      for (int p = 0; p < drop; ++p) bias += 0.5 * w.coeff(g, p, r);
      for (int p = 0; p < keep; ++p) out.coeff(g, p, r) = w.coeff(g, p + drop, r);
      out.coeff(g, keep, r) = bias;
    }
  return out;
}

// Storage cost per weight: k plane bits, k + 1 fp16 coefficients per group
// (the official checkpoints store c in 16 bits), and g_idx when present.
inline double bits_per_weight(const BitPlaneWeights& w) {
  const double g_idx = w.g_idx.empty() ? 0.0 : 32.0 / static_cast<double>(w.rows());
  return w.planes + 16.0 * (w.planes + 1) / static_cast<double>(w.group_size) + g_idx;
}

}  // namespace lowbit
