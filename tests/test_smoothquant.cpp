// quant/smoothquant.hpp: the golden smoothquant cases (scales, smoothed
// weights, folded LayerNorm, W8 weights, the W8A8 error run through the int8
// kernel), properties, the Calibration path, and bad arguments.
#include <lowbit/kernels/int8_gemm.hpp>
#include <lowbit/quant/smoothquant.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

// Largest |a - b| / |b| over the elements (every golden value here is nonzero).
template <class A, class B>
double max_elementwise_rel(const A& a, const B& b) {
  const MatrixD da = a.template cast<double>(), db = b.template cast<double>();
  EXPECT_EQ(da.rows(), db.rows());
  EXPECT_EQ(da.cols(), db.cols());
  double worst = 0;
  for (Index i = 0; i < db.size(); ++i)
    worst = std::max(
        worst, std::abs(da.data()[i] - db.data()[i]) / std::max(std::abs(db.data()[i]), 1e-30));
  return worst;
}

// ||W8A8(x, w) - x w^T|| / ||x w^T||: x quantized per token, w per row, the
// product run as integers.
double w8a8_error(const MatrixF& x_in, const MatrixF& w_in, const MatrixD& exact) {
  const Int8Activations x = quantize_activations(x_in);
  const Int8Weights w = int8_absmax_per_row(w_in);
  return (int8_gemm(w, x).cast<double>() - exact).norm() / exact.norm();
}

template <class Scalar>
void check_smoothquant_golden(const io::SafetensorsReader& f, const std::string& dir) {
  const int fcs = test::meta_int(f, "num_fcs");
  std::vector<MatrixT<Scalar>> linears{test::golden_tensor<Scalar>(f, dir, "W")};
  if (fcs == 2) linears.push_back(test::golden_tensor<Scalar>(f, dir, "W2"));
  const MatrixT<Scalar> x = test::golden_tensor<Scalar>(f, dir, "X");
  SmoothQuantConfig config;
  config.alpha = test::meta_double(f, "alpha");
  // act_scales is float in every case (the reference's .float()), cast to the weights' dtype.
  const VectorT<Scalar> act = test::golden_vector<Scalar>(f, "act_scales");
  EXPECT_EQ(act, x.cwiseAbs().colwise().maxCoeff().transpose());
  const SmoothQuantResult<Scalar> r = detail::quantize_smoothquant<Scalar>(
      {linears.begin(), linears.end()}, act.template cast<double>(), config);

  const double scale_err = max_elementwise_rel(r.scales, test::golden_vector<Scalar>(f, "scales"));
  EXPECT_LE(scale_err, 1e-6);
  const NormParams<Scalar> folded =
      fold_into_norm(NormParams<Scalar>{test::golden_vector<Scalar>(f, "ln_weight"),
                                        test::golden_vector<Scalar>(f, "ln_bias")},
                     r.scales);
  const double norm_err = std::max(
      max_elementwise_rel(folded.weight, test::golden_vector<Scalar>(f, "ln_weight_smoothed")),
      max_elementwise_rel(folded.bias, test::golden_vector<Scalar>(f, "ln_bias_smoothed")));
  EXPECT_LE(norm_err, 1e-6);
  // The smoothed weights W·diag(s) the int8 step quantized.
  std::vector<MatrixT<Scalar>> smoothed;
  for (const MatrixT<Scalar>& w : linears) smoothed.push_back(scale_input_channels(w, r.scales));
  double weight_err = 0;
  if (f.contains("W_smoothed")) {
    weight_err = max_elementwise_rel(smoothed[0], f.matrix_d("W_smoothed"));
    if (fcs == 2)
      weight_err =
          std::max(weight_err, max_elementwise_rel(smoothed[1], f.matrix_d("W2_smoothed")));
    EXPECT_LE(weight_err, 1e-6);
  }

  // W8: per-row int8 absmax of the smoothed weight (fake-quantized in the file).
  double w8_err = 0;
  if (f.contains("W8_smoothed")) {  // float: bit for bit; double: the float rounding of our W8 path
    const MatrixD w8 = r.weights[0].dequantize().template cast<double>();
    w8_err = test::max_rel_diff(w8, f.matrix_d("W8_smoothed"));
    EXPECT_LE(w8_err, (std::is_same_v<Scalar, float> ? 0.0 : 1e-6));
  }

  // The W8A8 error on X/s with the int8 kernel, and without smoothing.
  const MatrixD exact = x.template cast<double>() * linears[0].template cast<double>().transpose();
  const MatrixF xs = divide_input_channels(x, r.scales).template cast<float>();
  const double err = w8a8_error(xs, smoothed[0].template cast<float>(), exact);
  const double golden_err = test::meta_double(f, "rel_out_err");
  EXPECT_NEAR(err, golden_err, 0.01 * golden_err);
  const double plain =
      w8a8_error(x.template cast<float>(), linears[0].template cast<float>(), exact);
  EXPECT_NEAR(plain, test::meta_double(f, "rel_out_err_w8a8_plain"), 0.01 * plain);
  std::printf(
      "  %s: scales %.1e, norm %.1e, smoothed W %.1e, W8 %.1e, W8A8 rel_out_err %.6f (reference "
      "%.6f), "
      "unsmoothed %.6f\n",
      std::filesystem::path(f.source()).filename().c_str(), scale_err, norm_err, weight_err, w8_err,
      err, golden_err, plain);
}

