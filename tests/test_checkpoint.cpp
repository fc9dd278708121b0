// io/checkpoint.hpp: the optional fp16 bias of a linear, and how stored
// values round per dtype.
#include <lowbit/io/checkpoint.hpp>

#include <limits>

#include "test_support.hpp"

namespace lowbit {
namespace {

using io::Dtype;
using io::SafetensorsReader;
using io::SafetensorsWriter;

TEST(Checkpoint, BiasRoundTripsThroughFp16) {
  const VectorF bias = test::random_weights(1, 37, 70, 1.0f).row(0).transpose();
  SafetensorsWriter writer;
  io::add_linear_bias(writer, "fc", bias);
  const SafetensorsReader file = SafetensorsReader::from_bytes(writer.bytes());
  EXPECT_EQ(file.info("fc.bias").dtype, Dtype::F16);
  const std::optional<VectorF> back = io::read_linear_bias(file, "fc", 37);
  ASSERT_TRUE(back.has_value());
  for (Index i = 0; i < 37; ++i) EXPECT_EQ((*back)(i), half_to_float(float_to_half(bias(i))));
  EXPECT_FALSE(io::read_linear_bias(file, "other", 37).has_value());
}

TEST(Checkpoint, BiasIsChecked) {
  SafetensorsWriter writer;
  io::add_linear_bias(writer, "fc", VectorF::Ones(8));
  const SafetensorsReader file = SafetensorsReader::from_bytes(writer.bytes(), "f.safetensors");
  try {
    io::read_linear_bias(file, "fc", 16);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "f.safetensors: tensor 'fc.bias' has shape [8], expected dim 0 = 16 "
                 "(out_features of the weights)");
  }
  VectorF huge = VectorF::Ones(4);
  huge(2) = 1e5f;
  EXPECT_THROW(io::add_linear_bias(writer, "big", huge), Error);
  EXPECT_THROW(io::add_linear_bias(writer, "empty", VectorF()), Error);

  SafetensorsWriter nan_writer;
  const std::vector<float> values{1.0f, std::numeric_limits<float>::quiet_NaN()};
  nan_writer.add_vector("fc.bias", values, Dtype::F32);
  EXPECT_THROW(io::read_linear_bias(SafetensorsReader::from_bytes(nan_writer.bytes()), "fc", 2),
               Error);
  SafetensorsWriter matrix_writer;
  matrix_writer.add_matrix("fc.bias", MatrixF::Ones(2, 2));
  EXPECT_THROW(io::read_linear_bias(SafetensorsReader::from_bytes(matrix_writer.bytes()), "fc", 2),
               Error);
}

TEST(Checkpoint, StoredValuesRoundPerDtype) {
  const double x = 0.1;
  EXPECT_EQ(io::detail::stored_value(x, Dtype::F64, "x"), x);
  EXPECT_EQ(io::detail::stored_value(x, Dtype::F32, "x"), double(0.1f));
  EXPECT_EQ(io::detail::stored_value(x, Dtype::F16, "x"),
            double(half_to_float(float_to_half(0.1f))));
  EXPECT_EQ(io::detail::stored_value(x, Dtype::BF16, "x"),
            double(bf16_to_float(float_to_bf16(0.1f))));
  EXPECT_EQ(io::detail::stored_value(65504.0, Dtype::F16, "x"), 65504.0);
  EXPECT_THROW(io::detail::stored_value(70000.0, Dtype::F16, "x"), Error);
  EXPECT_THROW(io::detail::stored_value(1e39, Dtype::F32, "x"), Error);
  EXPECT_THROW(io::detail::stored_value(1.0, Dtype::I32, "x"), Error);
}

}  // namespace
}  // namespace lowbit
