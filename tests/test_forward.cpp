// lowbit/model/forward.hpp: the forward pass against a naive reference written
// here in double precision (with llama2.c's and other norm epsilons, RoPE
// bases and classifiers), KV-cache decoding against recomputation, the
// observer, and one layer at a time; then the same on the real stories260K
// (tests named *stories260k*, skipped when the file is absent).
#include <algorithm>
#include <complex>
#include <lowbit/core/calibration.hpp>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/sequences.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;

class Forward : public test::SingleThreaded {};

// The forward pass written out directly from its definition, in double: whole
// sequence at once, no cache; RoPE as a complex rotation of (x_2i + i x_2i+1)
// (Hugging Face's pairing: (x_i + i x_{i+head/2})) by pos * f_i, f_i =
// theta^(-2i / head_size) rescaled as transformers' _compute_linear_scaling_
// and _compute_llama3_parameters do; query head h reads key/value head
// h * n_kv_heads / n_heads; biases added to the linears that have them.
std::vector<VectorXd> reference_logits(const Model& m, const std::vector<int>& tokens) {
  const Config& c = m.config;
  const std::size_t T = tokens.size();
  const int hs = c.head_size();
  auto frequency = [&](int i) {
    const double f = std::pow(double(c.rope_theta), -2.0 * i / hs);
    const RopeScaling& s = c.rope_scaling;
    if (s.type == RopeScaling::Type::linear) return f / s.factor;
    if (s.type != RopeScaling::Type::llama3) return f;
    const double wavelen = 2 * M_PI / f, old = s.original_max_positions;
    if (wavelen < old / s.high_freq_factor) return f;
    if (wavelen > old / s.low_freq_factor) return f / s.factor;
    const double smooth =
        (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1 - smooth) * f / s.factor + smooth * f;
  };
  auto rms = [&](const VectorXd& x, const VectorF& w) {
    const double mean_square = x.squaredNorm() / double(x.size());
    return VectorXd(x.cwiseProduct(w.cast<double>()) / std::sqrt(mean_square + c.norm_eps));
  };
  auto rotate = [&](VectorXd& v, std::size_t pos) {
    for (int head = 0; head < v.size(); head += hs)
      for (int i = 0; i < hs / 2; ++i) {
        const bool half = c.rope_style == RopeStyle::half;
        const int j0 = head + (half ? i : 2 * i), j1 = j0 + (half ? hs / 2 : 1);
        const std::complex<double> r =
            std::complex<double>(v(j0), v(j1)) * std::polar(1.0, double(pos) * frequency(i));
        v(j0) = r.real();
        v(j1) = r.imag();
      }
  };
  std::vector<VectorXd> h;
  for (int token : tokens) h.push_back(m.token_embedding.row(token).cast<double>().transpose());
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& layer = m.layers[std::size_t(l)];
    auto w = [&](LinearKind kind) { return MatrixXd(test::weight(m, l, kind).cast<double>()); };
    auto b = [&](LinearKind kind, Index rows) {  // the bias, or zeros
      const VectorF& bias = layer.biases[index(kind)];
      return bias.size() ? VectorXd(bias.cast<double>()) : VectorXd(VectorXd::Zero(rows));
    };
    std::vector<VectorXd> q, k, v;
    for (std::size_t t = 0; t < T; ++t) {
      const VectorXd x = rms(h[t], layer.attention_norm);
      q.push_back(w(LinearKind::wq) * x + b(LinearKind::wq, c.q_dim()));
      k.push_back(w(LinearKind::wk) * x + b(LinearKind::wk, c.kv_dim()));
      v.push_back(w(LinearKind::wv) * x + b(LinearKind::wv, c.kv_dim()));
      rotate(q[t], t);
      rotate(k[t], t);
    }
    for (std::size_t t = 0; t < T; ++t) {
      VectorXd att = VectorXd::Zero(c.q_dim());
      for (int head = 0; head < c.n_heads; ++head) {
        const int kv_head = head * c.n_kv_heads / c.n_heads;
        std::vector<double> weights;
        double total = 0.0;
        for (std::size_t s = 0; s <= t; ++s) {
          const double score = q[t].segment(head * hs, hs).dot(k[s].segment(kv_head * hs, hs)) /
                               std::sqrt(double(hs));
          weights.push_back(std::exp(score));
          total += weights.back();
        }
        for (std::size_t s = 0; s <= t; ++s)
          att.segment(head * hs, hs) += weights[s] / total * v[s].segment(kv_head * hs, hs);
      }
      h[t] += w(LinearKind::wo) * att + b(LinearKind::wo, c.dim);
      const VectorXd x = rms(h[t], layer.ffn_norm);
      const VectorXd gate = w(LinearKind::w1) * x + b(LinearKind::w1, c.hidden_dim),
                     up = w(LinearKind::w3) * x + b(LinearKind::w3, c.hidden_dim);
      const VectorXd hidden = gate.array() / (1.0 + (-gate.array()).exp()) * up.array();
      h[t] += w(LinearKind::w2) * hidden + b(LinearKind::w2, c.dim);
    }
  }
  std::vector<VectorXd> out;
  for (const VectorXd& x : h)
    out.push_back(m.output_weights().cast<double>() * rms(x, m.final_norm));
  return out;
}

