// quant/rtn.hpp: round-to-nearest on the reference grid, checked against the
// golden outputs of IST-DASLab gptq quant.py (Quantizer) and on properties.
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

void check_rtn_golden(const io::SafetensorsReader& f, const std::string& dir) {
  RtnConfig config;
  config.bits = test::meta_int(f, "bits");
  config.grid.sym = test::meta_bool(f, "sym");
  config.grid.mse = test::meta_bool(f, "mse");
  config.grid.mse_norm = test::meta_double(f, "mse_norm");
  config.grid.mse_grid = test::meta_int(f, "mse_grid");
  config.grid.mse_max_shrink = test::meta_double(f, "mse_maxshrink");
  const MatrixF w = test::golden_input(f, dir, "W");
  const UniformWeights q = quantize_rtn(w, config).weights;

  const std::vector<std::int32_t> qint = f.ints("qint");
  const std::vector<float> scale = f.floats("scale");  // [out, 1]
  const std::vector<float> zero = f.floats("zero");
  ASSERT_EQ(qint.size(), static_cast<std::size_t>(w.size()));
  ASSERT_EQ(q.groups(), 1);
  int code_mismatches = 0;
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c)
      code_mismatches += q.codes(r, c) != qint[static_cast<std::size_t>(r * w.cols() + c)];
  EXPECT_EQ(code_mismatches, 0);
  for (Index r = 0; r < w.rows(); ++r) {
    EXPECT_EQ(q.zero(0, r), zero[static_cast<std::size_t>(r)]) << "row " << r;
    EXPECT_NEAR(q.scale(0, r), scale[static_cast<std::size_t>(r)], 1e-6 * std::abs(scale[r]))
        << "row " << r;
  }
  // The reference Q, from its own codes and parameters: scale * (qint - zero).
  MatrixF expected(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index c = 0; c < w.cols(); ++c)
      expected(r, c) = scale[r] * (static_cast<float>(qint[r * w.cols() + c]) - zero[r]);
  if (f.contains("Q")) {
    EXPECT_EQ(expected, f.matrix("Q")) << "the reference Q formula";
  }
  EXPECT_LE(test::max_rel_diff(q.dequantize(), expected), 1e-6);
}

TEST(RtnGolden, BundledFilesMatchTheReference) {
  test::for_each_golden("rtn_", false, check_rtn_golden);
}

TEST(RtnGolden, FullGoldenDirectoryMatchesTheReference) {
  test::for_each_golden("rtn_", true, check_rtn_golden);
}

TEST(Rtn, GroupsUseTheirOwnRange) {
  // Two groups with very different magnitudes: per-group scales follow each.
  MatrixF w = test::random_weights(5, 64, 11);
  w.rightCols(32) *= 100.0f;
  RtnConfig config;
  config.bits = 4;
  config.group_size = 32;
  const UniformWeights q = quantize_rtn(w, config).weights;
  ASSERT_EQ(q.groups(), 2);
  for (Index r = 0; r < 5; ++r) EXPECT_GT(q.scale(1, r), 20 * q.scale(0, r));
  // Asymmetric RTN error is at most half a step per element.
  const MatrixF err = (q.dequantize() - w).cwiseAbs();
  for (Index r = 0; r < 5; ++r)
    for (Index c = 0; c < 64; ++c) EXPECT_LE(err(r, c), 0.5001f * q.scale(c / 32, r));
}

TEST(Rtn, MoreBitsNeverWorse) {
  const MatrixF w = test::random_weights(16, 128, 12);
  double previous = INFINITY;
  for (int bits = 2; bits <= 8; ++bits) {
    RtnConfig config;
    config.bits = bits;
    config.group_size = 64;
    const double err = (quantize_rtn(w, config).weights.dequantize() - w).norm();
    EXPECT_LT(err, previous) << bits << " bits";
    previous = err;
  }
}

TEST(Rtn, MseSearchLowersTheClippingError) {
  const MatrixF w = test::random_weights(32, 256, 13);
  RtnConfig plain, mse;
  plain.bits = mse.bits = 3;
  mse.grid.mse = true;
  const MatrixF a = quantize_rtn(w, plain).weights.dequantize() - w;
  const MatrixF b = quantize_rtn(w, mse).weights.dequantize() - w;
  EXPECT_LT(b.array().abs().pow(2.4f).sum(), a.array().abs().pow(2.4f).sum());
}

TEST(Rtn, RejectsBadArguments) {
  const MatrixF w = test::random_weights(4, 64, 14);
  RtnConfig config;
  config.group_size = 48;
  EXPECT_THROW(quantize_rtn(w, config), Error);  // does not divide 64
  config.group_size = 0;
  EXPECT_THROW(quantize_rtn(w, config), Error);
  config.group_size = -1;
  config.bits = 9;
  EXPECT_THROW(quantize_rtn(w, config), Error);
  config.bits = 4;
  MatrixF bad = w;
  bad(2, 3) = NAN;
  try {
    quantize_rtn(bad, config);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("finite"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_rtn(MatrixF(0, 0), config), Error);
}

}  // namespace
}  // namespace lowbit
