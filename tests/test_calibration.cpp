// core/calibration.hpp: streaming statistics (activations, gradient
// magnitudes) equal the batch formulas.
#include <lowbit/core/calibration.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(Calibration, StreamingEqualsOneBatch) {
  const MatrixF x = test::random_activations(300, 48, 41);
  Calibration streamed(48);
  streamed.add(x.topRows(100));
  streamed.add(x.middleRows(100, 1));
  streamed.add(x.bottomRows(199));
  streamed.add(MatrixF(0, 48));  // empty batches are fine

  const MatrixD xd = x.cast<double>();
  const MatrixD h = 2.0 / 300 * xd.transpose() * xd;
  EXPECT_EQ(streamed.tokens(), 300);
  EXPECT_LE((streamed.hessian() - h).cwiseAbs().maxCoeff(), 1e-12 * h.cwiseAbs().maxCoeff());
  EXPECT_TRUE(streamed.hessian().isApprox(streamed.hessian().transpose(), 0));
  for (Index c = 0; c < 48; ++c) {
    EXPECT_EQ(streamed.max_abs()(c), xd.col(c).cwiseAbs().maxCoeff());
    EXPECT_NEAR(streamed.mean_abs()(c), xd.col(c).cwiseAbs().mean(), 1e-12);
  }
}

// take_hessian makes H in the accumulator's storage: the same H bit for bit,
// once; the other statistics stay.
TEST(Calibration, TakeHessianMovesTheSameHOut) {
  const MatrixF x = test::random_activations(90, 70, 42);
  Calibration c(70);
  c.add(x);
  const MatrixD copy = c.hessian();
  const VectorD max_abs = c.max_abs();
  EXPECT_EQ(c.hessian_diagonal(), VectorD(copy.diagonal()));
  EXPECT_EQ(c.take_hessian(), copy);
  EXPECT_EQ(c.max_abs(), max_abs);
  EXPECT_EQ(c.tokens(), 90);
  test::expect_error_containing([&] { c.hessian(); }, "H was taken");
  test::expect_error_containing([&] { c.take_hessian(); }, "H was taken");
  test::expect_error_containing([&] { c.hessian_diagonal(); }, "H was taken");
  test::expect_error_containing([&] { c.add(x); }, "H was taken");
}

TEST(Calibration, RejectsMisuse) {
  EXPECT_THROW(Calibration(0), Error);
  Calibration c(4);
  EXPECT_THROW(c.hessian(), Error);  // nothing added
  EXPECT_THROW(c.add(MatrixF::Ones(2, 5)), Error);
  MatrixF bad = MatrixF::Ones(2, 4);
  bad(1, 2) = NAN;
  EXPECT_THROW(c.add(bad), Error);
  EXPECT_EQ(c.tokens(), 0);  // a rejected batch leaves the statistics untouched
}

TEST(GradientMagnitudes, SumsAbsoluteGradientsPerSample) {
  const MatrixF a = test::random_gaussian(5, 7, 1), b = test::random_gaussian(5, 7, 2);
  GradientMagnitudes g(5, 7);
  EXPECT_THROW(g.sum(), Error);
  g.add(a);
  g.add(b);
  EXPECT_EQ(g.samples(), 2);
  // |a| + |b| differs from |a + b|: the absolute value is taken per sample.
  EXPECT_EQ(g.sum(), MatrixF(a.cwiseAbs() + b.cwiseAbs()));
  EXPECT_GT((g.sum() - (a + b).cwiseAbs()).cwiseAbs().maxCoeff(), 0.1f);
}

TEST(GradientMagnitudes, LinearLayerGradientIsOutputGradientTimesInput) {
  const MatrixF dy = test::random_gaussian(9, 4, 3), x = test::random_gaussian(9, 6, 4);
  GradientMagnitudes g(4, 6);
  g.add_linear(dy, x);
  // dL/dW[r, c] = sum_t dL/dy[t, r] * x[t, c], summed here term by term.
  for (Index r = 0; r < 4; ++r)
    for (Index c = 0; c < 6; ++c) {
      double sum = 0;
      for (Index t = 0; t < 9; ++t) sum += double(dy(t, r)) * x(t, c);
      EXPECT_NEAR(g.sum()(r, c), std::abs(sum), 1e-5) << r << ", " << c;
    }
}

TEST(GradientMagnitudes, RejectsBadGradients) {
  GradientMagnitudes g(3, 4);
  EXPECT_THROW(g.add(MatrixF::Zero(4, 3)), Error);
  MatrixF bad = MatrixF::Zero(3, 4);
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(g.add(bad), Error);
  bad(1, 2) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(g.add(bad), Error);
  EXPECT_THROW(g.add_linear(MatrixF::Zero(5, 3), MatrixF::Zero(4, 4)),
               Error);  // token counts differ
  EXPECT_THROW(g.add_linear(MatrixF::Zero(5, 2), MatrixF::Zero(5, 4)), Error);  // not out_features
  EXPECT_EQ(g.samples(), 0);
  EXPECT_THROW(GradientMagnitudes(0, 4), Error);
}

}  // namespace
}  // namespace lowbit