// Largest |forward - reference| over all logits, relative to the largest |reference|.
double logits_error(const MatrixF& logits, const std::vector<VectorXd>& reference) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t t = 0; t < reference.size(); ++t) {
    diff = std::max(
        diff,
        (logits.row(Index(t)).transpose().cast<double>() - reference[t]).cwiseAbs().maxCoeff());
    scale = std::max(scale, reference[t].cwiseAbs().maxCoeff());
  }
  return diff / scale;
}

TEST_F(Forward, MatchesANaiveReference) {
  const Model m = test::tiny_model(1);
  const std::vector<int> tokens{1, 5, 22, 0, 7, 7, 13, 2, 19, 4, 11, 3};  // the whole context
  KvCache cache(m.config);
  EXPECT_LT(logits_error(forward(m, cache, tokens), reference_logits(m, tokens)), 1e-5);
  EXPECT_EQ(cache.length, 12);
  KvCache full(m.config);
  EXPECT_THROW(forward(m, full, std::vector<int>(13, 1)), lowbit::Error);  // beyond seq_len
  EXPECT_THROW(forward(m, full, {23}), lowbit::Error);                     // beyond the vocabulary
}

// The configuration's norm epsilon and RoPE base, and a classifier apart from
// the embedding, are what the pass uses.
TEST_F(Forward, FollowsTheConfigurationAndASeparateClassifier) {
  Config config{16, 24, 2, 4, 2, 23, 12};
  config.norm_eps = 1e-2f;
  config.rope_theta = 50.0f;
  Model m = test::tiny_model(7, config);
  const std::vector<int> tokens{1, 4, 9, 16, 2, 0, 22, 5};
  KvCache a(m.config);
  EXPECT_LT(logits_error(forward(m, a, tokens), reference_logits(m, tokens)), 1e-5);

  const Model tied = m;
  m.classifier = test::tiny_model(8).token_embedding;
  KvCache b(m.config), c(m.config);
  const MatrixF untied_logits = forward(m, b, tokens);
  EXPECT_LT(logits_error(untied_logits, reference_logits(m, tokens)), 1e-5);
  EXPECT_GT((untied_logits - forward(tied, c, tokens)).cwiseAbs().maxCoeff(), 0.1f);
}

// Decoding token by token through the cache, or in chunks, gives the logits of
// recomputing the whole prefix.
void expect_cache_matches_recompute(const Model& m, const std::vector<int>& tokens) {
  KvCache once(m.config);
  const MatrixF all = forward(m, once, tokens);
  KvCache stepwise(m.config), chunked(m.config);
  MatrixF steps(all.rows(), all.cols()), chunks(all.rows(), all.cols());
  for (std::size_t t = 0; t < tokens.size(); ++t)
    steps.row(Index(t)) = forward(m, stepwise, {tokens[t]});
  for (std::size_t t = 0; t < tokens.size(); t += 5) {
    const std::vector<int> chunk(tokens.begin() + long(t),
                                 tokens.begin() + long(std::min(t + 5, tokens.size())));
    chunks.middleRows(Index(t), Index(chunk.size())) = forward(m, chunked, chunk);
  }
  const float scale = all.cwiseAbs().maxCoeff();
  EXPECT_LT((steps - all).cwiseAbs().maxCoeff(), 1e-5f * scale);
  EXPECT_LT((chunks - all).cwiseAbs().maxCoeff(), 1e-5f * scale);
}

