// core/uniform_weights.hpp and core/detail/grouping.hpp: dequantization, group maps, validation.
#include <lowbit/core/uniform_weights.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

UniformWeights small_weights() {
  UniformWeights w;
  w.bits = 2;
  w.group_size = 2;
  w.codes.resize(2, 4);
  w.codes << 0, 1, 2, 3, 3, 2, 1, 0;
  w.scale.resize(2, 2);
  w.scale << 0.5f, 1.0f, 2.0f, 4.0f;
  w.zero.resize(2, 2);
  w.zero << 1, 2, 0, 3;
  return w;
}

TEST(UniformWeights, DequantizesPerGroupAndRow) {
  const MatrixF d = small_weights().dequantize();
  MatrixF expected(2, 4);
  expected << 0.5f * (0 - 1), 0.5f * (1 - 1), 2.0f * (2 - 0), 2.0f * (3 - 0), 1.0f * (3 - 2),
      1.0f * (2 - 2), 4.0f * (1 - 3), 4.0f * (0 - 3);
  EXPECT_EQ(d, expected);
}

TEST(UniformWeights, GroupIndexMapsColumns) {
  UniformWeights w = small_weights();
  w.g_idx = {1, 0, 0, 1};  // columns 1, 2 in group 0; columns 0, 3 in group 1
  const MatrixF d = w.dequantize();
  EXPECT_EQ(d(0, 0), 2.0f * (0 - 0));
  EXPECT_EQ(d(0, 1), 0.5f * (1 - 1));
  EXPECT_EQ(d(1, 3), 4.0f * (0 - 3));
  EXPECT_EQ(detail::group_contiguous_order(w.g_idx, 2, 4), (std::vector<std::int32_t>{1, 2, 0, 3}));
}

TEST(UniformWeights, ValidationNamesTheProblem) {
  auto expect_error = [](const UniformWeights& w, const std::string& fragment) {
    try {
      w.validate();
      ADD_FAILURE() << "accepted; expected an error mentioning " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  UniformWeights w = small_weights();
  w.codes(0, 0) = 4;
  expect_error(w, "does not fit in 2 bits");
  w = small_weights();
  w.scale.resize(1, 2);
  expect_error(w, "scale");
  w = small_weights();
  w.g_idx = {0, 0, 0, 1};
  expect_error(w, "3 columns in group 0");
  w.g_idx = {0, 1, 2, 1};
  expect_error(w, "outside");
  w = small_weights();
  w.group_size = 3;
  expect_error(w, "group_size");
  w = small_weights();
  w.zero(0, 0) = NAN;
  expect_error(w, "finite");
}

TEST(UniformWeights, BitsPerWeightCountsMetadata) {
  RtnConfig config;
  config.bits = 4;
  config.group_size = 128;
  const UniformWeights q = quantize_rtn(test::random_weights(8, 256, 3), config).weights;
  EXPECT_DOUBLE_EQ(bits_per_weight(q), 4 + (16.0 + 4) / 128);
}

}  // namespace
}  // namespace lowbit
