// An engine-shaped benchmark: Llama-2-7B decoder layers (dim 4096, MLP 11008, 32 heads, no
// grouped-query attention) with random weights, run as an engine runs them: the model layer's
// forward pass (model::run_layer: RMSNorm, the seven linears behind the Linear seam, RoPE,
// attention over a KV cache, SwiGLU) over BitPlaneLinear (the bit-plane kernel, int8 tables,
// f16 coefficients) or FloatLinear (Eigen). One layer, or the whole 32-layer stack.
//
//   build/benchmarks/bench_decoder --benchmark_filter='BM_Decoder/1/'
//
// Name: BM_Decoder/<format>/<layers>/<tokens>/<threads>/<chunk>
//   format 0: float (one layer only: a float 7B stack is 26 GB), 1: 2 planes g64,
//          2: 3 planes g128, 3: 4 planes g128;
//   tokens 1: decode one token at position kDecodePosition over a full KV cache (the first token
//          after a 512-token prompt: attention then reads 512 keys and values per head, as a
//          chat turn does; at a longer context attention's share grows, the weights' does not);
//          512: prefill a 512-token prompt from position 0 (one call per layer, causal attention);
//   threads: OpenMP threads (the kernel splits rows; Eigen's GEMM its blocks; the rest of the
//          forward pass runs on one thread);
//   chunk: tokens a BitPlaneLinear loads per kernel call (0: its default).
// Counters: tokens/s (wall time), GB/s of weights streamed (bytes of the packed or float
// linears of the layers run, per forward, over wall time), the model's weight bytes and the
// process's peak resident set so far. Times are wall times (UseRealTime) so that one and two
// threads compare; the CPU column is the whole process's CPU time (MeasureProcessCPUTime).
#include <benchmark/benchmark.h>

#include <sys/resource.h>
#include "random_codes.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/quantized_linear.hpp>
#include <memory>
#include <random>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using lowbit::Index;
using lowbit::MatrixF;
namespace lm = lowbit::model;

constexpr int kDecodePosition = 512;

lm::Config llama2_7b(int layers) {
  lm::Config c;
  c.dim = 4096;
  c.hidden_dim = 11008;
  c.n_layers = layers;
  c.n_heads = 32;
  c.n_kv_heads = 32;
  c.vocab_size = 32000;
  c.seq_len = kDecodePosition + 1;
  return c;
}

struct DecoderFormat {
  int planes;  // 0: float
  Index group;
};
const DecoderFormat kDecoderFormats[] = {{0, 0}, {2, 64}, {3, 128}, {4, 128}};

// Random planes and coefficients of the RTN scale (their values do not change the work).
lowbit::PackedBitplanes decoder_random_packed(int planes, Index group, Index rows, Index cols,
                                              std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  lowbit::BitPlaneWeights w;
  w.planes = planes;
  w.group_size = group;
  w.codes = random_plane_codes(planes, rows, cols, rng);
  // A uniform grid per row and group (plane p: step * 2^p, centred), its range about 0.08 as
  // for N(0, 0.02) weights: outputs stay of the order of their inputs through 32 layers.
  std::uniform_real_distribution<double> scale(0.5, 1.5);
  const double unit = 0.08 / std::ldexp(1.0, planes);
  w.coeffs.resize((cols / group) * (planes + 1), rows);
  for (Index g = 0; g < cols / group; ++g)
    for (Index r = 0; r < rows; ++r) {
      const double s = unit * scale(rng);
      for (int p = 0; p < planes; ++p) w.coeff(g, p, r) = s * std::ldexp(1.0, p);
      w.coeff(g, planes, r) = -s * (std::ldexp(1.0, planes) - 1) / 2;  // centred grid
    }
  return lowbit::pack_bitplanes(w);
}

MatrixF decoder_random_matrix(Index rows, Index cols, float sigma, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, sigma);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

// The layers of one format. Each quantized shape is generated once and every linear of every
// layer holds its own copy (separate memory, so the stack streams from DRAM as a real one does;
// the kernel's work does not depend on the values).
struct DecoderModel {
  lm::Config config;
  lm::RopeTables rope;
  std::vector<lm::Layer> layers;
  std::size_t weight_bytes = 0;
};

