// GPTQ on a 4096 x 4096 layer (H from 2048 synthetic tokens), 4-bit, group
// 128, against the floor of its dense linear algebra measured in the same
// run: Eigen's Cholesky of the same H plus one 4096^3 float GEMM.
//
//   build/benchmarks/bench_gptq
//   build/benchmarks/bench_gptq --benchmark_filter=Gptq/        (only the 4096 runs)
//   build/benchmarks/bench_gptq --benchmark_filter=GroupParams  (only the error comparison)
//
// Counters: ratio_to_floor = GPTQ time / floor time at the same thread count;
// rel_out_err = ||(W - Q) X^T|| / ||W X^T|| (through H).
// BM_GroupParams compares the reference's block-start group grids with fresh
// ones (GptqConfig::fresh_group_params) on smaller layers over bits, group
// sizes and act-order: err_reference, err_fresh and fresh_over_reference
// (< 1: fresh grids give the lower output error). Deterministic, not timed.
#include <benchmark/benchmark.h>

#include "synthetic_layer.hpp"

#include <Eigen/Cholesky>
#include <chrono>
#include <lowbit/quant/gptq.hpp>
#include <map>
#include <random>

namespace {

// Eigen's Cholesky of H (double, as core/hessian.hpp factorizes) and one
// 4096^3 float GEMM (the working precision); the faster of two runs of each.
double floor_seconds(int threads) {
  static std::map<int, double> cache;
  if (cache.count(threads)) return cache[threads];
  Eigen::setNbThreads(threads);
  const MatrixD& h = layer().h;
  MatrixD damped = h;
  damped.diagonal().array() += 0.01 * h.diagonal().mean();
  const MatrixF a = layer().w, b = layer().w.transpose();
  double cholesky = 1e300, gemm = 1e300;
  for (int run = 0; run < 2; ++run) {
    auto start = std::chrono::steady_clock::now();
    const Eigen::LLT<MatrixD> llt(damped);
    benchmark::DoNotOptimize(llt.matrixLLT().data());
    cholesky = std::min(cholesky, seconds_since(start));
    start = std::chrono::steady_clock::now();
    MatrixF c(kSize, kSize);
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    gemm = std::min(gemm, seconds_since(start));
  }
  return cache[threads] = cholesky + gemm;
}

// Args: act_order, fresh group grids, threads.
void BM_Gptq(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(2));
  const double floor = floor_seconds(threads);
  lowbit::GptqConfig config;
  config.bits = 4;
  config.group_size = 128;
  config.act_order = state.range(0) != 0;
  config.fresh_group_params = state.range(1) != 0;
  Eigen::setNbThreads(threads);
  double seconds = 0, error = 0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    const lowbit::GptqResult result = lowbit::quantize_gptq(layer().w, layer().h, config);
    seconds = seconds_since(start);
    state.PauseTiming();
    error = relative_output_error(layer(), result.dequantize());
    state.ResumeTiming();
  }
  state.counters["ratio_to_floor"] = seconds / floor;
  state.counters["floor_s"] = floor;
  state.counters["rel_out_err"] = error;
}
BENCHMARK(BM_Gptq)
    ->ArgNames({"act_order", "fresh_groups", "threads"})
    ->Args({0, 0, 1})
    ->Args({1, 0, 1})
    ->Args({0, 0, 2})
    ->Args({1, 0, 2})
    ->Args({0, 1, 2})
    ->Args({1, 1, 2})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

// Block-start (reference) against fresh group grids. Args: bits, group
// size, act-order. Three 1024 x 1024 layers (H from 2048 tokens), block 128.
void BM_GroupParams(benchmark::State& state) {
  static const std::vector<Layer> layers = [] {
    std::vector<Layer> l;
    for (unsigned seed : {11u, 12u, 13u}) l.push_back(make_layer(1024, 1024, 2048, seed));
    return l;
  }();
  lowbit::GptqConfig config;
  config.bits = static_cast<int>(state.range(0));
  config.group_size = static_cast<int>(state.range(1));
  config.act_order = state.range(2) != 0;
  double reference = 0, fresh = 0;
  for (auto _ : state) {
    reference = fresh = 0;
    for (const Layer& l : layers) {
      config.fresh_group_params = false;
      reference += relative_output_error(l, lowbit::quantize_gptq(l.w, l.h, config).dequantize());
      config.fresh_group_params = true;
      fresh += relative_output_error(l, lowbit::quantize_gptq(l.w, l.h, config).dequantize());
    }
  }
  const double n = static_cast<double>(layers.size());
  state.counters["err_reference"] = reference / n;
  state.counters["err_fresh"] = fresh / n;
  state.counters["fresh_over_reference"] = fresh / reference;
}
BENCHMARK(BM_GroupParams)
    ->ArgNames({"bits", "group", "act_order"})
    ->ArgsProduct({{2, 3, 4}, {32, 64, 128}, {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond);

// The parts: the inverse-Hessian factor GPTQ needs, and the floor's two halves.
void BM_InverseHessianFactor(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(0)));
  for (auto _ : state)
    benchmark::DoNotOptimize(lowbit::inverse_hessian_factor(layer().h).factor.data());
}
BENCHMARK(BM_InverseHessianFactor)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

void BM_FloorCholesky(benchmark::State& state) {
  MatrixD damped = layer().h;
  damped.diagonal().array() += 0.01 * layer().h.diagonal().mean();
  for (auto _ : state) {
    const Eigen::LLT<MatrixD> llt(damped);
    benchmark::DoNotOptimize(llt.matrixLLT().data());
  }
}
BENCHMARK(BM_FloorCholesky)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

void BM_FloorGemm(benchmark::State& state) {
  Eigen::setNbThreads(static_cast<int>(state.range(0)));
  const MatrixF a = layer().w, b = layer().w.transpose();
  MatrixF c(kSize, kSize);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
}
BENCHMARK(BM_FloorGemm)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace
