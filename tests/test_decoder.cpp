// examples/decoder: the LLaMA-style decoder against a naive reference written
// here in double precision, KV-cache decoding against recomputation, the
// llama2.c loader on good and hostile files, the Linear seam and the
// layer-by-layer API; then the same on the real stories260K model (tests named
// *stories260k*, skipped when the file is absent), with the sampling and
// evaluation helpers.
#include <complex>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <lowbit/core/calibration.hpp>
#include <lowbit/quant/rtn.hpp>
#include <optional>
#include <random>

#include "evaluation.hpp"
#include "llama.hpp"
#include "decoder_models.hpp"
#include "test_support.hpp"

namespace decoder {
namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;


// The forward pass written out directly from its definition, in double: whole
// sequence at once, no cache; RoPE as a complex rotation of (x_2i + i x_2i+1)
// by pos * 10000^(-2i / head_size); query head h reads key/value head
// h * n_kv_heads / n_heads.
std::vector<VectorXd> reference_logits(const Model& m, const std::vector<int>& tokens) {
  const Config& c = m.config;
  const std::size_t T = tokens.size();
  const int hs = c.dim / c.n_heads;
  auto rms = [](const VectorXd& x, const VectorF& w) {
    const double mean_square = x.squaredNorm() / double(x.size());
    return VectorXd(x.cwiseProduct(w.cast<double>()) / std::sqrt(mean_square + 1e-5));
  };
  auto rotate = [&](VectorXd& v, std::size_t pos) {
    for (int j = 0; j < v.size(); j += 2) {
      const int i = (j % hs) / 2;
      const double angle = double(pos) * std::pow(10000.0, -2.0 * i / hs);
      const std::complex<double> r = std::complex<double>(v(j), v(j + 1)) * std::polar(1.0, angle);
      v(j) = r.real();
      v(j + 1) = r.imag();
    }
  };
  std::vector<VectorXd> h;
  for (int token : tokens) h.push_back(m.token_embedding.row(token).cast<double>().transpose());
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& layer = m.layers[std::size_t(l)];
    auto w = [&](LinearKind kind) { return MatrixXd(weight(m, l, kind).cast<double>()); };
    std::vector<VectorXd> q, k, v;
    for (std::size_t t = 0; t < T; ++t) {
      const VectorXd x = rms(h[t], layer.attention_norm);
      q.push_back(w(LinearKind::wq) * x);
      k.push_back(w(LinearKind::wk) * x);
      v.push_back(w(LinearKind::wv) * x);
      rotate(q[t], t);
      rotate(k[t], t);
    }
    for (std::size_t t = 0; t < T; ++t) {
      VectorXd att = VectorXd::Zero(c.dim);
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
      h[t] += w(LinearKind::wo) * att;
      const VectorXd x = rms(h[t], layer.ffn_norm);
      const VectorXd gate = w(LinearKind::w1) * x, up = w(LinearKind::w3) * x;
      const VectorXd hidden = gate.array() / (1.0 + (-gate.array()).exp()) * up.array();
      h[t] += w(LinearKind::w2) * hidden;
    }
  }
  std::vector<VectorXd> out;
  for (const VectorXd& x : h)
    out.push_back(m.token_embedding.cast<double>() * rms(x, m.final_norm));
  return out;
}

// Largest |decoder - reference| over all logits, relative to the largest |reference|.
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

TEST_F(Decoder, MatchesANaiveReference) {
  const Model m = tiny_model(1);
  const std::vector<int> tokens{1, 5, 22, 0, 7, 7, 13, 2, 19, 4, 11, 3};  // the whole context
  KvCache cache(m.config);
  EXPECT_LT(logits_error(forward(m, cache, tokens), reference_logits(m, tokens)), 1e-5);
  EXPECT_EQ(cache.length, 12);
  KvCache full(m.config);
  EXPECT_THROW(forward(m, full, std::vector<int>(13, 1)), lowbit::Error);  // beyond seq_len
  EXPECT_THROW(forward(m, full, {23}), lowbit::Error);                     // beyond the vocabulary
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

TEST_F(Decoder, KvCacheDecodingEqualsRecomputation) {
  expect_cache_matches_recompute(tiny_model(2), {1, 3, 9, 9, 20, 0, 14, 6, 2, 8, 17});
}

// llama2.c "version 0" bytes written out field by field.
std::vector<char> llama2c_bytes(const Model& m) {
  std::vector<char> bytes;
  auto put = [&](const void* p, std::size_t n) {
    bytes.insert(bytes.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
  };
  const Config& c = m.config;
  const std::int32_t header[] = {c.dim,        c.hidden_dim, c.n_layers, c.n_heads,
                                 c.n_kv_heads, c.vocab_size, c.seq_len};
  put(header, sizeof header);
  auto matrix = [&](const MatrixF& x) { put(x.data(), sizeof(float) * std::size_t(x.size())); };
  matrix(m.token_embedding);
  for (const Layer& layer : m.layers) put(layer.attention_norm.data(), 4 * std::size_t(c.dim));
  for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv, LinearKind::wo})
    for (int l = 0; l < c.n_layers; ++l) matrix(weight(m, l, kind));
  for (const Layer& layer : m.layers) put(layer.ffn_norm.data(), 4 * std::size_t(c.dim));
  for (LinearKind kind : {LinearKind::w1, LinearKind::w2, LinearKind::w3})
    for (int l = 0; l < c.n_layers; ++l) matrix(weight(m, l, kind));
  put(m.final_norm.data(), 4 * std::size_t(c.dim));
  matrix(m.rope_cos);  // llama2.c's freq_cis_real and _imag (the loader ignores them)
  matrix(m.rope_sin);
  return bytes;
}

