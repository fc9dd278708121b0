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
  test::expect_error_containing(with([](Config& c) { c.dim = 0; }),
                                "cfg: header dim = 0 is outside");
  test::expect_error_containing(with([](Config& c) { c.n_kv_heads = 3; }),
                                "not a multiple of n_kv_heads 3");
  test::expect_error_containing(with([](Config& c) { c.norm_eps = 0; }), "norm_eps 0");
  test::expect_error_containing(with([](Config& c) { c.rope_theta = -1; }), "rope_theta -1");
  test::expect_error_containing(with([](Config& c) { c.bos_token = 23; }),
                                "bos_token 23 is outside");
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

}  // namespace
}  // namespace lowbit::model
