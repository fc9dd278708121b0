// lowbit quantize smoothquant: SmoothQuant smoothing (smooth_ln_fcs) of W and
// any further linears W2, W3... sharing the input X, then W8A8 int8.
#include <lowbit/kernels/int8_gemm.hpp>
#include <lowbit/quant/smoothquant.hpp>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

template <class Scalar>
MethodResult run_smoothquant(const MatrixT<Scalar>& w, const std::vector<MatrixT<Scalar>>& extra,
                             const MatrixT<Scalar>& x,
                             const std::optional<VectorT<Scalar>>& ln_weight,
                             const std::optional<VectorT<Scalar>>& ln_bias,
                             const SmoothQuantConfig& config) {
  std::vector<MatrixRef<Scalar>> linears{w};
  for (const MatrixT<Scalar>& e : extra) linears.emplace_back(e);
  // The reference's act_scales are max|X| per channel, kept in float.
  const VectorD act =
      x.cwiseAbs().colwise().maxCoeff().transpose().template cast<float>().template cast<double>();
  const SmoothQuantResult<Scalar> smooth = quantize_smoothquant(linears, act, config);
  const VectorF s = smooth.scales.template cast<float>();

  MethodResult result;
  for (std::size_t l = 0; l < linears.size(); ++l) {
    MatrixF q =
        smooth.weights[l].dequantize();  // in the smoothed domain; back to the input domain:
    for (Index j = 0; j < q.cols(); ++j) q.col(j) /= s(j);
    if (l == 0)
      result.q = q;
    else
      io::add_dequantized(result.tensors, q, l);
  }
  io::add_smoothquant(result.tensors, smooth, linears);
  // The W8A8 output error of W, run as integers: X/s quantized per token.
  const Int8Activations x8 =
      quantize_activations(divide_input_channels(x, smooth.scales).template cast<float>());
  const MatrixD exact = x.template cast<double>() * w.template cast<double>().transpose();
  result.metadata["rel_out_err_w8a8"] = format_double(
      (int8_gemm(smooth.weights[0], x8).template cast<double>() - exact).norm() / exact.norm());
  add_folded_norm(result.tensors, ln_weight, ln_bias, smooth.scales, "_smoothed");
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
  m.summary =
      "SmoothQuant: s = max|X|^a / max|W|^(1-a), W*s, then W8A8 int8 (per-row weights, per-token "
      "activations); needs X; outputs scales, W_smoothed, W8 (I8), w8_scale, Q = W8/s";
  m.options = {option("alpha", "0.5"), option("threads")};
  m.demo_runs = {{"--alpha", "0.5"}, {"--alpha", "0.8"}};
  m.run = [](const LayerInputs& in, const Options& options) {
    if (!in.x)
      throw UsageError("smoothquant needs calibration activations: tensor 'X' (tokens x in)");
    if (in.ln_bias && !in.ln_weight) throw UsageError("tensor 'ln_bias' needs 'ln_weight'");
    SmoothQuantConfig config;
    config.alpha = options.real("alpha");
    if (in.f64)
      return run_smoothquant<double>(in.f64->w, in.f64->extra_weights, *in.f64->x,
                                     in.f64->ln_weight, in.f64->ln_bias, config);
    return run_smoothquant<float>(in.w, in.extra_weights, *in.x, in.ln_weight, in.ln_bias, config);
  };
  return m;
}

}  // namespace lowbit::cli
