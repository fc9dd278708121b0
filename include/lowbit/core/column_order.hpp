// Column permutations shared by GPTQ act-order and BPDQ group-aware
// reordering (GAR): the reference's sort orders, inverse permutations, and
// applying a permutation to weights (columns) and Hessians (rows and columns).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

using Permutation = std::vector<std::int32_t>;  // new position i holds old column perm[i]

namespace detail {

// The indices that sort `values` in descending order exactly as the reference
// torch.argsort(descending=True) does on CPU: torch 1.13 runs std::sort (not
// stable) on (value, index) pairs comparing values only, so ties (e.g. dead
// columns whose diagonal was set to 1) land in introsort's order, which we
// reproduce by running the same algorithm on the same float keys.
inline Permutation torch_argsort_descending(const std::vector<float>& values) {
  std::vector<std::pair<float, std::int64_t>> keyed(values.size());
  for (std::size_t i = 0; i < values.size(); ++i)
    keyed[i] = {values[i], static_cast<std::int64_t>(i)};
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  Permutation order(values.size());
  for (std::size_t i = 0; i < keyed.size(); ++i)
    order[i] = static_cast<std::int32_t>(keyed[i].second);
  return order;
}

}  // namespace detail

// GPTQ act-order (desc_act): columns by descending diag(H), as the reference
// computes it in float32.
inline Permutation act_order_permutation(const MatrixDRef& hessian) {
  std::vector<float> diag(static_cast<std::size_t>(hessian.rows()));
  for (Index i = 0; i < hessian.rows(); ++i)
    diag[static_cast<std::size_t>(i)] = static_cast<float>(hessian(i, i));
  return detail::torch_argsort_descending(diag);
}

// Group-aware reordering (GAR, GPTQModel gar.py) as BPDQ runs it: columns
// move only inside their group, so group membership never changes.
struct GroupAwareOrder {
  // local[g][i]: offset in group g of its i-th column by descending diag(H)
  std::vector<Permutation> local;
  Permutation groups;   // groups[i]: the original group processed i-th (global_perm)
  Permutation columns;  // columns[i]: the original column processed i-th (final_perm)
};

// local: torch.sort(descending) of each group's float diagonal (not stable on
// CPU: the same introsort as detail::torch_argsort_descending); groups: a STABLE
// descending argsort of each group's largest diagonal entry; columns: group
// groups[i]'s local order, offset to its first column, for i = 0, 1, ...
inline GroupAwareOrder group_aware_order(const MatrixDRef& hessian, Index group_size) {
  const Index n = hessian.rows();
  detail::require(n > 0 && hessian.cols() == n,
                  "group_aware_order: H must be square and non-empty, got ", hessian.rows(), " x ",
                  hessian.cols());
  detail::require(group_size > 0 && n % group_size == 0, "group_aware_order: group_size ",
                  group_size, " must be a positive divisor of in_features = ", n);
  const Index groups = n / group_size;
  GroupAwareOrder order;
  std::vector<float> group_max(static_cast<std::size_t>(groups));
  for (Index g = 0; g < groups; ++g) {
    std::vector<float> diag(static_cast<std::size_t>(group_size));
    for (Index i = 0; i < group_size; ++i)
      diag[static_cast<std::size_t>(i)] =
          static_cast<float>(hessian(g * group_size + i, g * group_size + i));
    order.local.push_back(detail::torch_argsort_descending(diag));
    group_max[static_cast<std::size_t>(g)] = diag[static_cast<std::size_t>(order.local.back()[0])];
  }
  order.groups.resize(static_cast<std::size_t>(groups));
  for (std::size_t g = 0; g < order.groups.size(); ++g)
    order.groups[g] = static_cast<std::int32_t>(g);
  std::stable_sort(order.groups.begin(), order.groups.end(), [&](std::int32_t a, std::int32_t b) {
    return group_max[static_cast<std::size_t>(a)] > group_max[static_cast<std::size_t>(b)];
  });
  order.columns.reserve(static_cast<std::size_t>(n));
  for (std::int32_t g : order.groups)
    for (std::int32_t i : order.local[static_cast<std::size_t>(g)])
      order.columns.push_back(static_cast<std::int32_t>(g * group_size + i));
  return order;
}

inline Permutation inverse_permutation(const Permutation& perm) {
  Permutation inverse(perm.size(), -1);
  for (std::size_t i = 0; i < perm.size(); ++i) {
    const std::int32_t p = perm[i];
    detail::require(p >= 0 && static_cast<std::size_t>(p) < perm.size() &&
                        inverse[static_cast<std::size_t>(p)] < 0,
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
  Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(
      m.rows(), m.cols());
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

namespace detail {

// permute_symmetric in place, for the orders the Hessian prologue computes
// (a valid permutation of h's size): rows moved along the permutation's
// cycles with one row of scratch, then each row gathered.
inline void permute_symmetric_in_place(MatrixD& h, const Permutation& perm) {
  const auto at = [&](Index i) { return static_cast<Index>(perm[static_cast<std::size_t>(i)]); };
  std::vector<bool> placed(perm.size(), false);
  Eigen::RowVectorXd row(h.cols());
  for (Index start = 0; start < h.rows(); ++start) {
    if (placed[static_cast<std::size_t>(start)]) continue;
    row = h.row(start);
    Index i = start;
    for (; at(i) != start; i = at(i)) {
      h.row(i) = h.row(at(i));
      placed[static_cast<std::size_t>(i)] = true;
    }
    h.row(i) = row;
    placed[static_cast<std::size_t>(i)] = true;
  }
  for (Index i = 0; i < h.rows(); ++i) {
    row = h.row(i);
    for (Index j = 0; j < h.cols(); ++j) h(i, j) = row(at(j));
  }
}

}  // namespace detail
}  // namespace lowbit