// Hugging Face's variants: head_dim apart from dim / n_heads, biases on every
// linear, the half pairing with llama3 (theta 100 and an original context of
// 32 put the head's three frequencies in the kept, blended and divided bands)
// and linear rope scaling.
TEST_F(Forward, HuggingFaceVariantsMatchTheReference) {
  Config config{16, 24, 2, 4, 2, 23, 12};
  config.head_dim = 6;
  config.rope_theta = 100.0f;
  config.rope_style = RopeStyle::half;
  config.rope_scaling = {RopeScaling::Type::llama3, 8.0f, 1.0f, 4.0f, 32};
  Model m = test::tiny_model(11, config);
  const std::array<Index, kLinearsPerLayer> rows = linear_rows(m.config);
  for (Layer& layer : m.layers)
    for (LinearKind kind : kAllLinears)
      layer.biases[index(kind)] = test::random_weights(1, rows[index(kind)], 12, 0.3f).transpose();
  const std::vector<int> tokens{1, 5, 22, 0, 7, 7, 13, 2, 19, 4, 11, 3};
  KvCache cache(m.config);
  EXPECT_LT(logits_error(forward(m, cache, tokens), reference_logits(m, tokens)), 1e-5);

  m.config.rope_scaling = {RopeScaling::Type::linear, 4.0f};
  m.rope = rope_tables(m.config);
  KvCache linear(m.config);
  EXPECT_LT(logits_error(forward(m, linear, tokens), reference_logits(m, tokens)), 1e-5);
  // The biases matter: the model without them is far off.
  Model unbiased = m;
  for (Layer& layer : unbiased.layers) layer.biases = {};
  KvCache again(m.config);
  EXPECT_GT(logits_error(forward(m, again, tokens), reference_logits(unbiased, tokens)), 1e-3);
}

TEST_F(Forward, KvCacheDecodingEqualsRecomputation) {
  expect_cache_matches_recompute(test::tiny_model(2), {1, 3, 9, 9, 20, 0, 14, 6, 2, 8, 17});
}

TEST_F(Forward, TheObserverSeesEveryLinearInputInOrder) {
  const Model m = test::tiny_model(4);
  const std::vector<int> tokens{1, 4, 4, 8, 15};
  std::vector<std::string> seen;
  KvCache c(m.config);
  forward(m, c, tokens, [&](int l, LinearKind kind, const MatrixF& x) {
    seen.push_back(std::to_string(l) + name(kind));
    EXPECT_EQ(x.rows(), 5);
    EXPECT_EQ(x.cols(), m.layers[std::size_t(l)].linear(kind).in_features());
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"0wq", "0wk", "0wv", "0wo", "0w1", "0w3", "0w2", "1wq",
                                            "1wk", "1wv", "1wo", "1w1", "1w3", "1w2"}));
}

// A layer runs from its own weights, the configuration and the RoPE tables:
// layer by layer over whole sequences equals the full forward pass.
TEST_F(Forward, LayerByLayerEqualsTheFullForward) {
  const Model m = test::tiny_model(5);
  const std::vector<Sequence> sequences{{1, 2, 3, 4, 5, 6}, {1, 9, 9, 9}, {1, 22, 0}};
  std::vector<MatrixF> states = embed_sequences(m, sequences);
  std::vector<Calibration> w2_inputs(2, Calibration(m.config.hidden_dim));
  for (int l = 0; l < m.config.n_layers; ++l)
    run_layer_on_sequences(m.config, m.rope, m.layers[std::size_t(l)], l, states,
                           [&](int layer, LinearKind kind, const MatrixF& x) {
                             if (kind == LinearKind::w2) w2_inputs[std::size_t(layer)].add(x);
                           });
  EXPECT_EQ(w2_inputs[1].tokens(), 13);  // every token of every sequence
  const std::vector<MatrixF> full = sequence_logits(m, sequences);
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const MatrixF from_states = logits(m, states[s]);
    EXPECT_LT((from_states.topRows(full[s].rows()) - full[s]).cwiseAbs().maxCoeff(), 1e-5f);
  }

  // A layer outside any model (as a loader supplies it) runs the same.
  std::vector<MatrixF> a = embed_sequences(m, sequences), b = a;
  const Layer standalone = m.layers[1];
  run_layer_on_sequences(m.config, m.rope, m.layers[1], 1, a);
  run_layer_on_sequences(m.config, test::tiny_model(5).rope, standalone, 1, b);
  EXPECT_EQ(a[0], b[0]);
}

