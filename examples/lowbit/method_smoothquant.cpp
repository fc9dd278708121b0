// lowbit quantize smoothquant: SmoothQuant smoothing (smooth_ln_fcs) of W and
// any further linears W2, W3... sharing the input X, then W8A8 int8.
#include <lowbit/kernels/int8_gemm.hpp>
#include <lowbit/quant/smoothquant.hpp>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

template <class Scalar>
MethodResult run_smoothquant(const MatrixT<Scalar>& w, const std::vector<MatrixT<Scalar>>& extra,
                             const MatrixT<Scalar>& x, const std::optional<VectorT<Scalar>>& ln_weight,
                             const std::optional<VectorT<Scalar>>& ln_bias, const SmoothQuantConfig& config) {
  std::vector<MatrixRef<Scalar>> linears{w};
  for (const MatrixT<Scalar>& e : extra) linears.emplace_back(e);
  // The reference's act_scales are max|X| per channel, kept in float.
  const VectorD act =
      x.cwiseAbs().colwise().maxCoeff().transpose().template cast<float>().template cast<double>();
  const SmoothQuantResult<Scalar> smooth = quantize_smoothquant(linears, act, config);
  const VectorF s = smooth.scales.template cast<float>();

  MethodResult result;
  add_vector_tensor(result, "scales", smooth.scales.template cast<double>());
  for (std::size_t l = 0; l < linears.size(); ++l) {
    const std::string name = l == 0 ? "W" : "W" + std::to_string(l + 1);
    result.tensors.add_matrix(name + "_smoothed", scale_input_channels(linears[l], smooth.scales));
    const Int8Weights& w8 = smooth.weights[l];
    MatrixF q = w8.dequantize();  // in the smoothed domain; back to the input domain:
    for (Index j = 0; j < q.cols(); ++j) q.col(j) /= s(j);
    const std::string suffix = linear_suffix(l);
    result.tensors.add_matrix("W8" + suffix, w8.values, io::Dtype::I8);
    add_vector_tensor(result, "w8_scale" + suffix, w8.scale.cast<double>());
    if (l > 0) {
      result.tensors.add_matrix("Q" + suffix, q);
      continue;
    }
    result.q = q;
    // The W8A8 output error of W, run as integers: X/s quantized per token.
    const Int8Activations x8 = quantize_activations(divide_input_channels(x, smooth.scales).template cast<float>());
    const MatrixD exact = x.template cast<double>() * w.template cast<double>().transpose();
    result.metadata["rel_out_err_w8a8"] =
        format_double((int8_gemm(w8, x8).cast<double>() - exact).norm() / exact.norm());
  }
  if (ln_weight) {
    NormParams<Scalar> norm{*ln_weight, ln_bias ? *ln_bias : VectorT<Scalar>()};
    const NormParams<Scalar> folded = fold_into_norm(norm, smooth.scales);
    add_vector_tensor(result, "ln_weight_smoothed", folded.weight.template cast<double>());
    if (folded.has_bias()) add_vector_tensor(result, "ln_bias_smoothed", folded.bias.template cast<double>());
  }
  result.bits_per_weight = 8.0 + 32.0 / static_cast<double>(w.cols());  // a float scale per row
  result.metadata["alpha"] = format_double(config.alpha);
  result.metadata["linears"] = std::to_string(linears.size());
  result.metadata["precision"] = std::is_same_v<Scalar, double> ? "float64" : "float32";
  return result;
}

}  // namespace

Method smoothquant_method() {
  Method m;
  m.name = "smoothquant";
  m.summary = "SmoothQuant: s = max|X|^a / max|W|^(1-a), W*s, then W8A8 int8 (per-row weights, per-token "
              "activations); needs X; outputs scales, W_smoothed, W8 (I8), w8_scale, Q = W8/s";
  m.options = {"alpha", "threads"};
  m.demo_runs = {{"--alpha", "0.5"}, {"--alpha", "0.8"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (!in.x) throw UsageError("smoothquant needs calibration activations: tensor 'X' (tokens x in)");
    if (in.ln_bias && !in.ln_weight) throw UsageError("tensor 'ln_bias' needs 'ln_weight'");
    SmoothQuantConfig config;
    config.alpha = options.real("alpha", 0.5);
    if (in.f64)
      return run_smoothquant<double>(in.f64->w, in.f64->extra_weights, *in.f64->x, in.f64->ln_weight,
                                     in.f64->ln_bias, config);
    return run_smoothquant<float>(in.w, in.extra_weights, *in.x, in.ln_weight, in.ln_bias, config);
  };
  return m;
}

}  // namespace lowbit::cli
