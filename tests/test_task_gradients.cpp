// lowbit/model/task_gradients.hpp: the backward pass against central finite
// differences of the loss, in double (float's 1e-7 rounding of a loss near 5
// would swamp a difference over a step small enough for 1e-3 agreement), on
// a random tiny model (grouped-query attention, tied and separate heads,
// both RoPE pairings, biases, masks) and on the real stories260K (tests named
// *stories260k*, skipped when the file is absent); the loss against the
// forward pass's logits; the accumulation of |dL/dW| per sample; bad input.
#include <lowbit/model/quantized_linear.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <lowbit/model/task_gradients.hpp>
#include <lowbit/quant/rtn.hpp>
#include <map>
#include <random>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class TaskGradientsTest : public test::SingleThreaded {};

using GradientMap = std::map<std::pair<int, int>, Eigen::MatrixXd>;

// dL/dW of every linear of one sample, in double.
GradientMap taskgrad_exact(const Model& m, const TaskSample& sample) {
  GradientMap grads;
  task_backward<double>(m, sample,
                        [&](int l, LinearKind kind, const MatrixD& dy, const MatrixD& x) {
                          grads[{l, index(kind)}] = dy.transpose() * x;
                        });
  return grads;
}

// A copy of m whose weight (r, c) of linear `kind` in layer l is `value`.
Model taskgrad_with_weight(const Model& m, int l, LinearKind kind, Index r, Index c, float value) {
  Model changed = m;
  Layer& layer = changed.layers[std::size_t(l)];
  MatrixF w = float_weight(layer, kind);
  w(r, c) = value;
  layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
  return changed;
}

// Central difference of the double loss at weight (r, c). The perturbed
// weights are floats, so the step is the exact difference of the two floats.
double taskgrad_finite_difference(const Model& m, const TaskSample& sample, int l, LinearKind kind,
                                  Index r, Index c, double step) {
  const float w = test::weight(m, l, kind)(r, c);
  const float plus = float(double(w) + step), minus = float(double(w) - step);
  const double up = task_backward<double>(taskgrad_with_weight(m, l, kind, r, c, plus), sample);
  const double down = task_backward<double>(taskgrad_with_weight(m, l, kind, r, c, minus), sample);
  return (up - down) / (double(plus) - double(minus));
}

// For every linear of every layer: the entry of largest |dL/dW| and
// `random_entries` others agree with finite differences within `tolerance`
// relative to max(|dL/dW_rc|, 1% of the matrix's largest) (entries near zero
// have no meaningful relative error). Returns the worst relative error seen.
double taskgrad_check(const Model& m, const TaskSample& sample, int random_entries,
                      double tolerance, unsigned seed) {
  const GradientMap grads = taskgrad_exact(m, sample);
  EXPECT_EQ(grads.size(), std::size_t(m.config.n_layers * kLinearsPerLayer));
  std::mt19937 rng(seed);
  double worst = 0;
  for (int l = 0; l < m.config.n_layers; ++l)
    for (LinearKind kind : kAllLinears) {
      const Eigen::MatrixXd& g = grads.at({l, index(kind)});
      const MatrixF& w = test::weight(m, l, kind);
      EXPECT_EQ(g.rows(), w.rows());
      EXPECT_EQ(g.cols(), w.cols());
      std::vector<std::pair<Index, Index>> entries(1);
      g.cwiseAbs().maxCoeff(&entries[0].first, &entries[0].second);
      for (int i = 0; i < random_entries; ++i)
        entries.emplace_back(Index(rng() % std::uint32_t(g.rows())),
                             Index(rng() % std::uint32_t(g.cols())));
      const double largest = g.cwiseAbs().maxCoeff();
      for (const auto& [r, c] : entries) {
        const double step = 1e-3 * std::max(0.1, double(std::abs(w(r, c))));
        const double fd = taskgrad_finite_difference(m, sample, l, kind, r, c, step);
        const double error = std::abs(fd - g(r, c)) / std::max(std::abs(g(r, c)), 0.01 * largest);
        worst = std::max(worst, error);
        EXPECT_LT(error, tolerance)
            << "layer " << l << " " << name(kind) << " (" << r << ", " << c << "): backward "
            << g(r, c) << ", finite difference " << fd << " (seed " << seed << ")";
      }
    }
  return worst;
}

TaskSample taskgrad_sample(const Model& m, int length, std::uint64_t seed) {
  return {sample_sequences(m, 1, length, 1.0f, seed)[0], {}};
}

TEST_F(TaskGradientsTest, MatchFiniteDifferencesOnATinyModelWithGroupedQueryAttention) {
  const Model m = test::tiny_model(3);  // 4 query heads sharing 2 key/value heads, tied head
  ASSERT_TRUE(m.classifier.size() == 0);
  taskgrad_check(m, taskgrad_sample(m, 9, 5), 4, 1e-5, 11);
}

