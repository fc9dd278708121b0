// lowbit quantize tacq: TACQ (quant/tacq.hpp): GPTQ with the top fraction of
// |G ⊙ (W − Q(W)) ⊙ W| kept in fp16 (or f32) as a sparse CSR part. Without a
// G tensor it runs the gradient-free fallback and says so on stderr.
#include <iostream>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

TacqConfig tacq_config(const Options& options) {
  TacqConfig config;
  config.gptq = gptq_config(options, "tacq");
  config.fraction = options.real("fraction");
  // The option table admits only these values (options.cpp).
  config.precision =
      options.text("outlier-dtype") == "f16" ? OutlierPrecision::f16 : OutlierPrecision::f32;
  config.reference =
      options.text("saliency-from") == "gptq" ? SaliencyReference::gptq : SaliencyReference::rtn;
  return config;
}

}  // namespace

Method tacq_method() {
  Method m;
  m.name = "tacq";
  m.summary =
      "TACQ (Xiao et al. 2025): GPTQ keeping the top --fraction of |G*(W-Q)*W| exact (CSR), needs "
      "H or X, "
      "and G (else a diag(H) fallback)";
  m.options = gptq_options(2);
  m.options.insert(m.options.end(), {option("fraction", "0.0035"), option("outlier-dtype", "f16"),
                                     option("saliency-from", "gptq"), option("threads")});
  m.demo_runs = {{"--bits", "2", "--group-size", "64", "--fraction", "0.0035"},
                 {"--bits", "3", "--group-size", "128", "--fraction", "0.0035"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    const TacqConfig config = tacq_config(options);
    tacq_outlier_count(in.w.rows(), in.w.cols(),
                       config.fraction);  // a bad fraction fails before the notice
    const bool gradient_free = !in.g;
    if (gradient_free)
      std::cerr << "lowbit tacq: no tensor 'G': gradient-free fallback, G = diag(H) broadcast "
                   "along the rows "
                   "(an activation-energy proxy, not the paper's method)\n";
    const MatrixD h = layer_hessian(in);
    const TacqResult tacq = gradient_free ? quantize_tacq_without_gradients(in.w, h, config)
                                          : quantize_tacq(in.w, h, *in.g, config);
    announce_damping("tacq", config.gptq.damping, tacq.report.gptq.hessian);
    MethodResult result;
    result.q = tacq.dequantize();
    result.bits_per_weight = tacq.report.bits_per_weight;
    io::add_uniform(result.tensors, tacq.weights);
    if (config.gptq.act_order)
      io::add_column_order(result.tensors, tacq.report.gptq.hessian.column_order);
    io::add_outliers(result.tensors, tacq.outliers);
    result.metadata = gptq_metadata(in, config.gptq, tacq.report.gptq);
    result.metadata.insert(
        {{"fraction", format_double(config.fraction)},
         {"outliers", std::to_string(tacq.report.outliers)},
         {"outlier_dtype", config.precision == OutlierPrecision::f16 ? "F16" : "F32"},
         {"saliency_from", config.reference == SaliencyReference::gptq ? "gptq" : "rtn"},
         {"gradients",
          gradient_free ? "diag(H) proxy (gradient-free fallback, not the paper's method)" : "G"},
         {"dense_bits_per_weight", format_double(tacq.report.dense_bits_per_weight)},
         {"sparse_bits_per_weight", format_double(tacq.report.sparse_bits_per_weight)}});
    return result;
  };
  return m;
}

}  // namespace lowbit::cli