void check_smoothquant_golden_file(const io::SafetensorsReader& f, const std::string& dir) {
  if (test::meta(f, "dtype") == "float64")
    check_smoothquant_golden<double>(f, dir);
  else
    check_smoothquant_golden<float>(f, dir);
}

TEST(SmoothQuantGolden, BundledFilesMatchTheReference) {
  test::for_each_golden("smoothquant_", false, check_smoothquant_golden_file);
}
TEST(SmoothQuantGolden, FullGoldenDirectoryMatchesTheReference) {
  test::for_each_golden("smoothquant_", true, check_smoothquant_golden_file);
}

TEST(SmoothQuant, FormulaClampsAndSharedWeightMaximum) {
  MatrixF w1 = test::random_weights(5, 6, 1001);
  MatrixF w2 = test::random_weights(7, 6, 1002);
  w1.col(2).setZero();
  w2.col(2).setZero();  // dead weight column: the maximum is floored at 1e-5
  VectorD act(6);
  act << 4.0, 0.5, 2.0, 0.0, 1e-12, 9.0;  // 0 and tiny activations: s floored at 1e-5
  SmoothQuantConfig config;
  config.alpha = 0.5;
  const SmoothQuantResult<float> r = quantize_smoothquant({w1, w2}, act, config);
  for (Index j = 0; j < 6; ++j) {
    const float wmax =
        std::max({w1.col(j).cwiseAbs().maxCoeff(), w2.col(j).cwiseAbs().maxCoeff(), 1e-5f});
    EXPECT_EQ(r.scales(j), std::max(std::sqrt(static_cast<float>(act(j))) / std::sqrt(wmax), 1e-5f))
        << j;
  }
  EXPECT_EQ(r.scales(3), 1e-5f);
  // The int8 step: per-row absmax of each smoothed linear.
  EXPECT_EQ(r.weights[1].values, int8_absmax_per_row(scale_input_channels(w2, r.scales)).values);
  EXPECT_EQ(r.weights[1].scale, int8_absmax_per_row(scale_input_channels(w2, r.scales)).scale);
  // alpha = 0: s = 1 / wmax (all difficulty on the weights' side removed); alpha = 1: s = act.
  config.alpha = 0;
  EXPECT_FLOAT_EQ(quantize_smoothquant({w1}, act, config).scales(0),
                  1.0f / w1.col(0).cwiseAbs().maxCoeff());
  config.alpha = 1;
  EXPECT_EQ(quantize_smoothquant({w1}, act, config).scales(5), 9.0f);
}

