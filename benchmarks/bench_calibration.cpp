// Calibration accumulation and round-to-nearest throughput.
//   build/benchmarks/bench_calibration --benchmark_filter=.
#include <benchmark/benchmark.h>

#include <lowbit/lowbit.hpp>
#include <random>

namespace {

lowbit::MatrixF random_matrix(lowbit::Index rows, lowbit::Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.02f);
  lowbit::MatrixF m(rows, cols);
  for (lowbit::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

// Adding one batch of 512 tokens to the Hessian accumulator.
void BM_CalibrationAdd(benchmark::State& state) {
  const auto in = state.range(0);
  const lowbit::MatrixF x = random_matrix(512, in, 1);
  lowbit::Calibration calibration(in);
  for (auto _ : state) calibration.add(x);
  state.SetBytesProcessed(state.iterations() * x.size() * static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_CalibrationAdd)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

void BM_Rtn(benchmark::State& state) {
  const lowbit::MatrixF w = random_matrix(state.range(0), state.range(1), 2);
  lowbit::RtnConfig config;
  config.bits = 4;
  config.group_size = 128;
  for (auto _ : state) benchmark::DoNotOptimize(lowbit::quantize_rtn(w, config));
  state.SetBytesProcessed(state.iterations() * w.size() * static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_Rtn)->Args({4096, 4096})->Unit(benchmark::kMillisecond);

}  // namespace
