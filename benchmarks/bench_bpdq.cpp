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

#include "synthetic_layer.hpp"

#include <chrono>
#include <lowbit/quant/bpdq.hpp>
#include <lowbit/quant/gptq.hpp>
#include <map>
#include <random>

namespace {

lowbit::GptqConfig gptq_config(bool act_order) {
  lowbit::GptqConfig config;
  config.bits = 2;
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
    benchmark::DoNotOptimize(
        lowbit::quantize_gptq(layer().w, layer().h, gptq_config(false)).weights.codes.data());
    best = std::min(best, seconds_since(start));
  }
  return cache[threads] = best;
}

// Args: act_order, threads.
void BM_Gptq2bit(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(1)));
  double error = 0;
  for (auto _ : state) {
    const lowbit::GptqResult result =
        lowbit::quantize_gptq(layer().w, layer().h, gptq_config(state.range(0) != 0));
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
