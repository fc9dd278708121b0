// UniformWeights: integer codes on a uniform grid with a scale and zero point
// per (group, row). The result of round-to-nearest, absmax, GPTQ and AWQ.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <cmath>
#include <cstdint>

#include "lowbit/core/detail/grouping.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

struct UniformWeights {
  int bits = 0;          // 1..8; codes lie in [0, 2^bits)
  Index group_size = 0;  // input columns per group (in_features for one group per row)
  CodeMatrix codes;      // out x in
  MatrixF scale;         // groups x out (the checkpoint layout [groups, out])
  MatrixF zero;          // groups x out, integral values
  GroupIndex g_idx;      // empty: column j is in group j / group_size

  Index rows() const { return codes.rows(); }
  Index cols() const { return codes.cols(); }
  Index groups() const { return scale.rows(); }
  Index group_of(Index col) const { return detail::group_of(g_idx, group_size, col); }

  // Throws lowbit::Error naming the first inconsistency.
  void validate() const {
    detail::require_bits(bits, 1, 8, "UniformWeights::bits");
    detail::require_nonempty(codes, "UniformWeights::codes");
    detail::validate_grouping(g_idx, group_size, cols(), "UniformWeights");
    const Index expected_groups = cols() / group_size;
    detail::require_shape(scale, expected_groups, rows(), "UniformWeights::scale");
    detail::require_shape(zero, expected_groups, rows(), "UniformWeights::zero");
    detail::require_finite(scale, "UniformWeights::scale");
    detail::require_finite(zero, "UniformWeights::zero");
    const unsigned limit = 1u << bits;
    for (Index r = 0; r < rows(); ++r)
      for (Index c = 0; c < cols(); ++c)
        detail::require(codes(r, c) < limit, "UniformWeights::codes(", r, ", ", c,
                        ") = ", int(codes(r, c)), " does not fit in ", bits, " bits");
  }

  // scale * (code - zero), computed in float exactly as the reference does.
  MatrixF dequantize() const {
    validate();
    MatrixF w(rows(), cols());
    for (Index c = 0; c < cols(); ++c) {
      const Index g = group_of(c);
      for (Index r = 0; r < rows(); ++r)
        w(r, c) = scale(g, r) * (static_cast<float>(codes(r, c)) - zero(g, r));
    }
    return w;
  }
};

// Storage cost per weight: the codes, an fp16 scale and a `bits`-wide zero
// point per group, and the int32 g_idx amortized over the rows when present.
inline double bits_per_weight(const UniformWeights& w) {
  const double per_group = 16.0 + w.bits;
  const double g_idx = w.g_idx.empty() ? 0.0 : 32.0 / static_cast<double>(w.rows());
  return w.bits + per_group / static_cast<double>(w.group_size) + g_idx;
}

}  // namespace lowbit
