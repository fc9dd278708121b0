// README.md: every C++ snippet, compiled as written and run on small data.
// The test build copies each ```cpp block marked <!-- snippet: NAME --> to
// readme_NAME.inc (readme_snippets.cmake); each test defines the names the
// snippet uses, includes it in its body, and checks what it computed. A
// snippet's own #include lines are already satisfied here (the headers are
// included once, below), so they compile to nothing inside a function.
#include <lowbit/io.hpp>
#include <lowbit/lowbit.hpp>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/hf_export.hpp>
#include <lowbit/model/sequential_quantization.hpp>

#include "model_fixtures.hpp"

namespace {

using lowbit::Index;
using lowbit::MatrixF;
using lowbit::VectorF;

TEST(Readme, RoundToNearest) {
  const MatrixF weights = lowbit::test::random_weights(16, 256, 1201);
#include "readme_rtn.inc"
  EXPECT_EQ(q.group_size, 128);
  EXPECT_EQ(planes.dequantize(), dequantized);
  EXPECT_GE(r.report.seconds, 0.0);
}

TEST(Readme, GptqAndBpdq) {
  const Index in_features = 256;
  const MatrixF w = lowbit::test::random_weights(32, in_features, 1202);
  const MatrixF x = lowbit::test::random_activations(300, in_features, 1203);
  {
#include "readme_gptq.inc"
    EXPECT_EQ(r.weights.bits, 4);
    EXPECT_EQ(r.report.hessian.column_order.size(), 256u);
    EXPECT_EQ(r.weights.g_idx.size(), 256u);
    EXPECT_GT(r.report.loss, 0.0);
  }
  lowbit::Calibration calib(in_features);
  calib.add(x);
#include "readme_bpdq.inc"
  EXPECT_EQ(r.weights.planes, 2);
  EXPECT_EQ(r.report.hessian.column_order.size(), 256u);  // GAR
  EXPECT_TRUE(r.report.avg_loss.has_value());
}

TEST(Readme, AwqAndSmoothQuant) {
  const MatrixF x = lowbit::test::random_activations(200, 128, 1204);
  const MatrixF w_gate = lowbit::test::random_weights(24, 128, 1205);
  const MatrixF w_up = lowbit::test::random_weights(24, 128, 1206);
  const MatrixF w_q = lowbit::test::random_weights(16, 128, 1207);
  const MatrixF w_k = lowbit::test::random_weights(16, 128, 1208);
  const MatrixF w_v = lowbit::test::random_weights(16, 128, 1209);
  const VectorF ln_weight = VectorF::Ones(128), ln_bias = VectorF::Zero(128);
#include "readme_awq_smoothquant.inc"
  EXPECT_EQ(r.weights.size(), 2u);
  EXPECT_EQ(r.report.search.loss.size(), 20u);
  EXPECT_EQ(norm.weight, ln_weight.cwiseQuotient(r.scales));
  EXPECT_EQ(sq.weights.size(), 3u);
  EXPECT_EQ(w8.rows(), 16);
  // W8 on x / s reproduces the first linear's output up to int8 rounding.
  const MatrixF y = lowbit::int8_gemm(
      w8, lowbit::quantize_activations(lowbit::divide_input_channels(x, sq.scales)));
  const MatrixF exact = x * w_q.transpose();
  EXPECT_LT((y - exact).norm(), 0.05 * exact.norm());
}

TEST(Readme, Int8Kernel) {
  const MatrixF x = lowbit::test::random_activations(3, 64, 1210);
  const lowbit::Int8Weights w8 =
      lowbit::int8_absmax_per_row(lowbit::test::random_weights(20, 64, 1211));
  MatrixF y = MatrixF::Zero(3, 20);
  const Index row_begin = 0, row_end = 20;
#include "readme_int8_gemm.inc"
  EXPECT_EQ(y, y2);
}

TEST(Readme, Tacq) {
  const Index out = 16, in = 128;
  const MatrixF w = lowbit::test::random_weights(out, in, 1212);
  const MatrixF X = lowbit::test::random_activations(100, in, 1213);
  const MatrixF dL_dY = lowbit::test::random_gaussian(100, out, 1214);
  lowbit::Calibration calibration(in);
  calibration.add(X);
#include "readme_tacq.inc"
  EXPECT_EQ(r.outliers.nnz(), 7);  // floor(0.0035 * 16 * 128)
  EXPECT_EQ((kept.array() != 0).count(), 7);
  EXPECT_EQ(q.rows(), out);
  EXPECT_GT(cost, 2.0);
}

TEST(Readme, Checkpoints) {
  const lowbit::test::TempDir dir;
  const std::filesystem::path saved = std::filesystem::current_path();
  std::filesystem::current_path(dir.file(""));  // the snippet writes model.safetensors here
  lowbit::RtnConfig rtn;
  rtn.group_size = 32;
  const lowbit::UniformWeights uniform =
      lowbit::quantize_rtn(lowbit::test::random_weights(64, 128, 1215), rtn).weights;
  lowbit::BpdqConfig config;
  config.iters = 2;
  const lowbit::BitPlaneWeights planes =
      lowbit::quantize_bpdq(lowbit::test::random_weights(32, 128, 1216),
                            lowbit::MatrixD(lowbit::MatrixD::Identity(128, 128)), config)
          .weights;
  const VectorF bias = VectorF::LinSpaced(64, -1.0f, 1.0f);
#include "readme_io.inc"
  std::filesystem::current_path(saved);
  EXPECT_EQ(u.codes, uniform.codes);
  EXPECT_EQ(b.codes, planes.codes);
}

// An AWQ directory written here stands for a downloaded one.
TEST(Readme, HfQuantizedDirectory) {
  namespace lm = lowbit::model;
  const lowbit::test::TempDir dir;
  const lm::Model tiny = lowbit::test::tiny_model(1240, lm::Config{32, 64, 1, 4, 4, 512, 64});
  lowbit::model::HfQuantization awq;
  awq.format = "awq";
  awq.group_size = 32;
  lowbit::io::StagedDirectory staged(dir.file("llama-awq4"));
  lm::HfDirectoryWriter writer(tiny, "", awq, 1ull << 30, staged);
  const lm::QuantizedModel q =
      lm::quantize_model(tiny, lm::sample_sequences(tiny, 2, 16, 1.0f, 1), {"awq", 4, 32}, {},
                         [&](int l, lm::LinearKind k, const lm::QuantizedLinear& r) {
                           writer.add_linear(l, k, *r.uniform);
                         });
  writer.add_layer_rest(0, q.model.layers[0]);  // the norms AWQ's scales were folded into
  writer.finish();
  staged.commit();
  const std::filesystem::path saved = std::filesystem::current_path();
  std::filesystem::current_path(dir.file(""));
#include "readme_hf_quantized.inc"
  std::filesystem::current_path(saved);
  EXPECT_NE(dynamic_cast<const lm::BitPlaneLinear*>(m.layers[0].linears[0].get()), nullptr);
  EXPECT_EQ(logits.rows(), 3);
  EXPECT_EQ(logits.cols(), 512);
  EXPECT_TRUE(logits.allFinite());
}

TEST(Readme, GptqGgml) {
  const MatrixF w = lowbit::test::random_weights(8, 512, 1230);
  const MatrixF x = lowbit::test::random_activations(300, 512, 1231);
#include "readme_gptq_ggml.inc"
  EXPECT_EQ(blocks.type, lowbit::GgmlType::q3_k);
  EXPECT_EQ(deq, blocks.dequantize());
  EXPECT_GT(r.report.loss, 0.0);
}

TEST(Readme, Gguf) {
  const lowbit::test::TempDir dir;
  const std::filesystem::path saved = std::filesystem::current_path();
  std::filesystem::current_path(dir.file(""));  // the snippet writes model.gguf here
  const MatrixF w = lowbit::test::random_weights(8, 256, 1219);
  const VectorF imatrix = VectorF::LinSpaced(256, 0.5f, 2.0f);
#include "readme_gguf.inc"
  std::filesystem::current_path(saved);
  EXPECT_EQ(arch, "llama");
  EXPECT_EQ(lowbit::io::pack_ggml_blocks(back), lowbit::io::pack_ggml_blocks(q));
  EXPECT_EQ(m, deq);
  EXPECT_EQ(planes.dequantize(), deq);
}

TEST(Readme, BitplaneKernel) {
  const lowbit::BitPlaneWeights planes = lowbit::to_bitplanes(
      lowbit::quantize_rtn(lowbit::test::random_weights(64, 128, 1217)).weights);
  const MatrixF input = lowbit::test::random_activations(2, 128, 1218);
  const float* x = input.data();
  const Index tokens = 2, ldx = 128, row_begin = 0, row_end = 64, ldy = 64;
  MatrixF output(2, 64);
  float* y = output.data();
#include "readme_bitplane_gemm.inc"
  EXPECT_EQ(output, lowbit::bitplane_gemm(w, input));
}

}  // namespace
