// core/detail/parallel.hpp: fixed chunks, every item once, any thread count.
#include <lowbit/core/hessian.hpp>  // first: detail headers refuse to be included alone

#include <lowbit/core/detail/parallel.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(Parallel, ChunksCoverEveryItemOnceWithFixedBoundaries) {
  for (int threads : {1, 2, 3}) {
    const int saved = Eigen::nbThreads();
    Eigen::setNbThreads(threads);
    std::vector<int> seen(1000, 0);
    std::vector<std::pair<Index, Index>> chunks(4);
    detail::parallel_chunks(1000, 256, [&](Index first, Index length) {
      chunks[static_cast<std::size_t>(first / 256)] = {first, length};
      for (Index i = first; i < first + length; ++i) ++seen[static_cast<std::size_t>(i)];
    });
    Eigen::setNbThreads(saved);
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 1000) << threads;
    EXPECT_EQ(chunks,
              (std::vector<std::pair<Index, Index>>{{0, 256}, {256, 256}, {512, 256}, {768, 232}}));
  }
  int calls = 0;
  detail::parallel_for(0, [&](Index) { ++calls; });
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace lowbit
