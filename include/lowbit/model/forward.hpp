// The reference forward pass of a LLaMA-family decoder (llama2.c's run.c):
// token embedding; per layer, RMSNorm, the q/k/v projections, rotary
// embeddings (either pairing, rope.hpp), grouped-query attention over a KV cache, the output
// projection, RMSNorm, the SwiGLU MLP w2(silu(w1 x) * w3 x), each block added to the residual
// stream; a final RMSNorm and logits against the classifier.
//
// Every linear runs through the Linear seam, so the same pass runs float,
// quantized or mixed models, and an observer sees every linear's input (how
// calibration statistics are captured). A layer runs from its own weights, the
// configuration and the RoPE tables alone: a loader may hold one layer at a
// time. The steps are functions of explicit tensors, which a backward pass
// (task gradients) can replay step by step.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/model/rope.hpp"

namespace lowbit::model {

// Observes the input of every linear before it runs: (layer, linear, x). This
// is how calibration activations are captured (e.g. into lowbit::Calibration).
using LinearObserver = std::function<void(int layer, LinearKind kind, const MatrixF& x)>;

// Keys and values of every layer for positions [0, length), with room for
// `positions` of them (the model's whole context unless fewer are needed).
struct KvCache {
  explicit KvCache(const Config& c) : KvCache(c, c.seq_len) {}
  KvCache(const Config& c, int positions)
      : keys(c.n_layers, MatrixF(positions, c.kv_dim())),
        values(c.n_layers, MatrixF(positions, c.kv_dim())) {}
  std::vector<MatrixF> keys, values;  // per layer: seq_len x kv_dim
  int length = 0;
};

// Row-wise RMSNorm: w * x / sqrt(mean(x^2) + eps). Templated on the scalar so
// that the backward pass (task_gradients.hpp) can replay it in double.
template <class Scalar>
MatrixT<Scalar> rms_norm(const MatrixT<Scalar>& x, const VectorF& weight, float eps) {
  const VectorT<Scalar> w = weight.cast<Scalar>();
  MatrixT<Scalar> out(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const Scalar inv_rms =
        Scalar(1) / std::sqrt(x.row(t).squaredNorm() / Scalar(x.cols()) + Scalar(eps));
    out.row(t) = x.row(t).cwiseProduct(w.transpose()) * inv_rms;
  }
  return out;
}

// The attention weights of one query head over the first `visible` cached
// keys of its key/value head (columns kv_col..kv_col+head_size-1): the
// softmax of the scaled dot products.
template <class Scalar>
VectorT<Scalar> attention_weights(const MatrixT<Scalar>& keys, Index kv_col, Index visible,
                                  const Eigen::Ref<const VectorT<Scalar>>& query) {
  const Index hs = query.size();
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(hs));
  VectorT<Scalar> scores = keys.block(0, kv_col, visible, hs) * query * scale;
  scores = (scores.array() - scores.maxCoeff()).exp();  // softmax, shifted for range
  return scores / scores.sum();
}

// Causal grouped-query attention of the queries of positions [start, start+T)
// over the cached keys and values of positions [0, start+T).
template <class Scalar>
MatrixT<Scalar> attention(const Config& c, const MatrixT<Scalar>& q, const MatrixT<Scalar>& keys,
                          const MatrixT<Scalar>& values, int start) {
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  MatrixT<Scalar> out(q.rows(), q.cols());
  for (Index t = 0; t < q.rows(); ++t) {
    const Index visible = start + t + 1;
    for (int h = 0; h < c.n_heads; ++h) {
      const Index kv_col = Index(h / group) * hs;  // the key/value head this query head shares
      const VectorT<Scalar> p = attention_weights<Scalar>(keys, kv_col, visible,
                                                          q.row(t).segment(h * hs, hs).transpose());
      out.row(t).segment(h * hs, hs) = p.transpose() * values.block(0, kv_col, visible, hs);
    }
  }
  return out;
}

// x W^T (+ bias) through the layer's Linear, reporting x (as input of linear
// `kind` of layer l) to the observer first.
inline MatrixF run_linear(const Layer& layer, int l, LinearKind kind, const MatrixF& x,
                          const LinearObserver& observe) {
  if (observe) observe(l, kind, x);
  const Linear& linear = layer.linear(kind);
  MatrixF y(x.rows(), linear.out_features());
  linear.apply(x, y);
  const VectorF& bias = layer.biases[index(kind)];
  if (bias.size() != 0) y.rowwise() += bias.transpose();
  return y;
}

