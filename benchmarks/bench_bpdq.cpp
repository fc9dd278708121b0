// BPDQ against GPTQ on the same 4096 x 4096 layer (H from 2048 synthetic
// tokens), both measured in this run: BPDQ k=2, group 64, 10 iterations (the
// issue's target: at most 2x our GPTQ), GPTQ 2-bit group 64 (the same bits
// per weight class), with and without act-order.
//
//   build/benchmarks/bench_bpdq                                    (everything)
//   build/benchmarks/bench_bpdq --benchmark_filter='/threads:2'    (the 2-thread runs)
//
// Counters: ratio_to_gptq = BPDQ time / GPTQ 2-bit g64 time (no act-order) at
// the same thread count, measured in the same process; rel_out_err =
// ||(W - Q) X^T|| / ||W X^T|| (through H).
#include <benchmark/benchmark.h>

#include <chrono>
#include <lowbit/quant/bpdq.hpp>
#include <lowbit/quant/gptq.hpp>
#include <map>
#include <random>

namespace {

using lowbit::Index;
using lowbit::MatrixD;
using lowbit::MatrixF;

constexpr Index kSize = 4096;
constexpr Index kTokens = 2048;

struct Layer {
  MatrixF w;
  MatrixD h;
  MatrixF h_float;
};

// Heavy-tailed weights; activations with a shared low-rank component (so
// channels correlate, as in real layers) and a few outlier channels.
Layer make_layer(Index out, Index in, Index tokens, unsigned seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> heavy(5.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Layer layer;
  layer.w.resize(out, in);
  for (Index i = 0; i < layer.w.size(); ++i) layer.w.data()[i] = 0.02f * heavy(rng);
  constexpr Index rank = 32;
  MatrixF factors(tokens, rank), loadings(rank, in), x(tokens, in);
  for (Index i = 0; i < factors.size(); ++i) factors.data()[i] = normal(rng);
  for (Index i = 0; i < loadings.size(); ++i) loadings.data()[i] = 0.5f * normal(rng);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  x += factors * loadings;
  for (Index c = 7; c < in; c += 509) x.col(c) *= 20.0f;
  lowbit::Calibration calibration(in);
  calibration.add(x);
  layer.h = calibration.hessian();
  layer.h_float = layer.h.cast<float>();
  return layer;
}

const Layer& layer() {
  static const Layer l = make_layer(kSize, kSize, kTokens, 4096);
  return l;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Through H, in float: sqrt(tr(dW H dW^T) / tr(W H W^T)).
double relative_output_error(const Layer& l, const MatrixF& q) {
  const double reference = (l.w * l.h_float).cwiseProduct(l.w).cast<double>().sum();
  const MatrixF dw = l.w - q;
  return std::sqrt((dw * l.h_float).cwiseProduct(dw).cast<double>().sum() / reference);
}

lowbit::GptqConfig gptq_config(bool act_order) {
  lowbit::GptqConfig config;
  config.grid.bits = 2;
  config.group_size = 64;
  config.act_order = act_order;
  return config;
}

// GPTQ 2-bit g64 without act-order, the baseline of ratio_to_gptq: the faster
// of two runs at this thread count, measured once per process.
double gptq_seconds(int threads) {
  static std::map<int, double> cache;
  if (cache.count(threads)) return cache[threads];
  Eigen::setNbThreads(threads);
  double best = 1e300;
  for (int run = 0; run < 2; ++run) {
    const auto start = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(lowbit::quantize_gptq(layer().w, layer().h, gptq_config(false)).weights.codes.data());
    best = std::min(best, seconds_since(start));
  }
  return cache[threads] = best;
}

// Args: act_order, threads.
void BM_Gptq2bit(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(1)));
  double error = 0;
  for (auto _ : state) {
    const lowbit::GptqResult result = lowbit::quantize_gptq(layer().w, layer().h, gptq_config(state.range(0) != 0));
    state.PauseTiming();
    error = relative_output_error(layer(), result.dequantize());
    state.ResumeTiming();
  }
  state.counters["rel_out_err"] = error;
}
BENCHMARK(BM_Gptq2bit)
    ->ArgNames({"act_order", "threads"})
    ->ArgsProduct({{0, 1}, {1, 2}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

// Args: planes, iters, threads.
void BM_Bpdq(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(2));
  const double baseline = gptq_seconds(threads);
  lowbit::BpdqConfig config;
  config.planes = static_cast<int>(state.range(0));
  config.group_size = 64;
  config.iters = static_cast<int>(state.range(1));
  Eigen::setNbThreads(threads);
  double seconds = 0, error = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const lowbit::BpdqResult result = lowbit::quantize_bpdq(layer().w, layer().h, config);
    seconds = seconds_since(start);
    state.PauseTiming();
    error = relative_output_error(layer(), result.weights.dequantize());
    state.ResumeTiming();
  }
  state.counters["ratio_to_gptq"] = seconds / baseline;
  state.counters["gptq_s"] = baseline;
  state.counters["rel_out_err"] = error;
}
BENCHMARK(BM_Bpdq)
    ->ArgNames({"planes", "iters", "threads"})
    ->Args({2, 10, 1})
    ->Args({2, 10, 2})
    ->Args({3, 10, 2})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
