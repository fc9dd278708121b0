// lowbit quantize awq: activation-aware scaling and clipping (llm-awq) of W
// and any further linears W2, W3... sharing the input X.
#include <lowbit/quant/awq.hpp>

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
  add_uniform_tensors(result, awq.weights[0]);  // the stored form of Wq (acts on X / s)
  for (std::size_t l = 0; l < linears.size(); ++l) {
    const std::string suffix = linear_suffix(l);
    const UniformWeights& q = awq.weights[l];
    if (l > 0) result.tensors.add_matrix("Q" + suffix, awq.effective_weight(l));
    result.tensors.add_matrix("Wq" + suffix, q.dequantize());
    result.tensors.add_matrix("q_scales" + suffix, q.scale.transpose());  // [out, groups] as the reference
    result.tensors.add_matrix("q_zeros" + suffix, q.zero.transpose());
    result.tensors.add_matrix("clip_max_val" + suffix, awq.report.clip_max_val[l]);
  }
  add_vector_tensor(result, "scales", awq.scales.template cast<double>());
  add_vector_tensor(result, "search_loss_history",
                    Eigen::Map<const VectorD>(awq.report.search.loss.data(),
                                              static_cast<Index>(awq.report.search.loss.size())),
                    io::Dtype::F64);
  if (ln_weight) {
    NormParams<Scalar> norm{*ln_weight, ln_bias ? *ln_bias : VectorT<Scalar>()};
    const NormParams<Scalar> folded = fold_into_norm(norm, awq.scales);
    add_vector_tensor(result, "ln_weight_scaled", folded.weight.template cast<double>());
    if (folded.has_bias()) add_vector_tensor(result, "ln_bias_scaled", folded.bias.template cast<double>());
  }
  result.metadata = {{"bits", std::to_string(config.bits)},
                     {"group_size", std::to_string(awq.weights[0].group_size)},
                     {"grid", std::to_string(config.scale_grid)},
                     {"zero_point", format_bool(!config.sym)},
                     {"linears", std::to_string(linears.size())},
                     {"precision", std::is_same_v<Scalar, double> ? "float64" : "float32"},
                     {"best_ratio", format_double(awq.report.search.best_ratio)}};
  return result;
}

}  // namespace

Method awq_method() {
  Method m;
  m.name = "awq";
  m.summary = "AWQ (llm-awq): activation-aware scales s and clipping, AWQ grid; needs X; "
              "outputs Wq (acts on X/s), scales, clip_max_val, q_scales, q_zeros, Q = Wq/s";
  m.options = {"bits", "group-size", "grid", "sym", "threads"};
  m.demo_runs = {{"--bits", "4", "--group-size", "128"}, {"--bits", "3", "--group-size", "128"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (!in.x) throw UsageError("awq needs calibration activations: tensor 'X' (tokens x in)");
    if (in.ln_bias && !in.ln_weight) throw UsageError("tensor 'ln_bias' needs 'ln_weight'");
    AwqConfig config;
    config.bits = options.integer("bits", 4);
    config.group_size = options.integer("group-size", 128);
    config.scale_grid = options.integer("grid", 20);
    config.sym = options.flag("sym");
    if (in.f64)
      return run_awq<double>(in.f64->w, in.f64->extra_weights, *in.f64->x, in.f64->ln_weight,
                             in.f64->ln_bias, config);
    return run_awq<float>(in.w, in.extra_weights, *in.x, in.ln_weight, in.ln_bias, config);
  };
  return m;
}

}  // namespace lowbit::cli