std::unique_ptr<DecoderModel> build_decoder(const DecoderFormat& format, int layers, Index chunk) {
  auto model = std::make_unique<DecoderModel>();
  model->config = llama2_7b(layers);
  model->rope = lm::rope_tables(model->config);
  const std::array<Index, lm::kLinearsPerLayer> rows = lm::linear_rows(model->config),
                                                cols = lm::linear_cols(model->config);
  std::vector<lowbit::PackedBitplanes> shapes;  // per linear; one random matrix per shape
  if (format.planes > 0)
    for (int k = 0; k < lm::kLinearsPerLayer; ++k) {
      int same = 0;
      while (same < k && (rows[same] != rows[k] || cols[same] != cols[k])) ++same;
      shapes.push_back(
          same < k ? lowbit::PackedBitplanes(shapes[same])
                   : decoder_random_packed(format.planes, format.group, rows[k], cols[k], 17 + k));
    }
  for (int l = 0; l < layers; ++l) {
    lm::Layer layer;
    layer.attention_norm = lowbit::VectorF::Ones(model->config.dim);
    layer.ffn_norm = lowbit::VectorF::Ones(model->config.dim);
    for (int k = 0; k < lm::kLinearsPerLayer; ++k) {
      if (format.planes == 0) {
        layer.linears[k] = std::make_shared<lm::FloatLinear>(decoder_random_matrix(
            rows[k], cols[k], 0.02f, static_cast<std::uint64_t>(100 * l + k)));
        model->weight_bytes += static_cast<std::size_t>(rows[k] * cols[k]) * sizeof(float);
      } else {
        const lowbit::PackedBitplanes& w = shapes[static_cast<std::size_t>(k)];
        layer.linears[k] = std::make_shared<lm::BitPlaneLinear>(
            w, chunk > 0 ? chunk : lm::BitPlaneLinear::kDefaultMaxTokens);
        model->weight_bytes += w.weight_bytes();
      }
    }
    model->layers.push_back(std::move(layer));
  }
  return model;
}

// One model at a time (a 4-plane stack is 3.7 GB), kept while consecutive cases share it.
const DecoderModel& decoder_model(int format, int layers, Index chunk) {
  static std::unique_ptr<DecoderModel> model;
  static int built_format = -1, built_layers = 0;
  static Index built_chunk = -1;
  if (model && built_format == format && built_layers == layers && built_chunk == chunk)
    return *model;
  model.reset();
  const auto start = std::chrono::steady_clock::now();
  model = build_decoder(kDecoderFormats[format], layers, chunk);
  std::fprintf(stderr, "bench_decoder: format %d, %d layers: %.1f GB of weights built in %.1f s\n",
               format, layers, static_cast<double>(model->weight_bytes) * 1e-9,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  built_format = format;
  built_layers = layers;
  built_chunk = chunk;
  return *model;
}

double peak_rss_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0 * 1e-9;  // ru_maxrss is in KiB
}

void BM_Decoder(benchmark::State& state) {
  const int format = static_cast<int>(state.range(0)), layers = static_cast<int>(state.range(1));
  const Index tokens = state.range(2), chunk = state.range(4);
  const int threads = static_cast<int>(state.range(3));
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  Eigen::setNbThreads(threads);
  const DecoderModel& m = decoder_model(format, layers, chunk);
  const int start = tokens == 1 ? kDecodePosition : 0;
  lm::KvCache cache(m.config, start + static_cast<int>(tokens));
  for (int l = 0; l < layers && start > 0; ++l) {  // the prompt's keys and values, for decode
    cache.keys[static_cast<std::size_t>(l)] =
        decoder_random_matrix(start + tokens, m.config.kv_dim(), 1.0f, 200 + l);
    cache.values[static_cast<std::size_t>(l)] =
        decoder_random_matrix(start + tokens, m.config.kv_dim(), 1.0f, 300 + l);
  }
  const MatrixF input = decoder_random_matrix(tokens, m.config.dim, 1.0f, 7);
  MatrixF x;
  for (auto _ : state) {
    x = input;
    for (int l = 0; l < layers; ++l)
      lm::run_layer(m.config, m.rope, m.layers[static_cast<std::size_t>(l)], l, x,
                    cache.keys[static_cast<std::size_t>(l)],
                    cache.values[static_cast<std::size_t>(l)], start);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(m.weight_bytes));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens),
                                                  benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weights_GB"] = static_cast<double>(m.weight_bytes) * 1e-9;
  state.counters["peak_RSS_GB"] = peak_rss_gb();
  if (!x.allFinite()) state.SkipWithError("the residual stream is not finite");
}

// Cases that share a model run in a row (decoder_model keeps it).
void decoder_args(benchmark::internal::Benchmark* b) {
  for (int format = 0; format < 4; ++format)
    for (int layers : {1, 32}) {
      if (format == 0 && layers > 1) continue;
      for (Index tokens : {1, 512})
        for (int threads : {1, 2}) b->Args({format, layers, tokens, threads, 0});
    }
  // Prefill with a BitPlaneLinear context of 512 tokens (one kernel call per linear) against
  // its default chunk: what chunking costs.
  for (int format = 1; format < 4; ++format) b->Args({format, 1, 512, 1, 512});
}

}  // namespace

BENCHMARK(BM_Decoder)
    ->Apply(decoder_args)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MeasureProcessCPUTime();
