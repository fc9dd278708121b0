// core/ggml_weights.hpp: every golden T.deq from T.q bit for bit, the lossless
// conversion to bit planes, and the bit-plane kernel on GGUF weights.
#include <lowbit/core/ggml_weights.hpp>
#include <lowbit/io/ggml_blocks.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>

#include "ggml_golden.hpp"

namespace lowbit {
namespace {

void check_golden_dequantization(const io::GgufReader& golden) {
  const std::vector<GgmlType> types = test::golden_block_types(golden);
  ASSERT_FALSE(types.empty());
  int compared = 0;
  for (GgmlType type : types)
    for (const char* variant : {"q", "qi"}) {
      const std::string name = test::golden_name(type, variant);
      if (!golden.contains_tensor(name)) continue;
      SCOPED_TRACE(name);
      const MatrixF expected = golden.matrix(test::golden_name(type, variant[1] ? "deqi" : "deq"));
      EXPECT_TRUE(test::same_bits(golden.blocks(name).dequantize(), expected));
      ++compared;
    }
  EXPECT_GE(compared, static_cast<int>(types.size()));
}

TEST(GgmlWeights, DequantizesEveryGoldenTypeBitForBit) {
  test::for_each_gguf_golden(false, check_golden_dequantization);
}

TEST(GgmlWeights, DequantizesEveryFullGoldenFileBitForBit) {
  test::for_each_gguf_golden(true, check_golden_dequantization);
}

// Equal as floats: the bit-plane sums may turn ggml's -0 into +0.
::testing::AssertionResult same_values(const MatrixF& a, const MatrixF& b) {
  Index differ = 0;
  for (Index i = 0; i < a.size(); ++i) differ += !(a.data()[i] == b.data()[i]);
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << differ << " of " << a.size() << " values differ";
}

TEST(GgmlWeights, EveryUniformTypeConvertsToBitPlanesLosslessly) {
  const io::GgufReader golden(test::bundled_gguf_golden());
  for (GgmlType type : test::golden_block_types(golden)) {
    SCOPED_TRACE(ggml_type_name(type));
    const GgmlWeights w = golden.blocks(test::golden_name(type, "q"));
    if (type == GgmlType::iq4_nl) {
      EXPECT_THROW(to_bitplanes(w), Error);  // a non-uniform table
      continue;
    }
    const BitPlaneWeights planes = to_bitplanes(w);
    EXPECT_EQ(planes.planes, w.format().code_bits);
    EXPECT_EQ(planes.group_size, w.format().sub_block);
    EXPECT_TRUE(same_values(planes.dequantize(), w.dequantize()));
  }
}

TEST(GgmlWeights, BitPlaneKernelRunsGgufWeights) {
  const io::GgufReader golden(test::bundled_gguf_golden());
  const MatrixF x = test::random_activations(3, 512, 71);
  for (const char* name : {"q4_K.qi", "q3_K.q", "q8_0.q"}) {
    SCOPED_TRACE(name);
    const GgmlWeights w = golden.blocks(name);
    const MatrixD exact = x.cast<double>() * w.dequantize().cast<double>().transpose();
    const PackedBitplanes packed = pack_bitplanes(to_bitplanes(w), {CoefficientStorage::f32});
    const MatrixF y = bitplane_gemm(packed, x, TableType::f32);
    EXPECT_LT((y.cast<double>() - exact).cwiseAbs().maxCoeff(), 1e-5 * exact.cwiseAbs().maxCoeff());
  }
}

TEST(GgmlWeights, StorageIsGgmlsBlockSize) {
  EXPECT_EQ(bits_per_weight(GgmlWeights::zeros(GgmlType::q4_k, 1, 256)), 4.5);
  EXPECT_EQ(bits_per_weight(GgmlWeights::zeros(GgmlType::q2_k, 1, 256)), 2.625);
  EXPECT_EQ(bits_per_weight(GgmlWeights::zeros(GgmlType::q6_k, 1, 256)), 6.5625);
  EXPECT_EQ(bits_per_weight(GgmlWeights::zeros(GgmlType::q4_0, 1, 32)), 4.5);
}

TEST(GgmlWeights, ValidationNamesTheProblem) {
  auto message = [](const GgmlWeights& w) {
    try {
      w.validate();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  GgmlWeights w = GgmlWeights::zeros(GgmlType::q3_k, 2, 512);
  EXPECT_EQ(message(w), "no error");
  w.codes(1, 7) = 8;
  EXPECT_NE(message(w).find("codes(1, 7) = 8 does not fit in 3 bits"), std::string::npos);
  w.codes(1, 7) = 0;
  w.sub_scales(0, 3) = 40;
  EXPECT_NE(message(w).find("sub_scales(0, 3) = 40 is outside -32..31"), std::string::npos);
  w.sub_scales(0, 3) = 0;
  w.d(1, 1) = 0x7E00;  // NaN
  EXPECT_NE(message(w).find("d(1, 1) of q3_K is nan"), std::string::npos);
  w.d(1, 1) = 0;
  w.dmin = HalfMatrix::Zero(2, 2);
  EXPECT_NE(message(w).find("GgmlWeights::dmin: expected shape 0 x 0"), std::string::npos);
  GgmlWeights k = GgmlWeights::zeros(GgmlType::q4_k, 1, 256);
  k.sub_mins(0, 2) = 64;
  EXPECT_NE(message(k).find("sub_mins(0, 2) = 64 is above 63"), std::string::npos);
  EXPECT_THROW(GgmlWeights::zeros(GgmlType::q4_k, 1, 128), Error);
  EXPECT_THROW(GgmlWeights::zeros(GgmlType::f16, 1, 128), Error);
}

}  // namespace
}  // namespace lowbit
