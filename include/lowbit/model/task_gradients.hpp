// Task gradients for TACQ: a backward pass through the forward pass of
// forward.hpp for the cross-entropy of a token sequence, giving every linear's
// weight gradient dL/dW = dL/dY^T X one sample at a time, and their absolute
// values summed over samples (GradientMagnitudes), as TaCQ's official
// pipeline accumulates them (batch size 1, |dL/dW| per sample, fp32).
//
// The loss of a sample is the mean next-token cross-entropy over the
// positions its mask counts (Hugging Face's shifted CrossEntropyLoss with
// ignored labels): the default counts every position, a task mask counts,
// say, only answer tokens.
//
// The pass replays the steps of forward.hpp (rms_norm, the linears,
// apply_rope, attention, SwiGLU), templated on the scalar: float for the
// gradients TACQ uses, double for checking them against finite differences.
// Memory: the residual stream entering each layer for one sample (layers x
// tokens x dim); a layer's other activations are recomputed while its
// backward runs, so one layer's are alive at a time. It never grows with
// the number of samples. The weights must be float (FloatLinear): gradients
// are of the float model.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/model/forward.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/model/sequences.hpp"

namespace lowbit::model {

// A task sequence and which of its tokens are labels: mask[t] != 0 counts the
// prediction of token t from tokens 0..t-1 (mask[0] is ignored: nothing
// predicts the first token). An empty mask counts every position.
struct TaskSample {
  Sequence tokens;
  std::vector<std::uint8_t> mask;
};

// Receives, per sample, the gradient of the loss with respect to a linear's
// output (tokens x out) and the linear's input (tokens x in): dL/dW is their
// product output_gradient^T input.
template <class Scalar>
using LinearGradientSink =
    std::function<void(int layer, LinearKind kind, const MatrixT<Scalar>& output_gradient,
                       const MatrixT<Scalar>& input)>;

namespace detail {

// x W^T (+ bias): in float through the Linear seam exactly as the forward
// pass runs it; in double with the float weights widened.
template <class Scalar>
MatrixT<Scalar> linear_forward(const Layer& layer, int l, LinearKind kind,
                               const MatrixT<Scalar>& x) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return run_linear(layer, l, kind, x, {});
  } else {
    MatrixT<Scalar> y = x * float_weight(layer, kind).cast<Scalar>().transpose();
    const VectorF& bias = layer.biases[index(kind)];
    if (bias.size() != 0) y.rowwise() += bias.cast<Scalar>().transpose();
    return y;
  }
}

// dL/dX = dL/dY W for y = x W^T + b.
template <class Scalar>
MatrixT<Scalar> linear_input_gradient(const Layer& layer, LinearKind kind,
                                      const MatrixT<Scalar>& output_gradient) {
  if constexpr (std::is_same_v<Scalar, float>)
    return output_gradient * float_weight(layer, kind);
  else
    return output_gradient * float_weight(layer, kind).cast<Scalar>();
}

// The gradient of rms_norm(x, weight, eps) with respect to x, given the
// gradient dy of its output: per row, with r = 1/sqrt(mean(x^2) + eps),
// dx = r (w * dy) - r^3 x <w * dy, x> / n. The row sums run in double.
template <class Scalar>
MatrixT<Scalar> rms_norm_backward(const MatrixT<Scalar>& x, const VectorF& weight, float eps,
                                  const MatrixT<Scalar>& dy) {
  const VectorT<Scalar> w = weight.cast<Scalar>();
  const double n = static_cast<double>(x.cols());
  MatrixT<Scalar> dx(x.rows(), x.cols());
  for (Index t = 0; t < x.rows(); ++t) {
    const auto xd = x.row(t).template cast<double>();
    const Eigen::RowVectorXd wdy = dy.row(t).cwiseProduct(w.transpose()).template cast<double>();
    const double r = 1.0 / std::sqrt(xd.squaredNorm() / n + double(eps));
    dx.row(t) = (r * wdy - (r * r * r * wdy.dot(xd) / n) * xd).template cast<Scalar>();
  }
  return dx;
}

// What the backward pass of one layer needs of its forward pass.
template <class Scalar>
struct LayerActivations {
  MatrixT<Scalar> attention_in, q, k, v, attended, mid, ffn_in, gate, up, hidden;
};

