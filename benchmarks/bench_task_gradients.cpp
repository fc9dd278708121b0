// TACQ's task gradients for one LLaMA-2-7B-shaped decoder layer (dim 4096,
// MLP 11008, 32 heads; a 512-token vocabulary so that the layer, not the
// classifier, dominates): the forward and backward pass of
// model/task_gradients.hpp over `samples` sequences of `tokens` tokens,
// accumulating |dL/dW| of the seven linears. Peak memory comes from the
// outside (one run per filter):
//   /usr/bin/time -v build/benchmarks/bench_task_gradients
//       --benchmark_filter='BM_TaskGradients7BLayer/128/1/' (one line)
#include <benchmark/benchmark.h>

#include <lowbit/model/task_gradients.hpp>
#include <random>

namespace {

using namespace lowbit::model;

lowbit::MatrixF task_random_matrix(lowbit::Index rows, lowbit::Index cols, float scale,
                                   std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, scale);
  lowbit::MatrixF m(rows, cols);
  for (lowbit::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

Model task_layer_model() {
  Model m;
  m.config = Config{4096, 11008, 1, 32, 32, 512, 4096};
  const Config& c = m.config;
  std::mt19937 rng(1);
  m.token_embedding = task_random_matrix(c.vocab_size, c.dim, 0.02f, rng);
  Layer layer;
  layer.attention_norm = lowbit::VectorF::Ones(c.dim);
  layer.ffn_norm = lowbit::VectorF::Ones(c.dim);
  for (LinearKind kind : kAllLinears) {
    const lowbit::Index rows = linear_rows(c)[index(kind)], cols = linear_cols(c)[index(kind)];
    layer.linears[index(kind)] = std::make_shared<FloatLinear>(
        task_random_matrix(rows, cols, 1.0f / std::sqrt(float(cols)), rng));
  }
  m.layers.push_back(layer);
  m.final_norm = lowbit::VectorF::Ones(c.dim);
  m.rope = rope_tables(c);
  return m;
}

void BM_TaskGradients7BLayer(benchmark::State& state) {
  const Model m = task_layer_model();
  const int tokens = static_cast<int>(state.range(0)), samples = static_cast<int>(state.range(1));
  std::vector<TaskSample> task;
  std::mt19937 rng(2);
  for (int s = 0; s < samples; ++s) {
    TaskSample sample;
    for (int t = 0; t < tokens; ++t) sample.tokens.push_back(int(rng() % 512));
    task.push_back(sample);
  }
  for (auto _ : state) benchmark::DoNotOptimize(task_gradients(m, task));
  state.counters["tokens/s"] = benchmark::Counter(
      double(tokens) * samples * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TaskGradients7BLayer)
    ->Args({128, 1})
    ->Args({128, 4})
    ->Iterations(1)
    ->Unit(benchmark::kSecond);

}  // namespace
