// The LLaMA-family decoder as data: its configuration, decoder layers of seven
// linears behind the Linear seam, the whole model, and which linears read the
// same input after which norm (what AWQ and SmoothQuant scale together).
// Loaders fill it (llama2c.hpp); forward.hpp runs it.
//
// A layer is self-contained (its norms and linears), so a loader can supply
// one layer at a time and the sequential quantizer needs no more than that
// layer's float weights (sequential_quantization.hpp).
#pragma once

#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/model/linear.hpp"
#include "lowbit/model/rope.hpp"

namespace lowbit::model {

// The seven linears of a layer, named as in llama2.c and Meta's checkpoints:
// wq, wk, wv (attention, sharing the normed input), wo, then the SwiGLU MLP
// w2(silu(w1 x) * w3 x) (w1 and w3 share their input).
enum class LinearKind { wq, wk, wv, wo, w1, w2, w3 };
constexpr int kLinearsPerLayer = 7;
constexpr std::array<LinearKind, kLinearsPerLayer> kAllLinears{
    LinearKind::wq, LinearKind::wk, LinearKind::wv, LinearKind::wo,
    LinearKind::w1, LinearKind::w2, LinearKind::w3};
inline int index(LinearKind kind) { return static_cast<int>(kind); }
inline const char* name(LinearKind kind) {
  static const char* const names[] = {"wq", "wk", "wv", "wo", "w1", "w2", "w3"};
  return names[index(kind)];
}

struct Config {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  float norm_eps = 1e-5f;       // RMSNorm epsilon (Hugging Face: rms_norm_eps)
  float rope_theta = 10000.0f;  // RoPE base
  int bos_token = 1;            // beginning of sequence (llama2.c's 1)
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
};

// Checks a configuration: positive sizes within bounds that keep any weight
// file's size below 2^49 bytes (no overflow), heads that divide the width, an
// even head size (RoPE rotates pairs). `source` (a file name) starts the message.
inline void validate_config(const Config& c, const std::string& source) {
  auto in_range = [&](int value, int limit, const char* what) {
    lowbit::detail::require(value > 0 && value <= limit, source, ": header ", what, " = ", value,
                            " is outside 1..", limit);
  };
  in_range(c.dim, 1 << 16, "dim");
  in_range(c.hidden_dim, 1 << 18, "hidden_dim");
  in_range(c.n_layers, 1 << 10, "n_layers");
  in_range(c.n_heads, c.dim, "n_heads");
  in_range(c.n_kv_heads, c.n_heads, "n_kv_heads");
  in_range(c.seq_len, 1 << 20, "seq_len");
  in_range(c.vocab_size, 1 << 22, "vocab_size");
  lowbit::detail::require(c.dim % c.n_heads == 0, source, ": dim ", c.dim,
                          " is not a multiple of n_heads ", c.n_heads);
  lowbit::detail::require(c.n_heads % c.n_kv_heads == 0, source, ": n_heads ", c.n_heads,
                          " is not a multiple of n_kv_heads ", c.n_kv_heads);
  lowbit::detail::require(c.head_size() % 2 == 0, source, ": head size ", c.head_size(),
                          " must be even (rotary embeddings rotate pairs)");
  lowbit::detail::require(c.norm_eps > 0 && c.rope_theta > 0 && std::isfinite(c.norm_eps) &&
                              std::isfinite(c.rope_theta),
                          source, ": norm_eps ", c.norm_eps, " and rope_theta ", c.rope_theta,
                          " must be positive and finite");
  lowbit::detail::require(c.bos_token >= 0 && c.bos_token < c.vocab_size, source, ": bos_token ",
                          c.bos_token, " is outside the vocabulary of ", c.vocab_size);
}

struct Layer {
  VectorF attention_norm, ffn_norm;  // RMSNorm weights (llama2.c's rms_att, rms_ffn)
  // Shared, so that a copy of a model shares its weights until a layer is replaced.
  std::array<std::shared_ptr<const Linear>, kLinearsPerLayer> linears;
  const Linear& linear(LinearKind kind) const { return *linears[index(kind)]; }
};

// Checks that every linear is present with the shape the configuration
// implies, and the norms have dim entries; `where` starts the message.
inline void validate_layer(const Config& c, const Layer& layer, const std::string& where) {
  const Index dim = c.dim, kv = c.kv_dim(), hidden = c.hidden_dim;
  const Index out[] = {dim, kv, kv, dim, hidden, dim, hidden};
  const Index in[] = {dim, dim, dim, dim, dim, hidden, dim};
  for (LinearKind kind : kAllLinears) {
    const Linear* linear = layer.linears[index(kind)].get();
    lowbit::detail::require(linear != nullptr, where, ": linear ", name(kind), " is missing");
    lowbit::detail::require(
        linear->out_features() == out[index(kind)] && linear->in_features() == in[index(kind)],
        where, ": linear ", name(kind), " is ", linear->out_features(), " x ",
        linear->in_features(), ", expected ", out[index(kind)], " x ", in[index(kind)]);
  }
  lowbit::detail::require(layer.attention_norm.size() == dim && layer.ffn_norm.size() == dim, where,
                          ": norms have ", layer.attention_norm.size(), " and ",
                          layer.ffn_norm.size(), " entries, expected dim = ", dim);
}

struct Model {
  Config config;
  MatrixF token_embedding;  // vocab x dim
  MatrixF classifier;       // vocab x dim; empty: tied to the token embedding
  std::vector<Layer> layers;
  VectorF final_norm;
  RopeTables rope;  // seq_len positions

