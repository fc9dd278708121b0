// Work split into a FIXED number of independent pieces, run on up to
// Eigen::nbThreads() OpenMP threads when OpenMP is enabled. The pieces never
// depend on the thread count, so the results are bit-identical for any
// number of threads: that is the rule for every parallel loop in lowbit.
#pragma once

#include "lowbit/core/detail/internal_header_check.hpp"

#include <Eigen/Core>
#include <algorithm>

#include "lowbit/core/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::detail {

// Calls work(i) for i in [0, count). `work` must not throw (validate first:
// an exception cannot leave an OpenMP team). Inside the team Eigen's own
// products run single-threaded, as Eigen does not nest its parallelism; the
// team is formed whenever Eigen may use threads, even for a single piece, so
// that a product in `work` never runs on Eigen's thread-count-dependent
// blocking.
template <class Work>
void parallel_for(Index count, Work&& work) {
#ifdef _OPENMP
  const int threads = Eigen::nbThreads();
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads > 1)
#endif
  for (Index i = 0; i < count; ++i) work(i);
}

// Calls work(first, length) for consecutive chunks of `chunk` items (the last
// one shorter) covering [0, count).
template <class Work>
void parallel_chunks(Index count, Index chunk, Work&& work) {
  parallel_for((count + chunk - 1) / chunk, [&](Index i) {
    const Index first = i * chunk;
    work(first, std::min(chunk, count - first));
  });
}

// a * b^T (a: n x k, b: m x k) in fixed panels of rows of a, each an Eigen
// product on one thread. One Eigen product splits its depth into blocks sized
// by the thread count, so its sums (and their last bits) depend on it; these
// do not.
template <class Scalar, class A, class B>
MatrixT<Scalar> product_transposed(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  constexpr Index panel = 64;
  MatrixT<Scalar> out(a.rows(), b.rows());
  parallel_chunks(a.rows(), panel, [&](Index first, Index rows) {
    out.middleRows(first, rows).noalias() = a.middleRows(first, rows) * b.transpose();
  });
  return out;
}

}  // namespace lowbit::detail
