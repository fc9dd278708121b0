// Copying one strict triangle of a square matrix onto the other, in place:
// how a Hessian stored as one triangle (Calibration's sum X^T X, or the
// untouched half beside an in-place Cholesky factor) becomes whole again
// without a second in x in matrix.
#pragma once

#include "lowbit/core/detail/internal_header_check.hpp"

#include <Eigen/Core>
#include <algorithm>

#include "lowbit/core/types.hpp"

namespace lowbit::detail {

// m's strict upper triangle becomes the transpose of its strict lower one
// (`from_lower`), or the other way round. Tile by tile: a column walk over a
// large row-major matrix is slow.
inline void mirror_triangle(Eigen::Ref<MatrixD> m, bool from_lower) {
  constexpr Index tile = 64;
  const Index n = m.rows();
  for (Index i = 0; i < n; i += tile)
    for (Index j = 0; j <= i; j += tile) {
      const Index rows = std::min(tile, n - i), cols = std::min(tile, n - j);
      auto lower = m.block(i, j, rows, cols);  // on or below the diagonal
      auto upper = m.block(j, i, cols, rows);
      if (i != j) {
        if (from_lower)
          upper = lower.transpose();
        else
          lower = upper.transpose();
        continue;
      }
      for (Index r = 1; r < rows; ++r)  // a diagonal tile: element by element
        for (Index c = 0; c < r; ++c) {
          if (from_lower)
            lower(c, r) = lower(r, c);
          else
            lower(r, c) = lower(c, r);
        }
    }
}

}  // namespace lowbit::detail
