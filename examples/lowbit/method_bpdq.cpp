// lowbit quantize bpdq: bit-plane decomposition (the official BPDQ code's
// algorithm) with H from the input (or 2/N X^T X); outputs Q, the official
// payload c and B_packed, the unpacked planes B, and the 8-bit init.
#include <lowbit/quant/bpdq.hpp>

#include "methods.hpp"

namespace lowbit::cli {

Method bpdq_method() {
  Method m;
  m.name = "bpdq";
  m.summary = "BPDQ (GPTQModel + bpdq.patch): k bit planes with free per-group coefficients, ridge fit "
              "whitened by H^-1, GPTQ error feedback; needs H or X; outputs B (U8 [k,out,in]), "
              "c ([groups,k+1,out], bias last), B_packed (official I32 [in/32,k,out]), init_scale8, init_zero8";
  m.options = {"planes", "group-size", "iters", "ridge", "gar", "no-gar", "damp", "block-size", "threads"};
  m.demo_runs = {{"--planes", "2", "--group-size", "64"}, {"--planes", "3", "--group-size", "64"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    BpdqConfig config;
    config.planes = options.integer("planes", 2);
    config.group_size = options.integer("group-size", 64);
    config.iters = options.integer("iters", 10);
    config.ridge = options.real("ridge", 1e-4);
    config.group_aware_reorder = options.toggle("gar", true);
    config.damping.percdamp = options.real("damp", 0.05);
    config.block_size = options.integer("block-size", 128);
    if (in.w.cols() % 32 != 0)
      throw UsageError("bpdq: the official B_packed layout needs in_features divisible by 32, got " +
                       std::to_string(in.w.cols()));
    const BpdqResult bpdq = quantize_bpdq(in.w, in.hessian(), config);
    const BpdqReport& report = bpdq.report;

    MethodResult result;
    result.q = bpdq.weights.dequantize();
    result.bits_per_weight = bits_per_weight(bpdq.weights);
    add_bitplane_tensors(result, bpdq.weights);
    result.tensors.add_matrix("init_scale8", report.init_scale);  // [groups, out] as the reference
    result.tensors.add_matrix("init_zero8", report.init_zero);
    const Permutation& column_order = report.hessian.column_order;
    if (!column_order.empty()) {
      result.tensors.add_ints("final_perm", {static_cast<std::int64_t>(column_order.size())},
                              column_order.data(), column_order.size());
      result.tensors.add_ints("global_perm", {static_cast<std::int64_t>(report.group_order.size())},
                              report.group_order.data(), report.group_order.size());
    }
    result.metadata = {{"planes", std::to_string(config.planes)},
                       {"group_size", std::to_string(bpdq.weights.group_size)},
                       {"iters", std::to_string(config.iters)},
                       {"ridge", format_double(config.ridge)},
                       {"gar", format_bool(config.group_aware_reorder)},
                       {"damp", format_double(report.hessian.percdamp)},
                       {"loss", format_double(report.loss)},
                       {"dead_columns", std::to_string(report.hessian.dead_columns.size())}};
    if (in.x) result.metadata["avg_loss"] = format_double(report.loss / static_cast<double>(in.x->rows()));
    return result;
  };
  return m;
}

}  // namespace lowbit::cli
