// SparseOutliers: a few weights kept in (near) full precision beside a
// low-bit dense part (TACQ). Compressed sparse rows: row_ptr (rows + 1),
// int32 column indices sorted within each row, and the values.
//
// The values are the weights themselves, not corrections: dequantization is
// the dense part with these positions replaced. (A kernel that adds a sparse
// term computes value - dense at packing time.) Values are stored as fp16 by
// default, as the paper keeps salient weights in 16 bits; `values` then holds
// exactly the fp16-rounded numbers.
#pragma once

#include <cstdint>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

enum class OutlierPrecision { f16, f32 };

struct SparseOutliers {
  Index rows = 0;
  Index cols = 0;
  std::vector<std::int32_t> row_ptr;  // rows + 1 entries, non-decreasing, row_ptr[0] = 0
  std::vector<std::int32_t> col;      // column of each stored value
  std::vector<float> values;          // representable in `precision`
  OutlierPrecision precision = OutlierPrecision::f16;

  Index nnz() const { return static_cast<Index>(values.size()); }

  void validate() const {
    using detail::require;
    require(rows >= 0 && cols >= 0, "SparseOutliers: negative shape ", rows, " x ", cols);
    require(static_cast<Index>(row_ptr.size()) == rows + 1, "SparseOutliers::row_ptr: expected ",
            rows + 1, " entries, got ", row_ptr.size());
    require(row_ptr.front() == 0, "SparseOutliers::row_ptr[0] must be 0, got ", row_ptr.front());
    require(col.size() == values.size(), "SparseOutliers: ", col.size(), " columns but ",
            values.size(), " values");
    require(static_cast<std::size_t>(row_ptr.back()) == values.size(),
            "SparseOutliers::row_ptr ends at ", row_ptr.back(), ", expected nnz = ", values.size());
    for (Index r = 0; r < rows; ++r) {
      const std::int32_t begin = row_ptr[static_cast<std::size_t>(r)];
      const std::int32_t end = row_ptr[static_cast<std::size_t>(r) + 1];
      require(begin <= end, "SparseOutliers::row_ptr decreases at row ", r);
      for (std::int32_t i = begin; i < end; ++i) {
        const std::int32_t c = col[static_cast<std::size_t>(i)];
        require(c >= 0 && c < cols, "SparseOutliers::col[", i, "] = ", c, " is outside [0, ", cols,
                ")");
        require(i == begin || col[static_cast<std::size_t>(i) - 1] < c,
                "SparseOutliers: columns of row ", r, " must be strictly increasing");
        const float v = values[static_cast<std::size_t>(i)];
        require(v - v == 0.0f, "SparseOutliers::values[", i, "] is not finite");
        require(precision == OutlierPrecision::f32 || half_to_float(float_to_half(v)) == v,
                "SparseOutliers::values[", i, "] = ", v, " is not representable in fp16");
      }
    }
  }

  // Writes the stored values into `dense` (out x in) at their positions.
  void overwrite(MatrixF& dense) const {
    validate();
    detail::require_shape(dense, rows, cols, "SparseOutliers::overwrite: dense");
    for (Index r = 0; r < rows; ++r)
      for (std::int32_t i = row_ptr[static_cast<std::size_t>(r)];
           i < row_ptr[static_cast<std::size_t>(r) + 1]; ++i)
        dense(r, col[static_cast<std::size_t>(i)]) = values[static_cast<std::size_t>(i)];
  }
};

// Builds the CSR of `weights` at the positions where mask != 0, rounding the
// values to fp16 when precision is f16.
inline SparseOutliers sparse_outliers_from_mask(
    const MatrixFRef& weights, const CodeMatrix& mask,
    OutlierPrecision precision = OutlierPrecision::f16) {
  detail::require_shape(mask, weights.rows(), weights.cols(), "sparse_outliers_from_mask: mask");
  detail::require_finite(weights, "sparse_outliers_from_mask: weights");
  SparseOutliers s;
  s.rows = weights.rows();
  s.cols = weights.cols();
  s.precision = precision;
  s.row_ptr.reserve(static_cast<std::size_t>(s.rows) + 1);
  s.row_ptr.push_back(0);
  for (Index r = 0; r < s.rows; ++r) {
    for (Index c = 0; c < s.cols; ++c) {
      if (!mask(r, c)) continue;
      const float v = weights(r, c);
      s.col.push_back(static_cast<std::int32_t>(c));
      s.values.push_back(precision == OutlierPrecision::f16 ? half_to_float(float_to_half(v)) : v);
    }
    detail::require(s.values.size() <= static_cast<std::size_t>(INT32_MAX),
                    "sparse_outliers_from_mask: more than 2^31 outliers");
    s.row_ptr.push_back(static_cast<std::int32_t>(s.values.size()));
  }
  return s;
}

// The positions of the stored values (out x in, 1 = stored): the mask
// sparse_outliers_from_mask was given.
inline CodeMatrix outlier_mask(const SparseOutliers& s) {
  s.validate();
  CodeMatrix mask = CodeMatrix::Zero(s.rows, s.cols);
  for (Index r = 0; r < s.rows; ++r)
    for (std::int32_t i = s.row_ptr[static_cast<std::size_t>(r)];
         i < s.row_ptr[static_cast<std::size_t>(r) + 1]; ++i)
      mask(r, s.col[static_cast<std::size_t>(i)]) = 1;
  return mask;
}

// Storage of the sparse part per dense weight: a value (16 or 32 bits) and an
// int32 column index per outlier, plus the int32 row pointers.
inline double sparse_bits_per_weight(const SparseOutliers& s) {
  if (s.rows == 0 || s.cols == 0) return 0.0;
  const double value_bits = s.precision == OutlierPrecision::f16 ? 16.0 : 32.0;
  const double total = static_cast<double>(s.nnz()) * (value_bits + 32.0) + 32.0 * (s.rows + 1);
  return total / (static_cast<double>(s.rows) * static_cast<double>(s.cols));
}

}  // namespace lowbit
