// lowbit/model/sequences.hpp: sampling is deterministic for a seed, greedy at
// temperature 0 and distributed as softmax(logits / T) otherwise; sequences
// start with the model's BOS; their logits are the forward pass's on each
// prefix; embedded states are the embedding rows.
#include <lowbit/model/sequences.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class Sequences : public test::SingleThreaded {};

TEST_F(Sequences, SampleTokenIsGreedyAtZeroAndSoftmaxDistributedAbove) {
  VectorF logits(4);
  logits << 0.0f, 2.0f, std::log(3.0f) + 2.0f, -50.0f;  // weights 1 : e^2 : 3 e^2 : ~0
  Rng rng(11);
  EXPECT_EQ(sample_token(logits, 0.0f, rng), 2);
  std::vector<int> counts(4, 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) ++counts[std::size_t(sample_token(logits, 1.0f, rng))];
  const double total = 1.0 + 4.0 * std::exp(2.0);
  EXPECT_NEAR(counts[0] / double(draws), 1.0 / total, 0.005);
  EXPECT_NEAR(counts[1] / double(draws), std::exp(2.0) / total, 0.01);
  EXPECT_NEAR(counts[2] / double(draws), 3.0 * std::exp(2.0) / total, 0.01);
  EXPECT_EQ(counts[3], 0);
}

TEST_F(Sequences, SamplingIsDeterministicForASeed) {
  const Model m = test::tiny_model(6);
  const std::vector<Sequence> sequences = sample_sequences(m, 3, 10, 1.0f, 7);
  EXPECT_EQ(sequences, sample_sequences(m, 3, 10, 1.0f, 7));
  EXPECT_NE(sequences, sample_sequences(m, 3, 10, 1.0f, 8));
  for (const Sequence& s : sequences) {
    EXPECT_EQ(s.size(), 10u);
    EXPECT_EQ(s.front(), m.config.bos_token);
  }
  Rng rng(1);
  EXPECT_THROW(generate(m, 0, 1.0f, rng), Error);
  EXPECT_THROW(generate(m, 13, 1.0f, rng), Error);  // beyond seq_len
}

// The sequences decoded together are those generate() draws one after
// another from one generator; a model read layer by layer gives the same.
TEST_F(Sequences, SampledTogetherAsGeneratedOneByOne) {
  const Model m = test::tiny_model(6);
  for (const float temperature : {1.0f, 0.0f}) {
    Rng rng(5);
    std::vector<Sequence> one_by_one;
    for (int i = 0; i < 3; ++i) one_by_one.push_back(generate(m, 9, temperature, rng));
    EXPECT_EQ(sample_sequences(m, 3, 9, temperature, 5), one_by_one) << temperature;
    Model globals = m;
    globals.layers.clear();
    int reads = 0;
    const ModelSource source{globals, [&](int l) {
                               ++reads;
                               return m.layers[std::size_t(l)];
                             }};
    EXPECT_EQ(sample_sequences(source, 3, 9, temperature, 5), one_by_one) << temperature;
    EXPECT_EQ(reads, 8 * m.config.n_layers);  // each layer once per decoded position
  }
  EXPECT_THROW(sample_sequences(m, 1, 13, 1.0f, 1), Error);  // beyond seq_len
}

// Greedy decoding picks, at every step, the argmax of the logits of the prefix.
TEST_F(Sequences, SequenceLogitsAreTheForwardPassOfEachPrefix) {
  const Model m = test::tiny_model(12);
  Rng rng(2);
  const Sequence greedy = generate(m, 9, 0.0f, rng);
  const MatrixF logits = sequence_logits(m, {greedy})[0];
  ASSERT_EQ(logits.rows(), 8);
  for (Index t = 0; t < 8; ++t) {
    KvCache cache(m.config);
    const MatrixF prefix = forward(m, cache, Sequence(greedy.begin(), greedy.begin() + t + 1));
    EXPECT_LT((logits.row(t) - prefix.row(t)).cwiseAbs().maxCoeff(), 1e-5f);
    Index best = 0;
    logits.row(t).maxCoeff(&best);
    EXPECT_EQ(best, greedy[std::size_t(t) + 1]);
  }
  EXPECT_THROW(sequence_logits(m, {{1}}), Error);
  const std::vector<MatrixF> states = embed_sequences(m, {greedy});
  for (std::size_t t = 0; t < greedy.size(); ++t)
    EXPECT_EQ(states[0].row(Index(t)), m.token_embedding.row(greedy[t]));
}

}  // namespace
}  // namespace lowbit::model
