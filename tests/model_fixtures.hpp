// Models the tests of lowbit/model/ (and of the decoder example) share: a
// random tiny model, the real stories260K (skipped when absent), and a
// fixture that runs Eigen single-threaded.
#pragma once

#include <fstream>
#include <lowbit/model/group_quantization.hpp>
#include <lowbit/model/llama.hpp>
#include <lowbit/model/llama2c.hpp>
#include <optional>
#include <random>

#include "test_support.hpp"

namespace lowbit::test {

using model::Config;
using model::Layer;
using model::LinearKind;
using model::Model;

// Decoding-size products run single-threaded, as in lowbit_decoder: Eigen's
// OpenMP GEMM costs far more than it saves on them, and on a busy machine a
// prefill took 200 times longer.
class SingleThreaded : public ::testing::Test {
 protected:
  void SetUp() override { Eigen::setNbThreads(1); }
  void TearDown() override { Eigen::setNbThreads(saved_threads_); }

 private:
  int saved_threads_ = Eigen::nbThreads();
};

// A random model small enough to check by hand-written loops: 4 query heads
// sharing 2 key/value heads, so grouped-query attention is exercised.
inline Model tiny_model(unsigned seed, Config config = Config{16, 24, 2, 4, 2, 23, 12}) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](Index rows, Index cols, float scale) {
    return MatrixF(MatrixF::NullaryExpr(rows, cols, [&] { return scale * normal(rng); }));
  };
  Model m;
  m.config = config;
  const Config& c = m.config;
  m.token_embedding = random(c.vocab_size, c.dim, 0.25f);  // small: tokens do not just repeat
  for (int l = 0; l < c.n_layers; ++l) {
    Layer layer;
    layer.attention_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
    layer.ffn_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
    const std::array<Index, model::kLinearsPerLayer> out = model::linear_rows(c),
                                                     in = model::linear_cols(c);
    for (LinearKind kind : model::kAllLinears)
      layer.linears[model::index(kind)] = std::make_shared<model::FloatLinear>(
          random(out[model::index(kind)], in[model::index(kind)],
                 1.0f / std::sqrt(float(in[model::index(kind)]))));
    m.layers.push_back(layer);
  }
  m.final_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
  m.rope = model::rope_tables(c);
  return m;
}

inline const MatrixF& weight(const Model& m, int l, LinearKind kind) {
  return model::float_weight(m.layers[std::size_t(l)], kind);
}

// llama2.c "version 0" bytes written out field by field; a separate
// classifier makes the vocabulary size negative and follows the RoPE tables.
inline std::vector<char> llama2c_bytes(const Model& m) {
  std::vector<char> bytes;
  auto put = [&](const void* p, std::size_t n) {
    bytes.insert(bytes.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
  };
  const Config& c = m.config;
  const std::int32_t vocab = m.classifier.size() != 0 ? -c.vocab_size : c.vocab_size;
  const std::int32_t header[] = {c.dim,        c.hidden_dim, c.n_layers, c.n_heads,
                                 c.n_kv_heads, vocab,        c.seq_len};
  put(header, sizeof header);
  auto matrix = [&](const MatrixF& x) { put(x.data(), sizeof(float) * std::size_t(x.size())); };
  matrix(m.token_embedding);
  for (const model::Layer& layer : m.layers)
    put(layer.attention_norm.data(), 4 * std::size_t(c.dim));
  for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv, LinearKind::wo})
    for (int l = 0; l < c.n_layers; ++l) matrix(weight(m, l, kind));
  for (const model::Layer& layer : m.layers) put(layer.ffn_norm.data(), 4 * std::size_t(c.dim));
  for (LinearKind kind : {LinearKind::w1, LinearKind::w2, LinearKind::w3})
    for (int l = 0; l < c.n_layers; ++l) matrix(weight(m, l, kind));
  put(m.final_norm.data(), 4 * std::size_t(c.dim));
  matrix(m.rope.cos);  // llama2.c's freq_cis_real and _imag (the loader ignores them)
  matrix(m.rope.sin);
  if (m.classifier.size() != 0) matrix(m.classifier);
  return bytes;
}

inline void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::optional<Model> stories260k() {
  const std::optional<std::string> path = model_file("stories260K.bin");
  if (!path) return std::nullopt;
  return model::load_llama2c(*path);
}

#define REQUIRE_STORIES260K(variable)                                                   \
  const std::optional<::lowbit::model::Model> variable = ::lowbit::test::stories260k(); \
  if (!variable)                                                                        \
  GTEST_SKIP() << "stories260K.bin not found: set LOWBIT_MODELS_DIR to the directory "  \
                  "holding it (see shared/models/README.md)"

// quantize_group on the tokens x every linear of the group reads (a method may
// take H out of the activations, so each call gets its own).
inline std::vector<model::QuantizedLinear> quantize_group_on(std::vector<const MatrixF*> weights,
                                                             const MatrixF& x, VectorF* norm,
                                                             const model::QuantSpec& spec) {
  model::GroupActivations activations(x);
  return model::quantize_group({std::move(weights), activations, norm, spec});
}

}  // namespace lowbit::test
