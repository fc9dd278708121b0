// quant/awq_ggml.hpp: AWQ's scale search with ggml's block types as the
// grid. Its first candidate (ratio 0, s = 1) is llama.cpp's quantizer with
// llama-imatrix's statistic, computed here directly; the search never ends
// above it; the result is W·diag(s) in the type; on the golden layers it
// lowers the output error of llama.cpp + imatrix.
#include <lowbit/io/ggml_blocks.hpp>
#include <lowbit/model/group_quantization.hpp>
#include <lowbit/quant/awq_ggml.hpp>

#include <iostream>
#include <lowbit/core/calibration.hpp>

#include "model_fixtures.hpp"

namespace lowbit {
namespace {

double output_loss(const MatrixF& w, const MatrixF& q, const MatrixF& x) {
  return (x * (w - q).transpose()).squaredNorm() / double(x.rows() * w.rows());
}

void check_against_llama_cpp(const io::SafetensorsReader& f, const std::string& /*dir*/) {
  const MatrixF x = f.matrix("X"), w = f.matrix("W");
  if (w.cols() % 256 != 0) return;
  const VectorF importance = x.cwiseAbs2().colwise().sum().transpose();
  for (GgmlType type : {GgmlType::q2_k, GgmlType::q4_k, GgmlType::q4_0}) {
    SCOPED_TRACE(ggml_type_name(type));
    AwqGgmlConfig config;
    config.type = type;
    const AwqGgmlResult r = quantize_awq_ggml({w}, x, config);
    const GgmlWeights llama = quantize_ggml(w, {type, importance}).weights;
    ASSERT_EQ(r.search.loss.size(), 20u);
    EXPECT_NEAR(r.search.loss[0], output_loss(w, llama.dequantize(), x), 1e-5 * r.search.loss[0]);
    EXPECT_LE(r.search.best_loss, r.search.loss[0]);
    EXPECT_EQ(r.search.best_loss, *std::min_element(r.search.loss.begin(), r.search.loss.end()));
    // The result is the quantization of W·diag(s), s from the chosen ratio.
    const GgmlWeights again =
        quantize_ggml(
            scale_input_channels(w, r.scales),
            {type, divide_input_channels(x, r.scales).cwiseAbs2().colwise().sum().transpose()})
            .weights;
    EXPECT_EQ(io::pack_ggml_blocks(again), io::pack_ggml_blocks(r.weights[0]));
    EXPECT_NEAR(output_loss(w, r.effective_weight(0), x), r.search.best_loss,
                1e-4 * r.search.best_loss);
    std::cout << "  " << ggml_type_name(type) << ": AWQ ratio " << r.search.best_ratio << ", loss "
              << r.search.best_loss << " against llama.cpp + imatrix " << r.search.loss[0] << "\n";
  }
}

TEST(AwqGgml, StartsFromLlamaCppAndOnlyImproves) {
  test::for_each_golden("inputs_", false, check_against_llama_cpp);
}

// Several linears share one scale search (q/k/v behind a norm); the model's
// method folds 1/s into that norm, so the linears take the norm's output as is.
TEST(AwqGgml, GroupSharesScalesAndFoldsThemIntoTheNorm) {
  const MatrixF w1 = test::random_weights(32, 256, 3), w2 = test::random_weights(16, 256, 4);
  MatrixF x = test::random_weights(64, 256, 5);
  for (Index j = 0; j < 256; j += 17) x.col(j) *= 12.0f;  // outlier channels: scales matter
  AwqGgmlConfig config;
  config.type = GgmlType::q4_k;
  const AwqGgmlResult r = quantize_awq_ggml({w1, w2}, x, config);
  ASSERT_EQ(r.weights.size(), 2u);
  EXPECT_GT(r.search.best_ratio, 0.0);

  VectorF norm = VectorF::Constant(256, 2.0f);
  const model::QuantSpec spec{"awq-gguf", 4, 32, false, GgmlType::q4_k};
  const std::vector<model::QuantizedLinear> q = test::quantize_group_on({&w1, &w2}, x, &norm, spec);
  ASSERT_EQ(q.size(), 2u);
  for (Index j = 0; j < 256; ++j) EXPECT_FLOAT_EQ(norm(j), 2.0f / r.scales(j));
  for (std::size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(q[i].ggml.has_value());
    EXPECT_EQ(io::pack_ggml_blocks(*q[i].ggml), io::pack_ggml_blocks(r.weights[i]));
  }
  // Without a norm before them (wo, w2) the group takes llama.cpp's quantizer.
  const std::vector<model::QuantizedLinear> plain =
      test::quantize_group_on({&w1}, x, nullptr, spec);
  Calibration calibration(256);
  calibration.add(x);
  const VectorF diag = calibration.hessian().diagonal().cast<float>();
  EXPECT_EQ(io::pack_ggml_blocks(*plain[0].ggml),
            io::pack_ggml_blocks(quantize_ggml(w1, {GgmlType::q4_k, diag}).weights));
}

TEST(AwqGgml, BadInputsNameWhatIsWrong) {
  const MatrixF w = test::random_weights(8, 96, 1), x = test::random_weights(10, 96, 2);
  AwqGgmlConfig config;
  test::expect_error_containing([&] { quantize_awq_ggml({w}, x, config); },
                                "q4_K needs rows of whole blocks of 256 weights, got 96");
  config.type = GgmlType::q8_0;
  test::expect_error_containing([&] { quantize_awq_ggml({w}, x.leftCols(64), config); },
                                "x has 64 columns, expected in_features = 96");
  config.scale_grid = 0;
  test::expect_error_containing([&] { quantize_awq_ggml({w}, x, config); },
                                "scale_grid: expected >= 1");
}

}  // namespace
}  // namespace lowbit
