// core/int8_weights.hpp: Int8Weights from 8-bit absmax results and from
// per-row absmax, and per-token dynamic activation quantization as
// SmoothQuant's fake_quant does it.
#include <lowbit/core/int8_weights.hpp>
#include <lowbit/quant/absmax.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(Int8Weights, FromAbsmaxPerRow) {
  const MatrixF w = test::random_weights(9, 70, 301);
  const UniformWeights q = quantize_absmax(w).weights;
  const Int8Weights i8 = to_int8_weights(q);
  ASSERT_EQ(i8.rows(), 9);
  ASSERT_EQ(i8.cols(), 70);
  for (Index r = 0; r < 9; ++r) {
    EXPECT_EQ(i8.scale(r), q.scale(0, r));
    for (Index c = 0; c < 70; ++c) EXPECT_EQ(int(i8.values(r, c)), int(q.codes(r, c)) - 128);
  }
  EXPECT_EQ(i8.dequantize(), q.dequantize());
  EXPECT_EQ(i8.values.cwiseAbs().maxCoeff(), 127);  // every row's extreme maps to +-127
  // Per tensor is one group per row too.
  AbsmaxConfig per_tensor;
  per_tensor.granularity = AbsmaxGranularity::per_tensor;
  EXPECT_EQ(to_int8_weights(quantize_absmax(w, per_tensor).weights).dequantize(),
            quantize_absmax(w, per_tensor).weights.dequantize());
}

TEST(Int8Weights, RejectsWhatIsNotSymmetricPerRowInt8) {
  const MatrixF w = test::random_weights(4, 64, 302);
  AbsmaxConfig config;
  config.bits = 4;
  EXPECT_THROW(to_int8_weights(quantize_absmax(w, config).weights), Error);
  config.bits = 8;
  config.granularity = AbsmaxGranularity::per_group;
  config.group_size = 32;
  EXPECT_THROW(to_int8_weights(quantize_absmax(w, config).weights), Error);
  UniformWeights q = quantize_absmax(w).weights;
  q.zero(0, 2) = 127;
  EXPECT_THROW(to_int8_weights(q), Error);
  q = quantize_absmax(w).weights;
  q.codes(1, 5) = 0;  // level -128
  EXPECT_THROW(to_int8_weights(q), Error);
  Int8Weights bad = to_int8_weights(quantize_absmax(w).weights);
  bad.values(0, 0) = -128;
  EXPECT_THROW(bad.validate(), Error);
  bad = to_int8_weights(quantize_absmax(w).weights);
  bad.scale.resize(3);
  EXPECT_THROW(bad.validate(), Error);
}

TEST(Int8Weights, PerRowAbsmaxIsTheSymmetricInt8Grid) {
  MatrixF w(3, 4);
  w << 1.27f, -0.635f, 0.0f, 0.3175f,  //
      0.0f, 0.0f, 0.0f, 0.0f,          // all zero: the 1e-5 floor
      -2.54f, 1.0f, 0.5f, 0.02f;
  const Int8Weights q = int8_absmax_per_row(w);
  EXPECT_EQ(q.scale(0), 1.27f / 127.0f);
  EXPECT_EQ(q.scale(1), 1e-5f / 127.0f);
  EXPECT_EQ(q.scale(2), 2.54f / 127.0f);
  for (Index r = 0; r < 3; ++r)
    for (Index c = 0; c < 4; ++c)
      EXPECT_EQ(q.values(r, c), static_cast<std::int8_t>(std::nearbyint(w(r, c) / q.scale(r))))
          << r << ", " << c;
  EXPECT_EQ(q.values(0, 0), 127);
  EXPECT_EQ(q.values(2, 0), -127);
  EXPECT_TRUE((q.values.row(1).array() == 0).all());
  // The same as 8-bit per-row absmax with the same floor, converted.
  const MatrixF big = test::random_weights(6, 40, 304);
  AbsmaxConfig config;
  config.min_absmax = kInt8AbsmaxFloor;
  const Int8Weights via_uniform = to_int8_weights(quantize_absmax(big, config).weights);
  EXPECT_EQ(int8_absmax_per_row(big).values, via_uniform.values);
  EXPECT_EQ(int8_absmax_per_row(big).scale, via_uniform.scale);
  MatrixF bad = big;
  bad(1, 1) = NAN;
  EXPECT_THROW(int8_absmax_per_row(bad), Error);
  EXPECT_THROW(int8_absmax_per_row(MatrixF(0, 4)), Error);
}