TEST_F(TaskGradientsTest, MatchFiniteDifferencesWithASeparateHeadBiasesAndHalfRope) {
  Config c{16, 24, 2, 4, 1, 23, 12};  // every query head shares one key/value head
  c.rope_style = RopeStyle::half;
  c.norm_eps = 1e-6f;
  Model m = test::tiny_model(4, c);
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  m.classifier = MatrixF::NullaryExpr(c.vocab_size, c.dim, [&] { return 0.3f * normal(rng); });
  for (Layer& layer : m.layers)
    for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv})
      layer.biases[index(kind)] =
          VectorF::NullaryExpr(linear_rows(c)[index(kind)], [&] { return 0.1f * normal(rng); });
  taskgrad_check(m, taskgrad_sample(m, 10, 6), 4, 1e-5, 12);
}

TEST_F(TaskGradientsTest, MatchFiniteDifferencesWithAMask) {
  const Model m = test::tiny_model(5);
  TaskSample sample = taskgrad_sample(m, 10, 7);
  sample.mask = {0, 0, 0, 0, 0, 0, 1, 0, 1, 1};  // an "answer" of three tokens
  taskgrad_check(m, sample, 4, 1e-5, 13);
}

// The loss is the mean cross-entropy of forward()'s logits, computed here
// from them directly; float and double agree.
TEST_F(TaskGradientsTest, LossIsTheForwardPassCrossEntropy) {
  const Model m = test::tiny_model(6);
  TaskSample sample = taskgrad_sample(m, 11, 9);
  sample.mask = {1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0};
  KvCache cache(m.config);
  const MatrixF z = forward(m, cache, Sequence(sample.tokens.begin(), sample.tokens.end() - 1));
  double total = 0;
  int counted = 0;
  for (Index t = 0; t < z.rows(); ++t) {
    if (!sample.mask[std::size_t(t) + 1]) continue;
    const Eigen::VectorXd row = z.row(t).cast<double>().transpose();
    total += std::log(row.array().exp().sum()) - row(sample.tokens[std::size_t(t) + 1]);
    ++counted;
  }
  EXPECT_EQ(counted, 6);
  EXPECT_NEAR(task_backward<float>(m, sample), total / counted, 1e-6);
  EXPECT_NEAR(task_backward<double>(m, sample), total / counted, 1e-5);
}

// G sums |dL/dW| per sample (not |sum of dL/dW|), and the float pass agrees
// with the double one.
TEST_F(TaskGradientsTest, AccumulateAbsoluteGradientsPerSample) {
  const Model m = test::tiny_model(7);
  const std::vector<Sequence> sequences = sample_sequences(m, 2, 8, 1.0f, 3);
  const TaskGradients g = task_gradients(m, next_token_task(sequences));
  const GradientMap first = taskgrad_exact(m, {sequences[0], {}});
  const GradientMap second = taskgrad_exact(m, {sequences[1], {}});
  for (int l = 0; l < m.config.n_layers; ++l)
    for (LinearKind kind : kAllLinears) {
      const Eigen::MatrixXd& a = first.at({l, index(kind)});
      const Eigen::MatrixXd& b = second.at({l, index(kind)});
      const Eigen::MatrixXd expected = a.cwiseAbs() + b.cwiseAbs();
      EXPECT_LT((g.sum(l, kind).cast<double>() - expected).norm(), 1e-4 * expected.norm())
          << "layer " << l << " " << name(kind);
      EXPECT_GT((expected - (a + b).cwiseAbs()).norm(), 1e-3 * expected.norm());
      EXPECT_EQ(g.layers[std::size_t(l)][std::size_t(index(kind))].samples(), 2);
    }
  EXPECT_NEAR(g.loss,
              0.5 * (task_backward<double>(m, {sequences[0], {}}) +
                     task_backward<double>(m, {sequences[1], {}})),
              1e-5);
}

// A label the mask leaves out changes nothing; the padded hidden units of
// pad_hidden get zero gradients (silu(0) * 0).
TEST_F(TaskGradientsTest, MaskedLabelsAndPaddedUnitsHaveNoGradient) {
  const Model m = pad_hidden(test::tiny_model(8), 32);
  TaskSample sample = taskgrad_sample(m, 9, 4);
  sample.mask.assign(9, 1);
  sample.mask[8] = 0;
  TaskSample other = sample;
  other.tokens[8] = (other.tokens[8] + 1) % m.config.vocab_size;
  const TaskGradients a = task_gradients(m, {sample}), b = task_gradients(m, {other});
  const Index hidden = 24;  // tiny_model's, padded to 32
  for (int l = 0; l < m.config.n_layers; ++l) {
    for (LinearKind kind : kAllLinears)
      EXPECT_EQ(a.sum(l, kind), b.sum(l, kind)) << "layer " << l << " " << name(kind);
    EXPECT_EQ(a.sum(l, LinearKind::w1).bottomRows(32 - hidden).cwiseAbs().maxCoeff(), 0.0f);
    EXPECT_EQ(a.sum(l, LinearKind::w3).bottomRows(32 - hidden).cwiseAbs().maxCoeff(), 0.0f);
    EXPECT_EQ(a.sum(l, LinearKind::w2).rightCols(32 - hidden).cwiseAbs().maxCoeff(), 0.0f);
    EXPECT_GT(a.sum(l, LinearKind::w2).leftCols(hidden).cwiseAbs().maxCoeff(), 0.0f);
  }
}

