// examples/decoder/study.hpp and quantized_linear.hpp: the quantized layers
// against their float definitions, sequential whole-model quantization on a
// random tiny model, and on the real stories260K (tests named *stories260k*,
// skipped when the file is absent): the methods rank as they must, and
// `lowbit quantize-model` writes checkpoints the readers load back exactly.
#include <fstream>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <sstream>

#include "decoder_models.hpp"
#include "study.hpp"
#include "test_support.hpp"

namespace decoder {
namespace {

class Study : public Decoder {};

double relative_difference(const MatrixF& a, const MatrixF& b) {
  return double((a - b).norm() / b.norm());
}

// The kernel layer computes (x / s) Wq^T: compare with the float product.
TEST_F(Study, bitplane_linear_applies_its_input_divisor) {
  const MatrixF w = lowbit::test::random_weights(48, 64, 5);
  const MatrixF x = lowbit::test::random_activations(20, 64, 6);
  lowbit::RtnConfig config;
  config.bits = 4;
  config.group_size = 32;
  const lowbit::UniformWeights q = lowbit::quantize_rtn(w, config).weights;
  const VectorF s = VectorF::LinSpaced(64, 0.5f, 2.0f);
  const BitPlaneLinear linear(lowbit::pack_bitplanes(q), s);
  MatrixF y(20, 48);
  linear.apply(x, y);
  const MatrixF expected = (x * s.cwiseInverse().asDiagonal()) * q.dequantize().transpose();
  EXPECT_LT(relative_difference(y, expected), 1e-2);  // int8 tables: well inside their bound
  EXPECT_THROW(BitPlaneLinear(lowbit::pack_bitplanes(q), VectorF::Ones(63)), lowbit::Error);
}

// W8A8: integer products of per-token int8 activations and per-row int8
// weights, equal to the float product of the two dequantized operands.
TEST_F(Study, int8_linear_is_the_product_of_its_int8_operands) {
  const MatrixF w = lowbit::test::random_weights(40, 96, 7);
  const MatrixF x = lowbit::test::random_activations(9, 96, 8);
  const lowbit::Int8Weights q = study_detail::absmax_int8(w);
  const Int8Linear linear(q);
  MatrixF y(9, 40);
  linear.apply(x, y);
  const lowbit::Int8Activations a = lowbit::quantize_activations(x);
  MatrixF xq(9, 96);
  for (Index t = 0; t < 9; ++t) xq.row(t) = a.values.row(t).cast<float>() * a.scale(t);
  EXPECT_LT(relative_difference(y, xq * q.dequantize().transpose()), 1e-6);
  EXPECT_LT(relative_difference(y, x * w.transpose()), 2e-2);
}

TEST_F(Study, padding_the_hidden_dimension_is_exact) {
  const Model m = tiny_model(4);
  const Model padded = pad_hidden(m, 16);
  EXPECT_EQ(padded.config.hidden_dim, 32);
  EXPECT_EQ(weight(padded, 1, LinearKind::w2).cols(), 32);
  const std::vector<Sequence> s{{1, 5, 7, 2, 9, 11}};
  EXPECT_LT(relative_difference(sequence_logits(padded, s)[0], sequence_logits(m, s)[0]), 1e-6);
  EXPECT_THROW(pad_hidden(m, 0), lowbit::Error);
}

// Every linear is replaced, in order, with the storage cost of its format;
// more bits bring the model closer to the float one.
TEST_F(Study, quantize_model_replaces_every_linear_sequentially) {
  const Model m = pad_hidden(tiny_model(5), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 12, 1.0f, 1);
  const std::vector<Sequence> heldout = sample_sequences(m, 4, 12, 1.0f, 2);
  const std::vector<MatrixF> reference = sequence_logits(m, heldout);
  std::vector<std::pair<int, LinearKind>> order;
  std::vector<std::string> groups;
  auto kl = [&](const std::string& method, int bits) {
    order.clear();
    groups.clear();
    const QuantizedModel q = quantize_model(
        m, calibration, {method, bits, 8},
        [&](int l, const std::string& names) { groups.push_back(std::to_string(l) + names); },
        [&](int l, LinearKind k, const QuantizedLinear&) { order.emplace_back(l, k); });
    for (const Layer& layer : q.model.layers)
      for (const auto& linear : layer.linears)
        EXPECT_EQ(dynamic_cast<const FloatLinear*>(linear.get()), nullptr) << method;
    EXPECT_EQ(order.size(), 14u);
    if (method == "rtn" || method == "gptq" || method == "awq") {
      EXPECT_NEAR(q.bits_per_weight, bits + (16.0 + bits) / 8, 1e-12) << method;
    }
    return compare(reference, sequence_logits(q.model, heldout), heldout).kl;
  };
  for (const std::string& method : method_names()) {
    if (is_w8a8(method)) {
      EXPECT_LT(kl(method, 8), 1e-2) << method;
      continue;
    }
    const double kl2 = kl(method, 2), kl4 = kl(method, 4);
    EXPECT_LT(kl4, kl2) << method;
    if (method == "bpdq") continue;  // at most 4 planes
    const double kl8 = kl(method, 8);
    EXPECT_LT(kl8, kl4) << method;
    EXPECT_LT(kl8, 1e-3) << method;
  }
  EXPECT_EQ(groups.front(), "0wq/wk/wv");
  EXPECT_EQ(groups.back(), "1w2");
  EXPECT_EQ(order[3], std::make_pair(0, LinearKind::wo));
  EXPECT_THROW(quantize_model(m, calibration, {"no-such-method", 4, 8}), lowbit::Error);
  EXPECT_THROW(quantize_model(m, {}, {"rtn", 4, 8}), lowbit::Error);
}

// --- the real model --------------------------------------------------------

struct StudyRow {
  double bits_per_weight;
  Metrics metrics;
};

// GPTQ with act-order, as in the README's study. Figures (32 x 64 calibration tokens, 32 x 128 held out, group 32) are in
// README.md; this smaller run keeps the test fast.
StudyRow study_row(const Model& padded, const std::string& method, int bits) {
  const std::vector<Sequence> calibration = sample_sequences(padded, 16, 64, 1.0f, 1);
  const std::vector<Sequence> heldout = sample_sequences(padded, 8, 128, 1.0f, 2);
  const QuantizedModel q = quantize_model(padded, calibration, {method, bits, 32, true});
  const Metrics m =
      compare(sequence_logits(padded, heldout), sequence_logits(q.model, heldout), heldout);
  std::cout << "stories260K " << method << " " << bits << "-bit: " << q.bits_per_weight
            << " bits/weight, KL " << m.kl << ", top-1 " << m.top1 << ", perplexity "
            << m.perplexity << "\n";
  return {q.bits_per_weight, m};
}

// The ordering every quantization study must reproduce, and thresholds set
// from the measured figures with margin (tiny models are very sensitive: a
// 64-wide model loses more per bit than a 4096-wide one).
TEST_F(Study, stories260k_methods_rank_as_expected) {
  REQUIRE_STORIES260K(loaded);
  const Model m = pad_hidden(*loaded, 64);
  const StudyRow rtn2 = study_row(m, "rtn", 2), rtn4 = study_row(m, "rtn", 4);
  const StudyRow awq4 = study_row(m, "awq", 4), gptq4 = study_row(m, "gptq", 4);
  const StudyRow gptq2 = study_row(m, "gptq", 2), bpdq2 = study_row(m, "bpdq", 2);
  const StudyRow tacq4 = study_row(m, "tacq-gradient-free", 4);
  const StudyRow absmax = study_row(m, "absmax-w8a8", 8);
  const StudyRow smooth = study_row(m, "smoothquant-w8a8", 8);
  EXPECT_LT(rtn4.metrics.kl, rtn2.metrics.kl / 2);
  EXPECT_LT(awq4.metrics.kl, rtn4.metrics.kl);
  EXPECT_LT(gptq4.metrics.kl, 0.9 * rtn4.metrics.kl);
  EXPECT_LT(gptq2.metrics.kl, rtn2.metrics.kl);
  EXPECT_LT(bpdq2.metrics.kl, 0.9 * gptq2.metrics.kl);
  EXPECT_LT(tacq4.metrics.kl, rtn4.metrics.kl);
  EXPECT_NEAR(bpdq2.bits_per_weight, 2 + 3 * 16.0 / 32, 1e-9);
  EXPECT_GT(absmax.metrics.top1, 0.75);
  EXPECT_GT(smooth.metrics.top1, 0.75);
  EXPECT_LT(smooth.metrics.kl, 0.1);
  EXPECT_NEAR(rtn4.bits_per_weight, 4 + 20.0 / 32, 1e-9);
}

// `lowbit quantize-model` on stories260K: every linear of the written
// checkpoint reads back (GPTQ v1 at 3 bits, whose fields straddle words; BPDQ
// planes) exactly as the same quantization in this process produced it, with
// its scales or coefficients rounded to fp16 as the formats store them.
TEST_F(Study, stories260k_quantize_model_checkpoints_read_back_exactly) {
  REQUIRE_STORIES260K(loaded);
  const std::optional<std::string> cli = lowbit::test::cli_path();
  if (!cli) GTEST_SKIP() << "the lowbit tool is not built";
  const std::optional<std::string> model_path = lowbit::test::model_file("stories260K.bin");
  const Model m = pad_hidden(*loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 64, 1.0f, 1);
  lowbit::test::TempDir dir;
  const std::vector<std::pair<std::string, QuantSpec>> cases{
      {"gptq", {"rtn", 3, 32, false}}, {"gptq", {"gptq", 4, 32, true}}, {"bpdq", {"gptq", 2, 64, false}},
      {"bpdq", {"bpdq", 2, 32, false}}};
  for (const auto& [format, spec] : cases) {
    const std::string out = dir.file(format + ".safetensors");
    const auto r = lowbit::test::run_command(
        *cli + " quantize-model --model " + *model_path + " --method " + spec.method + " --bits " +
        std::to_string(spec.bits) + " --group-size " + std::to_string(spec.group_size) +
        " --format " + format + (spec.act_order ? " --act-order" : "") + " --calibration 4 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("[20/20] layer 4 w2"), std::string::npos) << r.output;
    const lowbit::io::SafetensorsReader file(out);
    int linears = 0;
    quantize_model(m, calibration, spec, {}, [&](int l, LinearKind k, const QuantizedLinear& q) {
      const std::string name = "layers." + std::to_string(l) +
                               (index(k) <= index(LinearKind::wo) ? ".attention." : ".feed_forward.") +
                               decoder::name(k);
      ++linears;
      if (format == "gptq") {
        const lowbit::UniformWeights back = lowbit::io::read_gptq_linear(file, name, spec.bits);
        EXPECT_EQ(back.codes, q.uniform->codes) << name;
        EXPECT_EQ(back.zero, q.uniform->zero) << name;
        if (spec.act_order) {
          EXPECT_FALSE(back.g_idx.empty()) << name;
          EXPECT_EQ(back.g_idx, q.uniform->g_idx) << name;
        }
        for (Index i = 0; i < back.scale.size(); ++i)
          ASSERT_EQ(back.scale.data()[i],
                    lowbit::half_to_float(lowbit::float_to_half(q.uniform->scale.data()[i])))
              << name;
      } else {
        const lowbit::BitPlaneWeights back = lowbit::io::read_bpdq_linear(file, name);
        EXPECT_EQ(back.codes, q.planes->codes) << name;
        for (Index i = 0; i < back.coeffs.size(); ++i)
          ASSERT_EQ(back.coeffs.data()[i], double(lowbit::half_to_float(lowbit::float_to_half(
                                               float(q.planes->coeffs.data()[i])))))
              << name;
      }
    });
    EXPECT_EQ(linears, 35);
    EXPECT_EQ(file.matrix("tok_embeddings.weight"), m.token_embedding);
    std::ifstream json(dir.file(format + ".quantize_config.json"));
    std::stringstream text;
    text << json.rdbuf();
    EXPECT_NE(text.str().find("\"quant_method\": \"" + format + "\""), std::string::npos);
    EXPECT_NE(text.str().find("\"hidden_dim_padded\": 192"), std::string::npos);
  }
  const auto bad = lowbit::test::run_command(*cli + " quantize-model --model " + *model_path +
                                             " --method awq --out " + dir.file("x.safetensors"));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("no plain checkpoint form"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace decoder
