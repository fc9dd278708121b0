// The LLaMA-family decoder as data: its configuration, decoder layers of seven
// linears behind the Linear seam, the whole model, and which linears read the
// same input after which norm (what AWQ and SmoothQuant scale together).
// Loaders fill it (llama2c.hpp, hf.hpp); forward.hpp runs it.
//
// A layer is self-contained (its norms, linears and biases), so a loader
// supplies one layer at a time (ModelSource) and the sequential quantizer
// needs no more than that layer's float weights (sequential_quantization.hpp).
#pragma once

#include <array>
#include <cmath>
#include <functional>
#include <limits>
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
  float norm_eps = 1e-5f;                         // RMSNorm epsilon (Hugging Face: rms_norm_eps)
  float rope_theta = 10000.0f;                    // RoPE base
  int bos_token = 1;                              // beginning of sequence (llama2.c's 1)
  int head_dim = 0;                               // 0: dim / n_heads (Hugging Face may set another)
  RopeStyle rope_style = RopeStyle::interleaved;  // Hugging Face checkpoints: half
  RopeScaling rope_scaling = {};
  int head_size() const { return head_dim != 0 ? head_dim : dim / n_heads; }
  int q_dim() const { return head_size() * n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
};

// Checks a configuration: positive sizes within bounds that keep any weight
// file's size below 2^49 bytes (no overflow) and the RoPE tables below 512
// MiB, heads that divide the width, an even head size (RoPE rotates pairs).
// `source` (a file name) starts the message.
inline void validate_config(const Config& c, const std::string& source) {
  auto in_range = [&](int value, int limit, const char* what) {
    lowbit::detail::require(value > 0 && value <= limit, source, ": ", what, " = ", value,
                            " is outside 1..", limit);
  };
  in_range(c.dim, 1 << 16, "dim");
  in_range(c.hidden_dim, 1 << 18, "hidden_dim");
  in_range(c.n_layers, 1 << 10, "n_layers");
  in_range(c.n_heads, c.dim, "n_heads");
  in_range(c.n_kv_heads, c.n_heads, "n_kv_heads");
  in_range(c.seq_len, 1 << 20, "seq_len");
  in_range(c.vocab_size, 1 << 22, "vocab_size");
  if (c.head_dim != 0) in_range(c.head_dim, 1 << 12, "head_dim");
  lowbit::detail::require(c.head_dim != 0 || c.dim % c.n_heads == 0, source, ": dim ", c.dim,
                          " is not a multiple of n_heads ", c.n_heads);
  lowbit::detail::require(c.n_heads % c.n_kv_heads == 0, source, ": n_heads ", c.n_heads,
                          " is not a multiple of n_kv_heads ", c.n_kv_heads);
  lowbit::detail::require(c.head_size() % 2 == 0, source, ": head size ", c.head_size(),
                          " must be even (rotary embeddings rotate pairs)");
  // The RoPE tables are built before any layer is read: a small file must not
  // make them huge. 2^27 covers real models (Qwen2.5-1M: 1010000 x 128).
  const std::int64_t rope_entries = std::int64_t(c.seq_len) * c.head_size();
  lowbit::detail::require(rope_entries <= (std::int64_t(1) << 27), source, ": seq_len ", c.seq_len,
                          " x head size ", c.head_size(), " = ", rope_entries,
                          " RoPE table entries, more than 2^27 (512 MiB)");
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
  // Added to a linear's output (Qwen2's q/k/v, Hugging Face's attention_bias); empty: none.
  std::array<VectorF, kLinearsPerLayer> biases;
  const Linear& linear(LinearKind kind) const { return *linears[index(kind)]; }
};

// Rows (out_features) and columns (in_features) of every linear, by kind.
inline std::array<Index, kLinearsPerLayer> linear_rows(const Config& c) {
  return {c.q_dim(), c.kv_dim(), c.kv_dim(), c.dim, c.hidden_dim, c.dim, c.hidden_dim};
}
inline std::array<Index, kLinearsPerLayer> linear_cols(const Config& c) {
  return {c.dim, c.dim, c.dim, c.q_dim(), c.dim, c.hidden_dim, c.dim};
}