// run_layer's steps for a whole sequence (positions 0..T-1), keeping the
// intermediate tensors; advances x to the layer's output.
template <class Scalar>
LayerActivations<Scalar> layer_forward(const Config& c, const RopeTables& rope, const Layer& layer,
                                       int l, MatrixT<Scalar>& x) {
  LayerActivations<Scalar> a;
  a.attention_in = rms_norm(x, layer.attention_norm, c.norm_eps);
  a.q = linear_forward(layer, l, LinearKind::wq, a.attention_in);
  a.k = linear_forward(layer, l, LinearKind::wk, a.attention_in);
  a.v = linear_forward(layer, l, LinearKind::wv, a.attention_in);
  apply_rope(rope, a.q, 0);
  apply_rope(rope, a.k, 0);
  a.attended = attention(c, a.q, a.k, a.v, 0);
  a.mid = x + linear_forward(layer, l, LinearKind::wo, a.attended);
  a.ffn_in = rms_norm(a.mid, layer.ffn_norm, c.norm_eps);
  a.gate = linear_forward(layer, l, LinearKind::w1, a.ffn_in);
  a.up = linear_forward(layer, l, LinearKind::w3, a.ffn_in);
  a.hidden = (a.gate.array() / (Scalar(1) + (-a.gate.array()).exp())) * a.up.array();  // silu
  x = a.mid + linear_forward(layer, l, LinearKind::w2, a.hidden);
  return a;
}

// Backward of causal grouped-query attention (positions 0..T-1): from the
// gradient of its output, the gradients of the rotated queries and keys and
// of the values. Per query head, with p = softmax(s), s = scale K q:
// dp = V do, ds = p * (dp - <p, dp>), dq = scale K^T ds, dK += scale ds q^T,
// dV += p do^T (query heads sharing a key/value head add up there).
template <class Scalar>
void attention_backward(const Config& c, const LayerActivations<Scalar>& a,
                        const MatrixT<Scalar>& d_attended, MatrixT<Scalar>& dq, MatrixT<Scalar>& dk,
                        MatrixT<Scalar>& dv) {
  const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
  const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(hs));
  dq.setZero(a.q.rows(), a.q.cols());
  dk.setZero(a.k.rows(), a.k.cols());
  dv.setZero(a.v.rows(), a.v.cols());
  for (Index t = 0; t < a.q.rows(); ++t) {
    const Index visible = t + 1;
    for (int h = 0; h < c.n_heads; ++h) {
      const Index kv_col = Index(h / group) * hs;
      const VectorT<Scalar> query = a.q.row(t).segment(h * hs, hs).transpose();
      const VectorT<Scalar> p = attention_weights<Scalar>(a.k, kv_col, visible, query);
      const VectorT<Scalar> d_out = d_attended.row(t).segment(h * hs, hs).transpose();
      const VectorT<Scalar> dp = a.v.block(0, kv_col, visible, hs) * d_out;
      const VectorT<Scalar> ds = (p.array() * (dp.array() - p.dot(dp))).matrix();
      dq.row(t).segment(h * hs, hs) =
          scale * (a.k.block(0, kv_col, visible, hs).transpose() * ds).transpose();
      dk.block(0, kv_col, visible, hs) += scale * ds * query.transpose();
      dv.block(0, kv_col, visible, hs) += p * d_out.transpose();
    }
  }
}

