// Models and fixtures the decoder example's tests share: a random tiny model,
// the real stories260K (skipped when absent), and single-threaded Eigen.
#pragma once

#include <optional>
#include <random>

#include "llama.hpp"
#include "test_support.hpp"

namespace decoder {

// Decoding-size products run single-threaded, as in lowbit_decoder: Eigen's
// OpenMP GEMM costs far more than it saves on them, and on a busy machine a
// prefill took 200 times longer.
class Decoder : public ::testing::Test {
 protected:
  void SetUp() override { Eigen::setNbThreads(1); }
  void TearDown() override { Eigen::setNbThreads(saved_threads_); }

 private:
  int saved_threads_ = Eigen::nbThreads();
};

// A random model small enough to check by hand-written loops: 4 query heads
// sharing 2 key/value heads, so grouped-query attention is exercised.
inline Model tiny_model(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](Index rows, Index cols, float scale) {
    return MatrixF(MatrixF::NullaryExpr(rows, cols, [&] { return scale * normal(rng); }));
  };
  Model m;
  m.config = Config{16, 24, 2, 4, 2, 23, 12};
  const Config& c = m.config;
  m.token_embedding = random(c.vocab_size, c.dim, 0.25f);  // small: tokens do not just repeat
  for (int l = 0; l < c.n_layers; ++l) {
    Layer layer;
    layer.attention_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
    layer.ffn_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
    const Index out[] = {c.dim, c.kv_dim(), c.kv_dim(), c.dim, c.hidden_dim, c.dim, c.hidden_dim};
    const Index in[] = {c.dim, c.dim, c.dim, c.dim, c.dim, c.hidden_dim, c.dim};
    for (LinearKind kind : kAllLinears)
      layer.linears[index(kind)] = std::make_shared<FloatLinear>(
          random(out[index(kind)], in[index(kind)], 1.0f / std::sqrt(float(in[index(kind)]))));
    m.layers.push_back(layer);
  }
  m.final_norm = (1.0f + random(1, c.dim, 0.1f).array()).transpose();
  compute_rope_tables(m);
  return m;
}

inline const MatrixF& weight(const Model& m, int l, LinearKind kind) {
  return dynamic_cast<const FloatLinear&>(m.layers[std::size_t(l)].linear(kind)).weight();
}

inline std::optional<Model> stories260k() {
  const std::optional<std::string> path = lowbit::test::model_file("stories260K.bin");
  if (!path) return std::nullopt;
  return load_llama2c(*path);
}

#define REQUIRE_STORIES260K(model)                                                     \
  const std::optional<Model> model = stories260k();                                    \
  if (!model)                                                                          \
  GTEST_SKIP() << "stories260K.bin not found: set LOWBIT_MODELS_DIR to the directory " \
                  "holding it (see shared/models/README.md)"

}  // namespace decoder
