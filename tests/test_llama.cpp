// lowbit/model/llama.hpp: the model description's checks (configurations and
// layers), which linears share an input after which norm, and padding the
// hidden dimension (exact).
#include <lowbit/model/llama.hpp>
#include <lowbit/model/sequences.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class Llama : public test::SingleThreaded {};

TEST_F(Llama, ValidatesConfigurations) {
  const Config good{16, 24, 2, 4, 2, 23, 12};
  EXPECT_NO_THROW(validate_config(good, "cfg"));
  EXPECT_EQ(good.head_size(), 4);
  EXPECT_EQ(good.kv_dim(), 8);
  auto with = [&](auto change) {
    Config c = good;
    change(c);
    return [c] { validate_config(c, "cfg"); };
  };
  test::expect_error_containing(with([](Config& c) { c.dim = 0; }), "cfg: dim = 0 is outside");
  test::expect_error_containing(with([](Config& c) { c.n_kv_heads = 3; }),
                                "not a multiple of n_kv_heads 3");
  test::expect_error_containing(with([](Config& c) { c.norm_eps = 0; }), "norm_eps 0");
  test::expect_error_containing(with([](Config& c) { c.rope_theta = -1; }), "rope_theta -1");
  test::expect_error_containing(with([](Config& c) { c.bos_token = 23; }),
                                "bos_token 23 is outside");
  // A head_dim of its own: q is n_heads * head_dim wide, dim need not divide.
  Config wide = good;
  wide.dim = 18;
  wide.head_dim = 6;
  EXPECT_NO_THROW(validate_config(wide, "cfg"));
  EXPECT_EQ(wide.q_dim(), 24);
  EXPECT_EQ(wide.kv_dim(), 12);
  EXPECT_EQ(linear_rows(wide)[index(LinearKind::wq)], 24);
  EXPECT_EQ(linear_cols(wide)[index(LinearKind::wo)], 24);
  test::expect_error_containing(with([](Config& c) { c.head_dim = 5; }),
                                "head size 5 must be even");
  test::expect_error_containing(with([](Config& c) { c.head_dim = -2; }), "head_dim = -2");
}

TEST_F(Llama, ValidatesLayersAgainstTheConfiguration) {
  const Model m = test::tiny_model(1);
  EXPECT_NO_THROW(validate_layer(m.config, m.layers[0], "layer 0"));
  Layer missing = m.layers[0];
  missing.linears[index(LinearKind::w3)] = nullptr;
  test::expect_error_containing([&] { validate_layer(m.config, missing, "layer 0"); },
                                "layer 0: linear w3 is missing");
  Layer wrong = m.layers[0];
  wrong.linears[index(LinearKind::wk)] = m.layers[0].linears[index(LinearKind::wq)];
  test::expect_error_containing([&] { validate_layer(m.config, wrong, "layer 0"); },
                                "linear wk is 16 x 16, expected 8 x 16");
  Layer norm = m.layers[0];
  norm.ffn_norm = VectorF::Ones(15);
  test::expect_error_containing([&] { validate_layer(m.config, norm, "layer 0"); },
                                "expected dim = 16");
  Layer bias = m.layers[0];
  bias.biases[index(LinearKind::wk)] = VectorF::Ones(16);
  test::expect_error_containing([&] { validate_layer(m.config, bias, "layer 0"); },
                                "layer 0: bias of wk has 16 entries, expected 8");
}

// Every linear belongs to exactly one group; q/k/v follow the attention norm,
// w1/w3 the MLP norm.
TEST_F(Llama, LinearGroupsCoverEveryLinearOnce) {
  std::vector<int> seen(kLinearsPerLayer, 0);
  for (const LinearGroup& group : linear_groups())
    for (LinearKind kind : group.kinds) ++seen[std::size_t(index(kind))];
  EXPECT_EQ(seen, std::vector<int>(kLinearsPerLayer, 1));
  EXPECT_EQ(linear_groups()[0].norm, &Layer::attention_norm);
  EXPECT_EQ(linear_groups()[2].norm, &Layer::ffn_norm);
  EXPECT_EQ(linear_groups()[2].kinds, (std::vector<LinearKind>{LinearKind::w1, LinearKind::w3}));
}

TEST_F(Llama, PaddingTheHiddenDimensionIsExact) {
  const Model m = test::tiny_model(4);
  const Model padded = pad_hidden(m, 16);
  EXPECT_EQ(padded.config.hidden_dim, 32);
  EXPECT_EQ(test::weight(padded, 1, LinearKind::w2).cols(), 32);
  EXPECT_EQ(test::weight(padded, 1, LinearKind::w1).rows(), 32);
  EXPECT_NO_THROW(validate_layer(padded.config, padded.layers[1], "padded"));
  const std::vector<Sequence> s{{1, 5, 7, 2, 9, 11}};
  const MatrixF a = sequence_logits(padded, s)[0], b = sequence_logits(m, s)[0];
  EXPECT_LT((a - b).norm() / b.norm(), 1e-6f);
  EXPECT_EQ(pad_hidden(m, 8).config.hidden_dim, 24);  // already a multiple
  EXPECT_THROW(pad_hidden(m, 0), Error);
}

// With MLP biases the padded units stay zero (silu(0) * 0); a model read
// layer by layer pads each layer as it is read.
TEST_F(Llama, PaddingKeepsBiasesAndStreams) {
  Model m = test::tiny_model(5);
  for (Layer& layer : m.layers)
    for (LinearKind kind : {LinearKind::w1, LinearKind::w3, LinearKind::w2})
      layer.biases[index(kind)] =
          test::random_weights(1, kind == LinearKind::w2 ? 16 : 24, 6, 0.5f).transpose();
  const Model padded = pad_hidden(m, 16);
  EXPECT_EQ(padded.layers[0].biases[index(LinearKind::w1)].size(), 32);
  EXPECT_EQ(padded.layers[0].biases[index(LinearKind::w3)].tail(8), VectorF::Zero(8));
  const std::vector<Sequence> s{{1, 5, 7, 2, 9, 11}};
  const MatrixF a = sequence_logits(padded, s)[0], b = sequence_logits(m, s)[0];
  EXPECT_LT((a - b).norm() / b.norm(), 1e-6f);

  Model globals = m;
  globals.layers.clear();
  int reads = 0;
  const ModelSource source{globals, [&](int l) {
                             ++reads;
                             return m.layers[std::size_t(l)];
                           }};
  const ModelSource streamed = pad_hidden(source, 16);
  EXPECT_EQ(streamed.globals.config.hidden_dim, 32);
  EXPECT_EQ(reads, 0);  // nothing read until asked
  const Model all = load_all(streamed);
  EXPECT_EQ(reads, 2);
  EXPECT_EQ(test::weight(all, 1, LinearKind::w2), test::weight(padded, 1, LinearKind::w2));
  EXPECT_EQ(all.layers[1].biases[index(LinearKind::w1)],
            padded.layers[1].biases[index(LinearKind::w1)]);
}

}  // namespace
}  // namespace lowbit::model
