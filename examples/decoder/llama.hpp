// A small LLaMA-architecture decoder for llama2.c checkpoints: the example an
// engine author reads first. Every linear layer runs through one interface,
// `Linear`; FloatLinear (Eigen) is the reference, and a quantized layer is
// another implementation of the same three functions (see Linear below).
//
// Forward pass (llama2.c's run.c): token embedding; per layer, RMSNorm (eps
// 1e-5), q/k/v projections, rotary embeddings on consecutive pairs (2i, 2i+1)
// at frequency 10000^(-2i / head_size), grouped-query attention over a KV
// cache, the output projection, RMSNorm, the SwiGLU MLP w2(silu(w1 x) * w3 x),
// each block added to the residual stream; a final RMSNorm and logits against
// the (tied) token embedding.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <memory>
#include <string>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "llama2.c checkpoints are little-endian; this loader reads them in place"
#endif

namespace decoder {

using lowbit::Index;
using lowbit::MatrixF;
using lowbit::MatrixFRef;
using lowbit::VectorF;
using lowbit::detail::require;

// y = x W^T for a batch of tokens: x is tokens x in_features, y (already sized)
// tokens x out_features, one token per row. The decoder calls apply from one
// thread at a time, so an implementation may keep mutable scratch space (the
// lookup tables of the bit-plane kernel) and parallelize inside apply.
// A quantized layer plugs in as, e.g.:
//   class BitPlaneLinear final : public Linear {   // packed once, in the constructor
//     void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
//       for (Index t = 0; t < x.rows(); ++t) gemv(packed_, x.row(t).data(), y.row(t).data());
//     } ...
//   };
//   model.layers[l].linears[index(LinearKind::wq)] = std::make_shared<BitPlaneLinear>(...);
class Linear {
 public:
  virtual ~Linear() = default;
  virtual Index in_features() const = 0;
  virtual Index out_features() const = 0;
  virtual void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const = 0;
};

// Eigen's product; run Eigen single-threaded (Eigen::setNbThreads(1)) for
// decoding: its OpenMP GEMM costs more than it saves on products this small.
class FloatLinear final : public Linear {
 public:
  explicit FloatLinear(MatrixF weight) : weight_(std::move(weight)) {}
  const MatrixF& weight() const { return weight_; }  // out x in, what quantizers take
  Index in_features() const override { return weight_.cols(); }
  Index out_features() const override { return weight_.rows(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    y.noalias() = x * weight_.transpose();
  }

 private:
  MatrixF weight_;
};

// The seven linears of a layer, named as in llama2.c (wq, wk, wv share their
// input, and so do w1, w3).
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
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
};

struct Layer {
  VectorF attention_norm, ffn_norm;  // RMSNorm weights (rms_att, rms_ffn)
  // Shared, so that a copy of a model shares its weights until a layer is replaced.
  std::array<std::shared_ptr<const Linear>, kLinearsPerLayer> linears;
  const Linear& linear(LinearKind kind) const { return *linears[index(kind)]; }
};

struct Model {
  Config config;
  MatrixF token_embedding;  // vocab x dim; also the classifier (tied)
  std::vector<Layer> layers;
  VectorF final_norm;
  MatrixF rope_cos, rope_sin;  // seq_len x head_size/2, computed as run.c does (in float)
};

// Observes the input of every linear before it runs: (layer, linear, x). This
// is how calibration activations are captured (e.g. into lowbit::Calibration).
using LinearObserver = std::function<void(int layer, LinearKind kind, const MatrixF& x)>;

// Keys and values of every layer for positions [0, length).
struct KvCache {
  explicit KvCache(const Config& c)
      : keys(c.n_layers, MatrixF(c.seq_len, c.kv_dim())),
        values(c.n_layers, MatrixF(c.seq_len, c.kv_dim())) {}
  std::vector<MatrixF> keys, values;  // per layer: seq_len x kv_dim
  int length = 0;
};

inline void compute_rope_tables(Model& m) {
  const int half = m.config.head_size() / 2;
  m.rope_cos.resize(m.config.seq_len, half);
  m.rope_sin.resize(m.config.seq_len, half);
  for (int pos = 0; pos < m.config.seq_len; ++pos)
    for (int i = 0; i < half; ++i) {
      const float freq =
          1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(2 * half));
      const float angle = static_cast<float>(pos) * freq;
      m.rope_cos(pos, i) = std::cos(angle);
      m.rope_sin(pos, i) = std::sin(angle);
    }
}

