// lowbit quantize bpdq: bit-plane decomposition (the official BPDQ code's
// algorithm) with H from the input (or 2/N X^T X); outputs Q, the official
// payload c and B_packed, the unpacked planes B, and the 8-bit init.
#include <lowbit/quant/bpdq.hpp>

#include "methods.hpp"

namespace lowbit::cli {

Method bpdq_method() {
  Method m;
  m.name = "bpdq";
  m.summary =
      "BPDQ (GPTQModel + bpdq.patch): k bit planes with free per-group coefficients, ridge fit "
      "whitened by H^-1, GPTQ error feedback; needs H or X; outputs B (U8 [k,out,in]), "
      "c ([groups,k+1,out], bias last), B_packed (official I32 [in/32,k,out]), init_scale8, "
      "init_zero8";
  m.options = {option("planes", "2"),     option("group-size", "64"),  option("iters", "10"),
               option("ridge", "0.0001"), option("gar", "on"),         option("no-gar"),
               option("damp", "0.05"),    option("block-size", "128"), option("threads")};
  m.demo_runs = {{"--planes", "2", "--group-size", "64"}, {"--planes", "3", "--group-size", "64"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    BpdqConfig config;
    config.planes = options.integer("planes");
    config.group_size = options.integer("group-size");
    config.iters = options.integer("iters");
    config.ridge = options.real("ridge");
    config.group_aware_reorder = options.toggle("gar");
    config.damping.percdamp = options.real("damp");
    config.block_size = options.integer("block-size");
    if (in.w.cols() % 32 != 0)
      throw UsageError(
          "bpdq: the official B_packed layout needs in_features divisible by 32, got " +
          std::to_string(in.w.cols()));
    const BpdqResult bpdq = quantize_bpdq(in.w, layer_hessian(in), config);
    const BpdqReport& report = bpdq.report;

    MethodResult result;
    result.q = bpdq.weights.dequantize();
    result.bits_per_weight = bits_per_weight(bpdq.weights);
    io::add_bitplanes(result.tensors, bpdq.weights);
    io::add_bpdq_report(result.tensors, report);
    result.metadata = {{"planes", std::to_string(config.planes)},
                       {"group_size", std::to_string(bpdq.weights.group_size)},
                       {"iters", std::to_string(config.iters)},
                       {"ridge", format_double(config.ridge)},
                       {"gar", format_bool(config.group_aware_reorder)},
                       {"damp", format_double(report.hessian.percdamp)},
                       {"loss", format_double(report.loss)},
                       {"dead_columns", std::to_string(report.hessian.dead_columns.size())}};
    if (in.x)
      result.metadata["avg_loss"] = format_double(report.loss / static_cast<double>(in.x->rows()));
    return result;
  };
  return m;
}

}  // namespace lowbit::cli
