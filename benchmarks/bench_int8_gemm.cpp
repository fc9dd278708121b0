// W8A8 int8 GEMV/GEMM against Eigen's float product of the same shape, both
// on one thread, in the same run (compare the ratio, not absolute times):
//   build/benchmarks/bench_int8_gemm --benchmark_min_time=0.5
// Int8Gemm: per-token activation quantization plus the int8 kernel (what a
// W8A8 layer does per call); Int8GemmKernel: the kernel alone on quantized
// activations. EigenFloat: y = X Wᵀ in float. Bytes are weight bytes.
#include <benchmark/benchmark.h>

#include <lowbit/kernels/int8_gemm.hpp>
#include <lowbit/quant/absmax.hpp>
#include <map>
#include <memory>
#include <random>

namespace {

using lowbit::Index;

lowbit::MatrixF random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 0.02f);
  lowbit::MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

// One weight matrix per shape, float and int8, shared by every benchmark.
struct Layer {
  lowbit::MatrixF w;
  lowbit::Int8Weights w8;
};

const Layer& layer(Index out, Index in) {
  static std::map<std::pair<Index, Index>, std::unique_ptr<Layer>> cache;
  auto& slot = cache[{out, in}];
  if (!slot) {
    slot = std::make_unique<Layer>();
    slot->w = random_matrix(out, in, 1);
    slot->w8 = lowbit::to_int8_weights(lowbit::quantize_absmax(slot->w).weights);
  }
  return *slot;
}

void BM_Int8Gemm(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1), batch = state.range(2);
  const Layer& l = layer(out, in);
  const lowbit::MatrixF x = random_matrix(batch, in, 2);
  lowbit::Int8Activations x8;
  lowbit::MatrixF y(batch, out);
  for (auto _ : state) {
    lowbit::quantize_activations(x, x8);
    lowbit::int8_gemm(l.w8, x8, y, 0, out);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * out * in);
  state.SetLabel(lowbit::int8_kernels.isa);
}

void BM_Int8GemmKernel(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1), batch = state.range(2);
  const Layer& l = layer(out, in);
  const lowbit::Int8Activations x8 = lowbit::quantize_activations(random_matrix(batch, in, 2));
  lowbit::MatrixF y(batch, out);
  for (auto _ : state) {
    lowbit::int8_gemm(l.w8, x8, y, 0, out);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * out * in);
}

void BM_EigenFloat(benchmark::State& state) {
  const Index out = state.range(0), in = state.range(1), batch = state.range(2);
  const Layer& l = layer(out, in);
  const lowbit::MatrixF x = random_matrix(batch, in, 2);
  lowbit::MatrixF y(batch, out);
  Eigen::setNbThreads(1);
  for (auto _ : state) {
    y.noalias() = x * l.w.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * out * in * static_cast<Index>(sizeof(float)));
}

void shapes(benchmark::internal::Benchmark* b) {
  for (long out : {4096, 11008})
    for (long batch : {1, 8, 64}) b->Args({out, 4096, batch});
  b->ArgNames({"out", "in", "batch"})->Unit(benchmark::kMicrosecond);
}

BENCHMARK(BM_Int8Gemm)->Apply(shapes);
BENCHMARK(BM_Int8GemmKernel)->Apply(shapes);
BENCHMARK(BM_EigenFloat)->Apply(shapes);

}  // namespace