// Decoder layer `layer` (index l) on the residual stream x (tokens at
// positions start..start+T-1), in place; writes those positions' keys and
// values (rows of `keys`/`values`).
inline void run_layer(const Config& c, const RopeTables& rope, const Layer& layer, int l,
                      MatrixF& x, MatrixF& keys, MatrixF& values, int start,
                      const LinearObserver& observe = {}) {
  const Index tokens = x.rows();
  const Index context = std::min({keys.rows(), values.rows(), rope.cos.rows(), Index(c.seq_len)});
  lowbit::detail::require(start >= 0 && start + tokens <= context, "run_layer: positions ", start,
                          "..", start + tokens - 1, " exceed the context of ", context, " tokens");
  const MatrixF attention_in = rms_norm(x, layer.attention_norm, c.norm_eps);
  MatrixF q = run_linear(layer, l, LinearKind::wq, attention_in, observe);
  MatrixF k = run_linear(layer, l, LinearKind::wk, attention_in, observe);
  apply_rope(rope, q, start);
  apply_rope(rope, k, start);
  keys.middleRows(start, tokens) = k;
  values.middleRows(start, tokens) = run_linear(layer, l, LinearKind::wv, attention_in, observe);
  x += run_linear(layer, l, LinearKind::wo, attention(c, q, keys, values, start), observe);

  const MatrixF ffn_in = rms_norm(x, layer.ffn_norm, c.norm_eps);
  const MatrixF gate = run_linear(layer, l, LinearKind::w1, ffn_in, observe);
  const MatrixF up = run_linear(layer, l, LinearKind::w3, ffn_in, observe);
  const MatrixF hidden = (gate.array() / (1.0f + (-gate.array()).exp())) * up.array();  // silu
  x += run_linear(layer, l, LinearKind::w2, hidden, observe);
}

// The residual stream entering layer 0: one embedding row per token.
inline MatrixF embed(const Model& m, const std::vector<int>& tokens) {
  MatrixF x(static_cast<Index>(tokens.size()), m.config.dim);
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    lowbit::detail::require(tokens[t] >= 0 && tokens[t] < m.config.vocab_size, "embed: token ",
                            tokens[t], " is outside the vocabulary of ", m.config.vocab_size);
    if (m.mapped_embedding.rows != 0)
      x.row(static_cast<Index>(t)) = embedding_rows(m, tokens[t], 1);
    else
      x.row(static_cast<Index>(t)) = m.token_embedding.row(tokens[t]);
  }
  return x;
}

// Final RMSNorm and the classifier: tokens x vocab. Mapped output weights
// are read a block of rows at a time, those logits' columns: for one token
// the same bits as the whole product (a matrix-vector product rounds each
// row alike), for several within rounding.
template <class Scalar>
MatrixT<Scalar> logits(const Model& m, const MatrixT<Scalar>& x) {
  const MatrixT<Scalar> normed = rms_norm(x, m.final_norm, m.config.norm_eps);
  if (m.mapped_embedding.rows == 0 && m.mapped_classifier.rows == 0)
    return normed * m.output_weights().cast<Scalar>().transpose();
  const Index vocab = m.config.vocab_size;
  MatrixT<Scalar> out(x.rows(), vocab);
  for (Index first = 0; first < vocab; first += kMappedRowsPerBlock) {
    const Index count = std::min(kMappedRowsPerBlock, vocab - first);
    out.middleCols(first, count) = normed * output_rows(m, first, count).cast<Scalar>().transpose();
  }
  return out;
}

// Appends `tokens` to the cached sequence and returns their logits
// (tokens x vocab): one call with a whole prompt, or one call per decoded token.
inline MatrixF forward(const Model& m, KvCache& cache, const std::vector<int>& tokens,
                       const LinearObserver& observe = {}) {
  MatrixF x = embed(m, tokens);
  for (int l = 0; l < m.config.n_layers; ++l)
    run_layer(m.config, m.rope, m.layers[static_cast<std::size_t>(l)], l, x,
              cache.keys[static_cast<std::size_t>(l)], cache.values[static_cast<std::size_t>(l)],
              cache.length, observe);
  cache.length += static_cast<int>(tokens.size());
  return logits(m, x);
}

}  // namespace lowbit::model