// The backward pass of one layer: from dL/d(output), reports every linear's
// (dL/dY, X) to the sink and returns dL/d(input).
template <class Scalar>
MatrixT<Scalar> layer_backward(const Config& c, const RopeTables& rope, const Layer& layer, int l,
                               const MatrixT<Scalar>& x, const LayerActivations<Scalar>& a,
                               const MatrixT<Scalar>& d_out,
                               const LinearGradientSink<Scalar>& sink) {
  // MLP: out = mid + w2(silu(gate) * up)
  sink(l, LinearKind::w2, d_out, a.hidden);
  const MatrixT<Scalar> d_hidden = linear_input_gradient(layer, LinearKind::w2, d_out);
  using ArrayT = Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const ArrayT sigmoid = (Scalar(1) + (-a.gate.array()).exp()).inverse();
  const MatrixT<Scalar> d_up = d_hidden.array() * a.gate.array() * sigmoid;
  const MatrixT<Scalar> d_gate = d_hidden.array() * a.up.array() * sigmoid *
                                 (Scalar(1) + a.gate.array() * (Scalar(1) - sigmoid));
  sink(l, LinearKind::w1, d_gate, a.ffn_in);
  sink(l, LinearKind::w3, d_up, a.ffn_in);
  const MatrixT<Scalar> d_ffn_in = linear_input_gradient(layer, LinearKind::w1, d_gate) +
                                   linear_input_gradient(layer, LinearKind::w3, d_up);
  const MatrixT<Scalar> d_mid =
      d_out + rms_norm_backward(a.mid, layer.ffn_norm, c.norm_eps, d_ffn_in);

  // Attention: mid = x + wo(attention(rope(q), rope(k), v))
  sink(l, LinearKind::wo, d_mid, a.attended);
  const MatrixT<Scalar> d_attended = linear_input_gradient(layer, LinearKind::wo, d_mid);
  MatrixT<Scalar> dq, dk, dv;
  attention_backward(c, a, d_attended, dq, dk, dv);
  apply_rope_transposed(rope, dq, 0);
  apply_rope_transposed(rope, dk, 0);
  sink(l, LinearKind::wq, dq, a.attention_in);
  sink(l, LinearKind::wk, dk, a.attention_in);
  sink(l, LinearKind::wv, dv, a.attention_in);
  const MatrixT<Scalar> d_attention_in = linear_input_gradient(layer, LinearKind::wq, dq) +
                                         linear_input_gradient(layer, LinearKind::wk, dk) +
                                         linear_input_gradient(layer, LinearKind::wv, dv);
  return d_mid + rms_norm_backward(x, layer.attention_norm, c.norm_eps, d_attention_in);
}

inline void require_all_layers(const Model& m) {
  lowbit::detail::require(m.layers.size() == std::size_t(m.config.n_layers),
                          "task gradients: the model has ", m.layers.size(),
                          " layers, its configuration ", m.config.n_layers);
}

// Checks a sample against the model; returns the number of counted positions.
inline Index counted_positions(const Model& m, const TaskSample& sample) {
  const std::size_t n = sample.tokens.size();
  lowbit::detail::require(n >= 2, "task gradients: a sample needs at least 2 tokens, got ", n);
  lowbit::detail::require(n <= std::size_t(m.config.seq_len), "task gradients: a sample of ", n,
                          " tokens exceeds the model's context of ", m.config.seq_len);
  lowbit::detail::require(sample.mask.empty() || sample.mask.size() == n,
                          "task gradients: the mask has ", sample.mask.size(),
                          " entries, expected one per token (", n, ") or none");
  for (int token : sample.tokens)
    lowbit::detail::require(token >= 0 && token < m.config.vocab_size, "task gradients: token ",
                            token, " is outside the vocabulary of ", m.config.vocab_size);
  Index counted = 0;
  for (std::size_t t = 1; t < n; ++t) counted += sample.mask.empty() || sample.mask[t] != 0;
  lowbit::detail::require(counted > 0,
                          "task gradients: the mask counts no position after the first token");
  return counted;
}

}  // namespace detail

