// lowbit quantize gptq: GPTQ as IST-DASLab fasterquant runs it (quant/gptq.hpp),
// on H when the input has it, else on H = 2/N X^T X. The option handling is
// shared with tacq, which runs GPTQ with a mask.
#include <iostream>

#include "methods.hpp"

namespace lowbit::cli {

OptionTable gptq_options(int default_bits) {
  return {option("bits", std::to_string(default_bits)).accepting(integer_in(2, 8)),
          option("group-size", "-1"),
          option("sym"),
          option("mse"),
          option("act-order"),
          option("static-groups"),
          option("fresh-group-params"),
          option("block-size", "128"),
          option("damp", "0.01"),
          option("percdamp")};
}

GptqConfig gptq_config(const Options& options, const std::string& method) {
  GptqConfig config;
  config.bits = options.integer("bits");
  config.grid.sym = options.flag("sym");
  config.grid.mse = options.flag("mse");
  config.group_size = options.integer("group-size");
  config.act_order = options.flag("act-order");
  config.static_groups = options.flag("static-groups");
  config.fresh_group_params = options.flag("fresh-group-params");
  if (options.has("damp") && options.has("percdamp"))
    throw UsageError("quantize " + method +
                     ": --damp and --percdamp are the same option; give one");
  config.damping.percdamp = options.real(options.has("percdamp") ? "percdamp" : "damp");
  config.block_size = options.integer("block-size");
  return config;
}

void announce_damping(const std::string& method, const DampingConfig& requested,
                      const HessianReport& report) {
  if (report.failed_factorizations == 0) return;
  std::cerr << "lowbit: " << method << ": H + " << requested.percdamp
            << " * mean(diag H) was not positive definite; damping raised to " << report.percdamp;
  if (report.diagonal_floor > 0)
    std::cerr << " with the diagonal floored at " << report.diagonal_floor;
  std::cerr << " after " << report.failed_factorizations << " failed factorizations\n";
}

namespace {

// What every GPTQ run reports, with or without a ggml target.
std::map<std::string, std::string> report_metadata(const LayerInputs& inputs,
                                                   const GptqReport& report) {
  std::map<std::string, std::string> metadata{
      {"calibration", inputs.h ? "H" : "X"},
      {"loss", format_double(report.loss)},
      {"damp_used", format_double(report.hessian.percdamp)},
      {"failed_factorizations", std::to_string(report.hessian.failed_factorizations)},
      {"dead_columns", std::to_string(report.hessian.dead_columns.size())}};
  if (report.hessian.diagonal_floor > 0)
    metadata["diagonal_floor"] = format_double(report.hessian.diagonal_floor);
  return metadata;
}

// --gguf-type: GPTQ with every block's grid one the type can store
// (quant/gptq_ggml.hpp); the type fixes bits, groups and the grid.
MethodResult run_gptq_ggml(const LayerInputs& in, const Options& options, GgmlType type) {
  for (const char* name :
       {"bits", "group-size", "sym", "mse", "static-groups", "fresh-group-params", "block-size"})
    if (options.has(name))
      throw UsageError(std::string("quantize gptq: --") + name +
                       " does not apply with --gguf-type (the block type fixes the grid)");
  GptqGgmlConfig config;
  config.type = type;
  config.act_order = options.flag("act-order");
  config.damping = gptq_config(options, "gptq").damping;
  const GptqGgmlResult gptq = quantize_gptq_ggml(in.w, layer_hessian(in), config);
  announce_damping("gptq", config.damping, gptq.report.hessian);
  MethodResult result;
  result.q = gptq.dequantize();
  add_gguf_blocks(result, gptq.weights);
  if (config.act_order) io::add_column_order(result.tensors, gptq.report.hessian.column_order);
  result.metadata.merge(report_metadata(in, gptq.report));
  result.metadata["act_order"] = format_bool(config.act_order);
  return result;
}

}  // namespace

std::map<std::string, std::string> gptq_metadata(const LayerInputs& inputs,
                                                 const GptqConfig& config,
                                                 const GptqReport& report) {
  std::map<std::string, std::string> metadata{
      {"bits", std::to_string(config.bits)},
      {"group_size", std::to_string(config.group_size)},
      {"sym", format_bool(config.grid.sym)},
      {"mse", format_bool(config.grid.mse)},
      {"act_order", format_bool(config.act_order)},
      {"static_groups", format_bool(config.static_groups)},
      {"fresh_group_params", format_bool(config.fresh_group_params)},
      {"block_size", std::to_string(config.block_size)}};
  metadata.merge(report_metadata(inputs, report));
  return metadata;
}

Method gptq_method() {
  Method m;
  m.name = "gptq";
  m.summary =
      "GPTQ (Frantar et al. 2023; IST-DASLab fasterquant): Hessian-aware error feedback, needs H "
      "or X";
  m.options = gptq_options(4);
  m.options.push_back(option("gguf-type"));
  m.options.push_back(option("threads"));
  m.demo_runs = {{"--bits", "4", "--group-size", "128"},
                 {"--bits", "3", "--group-size", "128"},
                 {"--bits", "2", "--group-size", "64", "--act-order"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (const std::optional<GgmlType> type = gguf_type(options))
      return run_gptq_ggml(in, options, *type);
    const GptqConfig config = gptq_config(options, "gptq");
    const GptqResult gptq = quantize_gptq(in.w, layer_hessian(in), config);
    announce_damping("gptq", config.damping, gptq.report.hessian);
    MethodResult result;
    result.q = gptq.dequantize();
    result.bits_per_weight = bits_per_weight(gptq.weights);
    io::add_uniform(result.tensors, gptq.weights);
    if (config.act_order) io::add_column_order(result.tensors, gptq.report.hessian.column_order);
    result.metadata = gptq_metadata(in, config, gptq.report);
    return result;
  };
  return m;
}

}  // namespace lowbit::cli