TEST_F(Forward, RunLayerRejectsPositionsBeyondTheContext) {
  const Model m = test::tiny_model(6);
  MatrixF x = MatrixF::Ones(4, m.config.dim);
  MatrixF keys(12, m.config.kv_dim()), values(12, m.config.kv_dim());
  EXPECT_NO_THROW(run_layer(m.config, m.rope, m.layers[0], 0, x, keys, values, 8));
  try {
    run_layer(m.config, m.rope, m.layers[0], 0, x, keys, values, 9);
    ADD_FAILURE() << "positions 9..12 of a 12-token context";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("positions 9..12 exceed the context of 12 tokens"),
              std::string::npos)
        << e.what();
  }
}

// The matrix of `m` behind a MappedRows that counts the rows each read asks for.
MappedRows forward_counted_rows(const MatrixF& matrix, std::vector<Index>& reads) {
  return {matrix.rows(), matrix.cols(), [matrix, &reads](Index first, Index count) {
            reads.push_back(count);
            return MatrixF(matrix.middleRows(first, count));
          }};
}

// Embeddings and output weights read by rows (a loader's mapped file) give the
// logits of the model holding them: bit for bit decoding one token at a time
// (how sequences are sampled: a matrix-vector product by blocks of
// kMappedRowsPerBlock rows rounds as the whole does), within rounding for a
// prompt (the matrix product blocks its sums by the sizes); no read asks for
// more than a block.
TEST_F(Forward, MappedEmbeddingsGiveTheSameLogitsBitForBit) {
  Config config{64, 96, 1, 4, 2, 2 * int(kMappedRowsPerBlock) + 452, 16};
  for (bool tied : {true, false}) {
    Model held = test::tiny_model(21, config);
    if (!tied) held.classifier = test::tiny_model(22, config).token_embedding;
    std::vector<Index> reads;
    Model mapped = held;
    mapped.mapped_embedding = forward_counted_rows(held.token_embedding, reads);
    mapped.token_embedding.resize(0, 0);
    if (!tied) {
      mapped.mapped_classifier = forward_counted_rows(held.classifier, reads);
      mapped.classifier.resize(0, 0);
    }
    EXPECT_EQ(mapped.tied(), tied);
    const std::vector<int> prompt{1, 2000, 9, 2499, 0, 1500};
    KvCache a(config), b(config);
    const MatrixF prompt_logits = forward(mapped, a, prompt);
    EXPECT_LT((prompt_logits - forward(held, b, prompt)).cwiseAbs().maxCoeff(),
              1e-5f * prompt_logits.cwiseAbs().maxCoeff())
        << "tied " << tied;
    for (int token : {7, 2100, 1024}) {
      const MatrixF step = forward(mapped, a, {token});
      EXPECT_TRUE(step == forward(held, b, {token})) << "tied " << tied << ", token " << token;
    }
    EXPECT_LE(*std::max_element(reads.begin(), reads.end()), kMappedRowsPerBlock);
    EXPECT_EQ(
        load_all({mapped, [&](int l) { return held.layers[std::size_t(l)]; }}).token_embedding,
        held.token_embedding);
    test::expect_error_containing([&] { (void)mapped.output_weights(); }, "mapped checkpoint");
  }
}

TEST_F(Forward, stories260k_matches_the_naive_reference_and_its_cache) {
  REQUIRE_STORIES260K(m);
  Rng rng(3);
  const Sequence tokens = generate(*m, 40, 1.0f, rng);
  KvCache cache(m->config);
  EXPECT_LT(logits_error(forward(*m, cache, tokens), reference_logits(*m, tokens)), 1e-5);
  expect_cache_matches_recompute(*m, tokens);
}

}  // namespace
}  // namespace lowbit::model
