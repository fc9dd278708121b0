// Around the decoder, what an end-to-end quantization study needs: token
// sequences sampled from a model with a fixed seed (there is no tokenizer: we
// work on token ids), the residual stream of those sequences layer by layer
// for sequential calibration, and the metrics of a candidate model against a
// reference on held-out sequences.
#pragma once

#include <cstdint>
#include <vector>

#include "llama.hpp"

namespace decoder {

constexpr int kBos = 1;  // llama2.c's beginning-of-sequence token
using Sequence = std::vector<int>;

// xorshift64*: the same stream on every platform (std:: distributions are
// implementation-defined), like llama2.c's sampler.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed ? seed : 0x9E3779B97F4A7C15ull) {}
  std::uint32_t next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<std::uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  }
  float uniform() { return static_cast<float>(next() >> 8) / 16777216.0f; }  // [0, 1)

 private:
  std::uint64_t state_;
};

// The argmax at temperature 0, else a draw from softmax(logits / temperature).
inline int sample_token(const Eigen::Ref<const VectorF>& logits, float temperature, Rng& rng) {
  Index best = 0;
  if (temperature <= 0.0f) {
    logits.maxCoeff(&best);
    return static_cast<int>(best);
  }
  const VectorF weights = ((logits.array() - logits.maxCoeff()) / temperature).exp();
  const float target = rng.uniform() * weights.sum();
  float cumulative = 0.0f;
  for (Index i = 0; i < weights.size(); ++i) {
    cumulative += weights(i);
    if (target < cumulative) return static_cast<int>(i);
  }
  return static_cast<int>(weights.size() - 1);  // target within rounding of the total
}

// BOS, then length - 1 tokens decoded one at a time through the KV cache.
// Sequences run across story boundaries (a sampled BOS) rather than stopping,
// so every sequence has the same length.
inline Sequence generate(const Model& m, int length, float temperature, Rng& rng) {
  require(length >= 1 && length <= m.config.seq_len, "generate: length must be 1..",
          m.config.seq_len, ", got ", length);
  KvCache cache(m.config);
  Sequence tokens{kBos};
  while (static_cast<int>(tokens.size()) < length) {
    const MatrixF next = forward(m, cache, {tokens.back()});
    tokens.push_back(sample_token(next.row(0).transpose(), temperature, rng));
  }
  return tokens;
}

inline std::vector<Sequence> sample_sequences(const Model& m, int count, int length,
                                              float temperature, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Sequence> sequences;
  for (int i = 0; i < count; ++i) sequences.push_back(generate(m, length, temperature, rng));
  return sequences;
}

// Sequential calibration. States are the residual stream of each sequence
// (tokens x dim) entering a layer. run_layer_on_sequences runs layer l of `m`
// over them in place, so they become layer l + 1's inputs, and reports the
// input of every linear to `observe`. To quantize layer by layer, feeding each
// layer the outputs of the already-quantized ones (GPTQ's llama.py):
//   states = embed_sequences(model, calibration);
//   for l: run_layer_on_sequences(model, l, copy of states, collect statistics);
//          replace model.layers[l].linears with quantized ones;
//          run_layer_on_sequences(model, l, states);
inline std::vector<MatrixF> embed_sequences(const Model& m,
                                            const std::vector<Sequence>& sequences) {
  std::vector<MatrixF> states;
  for (const Sequence& s : sequences) states.push_back(embed(m, s));
  return states;
}

inline void run_layer_on_sequences(const Model& m, int l, std::vector<MatrixF>& states,
                                   const LinearObserver& observe = {}) {
  for (MatrixF& x : states) {
    MatrixF keys(x.rows(), m.config.kv_dim()), values(x.rows(), m.config.kv_dim());
    run_layer(m, l, x, keys, values, 0, observe);
  }
}

// Logits of every prefix of every sequence: row t predicts token t + 1
// ((length - 1) x vocab per sequence). Compute the reference's once and
// compare each candidate against them.
inline std::vector<MatrixF> sequence_logits(const Model& m,
                                            const std::vector<Sequence>& sequences) {
  std::vector<MatrixF> out;
  for (const Sequence& s : sequences) {
    require(s.size() >= 2, "sequence_logits: a sequence needs at least 2 tokens");
    KvCache cache(m.config);
    out.push_back(forward(m, cache, Sequence(s.begin(), s.end() - 1)));
  }
  return out;
}

struct Metrics {
  double kl = 0.0;          // mean KL(reference || candidate) of the next-token distributions, nats
  double top1 = 0.0;        // fraction of positions where both models' most likely token agree
  double perplexity = 0.0;  // exp(mean negative log-likelihood of the candidate on the next tokens)
  double entropy = 0.0;     // mean entropy of the candidate's next-token distributions, nats
  Index positions = 0;
};

inline Eigen::VectorXd log_softmax(const Eigen::Ref<const VectorF>& logits) {
  const Eigen::VectorXd z = logits.cast<double>().array() - double(logits.maxCoeff());
  return z.array() - std::log(z.array().exp().sum());
}

inline Metrics compare(const std::vector<MatrixF>& reference, const std::vector<MatrixF>& candidate,
                       const std::vector<Sequence>& sequences) {
  require(reference.size() == sequences.size() && candidate.size() == sequences.size(),
          "compare: expected logits for each of the ", sequences.size(), " sequences");
  Metrics m;
  double nll = 0.0;
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    require(reference[s].rows() == candidate[s].rows() &&
                reference[s].cols() == candidate[s].cols() &&
                reference[s].rows() + 1 == static_cast<Index>(sequences[s].size()),
            "compare: logits of sequence ", s, " do not match its length or each other");
    for (int token : sequences[s])
      require(token >= 0 && token < reference[s].cols(), "compare: token ", token,
              " is outside the vocabulary");
    for (Index t = 0; t < reference[s].rows(); ++t) {
      const Eigen::VectorXd log_p = log_softmax(reference[s].row(t).transpose());
      const Eigen::VectorXd log_q = log_softmax(candidate[s].row(t).transpose());
      m.kl += (log_p.array().exp() * (log_p - log_q).array()).sum();
      m.entropy -= (log_q.array().exp() * log_q.array()).sum();
      nll -= log_q(sequences[s][static_cast<std::size_t>(t + 1)]);
      Index best_p = 0, best_q = 0;
      log_p.maxCoeff(&best_p);
      log_q.maxCoeff(&best_q);
      m.top1 += best_p == best_q;
      ++m.positions;
    }
  }
  const double n = static_cast<double>(std::max<Index>(m.positions, 1));
  m.kl /= n;
  m.top1 /= n;
  m.entropy /= n;
  m.perplexity = std::exp(nll / n);
  return m;
}

}  // namespace decoder
