// Matrix types shared by every layer, the precision rule, and the group-size
// convention.
//
// Precision: weights, activations and data shaped like the weights (TACQ's
// gradient magnitudes) are float; statistics over the input channels (the
// Hessian proxy H, max|x|, mean|x|) are double, as Calibration returns them,
// and every entry that takes statistics takes them in double. AWQ and
// SmoothQuant also have all-double overloads (weights and activations in
// double), because the references' float64 runs that the golden files pin
// need them. Numerically delicate steps inside (Cholesky, small ridge
// systems) use double whatever the inputs.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

#include "lowbit/core/error.hpp"

namespace lowbit {

using Index = Eigen::Index;

// Weights are out_features x in_features and activations tokens x in_features,
// both row-major so that a row of W (one output) and a token are contiguous.
using MatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using CodeMatrix = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using VectorF = Eigen::VectorXf;
using VectorD = Eigen::VectorXd;

// The same, for code templated on the scalar type (float or double).
template <class Scalar>
using MatrixT = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar>
using VectorT = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

// Read-only views accepted at the API boundary. A column-major argument binds
// through a temporary row-major copy.
using MatrixFRef = Eigen::Ref<const MatrixF>;
using MatrixDRef = Eigen::Ref<const MatrixD>;
template <class Scalar>
using MatrixRef = Eigen::Ref<const MatrixT<Scalar>>;
template <class Scalar>
using VectorRef = Eigen::Ref<const VectorT<Scalar>>;

// Column-to-group map: g_idx[j] is the group of input column j.
using GroupIndex = std::vector<std::int32_t>;

namespace detail {

// Public configs use group_size = -1 for "one group per row"; stored weights
// always hold the resolved number of columns per group.
inline Index resolve_group_size(int group_size, Index cols, const char* name = "group_size") {
  require(cols > 0, name, ": the matrix has no columns");
  if (group_size == -1) return cols;
  require(group_size > 0 && cols % group_size == 0, name,
          ": expected -1 (one group per row) or a positive divisor of in_features = ", cols,
          ", got ", group_size);
  return group_size;
}

}  // namespace detail
}  // namespace lowbit
