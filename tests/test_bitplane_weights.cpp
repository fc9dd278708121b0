// core/bitplane_weights.hpp: lossless conversion from uniform grids, plane
// truncation (any-precision), validation.
#include <lowbit/core/bitplane_weights.hpp>
#include <lowbit/quant/absmax.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(BitPlaneWeights, UniformConvertsBitForBit) {
  const MatrixF w = test::random_weights(37, 192, 21);
  for (int bits = 1; bits <= 8; ++bits)
    for (bool sym : {false, true})
      for (int group : {-1, 64, 32}) {
        SCOPED_TRACE(testing::Message() << "bits " << bits << " sym " << sym << " group " << group);
        RtnConfig config;
        config.bits = bits;
        config.grid.sym = sym;
        config.group_size = group;
        const UniformWeights q = quantize_rtn(w, config).weights;
        const BitPlaneWeights planes = to_bitplanes(q);
        EXPECT_EQ(planes.planes, bits);
        // Identical floats, not merely close.
        EXPECT_TRUE((planes.dequantize().array() == q.dequantize().array()).all());
      }
}

TEST(BitPlaneWeights, ConversionKeepsActOrderGroups) {
  const MatrixF w = test::random_weights(8, 64, 22);
  RtnConfig config;
  config.bits = 3;
  config.group_size = 16;
  UniformWeights q = quantize_rtn(w, config).weights;
  q.g_idx.resize(64);
  for (int j = 0; j < 64; ++j)
    q.g_idx[static_cast<std::size_t>(j)] = (j * 7) % 64 / 16;  // a permuted grouping
  const BitPlaneWeights planes = to_bitplanes(q);
  EXPECT_EQ(planes.g_idx, q.g_idx);
  EXPECT_TRUE((planes.dequantize().array() == q.dequantize().array()).all());
}

TEST(BitPlaneWeights, AbsmaxConvertsBitForBit) {
  const MatrixF w = test::random_weights(9, 128, 23);
  AbsmaxConfig config;
  config.bits = 8;
  const UniformWeights q = quantize_absmax(w, config).weights;
  EXPECT_TRUE((to_bitplanes(q).dequantize().array() == q.dequantize().array()).all());
}

TEST(BitPlaneWeights, TruncationStaysWithinHalfTheDroppedCoefficients) {
  const MatrixF w = test::random_weights(16, 128, 24);
  RtnConfig config;
  config.bits = 4;
  config.group_size = 64;
  const BitPlaneWeights full = to_bitplanes(quantize_rtn(w, config).weights);
  const MatrixF full_w = full.dequantize();
  for (int keep = 1; keep <= 4; ++keep) {
    const BitPlaneWeights cut = truncate_planes(full, keep);
    EXPECT_EQ(cut.planes, keep);
    const MatrixF cut_w = cut.dequantize();
    for (Index r = 0; r < 16; ++r)
      for (Index c = 0; c < 128; ++c) {
        double bound = 1e-6;
        for (int p = 0; p < 4 - keep; ++p) bound += 0.5 * std::abs(full.coeff(c / 64, p, r));
        EXPECT_LE(std::abs(cut_w(r, c) - full_w(r, c)), bound) << r << ", " << c;
      }
  }
  // Keeping every plane is the identity; dropping planes raises the error.
  EXPECT_TRUE((truncate_planes(full, 4).dequantize().array() == full_w.array()).all());
  const double err4 = (full_w - w).norm();
  const double err2 = (truncate_planes(full, 2).dequantize() - w).norm();
  EXPECT_GT(err2, err4);
}

TEST(BitPlaneWeights, TruncatedUniformEqualsTheCoarserGridAtItsMidpoints) {
  // Dropping d planes of a uniform grid leaves steps of scale * 2^d, offset by
  // the mean of the dropped planes, scale * (2^d - 1) / 2.
  const MatrixF w = test::random_weights(4, 32, 25);
  RtnConfig config;
  config.bits = 4;
  const UniformWeights q = quantize_rtn(w, config).weights;
  const MatrixF cut = truncate_planes(to_bitplanes(q), 2).dequantize();
  for (Index r = 0; r < 4; ++r)
    for (Index c = 0; c < 32; ++c) {
      const double s = q.scale(0, r);
      const double expected = s * ((q.codes(r, c) >> 2) * 4.0 + 1.5 - q.zero(0, r));
      EXPECT_NEAR(cut(r, c), expected, 1e-6 * std::abs(s) * 16);
    }
}

TEST(BitPlaneWeights, RejectsInconsistentShapes) {
  BitPlaneWeights b = to_bitplanes(quantize_rtn(test::random_weights(4, 32, 26)).weights);
  EXPECT_THROW(truncate_planes(b, 0), Error);
  EXPECT_THROW(truncate_planes(b, 5), Error);
  b.coeffs.conservativeResize(b.coeffs.rows() - 1, Eigen::NoChange);
  EXPECT_THROW(b.validate(), Error);
  b = to_bitplanes(quantize_rtn(test::random_weights(4, 32, 26)).weights);
  b.planes = 2;  // codes use 4 bits
  EXPECT_THROW(b.validate(), Error);
}

TEST(BitPlaneWeights, BitsPerWeightCountsCoefficients) {
  RtnConfig config;
  config.bits = 2;
  config.group_size = 64;
  const BitPlaneWeights b =
      to_bitplanes(quantize_rtn(test::random_weights(4, 128, 27), config).weights);
  EXPECT_DOUBLE_EQ(bits_per_weight(b), 2 + 16.0 * 3 / 64);
}

}  // namespace
}  // namespace lowbit
