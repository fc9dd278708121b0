// lowbit/model/quantized_linear.hpp: the kernel-backed layers against their
// float definitions.
#include <lowbit/model/quantized_linear.hpp>
#include <lowbit/quant/absmax.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit::model {
namespace {

double relative_difference(const MatrixF& a, const MatrixF& b) {
  return double((a - b).norm() / b.norm());
}

// The kernel layer computes x Wq^T: compare with the float product.
TEST(QuantizedLinear, BitPlaneLinearIsTheProductOfItsWeights) {
  const MatrixF w = test::random_weights(48, 64, 5);
  const MatrixF x = test::random_activations(20, 64, 6);  // longer than the 16-token tables
  RtnConfig config;
  config.bits = 4;
  config.group_size = 32;
  const UniformWeights q = quantize_rtn(w, config).weights;
  const BitPlaneLinear linear(pack_bitplanes(q));
  EXPECT_EQ(linear.in_features(), 64);
  EXPECT_EQ(linear.out_features(), 48);
  MatrixF y(20, 48);
  linear.apply(x, y);
  EXPECT_LT(relative_difference(y, x * q.dequantize().transpose()), 1e-2);  // int8 tables
}

// The kernel's context grows to the longest call so far, up to max_tokens;
// longer inputs go through the kernel in chunks of max_tokens, and every
// chunking gives the bits of one kernel call over all tokens.
TEST(QuantizedLinear, BitPlaneLinearChunksGiveTheBitsOfOneCall) {
  const MatrixF w = test::random_weights(70, 128, 9);
  const MatrixF x = test::random_activations(37, 128, 10);
  RtnConfig config;
  config.bits = 3;
  config.group_size = 64;
  const PackedBitplanes packed = pack_bitplanes(quantize_rtn(w, config).weights);
  BitplaneContext whole(packed, 37);
  MatrixF expected(37, 70);
  bitplane_gemm(packed, x, expected, whole);
  for (Index max_tokens : {1, 3, 16, 37, 64}) {
    SCOPED_TRACE(testing::Message() << "max_tokens " << max_tokens);
    const BitPlaneLinear linear(packed, max_tokens);
    EXPECT_EQ(linear.context_tokens(), 0);
    MatrixF first(2, 70), y(37, 70), last(1, 70);
    linear.apply(x.topRows(2), first);
    EXPECT_EQ(linear.context_tokens(), std::min<Index>(2, max_tokens));
    linear.apply(x, y);
    EXPECT_EQ(linear.context_tokens(), std::min<Index>(37, max_tokens));
    linear.apply(x.bottomRows(1), last);
    EXPECT_EQ(linear.context_tokens(), std::min<Index>(37, max_tokens));  // kept, not shrunk
    EXPECT_TRUE((y.array() == expected.array()).all());
    EXPECT_TRUE((first.array() == expected.topRows(2).array()).all());
    EXPECT_TRUE((last.array() == expected.bottomRows(1).array()).all());
  }
  EXPECT_EQ(BitPlaneLinear(packed).max_tokens(), BitPlaneLinear::kDefaultMaxTokens);
  test::expect_error_containing([&] { BitPlaneLinear(packed, 0); }, "max_tokens");
}

// W8A8: integer products of per-token int8 activations and per-row int8
// weights, equal to the float product of the two dequantized operands.
TEST(QuantizedLinear, Int8LinearIsTheProductOfItsInt8Operands) {
  const MatrixF w = test::random_weights(40, 96, 7);
  const MatrixF x = test::random_activations(9, 96, 8);
  AbsmaxConfig config;
  config.bits = 8;
  config.granularity = AbsmaxGranularity::per_row;
  const Int8Weights q = to_int8_weights(quantize_absmax(w, config).weights);
  const Int8Linear linear(q);
  MatrixF y(9, 40);
  linear.apply(x, y);
  const Int8Activations a = quantize_activations(x);
  MatrixF xq(9, 96);
  for (Index t = 0; t < 9; ++t) xq.row(t) = a.values.row(t).cast<float>() * a.scale(t);
  EXPECT_LT(relative_difference(y, xq * q.dequantize().transpose()), 1e-6);
  EXPECT_LT(relative_difference(y, x * w.transpose()), 2e-2);
}

}  // namespace
}  // namespace lowbit::model
