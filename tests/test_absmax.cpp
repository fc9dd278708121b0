// quant/absmax.hpp: symmetric absmax at every granularity.
#include <lowbit/quant/absmax.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(Absmax, PerRowInt8MatchesTheFormula) {
  const MatrixF w = test::random_weights(7, 100, 31);
  const UniformWeights q = quantize_absmax(w).weights;  // int8 per row
  ASSERT_EQ(q.bits, 8);
  ASSERT_EQ(q.groups(), 1);
  const MatrixF d = q.dequantize();
  for (Index r = 0; r < 7; ++r) {
    const float absmax = w.row(r).cwiseAbs().maxCoeff();
    EXPECT_EQ(q.scale(0, r), absmax / 127.0f);
    EXPECT_EQ(q.zero(0, r), 128.0f);
    for (Index c = 0; c < 100; ++c) {
      EXPECT_EQ(d(r, c), q.scale(0, r) * std::nearbyint(w(r, c) / q.scale(0, r)));
      EXPECT_GE(q.codes(r, c), 1);  // levels -127..127: code 0 (-128) is never used
    }
    // The extreme value is represented exactly up to one rounding.
    Index at;
    w.row(r).cwiseAbs().maxCoeff(&at);
    EXPECT_NEAR(d(r, at), w(r, at), 1e-6f * absmax);
  }
}

TEST(Absmax, Int4PerGroupAndPerTensor) {
  MatrixF w = test::random_weights(6, 64, 32);
  w.leftCols(32) *= 10.0f;
  AbsmaxConfig config;
  config.bits = 4;
  config.granularity = AbsmaxGranularity::per_group;
  config.group_size = 32;
  const UniformWeights grouped = quantize_absmax(w, config).weights;
  ASSERT_EQ(grouped.groups(), 2);
  for (Index r = 0; r < 6; ++r) {
    EXPECT_EQ(grouped.scale(0, r), w.block(r, 0, 1, 32).cwiseAbs().maxCoeff() / 7.0f);
    EXPECT_EQ(grouped.scale(1, r), w.block(r, 32, 1, 32).cwiseAbs().maxCoeff() / 7.0f);
  }
  config.granularity = AbsmaxGranularity::per_tensor;
  const UniformWeights tensor = quantize_absmax(w, config).weights;
  EXPECT_TRUE((tensor.scale.array() == w.cwiseAbs().maxCoeff() / 7.0f).all());
  EXPECT_LT((grouped.dequantize() - w).norm(), (tensor.dequantize() - w).norm());
}

TEST(Absmax, ZeroRowsAndBadArguments) {
  MatrixF w = MatrixF::Zero(2, 8);
  const UniformWeights q = quantize_absmax(w).weights;
  EXPECT_TRUE(q.dequantize().isZero());
  AbsmaxConfig config;
  config.bits = 1;
  EXPECT_THROW(quantize_absmax(w, config), Error);
  config.bits = 4;
  config.granularity = AbsmaxGranularity::per_group;
  config.group_size = 3;
  EXPECT_THROW(quantize_absmax(w, config), Error);
  w(0, 0) = INFINITY;
  EXPECT_THROW(quantize_absmax(w), Error);
}

}  // namespace
}  // namespace lowbit
