// lowbit/model/linear.hpp: FloatLinear is x W^T, and any implementation of
// Linear plugs into a model's forward pass (the seam quantized layers use).
#include <lowbit/model/forward.hpp>
#include <lowbit/model/linear.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class LinearSeam : public test::SingleThreaded {};

TEST_F(LinearSeam, FloatLinearMultipliesByTheTransposedWeight) {
  const MatrixF w = test::random_weights(5, 7, 1);
  const MatrixF x = test::random_activations(3, 7, 2);
  const FloatLinear linear(w);
  EXPECT_EQ(linear.out_features(), 5);
  EXPECT_EQ(linear.in_features(), 7);
  MatrixF y(3, 5);
  linear.apply(x, y);
  for (Index t = 0; t < 3; ++t)
    for (Index r = 0; r < 5; ++r) EXPECT_NEAR(y(t, r), x.row(t).dot(w.row(r)), 1e-5f);
}

// Counts calls and forwards to another Linear.
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

TEST_F(LinearSeam, AnyLinearImplementationPlugsIn) {
  const Model m = test::tiny_model(4);
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
}

}  // namespace
}  // namespace lowbit::model
