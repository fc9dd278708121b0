// lowbit quantize rtn / absmax: round-to-nearest on the reference grid, and
// symmetric absmax.
#include "methods.hpp"

namespace lowbit::cli {

namespace {

// --gguf-type: llama.cpp's own quantizer (core/ggml_grid.hpp), with diag(H)
// as its importance matrix when the input has X or H (what llama-imatrix
// collects, up to scale); the type fixes the grid.
MethodResult run_rtn_ggml(const LayerInputs& in, const Options& options, GgmlType type) {
  for (const char* name : {"bits", "group-size", "sym", "mse"})
    if (options.has(name))
      throw UsageError(std::string("quantize rtn: --") + name +
                       " does not apply with --gguf-type (the block type fixes the grid)");
  GgmlConfig config{type, {}};
  const bool imatrix = in.x || in.h;
  if (imatrix) config.importance = layer_hessian(in).diagonal().cast<float>();
  const GgmlResult ggml = quantize_ggml(in.w, config);
  MethodResult result;
  result.q = ggml.weights.dequantize();
  add_gguf_blocks(result, ggml.weights);
  result.metadata["imatrix"] = format_bool(imatrix);
  return result;
}

}  // namespace

Method rtn_method() {
  Method m;
  m.name = "rtn";
  m.summary = "round-to-nearest on the GPTQ reference grid (min-max, optional --sym, --mse)";
  m.options = {option("bits", "4"), option("group-size", "-1"), option("sym"),
               option("mse"),       option("gguf-type"),        option("threads")};
  m.demo_runs = {{"--bits", "4", "--group-size", "128"},
                 {"--bits", "3", "--group-size", "128"},
                 {"--bits", "2", "--group-size", "64"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (const std::optional<GgmlType> type = gguf_type(options))
      return run_rtn_ggml(in, options, *type);
    RtnConfig config;
    config.bits = options.integer("bits");
    config.grid.sym = options.flag("sym");
    config.grid.mse = options.flag("mse");
    config.group_size = options.integer("group-size");
    const UniformWeights q = quantize_rtn(in.w, config).weights;
    MethodResult result;
    result.q = q.dequantize();
    result.bits_per_weight = bits_per_weight(q);
    io::add_uniform(result.tensors, q);
    result.metadata = {{"bits", std::to_string(config.bits)},
                       {"group_size", std::to_string(config.group_size)},
                       {"sym", format_bool(config.grid.sym)},
                       {"mse", format_bool(config.grid.mse)}};
    return result;
  };
  return m;
}

Method absmax_method() {
  Method m;
  m.name = "absmax";
  m.summary =
      "symmetric absmax (scale = max|w| / (2^(bits-1) - 1)) per row, per group or --per-tensor";
  m.options = {option("bits", "8").accepting(integer_in(2, 8)), option("group-size", "-1"),
               option("per-tensor"), option("threads")};
  m.demo_runs = {{"--bits", "8"}, {"--bits", "4", "--group-size", "128"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    AbsmaxConfig config;
    config.bits = options.integer("bits");
    config.group_size = options.integer("group-size");
    if (options.flag("per-tensor")) {
      if (options.has("group-size"))
        throw UsageError("absmax: --per-tensor and --group-size conflict");
      config.granularity = AbsmaxGranularity::per_tensor;
    } else if (config.group_size != -1) {
      config.granularity = AbsmaxGranularity::per_group;
    }
    const UniformWeights q = quantize_absmax(in.w, config).weights;
    MethodResult result;
    result.q = q.dequantize();
    result.bits_per_weight = bits_per_weight(q);
    io::add_uniform(result.tensors, q);
    const char* granularity = config.granularity == AbsmaxGranularity::per_tensor  ? "tensor"
                              : config.granularity == AbsmaxGranularity::per_group ? "group"
                                                                                   : "row";
    result.metadata = {{"bits", std::to_string(config.bits)},
                       {"group_size", std::to_string(q.group_size)},
                       {"granularity", granularity}};
    return result;
  };
  return m;
}

}  // namespace lowbit::cli