// The loss of one sample and, when `sink` is set, the backward pass reporting
// every linear of every layer (last layer first). Scalar: float or double.
template <class Scalar>
double task_backward(const Model& m, const TaskSample& sample,
                     const LinearGradientSink<Scalar>& sink = {}) {
  const Config& c = m.config;
  detail::require_all_layers(m);
  const Index counted = detail::counted_positions(m, sample);
  // Positions 0..T-2 predict tokens 1..T-1; the last token predicts nothing.
  const Sequence inputs(sample.tokens.begin(), sample.tokens.end() - 1);
  std::vector<MatrixT<Scalar>> layer_inputs;
  MatrixT<Scalar> x = embed(m, inputs).template cast<Scalar>();
  for (int l = 0; l < c.n_layers; ++l) {
    layer_inputs.push_back(x);
    detail::layer_forward(c, m.rope, m.layers[std::size_t(l)], l, x);
  }
  const MatrixT<Scalar> z = logits(m, x);

  // Mean cross-entropy over the counted positions, and its gradient
  // (softmax - one-hot) / counted there; accumulated in double.
  double loss = 0;
  MatrixT<Scalar> d_logits = MatrixT<Scalar>::Zero(z.rows(), z.cols());
  for (Index t = 0; t < z.rows(); ++t) {
    if (!sample.mask.empty() && sample.mask[std::size_t(t) + 1] == 0) continue;
    const int target = sample.tokens[std::size_t(t) + 1];
    const Eigen::RowVectorXd row = z.row(t).template cast<double>();
    const Eigen::RowVectorXd e = (row.array() - row.maxCoeff()).exp();
    const double total = e.sum();
    loss += std::log(total) - (row(target) - row.maxCoeff());
    d_logits.row(t) = (e / (total * double(counted))).template cast<Scalar>();
    d_logits(t, target) -= Scalar(1.0 / double(counted));
  }
  loss /= double(counted);
  if (!sink) return loss;

  MatrixT<Scalar> d_x = detail::rms_norm_backward(
      x, m.final_norm, c.norm_eps,
      MatrixT<Scalar>(d_logits * m.output_weights().template cast<Scalar>()));
  for (int l = c.n_layers - 1; l >= 0; --l) {
    const Layer& layer = m.layers[std::size_t(l)];
    MatrixT<Scalar> out = layer_inputs[std::size_t(l)];
    const detail::LayerActivations<Scalar> a = detail::layer_forward(c, m.rope, layer, l, out);
    d_x = detail::layer_backward(c, m.rope, layer, l, layer_inputs[std::size_t(l)], a, d_x, sink);
    layer_inputs[std::size_t(l)] = MatrixT<Scalar>();  // done with it
  }
  return loss;
}

// G = sum over samples of |dL/dW| for every linear of every layer, indexed
// [layer][index(kind)].
struct TaskGradients {
  std::vector<std::vector<GradientMagnitudes>> layers;
  double loss = 0;  // mean of the samples' losses

  const MatrixF& sum(int layer, LinearKind kind) const {
    lowbit::detail::require(layer >= 0 && std::size_t(layer) < layers.size(),
                            "TaskGradients: no layer ", layer, " (", layers.size(), " layers)");
    return layers[std::size_t(layer)][std::size_t(index(kind))].sum();
  }
};

// Progress: (samples done, samples).
using TaskProgress = std::function<void(std::size_t done, std::size_t total)>;

// The task gradients of the float model `m` over `task`, one sample at a time.
inline TaskGradients task_gradients(const Model& m, const std::vector<TaskSample>& task,
                                    const TaskProgress& progress = {}) {
  lowbit::detail::require(!task.empty(), "task_gradients: no task samples");
  detail::require_all_layers(m);
  TaskGradients g;
  const std::array<Index, kLinearsPerLayer> rows = linear_rows(m.config),
                                            cols = linear_cols(m.config);
  for (int l = 0; l < m.config.n_layers; ++l) {
    validate_layer(m.config, m.layers[std::size_t(l)],
                   "task_gradients: layer " + std::to_string(l));
    std::vector<GradientMagnitudes> linears;
    for (LinearKind kind : kAllLinears) linears.emplace_back(rows[index(kind)], cols[index(kind)]);
    g.layers.push_back(std::move(linears));
  }
  const LinearGradientSink<float> accumulate = [&](int l, LinearKind kind, const MatrixF& dy,
                                                   const MatrixF& x) {
    g.layers[std::size_t(l)][std::size_t(index(kind))].add_linear(dy, x);
  };
  for (std::size_t s = 0; s < task.size(); ++s) {
    try {
      g.loss += task_backward<float>(m, task[s], accumulate);
    } catch (const Error& e) {
      throw Error("task sample " + std::to_string(s) + ": " + e.what());
    }
    if (progress) progress(s + 1, task.size());
  }
  g.loss /= double(task.size());
  return g;
}

// Every sequence as a sample with every position counted (next-token loss).
inline std::vector<TaskSample> next_token_task(const std::vector<Sequence>& sequences) {
  std::vector<TaskSample> task;
  for (const Sequence& s : sequences) task.push_back({s, {}});
  return task;
}

}  // namespace lowbit::model
