// The bit-plane lookup-table kernel against Eigen's float GEMV/GEMM and
// against plain memory bandwidth, single thread. Every case reports the
// bytes it must read per call (packed planes + coefficients for the kernel,
// the float matrix for Eigen, the buffer for BM_MemoryRead) as bytes/second.
//
//   build/benchmarks/bench_bitplane_gemm --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true  (one line)
//
// Names: BM_BitplaneGemv/<planes>/<group>/<rows>/<cols>,
//        BM_BitplaneGemm/<planes>/<group>/<rows>/<cols>/<batch>/<path>/<f32> (path 0: chosen by
//        batch size, 1: tables, 2: dequantized tiles; f32 1: float tables instead of int8),
//        BM_BitplaneStack/<planes>/<group>/<layers>/<rows>/<cols> (layers used in turn,
//        far beyond the last-level cache), BM_DenseGemv/<rows>/<cols>,
//        BM_DenseGemm/<rows>/<cols>/<batch>, BM_MemoryRead/<KiB>;
//        BM_MemoryReadThreads/<KiB>/<threads>, BM_BitplaneGemvThreads/<planes>/<group>/<rows>/
//        <cols>/<threads>, BM_BitplaneStackThreads/.../<threads>: on OpenMP threads (rows split
//        as bitplane_gemm splits them), wall time.
// Single-threaded cases run on the calling thread; pin it (taskset -c 1).
#include <benchmark/benchmark.h>

#include "random_codes.hpp"

#include <cstdint>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <memory>
#include <random>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <vector>

namespace {

using lowbit::Index;

// Random planes and coefficients (their values do not change the work).
lowbit::PackedBitplanes random_packed(int planes, Index group, Index rows, Index cols) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(planes * 1000003 + group * 101 + rows + cols));
  lowbit::BitPlaneWeights w;
  w.planes = planes;
  w.group_size = group;
  w.codes = random_plane_codes(planes, rows, cols, rng);
  std::normal_distribution<double> n(0.0, 0.01);
  w.coeffs.resize((cols / group) * (planes + 1), rows);
  for (Index i = 0; i < w.coeffs.size(); ++i) w.coeffs.data()[i] = n(rng);
  return lowbit::pack_bitplanes(w);
}

lowbit::MatrixF random_matrix(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  lowbit::MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

// All rows: on the calling thread, or split over `threads` OpenMP threads as bitplane_gemm
// splits them (which also loads x: its checks cost O(batch x cols), noise beside the product).
void multiply_rows(const lowbit::PackedBitplanes& w, const lowbit::MatrixF& x,
                   lowbit::BitplaneContext& ctx, lowbit::MatrixF& y, int threads) {
  if (threads > 1) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    return lowbit::bitplane_gemm(w, x, y, ctx);
  }
  lowbit::bitplane_load(w, x.data(), x.rows(), x.cols(), ctx);
  lowbit::bitplane_multiply(w, ctx, y.data(), w.rows(), 0, w.rows());
}