void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

void expect_load_error(const std::string& path, const std::string& fragment) {
  try {
    load_llama2c(path);
    ADD_FAILURE() << "expected an error containing '" << fragment << "'";
  } catch (const lowbit::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST_F(Decoder, LoadsLlama2cCheckpointsAndRejectsBadOnes) {
  lowbit::test::TempDir dir;
  const Model m = tiny_model(3);
  const std::vector<char> good = llama2c_bytes(m);
  write_file(dir.file("good.bin"), good);
  const Model loaded = load_llama2c(dir.file("good.bin"));
  EXPECT_EQ(loaded.token_embedding, m.token_embedding);
  for (int l = 0; l < 2; ++l)
    for (LinearKind kind : kAllLinears)
      EXPECT_EQ(weight(loaded, l, kind), weight(m, l, kind)) << name(kind);
  EXPECT_EQ(loaded.layers[1].ffn_norm, m.layers[1].ffn_norm);
  EXPECT_EQ(loaded.final_norm, m.final_norm);
  KvCache a(m.config), b(m.config);
  EXPECT_EQ(forward(loaded, a, {1, 2, 3}), forward(m, b, {1, 2, 3}));

  auto variant = [&](const std::string& file, std::vector<char> bytes) {
    write_file(dir.file(file), bytes);
    return dir.file(file);
  };
  auto with_header = [&](int field, std::int32_t value) {
    std::vector<char> bytes = good;
    std::memcpy(bytes.data() + 4 * field, &value, 4);
    return bytes;
  };
  expect_load_error(dir.file("absent.bin"), "cannot open");
  expect_load_error(variant("empty.bin", {}), "truncated (0 bytes");
  expect_load_error(variant("short.bin", std::vector<char>(good.begin(), good.end() - 1)),
                    "(truncated)");
  std::vector<char> longer = good;
  longer.push_back(0);
  expect_load_error(variant("long.bin", longer), "(trailing data)");
  expect_load_error(variant("heads.bin", with_header(3, 0)), "n_heads = 0");
  expect_load_error(variant("kv.bin", with_header(4, 3)),
                    "n_heads 4 is not a multiple of n_kv_heads 3");
  expect_load_error(variant("odd.bin", with_header(3, 16)), "head size 1 must be even");
  expect_load_error(variant("untied.bin", with_header(5, -23)), "untied classifier");
  expect_load_error(variant("huge.bin", with_header(0, 1 << 16)),
                    "expected");  // a lying header, not bad_alloc
  expect_load_error(variant("huger.bin", with_header(2, 1 << 30)),
                    "n_layers = 1073741824 is outside");
  std::vector<char> nan = good;
  const float bad = std::numeric_limits<float>::quiet_NaN();
  const std::size_t wk_of_layer1 = 28 + 4 * std::size_t(23 * 16 + 2 * 16 + 2 * 16 * 16 + 8 * 16);
  std::memcpy(nan.data() + wk_of_layer1 + 4, &bad, 4);
  expect_load_error(variant("nan.bin", nan), "wk of layer 1 has non-finite values");
}

// Counts calls and forwards to another Linear: the seam a quantized layer uses.
class CountingLinear final : public Linear {
 public:
  explicit CountingLinear(std::shared_ptr<const Linear> inner) : inner_(std::move(inner)) {}
  Index in_features() const override { return inner_->in_features(); }
  Index out_features() const override { return inner_->out_features(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    calls += x.rows();
    inner_->apply(x, y);
  }
  mutable Index calls = 0;  // tokens seen

 private:
  std::shared_ptr<const Linear> inner_;
};

TEST_F(Decoder, AnyLinearImplementationPlugsIn) {
  const Model m = tiny_model(4);
  Model counted = m;  // shares the weights
  std::vector<std::shared_ptr<CountingLinear>> counters;
  for (Layer& layer : counted.layers)
    for (auto& linear : layer.linears) {
      counters.push_back(std::make_shared<CountingLinear>(linear));
      linear = counters.back();
    }
  KvCache a(m.config), b(m.config);
  const std::vector<int> tokens{1, 4, 4, 8, 15};
  EXPECT_EQ(forward(counted, a, tokens), forward(m, b, tokens));
  for (const auto& counter : counters) EXPECT_EQ(counter->calls, 5);

  // The observer sees the input of every linear, in order, with its shape.
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

TEST_F(Decoder, LayerByLayerEqualsTheFullForward) {
  const Model m = tiny_model(5);
  const std::vector<Sequence> sequences{{1, 2, 3, 4, 5, 6}, {1, 9, 9, 9}, {1, 22, 0}};
  std::vector<MatrixF> states = embed_sequences(m, sequences);
  std::vector<lowbit::Calibration> w2_inputs(2, lowbit::Calibration(m.config.hidden_dim));
  for (int l = 0; l < m.config.n_layers; ++l)
    run_layer_on_sequences(m, l, states, [&](int layer, LinearKind kind, const MatrixF& x) {
      if (kind == LinearKind::w2) w2_inputs[std::size_t(layer)].add(x);
    });
  EXPECT_EQ(w2_inputs[1].tokens(), 13);  // every token of every sequence
  const std::vector<MatrixF> full = sequence_logits(m, sequences);
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    const MatrixF from_states = logits(m, states[s]);
    EXPECT_LT((from_states.topRows(full[s].rows()) - full[s]).cwiseAbs().maxCoeff(), 1e-5f);
  }

  // Sequential replacement: a changed layer 1 leaves layer 1's inputs alone.
  Model changed = m;
  changed.layers[1].linears[index(LinearKind::wo)] =
      std::make_shared<FloatLinear>(MatrixF(weight(m, 1, LinearKind::wo) * 0.5f));
  std::vector<MatrixF> a = embed_sequences(m, sequences), b = a;
  run_layer_on_sequences(m, 0, a);
  run_layer_on_sequences(changed, 0, b);
  EXPECT_EQ(a[0], b[0]);
  run_layer_on_sequences(m, 1, a);
  run_layer_on_sequences(changed, 1, b);
  EXPECT_GT((a[0] - b[0]).norm(), 1e-3f);
}

TEST_F(Decoder, MetricsOfAModelAgainstItselfAndAnother) {
  const Model m = tiny_model(6);
  const std::vector<Sequence> sequences = sample_sequences(m, 3, 10, 1.0f, 7);
  EXPECT_EQ(sequences, sample_sequences(m, 3, 10, 1.0f, 7));  // a fixed seed, the same tokens
  EXPECT_NE(sequences, sample_sequences(m, 3, 10, 1.0f, 8));
  for (const Sequence& s : sequences) EXPECT_EQ(s.front(), kBos);
  const std::vector<MatrixF> reference = sequence_logits(m, sequences);
  const Metrics self = compare(reference, reference, sequences);
  EXPECT_EQ(self.positions, 27);
  EXPECT_NEAR(self.kl, 0.0, 1e-12);
  EXPECT_EQ(self.top1, 1.0);
  EXPECT_GT(self.perplexity, 1.0);
  EXPECT_LT(self.entropy, std::log(23.0));

  // A uniform candidate: KL = log(vocab) - H(reference), perplexity = vocab.
  std::vector<MatrixF> uniform = reference;
  for (MatrixF& l : uniform) l.setZero();
  const Metrics flat = compare(reference, uniform, sequences);
  EXPECT_NEAR(flat.perplexity, 23.0, 1e-9);
  EXPECT_NEAR(flat.entropy, std::log(23.0), 1e-12);
  EXPECT_NEAR(flat.kl, std::log(23.0) - self.entropy, 1e-9);
}

// --- the real model --------------------------------------------------------

TEST_F(Decoder, stories260k_loads_and_matches_its_own_rope_tables) {
  REQUIRE_STORIES260K(m);
  const Config& c = m->config;
  EXPECT_EQ((std::vector<int>{c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                              c.vocab_size, c.seq_len}),
            (std::vector<int>{64, 172, 5, 8, 4, 512, 512}));
  // The checkpoint ends with the RoPE tables its exporter computed: ours agree.
  std::ifstream file(*lowbit::test::model_file("stories260K.bin"),
                     std::ios::binary | std::ios::ate);
  const std::streamoff tables = 2 * 512 * 4 * 4;
  file.seekg(-tables, std::ios::end);
  MatrixF cos(512, 4), sin(512, 4);
  file.read(reinterpret_cast<char*>(cos.data()), tables / 2);
  file.read(reinterpret_cast<char*>(sin.data()), tables / 2);
  EXPECT_LT((cos - m->rope_cos).cwiseAbs().maxCoeff(), 1e-5f);
  EXPECT_LT((sin - m->rope_sin).cwiseAbs().maxCoeff(), 1e-5f);
}

TEST_F(Decoder, stories260k_matches_the_naive_reference_and_its_cache) {
  REQUIRE_STORIES260K(m);
  Rng rng(3);
  const Sequence tokens = generate(*m, 40, 1.0f, rng);
  KvCache cache(m->config);
  EXPECT_LT(logits_error(forward(*m, cache, tokens), reference_logits(*m, tokens)), 1e-5);
  expect_cache_matches_recompute(*m, tokens);
}

TEST_F(Decoder, stories260k_rejects_a_truncated_copy) {
  REQUIRE_STORIES260K(m);
  lowbit::test::TempDir dir;
  std::ifstream in(*lowbit::test::model_file("stories260K.bin"), std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes.resize(bytes.size() / 2);
  write_file(dir.file("half.bin"), bytes);
  expect_load_error(dir.file("half.bin"), "expected 1056540 bytes");
}

// The model is trained: on its own samples its next-token distributions are
// far from uniform (6.24 nats over 512 tokens), and decoding is deterministic
// for a seed.
TEST_F(Decoder, stories260k_predicts_its_own_samples_confidently) {
  REQUIRE_STORIES260K(m);
  const std::vector<Sequence> greedy = sample_sequences(*m, 1, 256, 0.0f, 1);
  const std::vector<MatrixF> greedy_logits = sequence_logits(*m, greedy);
  const Metrics g = compare(greedy_logits, greedy_logits, greedy);
  const std::vector<Sequence> sampled = sample_sequences(*m, 8, 128, 1.0f, 2);
  const std::vector<MatrixF> sampled_logits = sequence_logits(*m, sampled);
  const Metrics s = compare(sampled_logits, sampled_logits, sampled);
  std::cout << "stories260K: greedy entropy " << g.entropy << " nats, perplexity " << g.perplexity
            << "; temperature-1 samples: entropy " << s.entropy << " nats, perplexity "
            << s.perplexity << " (uniform: " << std::log(512.0) << " nats, 512)\n";
  EXPECT_LT(g.entropy, 3.0);
  EXPECT_LT(s.entropy, 3.0);
  EXPECT_LT(s.perplexity, 20.0);
  EXPECT_EQ(sampled, sample_sequences(*m, 8, 128, 1.0f, 2));
}

// The metrics rank models the way they must: round-to-nearest weights (every
// linear replaced through the Linear seam, dequantized to float) drift from
// the float model more at 3 bits than at 8, on held-out samples. Measured
// (per-row asymmetric grids): 8 bits KL 0.023 nats, top-1 0.89; 3 bits KL 4.8,
// top-1 0.10. The tiny model is sensitive: its temperature-1 samples have
// flat next-token distributions (2.9 nats), so near-ties flip the top-1.
TEST_F(Decoder, stories260k_metrics_rank_rtn_bit_widths) {
  REQUIRE_STORIES260K(m);
  const std::vector<Sequence> held_out = sample_sequences(*m, 8, 128, 1.0f, 11);
  const std::vector<MatrixF> reference = sequence_logits(*m, held_out);
  auto rtn_metrics = [&](int bits) {
    Model q = *m;
    lowbit::RtnConfig config;
    config.bits = bits;
    for (int l = 0; l < q.config.n_layers; ++l)
      for (LinearKind kind : kAllLinears)
        q.layers[std::size_t(l)].linears[index(kind)] = std::make_shared<FloatLinear>(
            lowbit::quantize_rtn(weight(*m, l, kind), config).weights.dequantize());
    const Metrics metrics = compare(reference, sequence_logits(q, held_out), held_out);
    std::cout << "stories260K RTN " << bits << "-bit (per row): KL " << metrics.kl
              << " nats, top-1 " << metrics.top1 << ", perplexity " << metrics.perplexity << "\n";
    return metrics;
  };
  const Metrics float_model = compare(reference, reference, held_out);
  const Metrics w8 = rtn_metrics(8), w3 = rtn_metrics(3);
  EXPECT_LT(w8.kl, 0.1);
  EXPECT_GT(w8.top1, 0.8);
  EXPECT_GT(w3.kl, 10 * w8.kl);
  EXPECT_LT(w3.top1, w8.top1);
  EXPECT_GT(w3.perplexity, float_model.perplexity);
}

}  // namespace
}  // namespace decoder