// task_gradients(m, task) fails with a message containing `expected`.
void taskgrad_expect_error(const Model& m, const std::vector<TaskSample>& task,
                           const std::string& expected) {
  try {
    task_gradients(m, task);
    ADD_FAILURE() << "no error, expected: " << expected;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
}

TEST_F(TaskGradientsTest, RejectBadSamplesNamingWhatIsWrong) {
  const Model m = test::tiny_model(9);
  taskgrad_expect_error(m, {}, "no task samples");
  taskgrad_expect_error(m, {{{1}, {}}},
                        "task sample 0: task gradients: a sample needs at least 2 tokens");
  taskgrad_expect_error(m, {{{1, 2}, {}}, {{1, 23}, {}}},
                        "task sample 1: task gradients: token 23 is outside the vocabulary of 23");
  taskgrad_expect_error(m, {{{1, -1}, {}}}, "token -1 is outside");
  taskgrad_expect_error(m, {{{1, 2, 3}, {1, 1}}},
                        "the mask has 2 entries, expected one per token (3)");
  taskgrad_expect_error(m, {{{1, 2, 3}, {1, 0, 0}}}, "the mask counts no position");
  taskgrad_expect_error(m, {{Sequence(13, 1), {}}}, "exceeds the model's context of 12");
  Model quantized = m;
  const UniformWeights w = quantize_rtn(test::weight(m, 1, LinearKind::w2), {}).weights;
  quantized.layers[1].linears[index(LinearKind::w2)] =
      std::make_shared<BitPlaneLinear>(pack_bitplanes(w));
  taskgrad_expect_error(quantized, {{{1, 2, 3}, {}}}, "w2 is not a FloatLinear");
  Model short_model = m;
  short_model.layers.pop_back();
  taskgrad_expect_error(short_model, {{{1, 2, 3}, {}}}, "the model has 1 layers");
}

// Whole-model TACQ takes G from the task: layer 0's wq (whose input is the
// float model's under sequential calibration) is quantize_tacq on that
// layer's Hessian and the task's G; another task gives another result.
TEST_F(TaskGradientsTest, WholeModelTacqUsesTheTaskGradients) {
  // 64 x 64 query weights: 0.35% of them is 14 kept weights.
  const Model m = test::tiny_model(10, Config{64, 96, 2, 4, 2, 23, 12});
  const std::vector<Sequence> calibration = sample_sequences(m, 3, 10, 1.0f, 1);
  const std::vector<TaskSample> task = next_token_task(sample_sequences(m, 2, 10, 1.0f, 5));
  const QuantSpec spec{"tacq", 2, 16, false};
  auto first_wq = [&](const std::vector<TaskSample>& t) {
    MatrixF q;
    quantize_model_for_task(
        m, calibration, spec, t, {}, [&](int l, LinearKind kind, const QuantizedLinear& r) {
          if (l != 0 || kind != LinearKind::wq) return;
          const MatrixF identity = MatrixF::Identity(m.config.dim, m.config.dim);
          MatrixF y(m.config.dim, m.config.q_dim());
          r.linear->apply(identity, y);
          q = y.transpose();  // the dequantized weights, out x in
        });
    return q;
  };
  Calibration inputs(m.config.dim);
  for (const Sequence& s : calibration) {
    MatrixF state = embed(m, s);
    run_layer_on_sequence(m.config, m.rope, m.layers[0], 0, state,
                          [&](int, LinearKind kind, const MatrixF& x) {
                            if (kind == LinearKind::wq) inputs.add(x);
                          });
  }
  TacqConfig config;
  config.gptq.bits = 2;
  config.gptq.group_size = 16;
  const MatrixF expected = quantize_tacq(test::weight(m, 0, LinearKind::wq), inputs.hessian(),
                                         task_gradients(m, task).sum(0, LinearKind::wq), config)
                               .dequantize();
  const MatrixF got = first_wq(task);
  // Up to the kernel's fp16 coefficients (relative rounding 2^-11).
  EXPECT_LT((got - expected).cwiseAbs().maxCoeff(), 1e-3f * expected.cwiseAbs().maxCoeff());
  EXPECT_GT((first_wq(next_token_task(calibration)) - got).cwiseAbs().maxCoeff(), 1e-3f);

  SequentialQuantizer without_gradients(m.config, embed_sequences(m, calibration), spec);
  try {
    without_gradients.quantize_next(m.layers[0]);
    ADD_FAILURE() << "tacq ran without task gradients";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs the task gradients"), std::string::npos)
        << e.what();
  }
}

// The real model: every linear of every layer, the largest entry and five
// random ones, within 1e-3.
TEST_F(TaskGradientsTest, MatchFiniteDifferencesOnStories260k) {
  REQUIRE_STORIES260K(m);
  const double worst = taskgrad_check(*m, taskgrad_sample(*m, 24, 21), 5, 1e-3, 14);
  std::cout << "stories260K: worst relative error against finite differences " << worst << "\n";
}

}  // namespace
}  // namespace lowbit::model
