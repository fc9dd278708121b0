// Column permutations shared by GPTQ act-order and BPDQ group-aware
// reordering: the reference's sort order, inverse permutations, and applying
// a permutation to weights (columns) and Hessians (rows and columns).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

using Permutation = std::vector<std::int32_t>;  // new position i holds old column perm[i]

// The indices that sort `values` in descending order exactly as the reference
// torch.argsort(descending=True) does on CPU: torch 1.13 runs std::sort (not
// stable) on (value, index) pairs comparing values only, so ties (e.g. dead
// columns whose diagonal was set to 1) land in introsort's order, which we
// reproduce by running the same algorithm on the same float keys.
inline Permutation torch_argsort_descending(const std::vector<float>& values) {
  std::vector<std::pair<float, std::int64_t>> keyed(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) keyed[i] = {values[i], static_cast<std::int64_t>(i)};
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  Permutation order(values.size());
  for (std::size_t i = 0; i < keyed.size(); ++i) order[i] = static_cast<std::int32_t>(keyed[i].second);
  return order;
}

// GPTQ act-order (desc_act): columns by descending diag(H), as the reference
// computes it in float32.
inline Permutation act_order_permutation(const MatrixDRef& hessian) {
  std::vector<float> diag(static_cast<std::size_t>(hessian.rows()));
  for (Index i = 0; i < hessian.rows(); ++i) diag[static_cast<std::size_t>(i)] = static_cast<float>(hessian(i, i));
  return torch_argsort_descending(diag);
}

inline Permutation inverse_permutation(const Permutation& perm) {
  Permutation inverse(perm.size(), -1);
  for (std::size_t i = 0; i < perm.size(); ++i) {
    const std::int32_t p = perm[i];
    detail::require(p >= 0 && static_cast<std::size_t>(p) < perm.size() && inverse[static_cast<std::size_t>(p)] < 0,
                    "inverse_permutation: not a permutation of 0..", perm.size() - 1);
    inverse[static_cast<std::size_t>(p)] = static_cast<std::int32_t>(i);
  }
  return inverse;
}

// out(:, i) = m(:, perm[i])
template <class Derived>
Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>
permute_columns(const Eigen::MatrixBase<Derived>& m, const Permutation& perm) {
  detail::require(static_cast<Index>(perm.size()) == m.cols(), "permute_columns: permutation of ",
                  perm.size(), " columns for a matrix with ", m.cols());
  Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(m.rows(), m.cols());
  for (Index r = 0; r < m.rows(); ++r)  // row by row: a gather within each contiguous row
    for (Index i = 0; i < m.cols(); ++i) out(r, i) = m(r, perm[static_cast<std::size_t>(i)]);
  return out;
}

// out(i, j) = h(perm[i], perm[j]): the Hessian of the permuted columns.
inline MatrixD permute_symmetric(const MatrixDRef& h, const Permutation& perm) {
  detail::require(static_cast<Index>(perm.size()) == h.rows() && h.rows() == h.cols(),
                  "permute_symmetric: permutation of ", perm.size(), " for a ", h.rows(), " x ",
                  h.cols(), " matrix");
  MatrixD out(h.rows(), h.cols());
  for (Index i = 0; i < h.rows(); ++i)
    for (Index j = 0; j < h.cols(); ++j)
      out(i, j) = h(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(j)]);
  return out;
}

}  // namespace lowbit
