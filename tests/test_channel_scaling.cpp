// core/channel_scaling.hpp: W·diag(s), X·diag(1/s), folding 1/s into a norm,
// and torch's pow special cases.
#include <lowbit/core/channel_scaling.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(ChannelScaling, ScaledLinearSeesTheSameOutput) {
  const MatrixF w = test::random_weights(6, 40, 201);
  const MatrixF x = test::random_activations(9, 40, 202);
  VectorF s(40);
  for (Index j = 0; j < 40; ++j) s(j) = 0.25f + 0.1f * static_cast<float>(j);
  const MatrixF ws = scale_input_channels(w, s);
  const MatrixF xs = divide_input_channels(x, s);
  for (Index j = 0; j < 40; ++j) {
    EXPECT_EQ(ws.col(j), w.col(j) * s(j));
    for (Index t = 0; t < 9; ++t)
      EXPECT_EQ(xs(t, j), x(t, j) / s(j));  // a division, as the references
  }
  const MatrixD exact = x.cast<double>() * w.cast<double>().transpose();
  EXPECT_LE(test::max_rel_diff(xs.cast<double>() * ws.cast<double>().transpose(), exact), 1e-6);
}

TEST(ChannelScaling, FoldsIntoLayerNormAndRmsNorm) {
  NormParams<double> layer_norm{VectorD::LinSpaced(5, 0.5, 1.5), VectorD::LinSpaced(5, -0.2, 0.2)};
  const VectorD s = VectorD::LinSpaced(5, 1.0, 3.0);
  const NormParams<double> folded = fold_into_norm(layer_norm, s);
  EXPECT_EQ(folded.weight, layer_norm.weight.cwiseQuotient(s));
  EXPECT_EQ(folded.bias, layer_norm.bias.cwiseQuotient(s));
  NormParams<float> rms_norm{VectorF::Constant(5, 2.0f), VectorF()};
  const NormParams<float> rms = fold_into_norm(rms_norm, s.cast<float>());
  EXPECT_FALSE(rms.has_bias());
  EXPECT_EQ(rms.weight, VectorF::Constant(5, 2.0f).cwiseQuotient(s.cast<float>()));
}

TEST(ChannelScaling, TorchPowSpecialCases) {
  const float x = 0.3f;
  EXPECT_EQ(detail::torch_pow(x, 0.0), 1.0f);
  EXPECT_EQ(detail::torch_pow(x, 1.0), x);
  EXPECT_EQ(detail::torch_pow(x, 0.5), std::sqrt(x));
  EXPECT_EQ(detail::torch_pow(x, 2.0), x * x);
  EXPECT_EQ(detail::torch_pow(x, -1.0), 1.0f / x);
  // Other exponents are rounded to the tensor's precision first: 1 - 0.8 is
  // 0.19999999999999996 in double, 0.2f in float.
  EXPECT_EQ(detail::torch_pow(x, 1 - 0.8), std::pow(x, 0.2f));
  EXPECT_EQ(detail::torch_pow(double(x), 1 - 0.8), std::pow(double(x), 1 - 0.8));
}

TEST(ChannelScaling, BadScalesThrow) {
  const MatrixF w = MatrixF::Ones(2, 3);
  EXPECT_THROW(scale_input_channels(w, VectorF::Ones(4)), Error);
  EXPECT_THROW(divide_input_channels(w, VectorF::Zero(3)), Error);
  VectorF s = VectorF::Ones(3);
  s(1) = NAN;
  EXPECT_THROW(scale_input_channels(w, s), Error);
  NormParams<float> norm{VectorF::Ones(3), VectorF::Ones(2)};
  EXPECT_THROW(fold_into_norm(norm, VectorF::Ones(3)), Error);
  norm.bias = VectorF();
  EXPECT_THROW(fold_into_norm(norm, VectorF::Ones(2)), Error);
  EXPECT_THROW(fold_into_norm(NormParams<float>{}, VectorF::Ones(2)), Error);
  NormParams<float> nan_weight{VectorF::Ones(3), VectorF()};  // refused, not folded into NaN
  nan_weight.weight(2) = NAN;
  test::expect_error_containing([&] { fold_into_norm(nan_weight, VectorF::Ones(3)); },
                                "fold_into_norm: norm weight: expected finite values");
  NormParams<float> inf_bias{VectorF::Ones(3), VectorF::Ones(3)};
  inf_bias.bias(0) = INFINITY;
  test::expect_error_containing([&] { fold_into_norm(inf_bias, VectorF::Ones(3)); },
                                "fold_into_norm: norm bias: expected finite values");
}

}  // namespace
}  // namespace lowbit
