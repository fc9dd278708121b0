// core/ggml_grid.hpp: llama.cpp's quantizer reproduces ggml's bytes on every
// golden case, with and without the importance matrix.
#include <cstring>
#include <lowbit/core/ggml_grid.hpp>
#include <lowbit/io/ggml_blocks.hpp>

#include "ggml_golden.hpp"

namespace lowbit {
namespace {

void check_golden_encoding(const io::GgufReader& golden) {
  const MatrixF x = golden.matrix("x");
  const VectorF importance = golden.matrix("imatrix").row(0).transpose();
  int compared = 0;
  for (GgmlType type : test::golden_block_types(golden))
    for (const char* variant : {"q", "qi"}) {
      const std::string name = test::golden_name(type, variant);
      if (!golden.contains_tensor(name)) continue;
      SCOPED_TRACE(name);
      GgmlConfig config;
      config.type = type;
      if (variant[1]) config.importance = importance;
      const std::vector<std::uint8_t> bytes =
          io::pack_ggml_blocks(quantize_ggml(x, config).weights);
      ASSERT_EQ(bytes.size(), golden.tensor(name).bytes);
      const unsigned char* expected = golden.data(name);
      std::size_t differ = 0, first = 0;
      for (std::size_t i = 0; i < bytes.size(); ++i)
        if (bytes[i] != expected[i] && differ++ == 0) first = i;
      EXPECT_EQ(differ, 0u) << "first differing byte " << first << " (row "
                            << first / ggml_row_bytes(type, x.cols()) << ")";
      ++compared;
    }
  EXPECT_GT(compared, 0);
}

TEST(GgmlGrid, ReproducesEveryGoldenEncoding) {
  test::for_each_gguf_golden(false, check_golden_encoding);
}

// The bundled file covers every supported type, each with and without the
// importance matrix (TQ2_0 only without, as ggml ignores it), so the checks
// above cannot pass by comparing fewer cases.
TEST(GgmlGrid, BundledGoldenHoldsEveryTypeAndVariant) {
  const io::GgufReader golden(test::bundled_gguf_golden());
  EXPECT_EQ(test::golden_block_types(golden).size(), detail::kGgmlBlockFormats.size());
  for (const GgmlBlockFormat& f : detail::kGgmlBlockFormats) {
    SCOPED_TRACE(ggml_type_name(f.type));
    for (const char* variant : {"q", "deq", "qi", "deqi"}) {
      const bool expected = f.type != GgmlType::tq2_0 || variant[std::strlen(variant) - 1] != 'i';
      EXPECT_EQ(golden.contains_tensor(test::golden_name(f.type, variant)), expected) << variant;
    }
  }
}

TEST(GgmlGrid, ReproducesEveryFullGoldenEncoding) {
  test::for_each_gguf_golden(true, check_golden_encoding);
}

TEST(GgmlGrid, RowsAreIndependentAndImportanceIsIgnoredWhereGgmlIgnoresIt) {
  const MatrixF w = test::random_weights(5, 512, 81);
  VectorF importance = VectorF::LinSpaced(512, 0.0f, 3.0f);
  for (GgmlType type : {GgmlType::q4_k, GgmlType::q3_k, GgmlType::q5_0, GgmlType::iq4_nl}) {
    SCOPED_TRACE(ggml_type_name(type));
    const GgmlWeights all = quantize_ggml(w, {type, importance}).weights;
    const GgmlWeights one = quantize_ggml(w.row(3), {type, importance}).weights;
    EXPECT_EQ(one.codes, all.codes.row(3));
    EXPECT_EQ(one.d, all.d.row(3));
  }
  for (GgmlType type : {GgmlType::q8_0, GgmlType::tq2_0})
    EXPECT_EQ(io::pack_ggml_blocks(quantize_ggml(w, {type, importance}).weights),
              io::pack_ggml_blocks(quantize_ggml(w, {type, {}}).weights));
}

// Zeros, constants, float denormals and a sub-block far larger than the rest:
// valid blocks every time (the sanitizer build checks the integer conversions).
TEST(GgmlGrid, DegenerateInputsGiveValidBlocks) {
  MatrixF w(5, 512);
  w.row(0).setZero();
  w.row(1).setConstant(0.013f);
  w.row(2) = test::random_weights(1, 512, 83) * 1e-37f;  // denormal floats
  w.row(3) = test::random_weights(1, 512, 84);
  w.row(3).segment(64, 16) *= 1000.0f;
  w.row(4) = test::random_weights(1, 512, 85).cwiseAbs();
  const VectorF importance = VectorF::LinSpaced(512, 0.0f, 2.0f);
  for (const GgmlBlockFormat& f : detail::kGgmlBlockFormats)
    for (bool weighted : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << ggml_type_name(f.type) << (weighted ? " with importance" : ""));
      const GgmlWeights q = quantize_ggml(w, {f.type, weighted ? importance : VectorF()}).weights;
      EXPECT_NO_THROW(q.validate());
      const MatrixF d = q.dequantize();
      EXPECT_TRUE(d.allFinite());
      EXPECT_TRUE(d.row(0).isZero(0.0f));
      EXPECT_LT((d.row(1).array() - 0.013f).abs().maxCoeff(), 0.013f * 0.5f);
    }
}

TEST(GgmlGrid, ErrorsNameTheArgument) {
  auto message = [](const MatrixF& w, const GgmlConfig& config) {
    try {
      quantize_ggml(w, config);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const MatrixF w = test::random_weights(2, 256, 82);
  EXPECT_NE(message(w.leftCols(96), {GgmlType::q4_k, {}})
                .find("q4_K needs in_features to be a multiple of 256, got 96"),
            std::string::npos);
  EXPECT_NE(message(w, {GgmlType::q4_k, VectorF::Ones(255)}).find("expected 256 entries"),
            std::string::npos);
  EXPECT_NE(message(w, {GgmlType::q4_k, -VectorF::Ones(256)}).find("expected values >= 0"),
            std::string::npos);
  EXPECT_NE(message(w, {GgmlType::f16, {}}).find("f16 is not a block type"), std::string::npos);
  MatrixF bad = w;
  bad(1, 5) = std::nanf("");
  EXPECT_NE(message(bad, {GgmlType::q8_0, {}}).find("expected finite values"), std::string::npos);
  MatrixF huge = w;
  huge(1, 40) = 1e9f;  // d = 1e9 / 127 does not fit fp16
  EXPECT_NE(message(huge, {GgmlType::q8_0, {}})
                .find("q8_0 cannot store row 1, columns 32..63: its d overflows fp16"),
            std::string::npos);
}

}  // namespace
}  // namespace lowbit
