// core/detail/error_feedback.hpp: the transposed-layout error-feedback primitives
// against the row-major formulas of the reference, the panel split, and the
// tiled transpose.
#include <lowbit/quant/gptq.hpp>  // first: detail headers refuse to be included alone

#include <lowbit/core/detail/error_feedback.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(ErrorFeedback, InBlockFeedbackIsTheReferenceRankOneUpdate) {
  // Reference (row-major W1, out x width): W1[:, k+1:] -= err (x) U[k, k+1:].
  const Index out = 19, width = 13, k = 4;
  const MatrixF w1 = test::random_weights(out, width, 501);
  const MatrixF u = test::random_weights(width, width, 502, 1.0f);
  const VectorF err = test::random_weights(out, 1, 503, 1.0f);
  MatrixF expected = w1;
  for (Index j = k + 1; j < width; ++j) expected.col(j) -= err * u(k, j);
  MatrixF block_t = w1.transpose();
  detail::feed_back_in_block(block_t, k, u.row(k).transpose(), err.transpose());
  EXPECT_EQ(MatrixF(block_t.transpose()), expected);
}

TEST(ErrorFeedback, BlockPropagationIsTheReferenceProduct) {
  // Reference: W[:, i2:] -= Err1 . U[i1:i2, i2:], with a depth past one slice.
  for (Index width : {1, 128, 300}) {
    const Index out = 37, rest = 70;
    const MatrixF w_rest = test::random_weights(out, rest, 511);
    const MatrixF err = test::random_weights(out, width, 512, 1.0f);
    const MatrixF u = test::random_weights(width, rest, 513, 1.0f);
    const MatrixD expected = w_rest.cast<double>() - err.cast<double>() * u.cast<double>();
    MatrixF rest_t = w_rest.transpose();
    detail::propagate_block_errors(rest_t, u, err.transpose());
    EXPECT_LE(test::max_rel_diff(MatrixF(rest_t.transpose()), expected), 1e-5) << width;
  }
  MatrixF empty(0, 5);
  EXPECT_NO_THROW(detail::propagate_block_errors(empty, MatrixF(3, 0), MatrixF(3, 5)));
}

TEST(ErrorFeedback, PanelsCoverEveryOutputOnce) {
  for (Index outputs : {1, 255, 256, 257, 1000}) {
    std::vector<int> seen(static_cast<std::size_t>(outputs), 0);
    detail::for_each_panel(outputs, [&](Index first, Index count) {
      EXPECT_LE(count, detail::error_feedback_panel);
      for (Index r = first; r < first + count; ++r) ++seen[static_cast<std::size_t>(r)];
    });
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), outputs);
    EXPECT_EQ(detail::panel_count(outputs), (outputs + 255) / 256);
  }
}

TEST(ErrorFeedback, TiledTransposeIsTheTranspose) {
  for (Index rows : {1, 31, 32, 70}) {
    const MatrixF m = test::random_weights(rows, 45, 521);
    MatrixF t;
    detail::transpose_tiled(t, m);
    EXPECT_EQ(t, MatrixF(m.transpose())) << rows;
    const CodeMatrix codes = (m.array() > 0).cast<std::uint8_t>();
    CodeMatrix codes_t;
    detail::transpose_tiled(codes_t, codes);
    EXPECT_EQ(codes_t, CodeMatrix(codes.transpose())) << rows;
  }
}

}  // namespace
}  // namespace lowbit