TEST(Int8Weights, AbsmaxFloorAsSmoothQuant) {
  MatrixF w = test::random_weights(3, 16, 303);
  w.row(1) *= 1e-5f;  // absmax below 1e-5: the floor sets the scale
  w.row(2).setZero();
  AbsmaxConfig config;
  config.min_absmax = kInt8AbsmaxFloor;
  const UniformWeights q = quantize_absmax(w, config).weights;
  EXPECT_EQ(q.scale(0, 0), w.row(0).cwiseAbs().maxCoeff() / 127.0f);
  EXPECT_EQ(q.scale(0, 1), 1e-5f / 127.0f);
  EXPECT_EQ(q.scale(0, 2), 1e-5f / 127.0f);
  EXPECT_LT(to_int8_weights(q).values.row(1).cwiseAbs().maxCoeff(), 127);
  EXPECT_TRUE(q.dequantize().row(2).isZero());
}

TEST(Int8Activations, PerTokenDynamicAbsmax) {
  MatrixF x(4, 6);
  x << 127, 0.5f, 1.5f, 2.5f, -0.5f, -126.5f,  // scale 1: exact halves round to even
      0, 0, 0, 0, 0, 0,                        // all zero: scale 1e-5 / 127
      1e-6f, -2e-6f, 0, 0, 0, 0,               // below the floor
      -3, 1, 2, 0.25f, 0, 0;
  const Int8Activations a = quantize_activations(x);
  EXPECT_EQ(a.scale(0), 1.0f);
  const std::vector<int> row0{127, 0, 2, 2, 0, -126};
  for (Index c = 0; c < 6; ++c) EXPECT_EQ(a.values(0, c), row0[static_cast<std::size_t>(c)]);
  EXPECT_EQ(a.scale(1), 1e-5f / 127.0f);
  EXPECT_TRUE((a.values.row(1).array() == 0).all());
  EXPECT_EQ(a.scale(2), 1e-5f / 127.0f);
  EXPECT_EQ(a.values(2, 0), static_cast<std::int8_t>(std::nearbyint(1e-6f / (1e-5f / 127.0f))));
  const float s3 = 3.0f / 127.0f;
  EXPECT_EQ(a.scale(3), s3);
  for (Index c = 0; c < 6; ++c)
    EXPECT_EQ(a.values(3, c), static_cast<std::int8_t>(std::nearbyint(x(3, c) / s3)));
  EXPECT_EQ(a.values(3, 0), -127);
  // The dequantized tokens are within half a step.
  const MatrixF d = a.dequantize();
  for (Index t = 0; t < 4; ++t)
    for (Index c = 0; c < 6; ++c)
      EXPECT_LE(std::abs(d(t, c) - x(t, c)), 0.5f * a.scale(t) * 1.0001f);
}

TEST(Int8Activations, ReusesStorageAndRejectsBadInput) {
  const MatrixF x = test::random_activations(5, 33, 304);
  Int8Activations a;
  quantize_activations(x, a);
  const std::int8_t* storage = a.values.data();
  quantize_activations(MatrixF(x * 2.0f), a);
  EXPECT_EQ(a.values.data(), storage);
  EXPECT_EQ(a.values, quantize_activations(x).values);  // scaling x scales only the scales
  MatrixF bad = x;
  bad(2, 2) = INFINITY;
  EXPECT_THROW(quantize_activations(bad), Error);
  EXPECT_THROW(quantize_activations(MatrixF(0, 4)), Error);
}

}  // namespace
}  // namespace lowbit
