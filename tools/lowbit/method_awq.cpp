// lowbit quantize awq: activation-aware scaling and clipping (llm-awq) of W
// and any further linears W2, W3... sharing the input X.
#include <lowbit/quant/awq.hpp>
#include <lowbit/quant/awq_ggml.hpp>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

template <class Scalar>
MethodResult run_awq(const MatrixT<Scalar>& w, const std::vector<MatrixT<Scalar>>& extra,
                     const MatrixT<Scalar>& x, const std::optional<VectorT<Scalar>>& ln_weight,
                     const std::optional<VectorT<Scalar>>& ln_bias, const AwqConfig& config) {
  std::vector<MatrixRef<Scalar>> linears{w};
  for (const MatrixT<Scalar>& e : extra) linears.emplace_back(e);
  const AwqResult<Scalar> awq = quantize_awq(linears, x, config);

  MethodResult result;
  result.q = awq.effective_weight(0).template cast<float>();
  result.bits_per_weight = bits_per_weight(awq.weights[0]);
  io::add_awq(result.tensors, awq);
  for (std::size_t l = 1; l < linears.size(); ++l)
    io::add_dequantized(result.tensors, awq.effective_weight(l), l);
  add_folded_norm(result.tensors, ln_weight, ln_bias, awq.scales, "_scaled");
  result.metadata = {{"bits", std::to_string(config.bits)},
                     {"group_size", std::to_string(awq.weights[0].group_size)},
                     {"grid", std::to_string(config.scale_grid)},
                     {"zero_point", format_bool(!config.sym)},
                     {"linears", std::to_string(linears.size())},
                     {"precision", std::is_same_v<Scalar, double> ? "float64" : "float32"},
                     {"best_ratio", format_double(awq.report.search.best_ratio)}};
  return result;
}

// --gguf-type: AWQ's scale search with the block type as the grid
// (quant/awq_ggml.hpp); the type fixes bits, groups and the grid.
MethodResult run_awq_ggml(const LayerInputs& in, const Options& options, GgmlType type) {
  for (const char* name : {"bits", "group-size", "sym"})
    if (options.has(name))
      throw UsageError(std::string("quantize awq: --") + name +
                       " does not apply with --gguf-type (the block type fixes the grid)");
  std::vector<MatrixFRef> linears{in.w};
  for (const MatrixF& e : in.extra_weights) linears.emplace_back(e);
  AwqGgmlConfig config;
  config.type = type;
  config.scale_grid = options.integer("grid");
  const AwqGgmlResult awq = quantize_awq_ggml(linears, *in.x, config);
  MethodResult result;
  result.q = awq.effective_weight(0);
  add_gguf_blocks(result, awq.weights[0]);
  for (std::size_t l = 1; l < linears.size(); ++l)
    io::add_dequantized(result.tensors, awq.effective_weight(l), l);
  result.tensors.add_vector(
      "scales", std::vector<float>(awq.scales.data(), awq.scales.data() + awq.scales.size()),
      io::Dtype::F32);
  add_folded_norm(result.tensors, in.ln_weight, in.ln_bias, awq.scales, "_scaled");
  result.metadata["grid"] = std::to_string(config.scale_grid);
  result.metadata["linears"] = std::to_string(linears.size());
  result.metadata["best_ratio"] = format_double(awq.search.best_ratio);
  return result;
}

}  // namespace

Method awq_method() {
  Method m;
  m.name = "awq";
  m.summary =
      "AWQ (llm-awq): activation-aware scales s and clipping, AWQ grid; needs X; "
      "outputs Wq (acts on X/s), scales, clip_max_val, q_scales, q_zeros, Q = Wq/s";
  m.options = {option("bits", "4"), option("group-size", "128"), option("grid", "20"),
               option("sym"),       option("gguf-type"),         option("threads")};
  m.demo_runs = {{"--bits", "4", "--group-size", "128"}, {"--bits", "3", "--group-size", "128"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (!in.x) throw UsageError("awq needs calibration activations: tensor 'X' (tokens x in)");
    if (in.ln_bias && !in.ln_weight) throw UsageError("tensor 'ln_bias' needs 'ln_weight'");
    AwqConfig config;
    config.bits = options.integer("bits");
    config.group_size = options.integer("group-size");
    config.scale_grid = options.integer("grid");
    config.sym = options.flag("sym");
    if (const std::optional<GgmlType> type = gguf_type(options))
      return run_awq_ggml(in, options, *type);
    if (in.f64)
      return run_awq<double>(in.f64->w, in.f64->extra_weights, *in.f64->x, in.f64->ln_weight,
                             in.f64->ln_bias, config);
    return run_awq<float>(in.w, in.extra_weights, *in.x, in.ln_weight, in.ln_bias, config);
  };
  return m;
}

}  // namespace lowbit::cli