// Checks a header: positive sizes within bounds that keep the implied file size
// below 2^49 bytes (no overflow), heads that divide the width, and an even
// head size (RoPE rotates pairs).
inline void validate_config(const Config& c, const std::string& source) {
  auto in_range = [&](int value, int limit, const char* what) {
    require(value > 0 && value <= limit, source, ": header ", what, " = ", value, " is outside 1..",
            limit);
  };
  in_range(c.dim, 1 << 16, "dim");
  in_range(c.hidden_dim, 1 << 18, "hidden_dim");
  in_range(c.n_layers, 1 << 10, "n_layers");
  in_range(c.n_heads, c.dim, "n_heads");
  in_range(c.n_kv_heads, c.n_heads, "n_kv_heads");
  in_range(c.seq_len, 1 << 20, "seq_len");
  require(c.vocab_size >= 0, source,
          ": negative vocab_size (an untied classifier) is not supported by this example");
  in_range(c.vocab_size, 1 << 22, "vocab_size");
  require(c.dim % c.n_heads == 0, source, ": dim ", c.dim, " is not a multiple of n_heads ",
          c.n_heads);
  require(c.n_heads % c.n_kv_heads == 0, source, ": n_heads ", c.n_heads,
          " is not a multiple of n_kv_heads ", c.n_kv_heads);
  require(c.head_size() % 2 == 0, source, ": head size ", c.head_size(),
          " must be even (rotary embeddings rotate pairs)");
}

// Loads a llama2.c "version 0" checkpoint (format: shared/models/README.md):
// seven int32 header fields, then float32 arrays. The file must be exactly as
// long as its header implies and every weight finite; anything else throws
// lowbit::Error naming the file and the problem.
inline Model load_llama2c(const std::string& path) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  require(static_cast<bool>(file), path, ": cannot open");
  const std::int64_t size = static_cast<std::int64_t>(file.tellg());
  require(size >= 28, path, ": truncated (", size, " bytes; the header alone is 28)");
  file.seekg(0);
  std::int32_t header[7];
  file.read(reinterpret_cast<char*>(header), sizeof header);
  Model m;
  Config& c = m.config;
  c = Config{header[0], header[1], header[2], header[3], header[4], header[5], header[6]};
  validate_config(c, path);

  const std::int64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, kv = c.kv_dim();
  const std::int64_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hidden * dim;
  const std::int64_t floats = std::int64_t(c.vocab_size) * dim + layers * per_layer + dim +
                              std::int64_t(c.seq_len) * c.head_size();  // + RoPE tables (unused)
  require(size == 28 + 4 * floats, path, ": expected ", 28 + 4 * floats, " bytes for dim=", c.dim,
          " hidden_dim=", c.hidden_dim, " n_layers=", c.n_layers, " n_heads=", c.n_heads,
          " n_kv_heads=", c.n_kv_heads, " vocab_size=", c.vocab_size, " seq_len=", c.seq_len,
          ", the file has ", size, size < 28 + 4 * floats ? " (truncated)" : " (trailing data)");
  std::vector<float> data(static_cast<std::size_t>(floats));
  file.read(reinterpret_cast<char*>(data.data()), 4 * floats);
  require(static_cast<bool>(file), path, ": read failed");

  std::size_t offset = 0;  // takes the next rows x cols floats as a checked matrix
  auto take = [&](Index rows, Index cols, const std::string& what) {
    MatrixF out = Eigen::Map<const MatrixF>(data.data() + offset, rows, cols);
    offset += static_cast<std::size_t>(rows * cols);
    require(out.allFinite(), path, ": ", what, " has non-finite values");
    return out;
  };
  m.token_embedding = take(c.vocab_size, dim, "token_embedding");
  m.layers.resize(static_cast<std::size_t>(layers));
  // llama2.c stores each kind for all layers before the next kind.
  auto for_layers = [&](auto&& assign, const char* what, Index rows, Index cols) {
    for (int l = 0; l < c.n_layers; ++l)
      assign(m.layers[static_cast<std::size_t>(l)],
             take(rows, cols, std::string(what) + " of layer " + std::to_string(l)));
  };
  auto linear = [&](LinearKind kind, Index out, Index in) {
    for_layers(
        [kind](Layer& layer, MatrixF w) {
          layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
        },
        name(kind), out, in);
  };
  for_layers([](Layer& layer, MatrixF w) { layer.attention_norm = w.row(0).transpose(); },
             "rms_att", 1, dim);
  linear(LinearKind::wq, dim, dim);
  linear(LinearKind::wk, kv, dim);
  linear(LinearKind::wv, kv, dim);
  linear(LinearKind::wo, dim, dim);
  for_layers([](Layer& layer, MatrixF w) { layer.ffn_norm = w.row(0).transpose(); }, "rms_ffn", 1,
             dim);
  linear(LinearKind::w1, hidden, dim);
  linear(LinearKind::w2, dim, hidden);
  linear(LinearKind::w3, hidden, dim);
  m.final_norm = take(1, dim, "rms_final").row(0).transpose();
  compute_rope_tables(m);
  return m;
}

// Row-wise RMSNorm: w * x / sqrt(mean(x^2) + 1e-5).
inline MatrixF rms_norm(const MatrixF& x, const VectorF& weight) {
  MatrixF out(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const float inv_rms = 1.0f / std::sqrt(x.row(t).squaredNorm() / float(x.cols()) + 1e-5f);
    out.row(t) = x.row(t).cwiseProduct(weight.transpose()) * inv_rms;
  }
  return out;
}

