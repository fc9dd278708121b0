// core/detail/parallel.hpp: fixed chunks, every item once, any thread count;
// products bit-identical for any thread count.
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

// One Eigen product sizes its depth blocks by the thread count, so its sums
// change in the last bits between 1 and 2 threads; product_transposed's do
// not, even when the product is a single panel (a team is formed whenever
// Eigen could use threads). Large enough for Eigen to split the product.
TEST(Parallel, ProductTransposedIsBitIdenticalForAnyThreadCount) {
  const MatrixF a = test::random_gaussian(300, 1536, 1), b = test::random_gaussian(200, 1536, 2);
  const MatrixF single_panel = a.topRows(40);
  const int saved = Eigen::nbThreads();
  std::vector<MatrixF> products, panels;
  for (int threads : {1, 2, 3}) {
    Eigen::setNbThreads(threads);
    products.push_back(detail::product_transposed<float>(a, b));
    panels.push_back(detail::product_transposed<float>(single_panel, b));
  }
  Eigen::setNbThreads(saved);
  const MatrixD exact = a.cast<double>() * b.cast<double>().transpose();
  EXPECT_LT((products[0].cast<double>() - exact).cwiseAbs().maxCoeff(), 1e-3);
  for (std::size_t i = 1; i < products.size(); ++i) {
    EXPECT_EQ(products[i], products[0]) << i + 1 << " threads";
    EXPECT_EQ(panels[i], panels[0]) << i + 1 << " threads";
  }
  EXPECT_EQ(panels[0], products[0].topRows(40));
}

}  // namespace
}  // namespace lowbit