void gemm_case(benchmark::State& state, int planes, Index group, Index rows, Index cols,
               Index batch, lowbit::BitplanePath path = lowbit::BitplanePath::by_batch,
               lowbit::TableType tables = lowbit::TableType::int8, int threads = 1) {
  const lowbit::PackedBitplanes w = random_packed(planes, group, rows, cols);
  const lowbit::MatrixF x = random_matrix(batch, cols, 1);
  lowbit::MatrixF y(batch, rows);
  lowbit::BitplaneContext ctx(w, batch, tables, path);
  for (auto _ : state) {
    multiply_rows(w, x, ctx, y, threads);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(w.weight_bytes()));
  state.counters["bits/weight"] =
      8.0 * static_cast<double>(w.weight_bytes()) / static_cast<double>(rows * cols);
  state.counters["us/token"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
  state.counters["dense"] = ctx.tables().dense;
}

void BM_BitplaneGemv(benchmark::State& state) {
  gemm_case(state, static_cast<int>(state.range(0)), state.range(1), state.range(2), state.range(3),
            1);
}

void BM_BitplaneGemm(benchmark::State& state) {
  gemm_case(state, static_cast<int>(state.range(0)), state.range(1), state.range(2), state.range(3),
            state.range(4), static_cast<lowbit::BitplanePath>(state.range(5)),
            state.range(6) ? lowbit::TableType::f32 : lowbit::TableType::int8);
}

void BM_BitplaneGemvThreads(benchmark::State& state) {
  gemm_case(state, static_cast<int>(state.range(0)), state.range(1), state.range(2), state.range(3),
            1, lowbit::BitplanePath::by_batch, lowbit::TableType::int8,
            static_cast<int>(state.range(4)));
}

// Eigen float GEMV / GEMM of the same shape: the in-run baseline.
void dense_case(benchmark::State& state, Index rows, Index cols, Index batch) {
  Eigen::setNbThreads(1);  // single thread, like the kernel cases (Eigen's GEMM may use OpenMP)
  const lowbit::MatrixF w = random_matrix(rows, cols, 2);
  const Eigen::MatrixXf x = random_matrix(cols, batch, 3);
  Eigen::MatrixXf y(rows, batch);
  for (auto _ : state) {
    if (batch == 1)
      y.col(0).noalias() = w * x.col(0);
    else
      y.noalias() = w * x;
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(w.size() * sizeof(float)));
  state.counters["us/token"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void BM_DenseGemv(benchmark::State& state) { dense_case(state, state.range(0), state.range(1), 1); }
void BM_DenseGemm(benchmark::State& state) {
  dense_case(state, state.range(0), state.range(1), state.range(2));
}

// A model's worth of layers, one GEMV per layer in turn: nothing stays in cache.
void stack_case(benchmark::State& state, int threads) {
  const int planes = static_cast<int>(state.range(0));
  const Index group = state.range(1), layers = state.range(2), rows = state.range(3),
              cols = state.range(4);
  const lowbit::PackedBitplanes first = random_packed(planes, group, rows, cols);
  std::vector<lowbit::PackedBitplanes> stack(static_cast<std::size_t>(layers),
                                             first);  // separate copies
  const lowbit::MatrixF x = random_matrix(1, cols, 4);
  lowbit::MatrixF y(1, rows);
  lowbit::BitplaneContext ctx(first, 1);
  std::size_t layer = 0;
  for (auto _ : state) {
    const lowbit::PackedBitplanes& w = stack[layer];
    layer = (layer + 1) % stack.size();
    multiply_rows(w, x, ctx, y, threads);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(first.weight_bytes()));
}

void BM_BitplaneStack(benchmark::State& state) { stack_case(state, 1); }
void BM_BitplaneStackThreads(benchmark::State& state) {
  stack_case(state, static_cast<int>(state.range(5)));
}

// Plain streaming read: the sum of 64-bit words of a buffer of <KiB>, on <threads>
// OpenMP threads (halves of the buffer) when given.
std::uint64_t sum_words(const std::uint64_t* buffer, std::size_t words) {
  std::uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (std::size_t i = 0; i + 4 <= words; i += 4) {
    s0 += buffer[i];
    s1 += buffer[i + 1];
    s2 += buffer[i + 2];
    s3 += buffer[i + 3];
  }
  return s0 + s1 + s2 + s3;
}

void memory_read_case(benchmark::State& state, int threads) {
  const std::size_t words = static_cast<std::size_t>(state.range(0)) * 1024 / sizeof(std::uint64_t);
  std::vector<std::uint64_t> buffer(words);
  for (std::size_t i = 0; i < words; ++i) buffer[i] = i * 0x9e3779b97f4a7c15ull;
  const std::size_t share = words / static_cast<std::size_t>(threads);
  for (auto _ : state) {
    if (threads == 1) {
      benchmark::DoNotOptimize(sum_words(buffer.data(), words));
      continue;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int t = 0; t < threads; ++t)
      benchmark::DoNotOptimize(
          sum_words(buffer.data() + static_cast<std::size_t>(t) * share, share));
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(words * sizeof(std::uint64_t)));
}

void BM_MemoryRead(benchmark::State& state) { memory_read_case(state, 1); }
void BM_MemoryReadThreads(benchmark::State& state) {
  memory_read_case(state, static_cast<int>(state.range(1)));
}

const std::vector<std::pair<Index, Index>> kShapes{{4096, 4096}, {11008, 4096}, {4096, 11008}};

void gemv_args(benchmark::internal::Benchmark* b) {
  for (int planes = 1; planes <= 4; ++planes)
    for (Index group : {64, 128})
      for (const auto& [rows, cols] : kShapes) b->Args({planes, group, rows, cols});
}
void gemm_args(benchmark::internal::Benchmark* b) {
  for (int planes = 1; planes <= 4; ++planes)
    for (Index group : {64, 128})
      for (Index batch : {4, 8, 16}) b->Args({planes, group, 4096, 4096, batch, 0, 0});
}
// Prefill: both paths and the choice by batch size, at the shapes of a 7B model's attention and
// MLP projections; 2 planes g64 and 4 planes g128.
void prefill_args(benchmark::internal::Benchmark* b) {
  for (const auto& [planes, group] : {std::pair<int, Index>{2, 64}, {4, 128}})
    for (Index rows : {4096, 11008})
      for (Index batch : {1, 4, 8, 16, 32, 128, 512})
        for (int path : {0, 1, 2}) b->Args({planes, group, rows, 4096, batch, path, 0});
  // Float tables (the exact path) against dequantized tiles, which are exact too.
  for (const auto& [planes, group] : {std::pair<int, Index>{2, 64}, {4, 128}})
    for (Index batch : {1, 4, 8, 16, 32, 128})
      for (int path : {0, 1}) b->Args({planes, group, 4096, 4096, batch, path, 1});
}

void stack_args(benchmark::internal::Benchmark* b) {
  for (int planes = 1; planes <= 4; ++planes)
    for (Index group : {64, 128}) b->Args({planes, group, 32, 4096, 11008});
}
void dense_gemv_args(benchmark::internal::Benchmark* b) {
  for (const auto& [rows, cols] : kShapes) b->Args({rows, cols});
}
void dense_gemm_args(benchmark::internal::Benchmark* b) {
  for (Index rows : {4096, 11008})
    for (Index batch : {4, 8, 16, 32, 128, 512}) b->Args({rows, 4096, batch});
}

BENCHMARK(BM_MemoryRead)->Arg(1024)->Arg(16384)->Arg(1048576)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DenseGemv)->Apply(dense_gemv_args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BitplaneGemv)->Apply(gemv_args)->Unit(benchmark::kMicrosecond);
// 1.4 MB of packed weights, resident in the 2 MB L2: the kernel's compute
// ceiling, to compare with the L3- and DRAM-resident cases above.
BENCHMARK(BM_DenseGemv)->Args({1024, 4096})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BitplaneGemv)->Args({2, 64, 1024, 4096})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_DenseGemm)->Apply(dense_gemm_args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BitplaneGemm)->Apply(gemm_args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BitplaneStack)->Apply(stack_args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BitplaneGemm)->Apply(prefill_args)->Unit(benchmark::kMicrosecond);
// Two threads: GEMV from L3 and the DRAM-resident stack, beside a 2-thread read of DRAM.
BENCHMARK(BM_MemoryReadThreads)->Args({1048576, 2})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_BitplaneGemvThreads)
    ->Args({2, 64, 4096, 4096, 2})
    ->Args({4, 128, 4096, 4096, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_BitplaneStackThreads)
    ->Args({2, 64, 32, 4096, 11008, 2})
    ->Args({4, 128, 32, 4096, 11008, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