// Checks that every linear is present with the shape the configuration
// implies, biases are empty or one per output, and the norms have dim
// entries; `where` starts the message.
inline void validate_layer(const Config& c, const Layer& layer, const std::string& where) {
  const Index dim = c.dim;
  const std::array<Index, kLinearsPerLayer> out = linear_rows(c), in = linear_cols(c);
  for (LinearKind kind : kAllLinears) {
    const Index bias = layer.biases[index(kind)].size();
    lowbit::detail::require(bias == 0 || bias == out[index(kind)], where, ": bias of ", name(kind),
                            " has ", bias, " entries, expected ", out[index(kind)]);
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

// A vocab x dim matrix left in a loader's memory-mapped file (the token
// embeddings, lm_head): read(first, count) returns rows first..first+count-1
// in float, so a model read layer by layer never holds either whole in float
// (a 70B model's two: 8.4 GB). `rows` 0: none.
struct MappedRows {
  Index rows = 0, cols = 0;
  std::function<MatrixF(Index first, Index count)> read;
};

// Rows read from mapped matrices at a time (a block of floats: rows x dim).
// A multiple of every SIMD width, so a product by blocks rounds as the whole does.
constexpr Index kMappedRowsPerBlock = 1024;

struct Model {
  Config config;
  MatrixF token_embedding;  // vocab x dim (empty when mapped_embedding reads it)
  MatrixF classifier;       // vocab x dim; empty: tied to the token embedding (or mapped)
  std::vector<Layer> layers;
  VectorF final_norm;
  RopeTables rope;  // seq_len positions
  // Set by loaders that leave the embeddings and lm_head in their mapped file
  // (open_hf, open_llama2c); load_all reads them into the matrices above.
  MappedRows mapped_embedding, mapped_classifier;

  bool tied() const { return classifier.size() == 0 && mapped_classifier.rows == 0; }
  const MatrixF& output_weights() const {
    lowbit::detail::require(mapped_embedding.rows == 0 && mapped_classifier.rows == 0,
                            "Model: the output weights are in the mapped checkpoint; read them "
                            "with output_rows() or load the model whole (load_all)");
    return classifier.size() != 0 ? classifier : token_embedding;
  }
};

// Rows first..first+count-1 of the token embeddings or the output weights
// (lm_head, or the embeddings when tied), held or mapped.
inline MatrixF embedding_rows(const Model& m, Index first, Index count) {
  if (m.mapped_embedding.rows != 0) return m.mapped_embedding.read(first, count);
  return m.token_embedding.middleRows(first, count);
}
inline MatrixF output_rows(const Model& m, Index first, Index count) {
  if (m.mapped_classifier.rows != 0) return m.mapped_classifier.read(first, count);
  if (m.classifier.size() != 0) return m.classifier.middleRows(first, count);
  return embedding_rows(m, first, count);
}

inline RopeTables rope_tables(const Config& c) {
  return rope_tables(c.seq_len, c.head_size(), c.rope_theta, c.rope_style, c.rope_scaling);
}

// A model read one layer at a time: `globals` holds the configuration,
// embeddings, final norm and RoPE tables but no layers; layer(l) reads layer
// l from the checkpoint, so a caller holds only the layers it keeps.
struct ModelSource {
  Model globals;
  std::function<Layer(int l)> layer;
};

// The whole model in memory.
inline Model load_all(const ModelSource& source) {
  Model m = source.globals;
  const Index vocab = m.config.vocab_size;
  if (m.mapped_embedding.rows != 0) m.token_embedding = embedding_rows(m, 0, vocab);
  if (m.mapped_classifier.rows != 0) m.classifier = output_rows(m, 0, vocab);
  m.mapped_embedding = m.mapped_classifier = MappedRows{};
  for (int l = 0; l < m.config.n_layers; ++l) m.layers.push_back(source.layer(l));
  return m;
}

// Decoder layers begin..end-1 of a model (a slice, quantize-model --layers);
// the default is every layer. Checkpoints store the tensors outside the
// layers (embeddings, final norm, lm_head) before the layers', so the slice
// that starts at layer 0 holds them and slices concatenate in layer order.
struct LayerRange {
  int begin = 0;
  int end = std::numeric_limits<int>::max();

  bool contains(int layer) const { return layer >= begin && layer < end; }
  bool holds_globals() const { return begin == 0; }
};

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

// The MLP's hidden dimension rounded up to a multiple of `multiple`.
inline int padded_hidden(int hidden, int multiple) {
  lowbit::detail::require(multiple >= 1, "pad_hidden: multiple must be >= 1, got ", multiple);
  return (hidden + multiple - 1) / multiple * multiple;
}

// Pads the MLP's hidden dimension of a layer with zero units up to `padded`,
// so that groups of 32 or 64 divide w2's input (stories260K's is 172). Exact:
// a zero row of w1 and w3 (and a zero bias) gives silu(0) * 0 = 0, which a
// zero column of w2 ignores.
inline Layer pad_hidden(Layer layer, int padded) {
  const MatrixF& w2 = float_weight(layer, LinearKind::w2);
  const Index dim = w2.rows(), hidden = w2.cols();
  lowbit::detail::require(padded >= hidden, "pad_hidden: ", padded, " is below the hidden size ",
                          hidden);
  for (LinearKind kind : {LinearKind::w1, LinearKind::w3}) {
    MatrixF w = MatrixF::Zero(padded, dim);
    w.topRows(hidden) = float_weight(layer, kind);
    layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
    VectorF& bias = layer.biases[index(kind)];
    if (bias.size() != 0) bias.conservativeResizeLike(VectorF::Zero(padded));
  }
  MatrixF padded_w2 = MatrixF::Zero(dim, padded);
  padded_w2.leftCols(hidden) = w2;
  layer.linears[index(LinearKind::w2)] = std::make_shared<FloatLinear>(std::move(padded_w2));
  return layer;
}

inline Model pad_hidden(Model m, int multiple) {
  const int padded = padded_hidden(m.config.hidden_dim, multiple);
  for (Layer& layer : m.layers) layer = pad_hidden(std::move(layer), padded);
  m.config.hidden_dim = padded;
  return m;
}

// The same for a model read layer by layer.
inline ModelSource pad_hidden(ModelSource source, int multiple) {
  const int padded = padded_hidden(source.globals.config.hidden_dim, multiple);
  source.globals.config.hidden_dim = padded;
  source.layer = [read = std::move(source.layer), padded](int l) {
    return pad_hidden(read(l), padded);
  };
  return source;
}

}  // namespace lowbit::model
