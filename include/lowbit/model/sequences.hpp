// Token sequences for calibration and evaluation without a tokenizer: sampled
// from the model itself with a fixed seed (as token ids), their residual
// stream layer by layer for sequential calibration, and their logits.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/model/forward.hpp"
#include "lowbit/model/llama.hpp"

namespace lowbit::model {

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
  lowbit::detail::require(length >= 1 && length <= m.config.seq_len, "generate: length must be 1..",
                          m.config.seq_len, ", got ", length);
  KvCache cache(m.config, length);
  Sequence tokens{m.config.bos_token};
  while (static_cast<int>(tokens.size()) < length) {
    const MatrixF next = forward(m, cache, {tokens.back()});
    tokens.push_back(sample_token(next.row(0).transpose(), temperature, rng));
  }
  return tokens;
}

namespace detail {

// Every sequence decoded together, one position at a time, each layer read
// once per position: a model read layer by layer never needs all its layers
// at once. Sequence s draws from its own copy of the generator, advanced past
// the draws of sequences 0..s-1, so the sequences are those of drawing them
// one after another.
inline std::vector<Sequence> sample_by_layer(const Model& globals,
                                             const std::function<Layer(int)>& layer, int count,
                                             int length, float temperature, std::uint64_t seed) {
  const Config& c = globals.config;
  lowbit::detail::require(count >= 0 && length >= 1 && length <= c.seq_len,
                          "sample_sequences: expected count >= 0 and length 1..", c.seq_len,
                          ", got ", count, " and ", length);
  Rng next_start(seed);
  std::vector<Rng> rngs;
  std::vector<KvCache> caches;
  std::vector<Sequence> sequences;
  for (int s = 0; s < count; ++s) {
    rngs.push_back(next_start);
    for (int i = 1; i < length && temperature > 0.0f; ++i) next_start.next();
    caches.emplace_back(c, length);
    sequences.push_back({c.bos_token});
  }
  for (int position = 0; position + 1 < length; ++position) {
    std::vector<MatrixF> states;
    for (const Sequence& sequence : sequences) states.push_back(embed(globals, {sequence.back()}));
    for (int l = 0; l < c.n_layers; ++l) {
      const Layer current = layer(l);
      for (std::size_t s = 0; s < states.size(); ++s)
        run_layer(c, globals.rope, current, l, states[s], caches[s].keys[std::size_t(l)],
                  caches[s].values[std::size_t(l)], position);
    }
    for (std::size_t s = 0; s < states.size(); ++s)
      sequences[s].push_back(
          sample_token(logits(globals, states[s]).row(0).transpose(), temperature, rngs[s]));
  }
  return sequences;
}

}  // namespace detail

// `count` sequences of `length` tokens (BOS first), as generate() draws them
// one after another from one generator seeded with `seed`.
inline std::vector<Sequence> sample_sequences(const Model& m, int count, int length,
                                              float temperature, std::uint64_t seed) {
  return detail::sample_by_layer(
      m, [&](int l) { return m.layers[static_cast<std::size_t>(l)]; }, count, length, temperature,
      seed);
}

// The same sequences from a model read layer by layer (each layer once per position).
inline std::vector<Sequence> sample_sequences(const ModelSource& source, int count, int length,
                                              float temperature, std::uint64_t seed) {
  return detail::sample_by_layer(source.globals, source.layer, count, length, temperature, seed);
}

// Sequential calibration. States are the residual stream of each sequence
// (tokens x dim) entering a layer: embed_sequences gives layer 0's, and
// run_layer_on_sequences runs one layer over them in place, so they become
// the next layer's inputs, reporting the input of every linear to `observe`
// (run_layer_on_sequence: one sequence's).
inline std::vector<MatrixF> embed_sequences(const Model& m,
                                            const std::vector<Sequence>& sequences) {
  std::vector<MatrixF> states;
  for (const Sequence& s : sequences) states.push_back(embed(m, s));
  return states;
}

inline void run_layer_on_sequence(const Config& c, const RopeTables& rope, const Layer& layer,
                                  int l, MatrixF& state, const LinearObserver& observe = {}) {
  MatrixF keys(state.rows(), c.kv_dim()), values(state.rows(), c.kv_dim());
  run_layer(c, rope, layer, l, state, keys, values, 0, observe);
}

inline void run_layer_on_sequences(const Config& c, const RopeTables& rope, const Layer& layer,
                                   int l, std::vector<MatrixF>& states,
                                   const LinearObserver& observe = {}) {
  for (MatrixF& state : states) run_layer_on_sequence(c, rope, layer, l, state, observe);
}

// Logits of every prefix of every sequence: row t predicts token t + 1
// ((length - 1) x vocab per sequence).
inline std::vector<MatrixF> sequence_logits(const Model& m,
                                            const std::vector<Sequence>& sequences) {
  std::vector<MatrixF> out;
  for (const Sequence& s : sequences) {
    lowbit::detail::require(s.size() >= 2, "sequence_logits: a sequence needs at least 2 tokens");
    KvCache cache(m.config, static_cast<int>(s.size()));
    out.push_back(forward(m, cache, Sequence(s.begin(), s.end() - 1)));
  }
  return out;
}

}  // namespace lowbit::model
