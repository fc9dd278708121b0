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
// products run single-threaded, as Eigen does not nest its parallelism.
template <class Work>
void parallel_for(Index count, Work&& work) {
#ifdef _OPENMP
  const int threads = static_cast<int>(std::min<Index>(Eigen::nbThreads(), count));
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

}  // namespace lowbit::detail