TEST(SmoothQuant, SmoothingKeepsTheOutputAndHelpsW8A8) {
  const MatrixF w = test::random_weights(40, 122, 1003);
  MatrixF x = test::random_activations(60, 122, 1004);  // outlier channels x20
  x.col(10) *= 5.0f;
  // The documented path: the calibration's max|x| straight in.
  Calibration calibration(122);
  calibration.add(x);
  const SmoothQuantResult<float> r = quantize_smoothquant({w}, calibration.max_abs());
  EXPECT_EQ(r.scales, quantize_smoothquant({w}, calibration).scales);
  const MatrixF ws = scale_input_channels(w, r.scales);
  const MatrixF xs = divide_input_channels(x, r.scales);
  const MatrixD exact = x.cast<double>() * w.cast<double>().transpose();
  EXPECT_LE(test::max_rel_diff(xs.cast<double>() * ws.cast<double>().transpose(), exact), 1e-5);
  const double smoothed =
      (int8_gemm(r.weights[0], quantize_activations(xs)).cast<double>() - exact).norm() /
      exact.norm();
  EXPECT_EQ(smoothed, w8a8_error(xs, ws, exact));
  const double plain = w8a8_error(x, w, exact);
  EXPECT_LT(smoothed, 0.6 * plain) << smoothed << " vs " << plain;
  // An RMSNorm (no bias) absorbs 1/s the same way.
  const NormParams<float> rms =
      fold_into_norm(NormParams<float>{VectorF::Ones(122), VectorF()}, r.scales);
  EXPECT_EQ(rms.weight, VectorF::Ones(122).cwiseQuotient(r.scales));
  EXPECT_FALSE(rms.has_bias());
  EXPECT_GE(r.report.seconds, 0.0);
}

TEST(SmoothQuant, DoubleMatchesFloatToRounding) {
  const MatrixF w = test::random_weights(8, 32, 1005);
  const VectorD act = test::random_activations(20, 32, 1006)
                          .cwiseAbs()
                          .colwise()
                          .maxCoeff()
                          .transpose()
                          .cast<double>();
  SmoothQuantConfig config;
  config.alpha = 0.8;
  const SmoothQuantResult<float> f = quantize_smoothquant({w}, act, config);
  const SmoothQuantResult<double> d =
      quantize_smoothquant({MatrixD(w.cast<double>())}, act, config);
  EXPECT_LE(max_elementwise_rel(f.scales, d.scales), 1e-6);
}

TEST(SmoothQuant, BadArgumentsThrow) {
  const MatrixF w = test::random_weights(4, 8, 1007);
  const VectorD act = VectorD::Ones(8);
  SmoothQuantConfig config;
  config.alpha = 1.5;
  EXPECT_THROW(quantize_smoothquant({w}, act, config), Error);
  config.alpha = -0.1;
  EXPECT_THROW(quantize_smoothquant({w}, act, config), Error);
  EXPECT_THROW(quantize_smoothquant({w}, VectorD::Ones(7)), Error);
  VectorD bad = act;
  bad(2) = -1;
  EXPECT_THROW(quantize_smoothquant({w}, bad), Error);
  bad(2) = NAN;
  EXPECT_THROW(quantize_smoothquant({w}, bad), Error);
  EXPECT_THROW(quantize_smoothquant(std::vector<MatrixFRef>{}, act), Error);
  EXPECT_THROW(quantize_smoothquant({w, MatrixF(w.leftCols(4))}, act), Error);
  MatrixF nan_w = w;
  nan_w(0, 0) = NAN;
  EXPECT_THROW(quantize_smoothquant({nan_w}, act), Error);
  EXPECT_THROW(quantize_smoothquant({w}, Calibration(7)), Error);  // no activations added
}

}  // namespace
}  // namespace lowbit