  const MatrixF& output_weights() const {
    return classifier.size() != 0 ? classifier : token_embedding;
  }
};

inline RopeTables rope_tables(const Config& c) {
  return rope_tables(c.seq_len, c.head_size(), c.rope_theta);
}

// Linears that read the same input, and the RMSNorm before them: AWQ and
// SmoothQuant search one channel scale per group, and SmoothQuant folds it
// into that norm. wo and w2 have no norm of their own before them.
struct LinearGroup {
  std::vector<LinearKind> kinds;
  VectorF Layer::*norm;  // nullptr: none
};
inline const std::vector<LinearGroup>& linear_groups() {
  static const std::vector<LinearGroup> groups{
      {{LinearKind::wq, LinearKind::wk, LinearKind::wv}, &Layer::attention_norm},
      {{LinearKind::wo}, nullptr},
      {{LinearKind::w1, LinearKind::w3}, &Layer::ffn_norm},
      {{LinearKind::w2}, nullptr}};
  return groups;
}

// The float weights (out x in) of a linear that is still a FloatLinear.
inline const MatrixF& float_weight(const Layer& layer, LinearKind kind) {
  const auto* f = dynamic_cast<const FloatLinear*>(layer.linears[index(kind)].get());
  lowbit::detail::require(f != nullptr, "float_weight: linear ", name(kind),
                          " is not a FloatLinear");
  return f->weight();
}

// Pads the MLP's hidden dimension with zero units up to a multiple of
// `multiple`, so that groups of 32 or 64 divide w2's input (stories260K's is
// 172). Exact: a zero row of w1 and w3 gives silu(0) * 0 = 0, which a zero
// column of w2 ignores.
inline Model pad_hidden(Model m, int multiple) {
  lowbit::detail::require(multiple >= 1, "pad_hidden: multiple must be >= 1, got ", multiple);
  const int hidden = m.config.hidden_dim;
  const int padded = (hidden + multiple - 1) / multiple * multiple;
  for (Layer& layer : m.layers) {
    for (LinearKind kind : {LinearKind::w1, LinearKind::w3}) {
      MatrixF w = MatrixF::Zero(padded, m.config.dim);
      w.topRows(hidden) = float_weight(layer, kind);
      layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
    }
    MatrixF w2 = MatrixF::Zero(m.config.dim, padded);
    w2.leftCols(hidden) = float_weight(layer, LinearKind::w2);
    layer.linears[index(LinearKind::w2)] = std::make_shared<FloatLinear>(std::move(w2));
  }
  m.config.hidden_dim = padded;
  return m;
}

}  // namespace lowbit::model