// Rotates every pair (2i, 2i+1) of every head of token t by position start + t.
inline void apply_rope(const Model& m, MatrixF& x, int start) {
  const int head_size = m.config.head_size();
  for (Index t = 0; t < x.rows(); ++t)
    for (Index j = 0; j < x.cols(); j += 2) {
      const Index i = (j % head_size) / 2;
      const float c = m.rope_cos(start + t, i), s = m.rope_sin(start + t, i);
      const float x0 = x(t, j), x1 = x(t, j + 1);
      x(t, j) = x0 * c - x1 * s;
      x(t, j + 1) = x0 * s + x1 * c;
    }
}

// Causal grouped-query attention of the queries of positions [start, start+T)
// over the cached keys and values of positions [0, start+T).
inline MatrixF attention(const Config& c, const MatrixF& q, const MatrixF& keys,
                         const MatrixF& values, int start) {
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  MatrixF out(q.rows(), q.cols());
  for (Index t = 0; t < q.rows(); ++t) {
    const Index visible = start + t + 1;
    for (int h = 0; h < c.n_heads; ++h) {
      const Index kv_col = Index(h / group) * hs;  // the key/value head this query head shares
      VectorF scores =
          keys.block(0, kv_col, visible, hs) * q.row(t).segment(h * hs, hs).transpose() * scale;
      scores = (scores.array() - scores.maxCoeff()).exp();  // softmax, shifted for range
      scores /= scores.sum();
      out.row(t).segment(h * hs, hs) = scores.transpose() * values.block(0, kv_col, visible, hs);
    }
  }
  return out;
}

// x W^T through the layer's Linear, reporting x to the observer first.
inline MatrixF run_linear(const Layer& layer, int l, LinearKind kind, const MatrixF& x,
                          const LinearObserver& observe) {
  if (observe) observe(l, kind, x);
  const Linear& linear = layer.linear(kind);
  MatrixF y(x.rows(), linear.out_features());
  linear.apply(x, y);
  return y;
}

// Decoder layer l on the residual stream x (tokens at positions start..start+T-1),
// in place; writes those positions' keys and values (rows of `keys`/`values`).
inline void run_layer(const Model& m, int l, MatrixF& x, MatrixF& keys, MatrixF& values, int start,
                      const LinearObserver& observe = {}) {
  const Layer& layer = m.layers[static_cast<std::size_t>(l)];
  const Index tokens = x.rows();
  require(start >= 0 && start + tokens <= keys.rows() && start + tokens <= m.config.seq_len,
          "run_layer: positions ", start, "..", start + tokens - 1, " exceed the context of ",
          std::min<Index>(keys.rows(), m.config.seq_len), " tokens");
  const MatrixF attention_in = rms_norm(x, layer.attention_norm);
  MatrixF q = run_linear(layer, l, LinearKind::wq, attention_in, observe);
  MatrixF k = run_linear(layer, l, LinearKind::wk, attention_in, observe);
  apply_rope(m, q, start);
  apply_rope(m, k, start);
  keys.middleRows(start, tokens) = k;
  values.middleRows(start, tokens) = run_linear(layer, l, LinearKind::wv, attention_in, observe);
  x += run_linear(layer, l, LinearKind::wo, attention(m.config, q, keys, values, start), observe);

  const MatrixF ffn_in = rms_norm(x, layer.ffn_norm);
  const MatrixF gate = run_linear(layer, l, LinearKind::w1, ffn_in, observe);
  const MatrixF up = run_linear(layer, l, LinearKind::w3, ffn_in, observe);
  const MatrixF hidden = (gate.array() / (1.0f + (-gate.array()).exp())) * up.array();  // silu
  x += run_linear(layer, l, LinearKind::w2, hidden, observe);
}

inline MatrixF embed(const Model& m, const std::vector<int>& tokens) {
  MatrixF x(static_cast<Index>(tokens.size()), m.config.dim);
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    require(tokens[t] >= 0 && tokens[t] < m.config.vocab_size, "embed: token ", tokens[t],
            " is outside the vocabulary of ", m.config.vocab_size);
    x.row(static_cast<Index>(t)) = m.token_embedding.row(tokens[t]);
  }
  return x;
}

// Final RMSNorm and the tied classifier: tokens x vocab.
inline MatrixF logits(const Model& m, const MatrixF& x) {
  return rms_norm(x, m.final_norm) * m.token_embedding.transpose();
}

// Appends `tokens` to the cached sequence and returns their logits
// (tokens x vocab): one call with a whole prompt, or one call per decoded token.
inline MatrixF forward(const Model& m, KvCache& cache, const std::vector<int>& tokens,
                       const LinearObserver& observe = {}) {
  MatrixF x = embed(m, tokens);
  for (int l = 0; l < m.config.n_layers; ++l)
    run_layer(m, l, x, cache.keys[static_cast<std::size_t>(l)],
              cache.values[static_cast<std::size_t>(l)], cache.length, observe);
  cache.length += static_cast<int>(tokens.size());
  return logits(m, x);
}

}  // namespace decoder
