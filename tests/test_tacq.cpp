// quant/tacq.hpp: the saliency, the exact-count top-p selection, TACQ's mixed-precision result
// (dense GPTQ part + sparse kept weights), its storage cost, the gradient-free fallback, TACQ
// against GPTQ alone on the golden inputs, and `lowbit quantize tacq`.
#include <lowbit/quant/tacq.hpp>
#include <numeric>
#include <set>

#include "test_support.hpp"

namespace lowbit {
namespace {

MatrixD hessian_of(const MatrixF& x) {
  Calibration calibration(x.cols());
  calibration.add(x);
  return calibration.hessian();
}

Index count_set(const CodeMatrix& mask) { return (mask.array() != 0).count(); }

TacqConfig two_bit(int group_size = -1) {
  TacqConfig config;
  config.gptq.bits = 2;
  config.gptq.group_size = group_size;
  return config;
}

// ------------------------------------------------------------ saliency and selection

TEST(TacqSaliency, IsAbsoluteProductOfGradientErrorAndWeight) {
  MatrixF w(1, 4), g(1, 4), q(1, 4);
  w << 0.5f, -0.25f, 2.0f, 0.0f;
  q << 0.25f, 0.25f, 2.0f, 1.0f;
  g << 2.0f, 4.0f, 8.0f, 8.0f;
  const MatrixD s = tacq_saliency(w, g, q);
  EXPECT_EQ(s(0, 0), 0.25);  // |2 * 0.25 * 0.5|
  EXPECT_EQ(s(0, 1), 0.5);   // |4 * -0.5 * -0.25|
  EXPECT_EQ(s(0, 2), 0.0);   // quantized exactly: nothing to protect
  EXPECT_EQ(s(0, 3), 0.0);   // zero weight
  EXPECT_THROW(tacq_saliency(w, MatrixF::Zero(2, 4), q), Error);
  g(0, 1) = std::numeric_limits<float>::infinity();
  EXPECT_THROW(tacq_saliency(w, g, q), Error);
}

TEST(TacqSelection, CountIsFloorOfFractionTimesSize) {
  EXPECT_EQ(tacq_outlier_count(64, 256, 0.0035), 57);  // 57.344
  EXPECT_EQ(tacq_outlier_count(64, 256, 0.0), 0);
  EXPECT_EQ(tacq_outlier_count(10, 10, 0.5), 50);
  EXPECT_EQ(tacq_outlier_count(10, 10, 0.999), 99);
  for (double bad : {-0.01, 1.0, 1.5, std::nan(""), std::numeric_limits<double>::infinity()})
    EXPECT_THROW(tacq_outlier_count(4, 4, bad), Error) << bad;
  try {
    tacq_outlier_count(4, 4, 1.0);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fraction"), std::string::npos) << e.what();
  }
}

TEST(TacqSelection, SelectsExactlyTheLargestWithLowerIndexFirstOnTies) {
  const MatrixF r = test::random_gaussian(37, 53, 7);
  const MatrixD s = r.cast<double>().cwiseAbs();
  for (double fraction : {0.0, 0.0035, 0.01, 0.3, 0.9}) {
    const CodeMatrix mask = select_top_fraction(s, fraction);
    const Index k = tacq_outlier_count(37, 53, fraction);
    ASSERT_EQ(count_set(mask), k) << fraction;
    // Against a full sort of (value desc, flat index asc).
    std::vector<Index> order(static_cast<std::size_t>(s.size()));
    std::iota(order.begin(), order.end(), Index(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](Index a, Index b) { return s.data()[a] > s.data()[b]; });
    for (Index i = 0; i < s.size(); ++i)
      EXPECT_EQ(mask.data()[order[static_cast<std::size_t>(i)]] != 0, i < k)
          << fraction << " rank " << i;
  }
  // All equal: the first k in row-major order.
  const CodeMatrix flat = select_top_count(MatrixD::Constant(3, 4, 1.5), 5);
  const std::vector<int> expected{1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
  for (Index i = 0; i < 12; ++i)
    EXPECT_EQ(flat.data()[i], expected[static_cast<std::size_t>(i)]) << i;
  // Ties at the threshold: the larger values, then the tied ones in flat order.
  MatrixD t(2, 3);
  t << 1, 3, 2, 2, 2, 0;
  const CodeMatrix tied = select_top_count(t, 3);
  EXPECT_EQ(tied(0, 1), 1);
  EXPECT_EQ(tied(0, 2), 1);
  EXPECT_EQ(tied(1, 0), 1);
  EXPECT_EQ(tied(1, 1), 0);
  EXPECT_EQ(count_set(tied), 3);
  EXPECT_THROW(select_top_count(t, 7), Error);
  t(0, 0) = std::nan("");
  EXPECT_THROW(select_top_count(t, 1), Error);
}

// A layer where G marks a known set: exactly that set is kept.
TEST(Tacq, KeepsTheWeightsTheGradientMarks) {
  const Index out = 48, in = 128;
  const MatrixF w = test::random_weights(out, in, 11);
  const MatrixD h = hessian_of(test::random_activations(300, in, 12));
  TacqConfig config = two_bit(64);
  config.fraction = 0.01;
  const Index k = tacq_outlier_count(out, in, config.fraction);  // 61
  std::mt19937 rng(13);
  std::set<Index> marked;
  while (static_cast<Index>(marked.size()) < k)
    marked.insert(std::uniform_int_distribution<Index>(0, out * in - 1)(rng));
  MatrixF g = MatrixF::Constant(out, in, 1e-6f);
  for (Index i : marked) g.data()[i] = 1e6f;
  for (SaliencyReference reference : {SaliencyReference::gptq, SaliencyReference::rtn}) {
    config.reference = reference;
    const TacqResult result = quantize_tacq(w, h, g, config);
    const CodeMatrix mask = outlier_mask(result.outliers);
    ASSERT_EQ(count_set(mask), k);
    for (Index i : marked) EXPECT_EQ(mask.data()[i], 1) << "flat index " << i;
    EXPECT_EQ(result.outliers.nnz(), k);
    EXPECT_EQ(result.report.outliers, k);
    EXPECT_FALSE(result.report.gradient_free);
    EXPECT_EQ(tacq_mask(w, h, g, config), mask);
  }
}

// ------------------------------------------------------------ the mixed-precision result

// With a diagonal H no error is fed back between columns, so every kept value
// is the original weight: the dequantized layer must hold it bit for bit
// (fp16-rounded by default, as is with f32), and the dense part elsewhere.
TEST(Tacq, KeptWeightsComeBackBitExact) {
  const Index out = 32, in = 128;
  const MatrixF w = test::random_weights(out, in, 21);
  const MatrixF g = test::random_gaussian(out, in, 22).cwiseAbs();
  MatrixD h = MatrixD::Zero(in, in);
  for (Index j = 0; j < in; ++j) h(j, j) = 0.5 + 0.01 * static_cast<double>(j % 17);
  for (OutlierPrecision precision : {OutlierPrecision::f16, OutlierPrecision::f32}) {
    TacqConfig config = two_bit(64);
    config.fraction = 0.02;
    config.precision = precision;
    const TacqResult result = quantize_tacq(w, h, g, config);
    const MatrixF q = result.dequantize();
    const MatrixF dense = result.weights.dequantize();
    const CodeMatrix mask = outlier_mask(result.outliers);
    ASSERT_EQ(count_set(mask), tacq_outlier_count(out, in, config.fraction));
    EXPECT_EQ(result.outliers.precision, precision);
    for (Index r = 0; r < out; ++r)
      for (Index c = 0; c < in; ++c) {
        if (mask(r, c)) {
          const float expected =
              precision == OutlierPrecision::f16 ? half_to_float(float_to_half(w(r, c))) : w(r, c);
          EXPECT_EQ(q(r, c), expected) << r << ", " << c;
          EXPECT_EQ(dense(r, c), 0.0f) << "a kept position's code is its zero point";
        } else {
          EXPECT_EQ(q(r, c), dense(r, c)) << r << ", " << c;
        }
      }
  }
}

// With a full H the kept values absorb the earlier columns' compensation (the
// official TaCQ GPTQ); TACQ's layer is GPTQ's with that mask, values in fp16.
TEST(Tacq, IsGptqWithTheSelectedMask) {
  const Index out = 40, in = 192;
  const MatrixF w = test::random_weights(out, in, 31);
  const MatrixD h = hessian_of(test::random_activations(400, in, 32));
  const MatrixF g = test::random_gaussian(out, in, 33).cwiseAbs();
  for (bool act_order : {false, true}) {
    TacqConfig config = two_bit(64);
    config.gptq.act_order = act_order;
    config.fraction = 0.02;
    const TacqResult result = quantize_tacq(w, h, g, config);
    const GptqResult gptq = quantize_gptq(w, h, config.gptq, outlier_mask(result.outliers));
    EXPECT_EQ(result.weights.codes, gptq.weights.codes);
    EXPECT_EQ(result.report.gptq.hessian.column_order, gptq.report.hessian.column_order);
    EXPECT_EQ(result.report.gptq.hessian.column_order.empty(), !act_order);
    EXPECT_EQ(result.outliers.row_ptr, gptq.outliers.row_ptr);
    EXPECT_EQ(result.outliers.col, gptq.outliers.col);
    for (std::size_t i = 0; i < gptq.outliers.values.size(); ++i)
      EXPECT_EQ(result.outliers.values[i], half_to_float(float_to_half(gptq.outliers.values[i])));
    const MatrixF q = result.dequantize();
    for (Index r = 0; r < out; ++r)
      for (std::int32_t i = result.outliers.row_ptr[r]; i < result.outliers.row_ptr[r + 1]; ++i)
        EXPECT_EQ(q(r, result.outliers.col[i]), result.outliers.values[i]);
    // The fed-back values differ from the originals somewhere past the first block.
    Index moved = 0;
    for (std::size_t i = 0; i < gptq.outliers.values.size(); ++i) {
      const Index r = std::upper_bound(gptq.outliers.row_ptr.begin(), gptq.outliers.row_ptr.end(),
                                       std::int32_t(i)) -
                      gptq.outliers.row_ptr.begin() - 1;
      moved += gptq.outliers.values[i] != w(r, gptq.outliers.col[i]);
    }
    EXPECT_GT(moved, 0);
  }
}

TEST(Tacq, ReportsHonestBitsPerWeight) {
  const Index out = 64, in = 256;
  const MatrixF w = test::random_weights(out, in, 41);
  const MatrixD h = hessian_of(test::random_activations(300, in, 42));
  const MatrixF g = test::random_gaussian(out, in, 43).cwiseAbs();
  TacqConfig config = two_bit(64);
  config.fraction = 0.0035;
  const TacqResult result = quantize_tacq(w, h, g, config);
  // Codes 2 + per group (fp16 scale + 2-bit zero) / 64; per outlier fp16 value
  // + int32 column; (out + 1) int32 row pointers.
  const double n = double(out) * in;
  const double expected = 2.0 + 18.0 / 64.0 + (57.0 * 48.0 + 32.0 * 65.0) / n;
  EXPECT_DOUBLE_EQ(result.report.bits_per_weight, expected);
  EXPECT_DOUBLE_EQ(result.report.dense_bits_per_weight, 2.0 + 18.0 / 64.0);
  config.precision = OutlierPrecision::f32;
  EXPECT_DOUBLE_EQ(quantize_tacq(w, h, g, config).report.bits_per_weight,
                   2.0 + 18.0 / 64.0 + (57.0 * 64.0 + 32.0 * 65.0) / n);
  config.fraction = 0;
  const TacqResult none = quantize_tacq(w, h, g, config);
  EXPECT_EQ(none.outliers.nnz(), 0);
  EXPECT_EQ(none.dequantize(), quantize_gptq(w, h, config.gptq).dequantize());
}

TEST(Tacq, GradientFreeFallbackUsesTheDiagonalOfH) {
  const Index out = 32, in = 128;
  const MatrixF w = test::random_weights(out, in, 51);
  const MatrixD h = hessian_of(test::random_activations(300, in, 52));
  const MatrixF proxy = activation_energy_proxy(h, out);
  ASSERT_EQ(proxy.rows(), out);
  for (Index r = 0; r < out; ++r)
    for (Index c = 0; c < in; ++c) ASSERT_EQ(proxy(r, c), static_cast<float>(h(c, c)));
  TacqConfig config = two_bit(64);
  config.fraction = 0.01;
  const TacqResult fallback = quantize_tacq_without_gradients(w, h, config);
  EXPECT_TRUE(fallback.report.gradient_free);
  const TacqResult explicit_g = quantize_tacq(w, h, proxy, config);
  EXPECT_FALSE(explicit_g.report.gradient_free);
  EXPECT_EQ(fallback.outliers.col, explicit_g.outliers.col);
  EXPECT_EQ(fallback.outliers.row_ptr, explicit_g.outliers.row_ptr);
  EXPECT_EQ(fallback.dequantize(), explicit_g.dequantize());
}

TEST(Tacq, StreamingStatisticsGiveTheSameLayer) {
  const Index out = 16, in = 64;
  const MatrixF w = test::random_weights(out, in, 81);
  const MatrixF x = test::random_activations(200, in, 82);
  Calibration calibration(in);
  GradientMagnitudes g(out, in);
  for (Index s = 0; s < 4; ++s) {
    calibration.add(x.middleRows(s * 50, 50));
    g.add_linear(test::random_gaussian(50, out, 83 + static_cast<unsigned>(s)),
                 x.middleRows(s * 50, 50));
  }
  TacqConfig config = two_bit();
  config.fraction = 0.02;
  EXPECT_EQ(quantize_tacq(w, calibration, g, config).dequantize(),
            quantize_tacq(w, calibration.hessian(), g.sum(), config).dequantize());
  EXPECT_THROW(quantize_tacq(w, Calibration(in + 1), g, config), Error);
  EXPECT_THROW(quantize_tacq(w, calibration, GradientMagnitudes(out, in), config),
               Error);  // no samples
}

TEST(Tacq, DeterministicAcrossRuns) {
  const MatrixF w = test::random_weights(24, 64, 61);
  const MatrixD h = hessian_of(test::random_activations(100, 64, 62));
  const MatrixF g = MatrixF::Ones(24, 64);  // many exact ties in G
  TacqConfig config = two_bit();
  config.fraction = 0.05;
  const TacqResult a = quantize_tacq(w, h, g, config), b = quantize_tacq(w, h, g, config);
  EXPECT_EQ(outlier_mask(a.outliers), outlier_mask(b.outliers));
  EXPECT_EQ(a.dequantize(), b.dequantize());
}

TEST(Tacq, ProgressSpansBothGptqPasses) {
  const Index in = 256;
  const MatrixF w = test::random_weights(8, in, 91);
  const MatrixD h = hessian_of(test::random_activations(300, in, 92));
  const MatrixF g = test::random_gaussian(8, in, 93).cwiseAbs();
  TacqConfig config = two_bit(64);
  std::vector<Index> done;
  config.progress = [&](Index steps, Index total) {
    EXPECT_EQ(total, 2 * in);
    done.push_back(steps);
  };
  quantize_tacq(w, h, g, config);
  EXPECT_EQ(done, (std::vector<Index>{128, 256, 384, 512}));  // blocks of 128, two passes
  config.reference = SaliencyReference::rtn;                  // one GPTQ pass
  done.clear();
  config.progress = [&](Index steps, Index total) {
    EXPECT_EQ(total, in);
    done.push_back(steps);
  };
  quantize_tacq(w, h, g, config);
  EXPECT_EQ(done, (std::vector<Index>{128, 256}));
  // GPTQ's own callback would count each pass from zero: refused.
  config.gptq.progress = [](Index, Index) {};
  EXPECT_THROW(quantize_tacq(w, h, g, config), Error);
}

TEST(Tacq, RejectsBadInput) {
  const MatrixF w = test::random_weights(8, 64, 71);
  const MatrixD h = hessian_of(test::random_activations(80, 64, 72));
  const MatrixF g = MatrixF::Ones(8, 64);
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  TacqConfig config = two_bit();
  config.fraction = 1.0;
  EXPECT_NE(message([&] { quantize_tacq(w, h, g, config); }).find("fraction"), std::string::npos);
  config.fraction = -0.1;
  EXPECT_NE(message([&] { quantize_tacq_without_gradients(w, h, config); }).find("fraction"),
            std::string::npos);
  config.fraction = 0.01;
  EXPECT_NE(message([&] { quantize_tacq(w, h, MatrixF::Ones(64, 8), config); }).find("G (out x in"),
            std::string::npos);
  MatrixF bad = g;
  bad(3, 5) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(message([&] { quantize_tacq(w, h, bad, config); }).find("G: expected finite"),
            std::string::npos);
  EXPECT_NE(message([&] { quantize_tacq(w, MatrixD::Identity(32, 32), g, config); }).find("H"),
            std::string::npos);
  config.gptq.bits = 9;
  EXPECT_NE(message([&] { quantize_tacq(w, h, g, config); }).find("bits"), std::string::npos);
  MatrixF big = w;
  big(0, 0) = 1e6f;  // kept, and too large for fp16
  MatrixF marks = MatrixF::Zero(8, 64);
  marks(0, 0) = 1;
  config = two_bit();
  config.fraction = 1.0 / 512;
  MatrixD diagonal = MatrixD::Identity(64, 64);
  EXPECT_NE(message([&] { quantize_tacq(big, diagonal, marks, config); }).find("fp16"),
            std::string::npos);
  config.precision = OutlierPrecision::f32;
  EXPECT_EQ(quantize_tacq(big, diagonal, marks, config).dequantize()(0, 0), 1e6f);
  // The fallback's G is float: a diagonal of H beyond float's range is said to
  // be that, not a non-finite G.
  diagonal(7, 7) = 1e39;
  EXPECT_NE(message([&] {
              quantize_tacq_without_gradients(w, diagonal, config);
            }).find("diag(H)(7) = 1e+39 overflows float"),
            std::string::npos);
}

// ------------------------------------------------------------ golden inputs: TACQ beats GPTQ

// The task loss for the golden layer (documented in the README): the
// calibration X is cut into the 4 samples of 128 tokens the golden Hessians
// were built from; sample s has the loss
//     L_s(W') = ½ ‖(W' − Q₀) X_sᵀ‖²
// (how far the layer's outputs are from those of the GPTQ-quantized layer Q₀
// — the official pipeline's "corrupt model" — on that sample). Its gradient
// at W' = W is (W − Q₀) X_sᵀ X_s: dL/dY = X_s (W − Q₀)ᵀ, fed to add_linear.
MatrixF golden_gradients(const MatrixF& w, const MatrixF& x, const MatrixF& q0) {
  GradientMagnitudes g(w.rows(), w.cols());
  for (Index s = 0; s < 4; ++s) {
    const MatrixF xs = x.middleRows(s * 128, 128);
    g.add_linear(xs * (w - q0).transpose(), xs);
  }
  return g.sum();
}

double output_error(const MatrixF& w, const MatrixF& q, const MatrixF& x) {
  const MatrixD xd = x.cast<double>().transpose();
  return ((w.cast<double>() - q.cast<double>()) * xd).norm() / (w.cast<double>() * xd).norm();
}

TEST(Tacq, BeatsGptqAtTwoBitsOnTheGoldenInputs) {
  const io::SafetensorsReader inputs(test::bundled_golden_dir() + "/inputs_64x256.safetensors");
  const MatrixF w = inputs.matrix("W"), x = inputs.matrix("X");
  const MatrixD h = hessian_of(x);
  for (int group_size : {-1, 64}) {
    SCOPED_TRACE(group_size);
    TacqConfig config = two_bit(group_size);
    config.fraction = 0.0035;
    const MatrixF q_gptq = quantize_gptq(w, h, config.gptq).dequantize();
    const MatrixF g = golden_gradients(w, x, q_gptq);
    const TacqResult tacq = quantize_tacq(w, h, g, config);
    const TacqResult fallback = quantize_tacq_without_gradients(w, h, config);
    const double e_gptq = output_error(w, q_gptq, x),
                 e_tacq = output_error(w, tacq.dequantize(), x);
    const double e_fallback = output_error(w, fallback.dequantize(), x);
    // The same number of weights kept by magnitude alone: the saliency must do better.
    const CodeMatrix largest = select_top_fraction(w.cast<double>().cwiseAbs(), config.fraction);
    const double e_largest =
        output_error(w, quantize_gptq(w, h, config.gptq, largest).dequantize(), x);
    const double gptq_bits = bits_per_weight(quantize_gptq(w, h, config.gptq).weights);
    std::printf(
        "[ figures  ] 64x256 2-bit group %d: GPTQ rel. output error %.5f at %.4f bits/w; TACQ "
        "0.35%% "
        "(%ld kept) %.5f at %.4f bits/w; same count kept by |W| %.5f; gradient-free fallback "
        "%.5f\n",
        group_size, e_gptq, gptq_bits, static_cast<long>(tacq.report.outliers), e_tacq,
        tacq.report.bits_per_weight, e_largest, e_fallback);
    EXPECT_EQ(tacq.report.outliers, 57);
    EXPECT_LT(e_tacq, e_gptq);
    EXPECT_LT(e_tacq, e_largest);
  }
}

// ------------------------------------------------------------ lowbit quantize tacq

class TacqCli : public test::ToolTest {
 protected:
  // The golden W and X, plus G from the loss above.
  std::string write_inputs(bool with_g, const std::string& name = "in.safetensors") const {
    const io::SafetensorsReader inputs(test::bundled_golden_dir() + "/inputs_64x256.safetensors");
    const MatrixF w = inputs.matrix("W"), x = inputs.matrix("X");
    io::SafetensorsWriter out;
    out.add_matrix("W", w);
    out.add_matrix("X", x);
    if (with_g) {
      GptqConfig config;
      config.bits = 2;
      out.add_matrix("G",
                     golden_gradients(w, x, quantize_gptq(w, hessian_of(x), config).dequantize()));
    }
    const std::string path = dir.file(name);
    out.write(path);
    return path;
  }
};

TEST_F(TacqCli, WritesTheMixedPrecisionTensors) {
  const std::string in = write_inputs(true), out = dir.file("tacq.safetensors");
  const test::CommandResult r = lowbit("quantize tacq --in " + in + " --out " + out +
                                       " --bits 2 --group-size 64 --fraction 0.0035");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("gradient-free"), std::string::npos) << r.output;
  const io::SafetensorsReader result(out), inputs(in);
  for (const char* name : {"Q", "qint", "scale", "zero", "g_idx", "mask", "outlier_rowptr",
                           "outlier_col", "outlier_val"})
    EXPECT_TRUE(result.contains(name)) << name;
  EXPECT_EQ(result.info("mask").dtype, io::Dtype::U8);
  EXPECT_EQ(result.info("mask").shape, (std::vector<std::int64_t>{64, 256}));
  EXPECT_EQ(result.info("outlier_rowptr").dtype, io::Dtype::I32);
  EXPECT_EQ(result.info("outlier_col").dtype, io::Dtype::I32);
  EXPECT_EQ(result.info("outlier_val").dtype, io::Dtype::F16);
  EXPECT_EQ(result.info("outlier_val").shape, (std::vector<std::int64_t>{57}));
  EXPECT_EQ(result.info("outlier_rowptr").shape, (std::vector<std::int64_t>{65}));

  // The same as the library call.
  const MatrixF w = inputs.matrix("W");
  TacqConfig config = two_bit(64);
  const TacqResult expected =
      quantize_tacq(w, hessian_of(inputs.matrix("X")), inputs.matrix("G"), config);
  EXPECT_EQ(result.matrix("Q"), expected.dequantize());
  EXPECT_EQ(result.ints("outlier_rowptr"), expected.outliers.row_ptr);
  EXPECT_EQ(result.ints("outlier_col"), expected.outliers.col);
  EXPECT_EQ(result.floats("outlier_val"), expected.outliers.values);
  const std::vector<std::int32_t> mask = result.ints("mask");
  const CodeMatrix expected_mask = outlier_mask(expected.outliers);
  for (Index i = 0; i < w.size(); ++i)
    ASSERT_EQ(mask[static_cast<std::size_t>(i)], expected_mask.data()[i]) << i;

  // Q = the dense tensors, overwritten at the CSR positions.
  SparseOutliers s;
  s.rows = 64;
  s.cols = 256;
  s.row_ptr = result.ints("outlier_rowptr");
  s.col = result.ints("outlier_col");
  s.values = result.floats("outlier_val");
  UniformWeights dense;
  dense.bits = 2;
  dense.group_size = 64;
  const std::vector<std::int32_t> qint = result.ints("qint");
  dense.codes.resize(64, 256);
  for (std::size_t i = 0; i < qint.size(); ++i)
    dense.codes.data()[i] = static_cast<std::uint8_t>(qint[i]);
  dense.scale = result.matrix("scale");
  dense.zero = result.matrix("zero");
  MatrixF rebuilt = dense.dequantize();
  s.overwrite(rebuilt);
  EXPECT_EQ(rebuilt, result.matrix("Q"));
  EXPECT_EQ(result.metadata_value("method"), "tacq");
  EXPECT_EQ(result.metadata_value("gradients"), "G");
  EXPECT_EQ(result.metadata_value("outliers"), "57");
  EXPECT_NEAR(std::stod(*result.metadata_value("bits_per_weight")), expected.report.bits_per_weight,
              1e-6);
}

TEST_F(TacqCli, ActOrderAndFloatValues) {
  const std::string in = write_inputs(true), out = dir.file("tacq.safetensors");
  const test::CommandResult r =
      lowbit("quantize tacq --in " + in + " --out " + out +
             " --bits 3 --group-size 64 --fraction 0.01 --act-order --outlier-dtype f32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader result(out), inputs(in);
  EXPECT_EQ(result.info("outlier_val").dtype, io::Dtype::F32);
  EXPECT_TRUE(result.contains("perm"));
  TacqConfig config;
  config.gptq.bits = 3;
  config.gptq.group_size = 64;
  config.gptq.act_order = true;
  config.fraction = 0.01;
  config.precision = OutlierPrecision::f32;
  const TacqResult expected =
      quantize_tacq(inputs.matrix("W"), hessian_of(inputs.matrix("X")), inputs.matrix("G"), config);
  EXPECT_EQ(result.matrix("Q"), expected.dequantize());
  EXPECT_EQ(result.ints("perm"), expected.report.gptq.hessian.column_order);
  EXPECT_EQ(result.ints("outlier_rowptr").back(), 163);  // floor(0.01 * 16384)
}

TEST_F(TacqCli, AnnouncesTheGradientFreeFallback) {
  const std::string in = write_inputs(false), out = dir.file("tacq.safetensors");
  const test::CommandResult r =
      lowbit("quantize tacq --in " + in + " --out " + out + " --bits 2 --fraction 0.0035");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gradient-free"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not the paper"), std::string::npos) << r.output;
  const io::SafetensorsReader result(out);
  EXPECT_EQ(result.metadata_value("gradients"),
            "diag(H) proxy (gradient-free fallback, not the paper's method)");
}

TEST_F(TacqCli, BadInputsFailClearly) {
  const std::string in = write_inputs(true), out = dir.file("tacq.safetensors");
  struct Case {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Case> cases{
      {"--fraction 1", 2, "option --fraction"},
      {"--fraction -0.5", 2, "option --fraction"},
      {"--fraction 0.01 --outlier-dtype f8", 2, "--outlier-dtype"},
      {"--fraction 0.01 --saliency-from magic", 2, "--saliency-from"},
      {"--fraction 0.01 --planes 2", 2, "--planes does not apply"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r =
        lowbit("quantize tacq --in " + in + " --out " + out + " " + c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }

  // G of the wrong shape, and a non-finite G.
  const io::SafetensorsReader inputs(in);
  io::SafetensorsWriter wrong;
  wrong.add_matrix("W", inputs.matrix("W"));
  wrong.add_matrix("X", inputs.matrix("X"));
  wrong.add_matrix("G", MatrixF::Ones(64, 128));
  wrong.write(dir.file("wrong.safetensors"));
  test::CommandResult r =
      lowbit("quantize tacq --in " + dir.file("wrong.safetensors") + " --out " + out);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'G'"), std::string::npos) << r.output;
  MatrixF g = inputs.matrix("G");
  g(5, 9) = std::numeric_limits<float>::infinity();
  io::SafetensorsWriter infinite;
  infinite.add_matrix("W", inputs.matrix("W"));
  infinite.add_matrix("X", inputs.matrix("X"));
  infinite.add_matrix("G", g);
  infinite.write(dir.file("infinite.safetensors"));
  r = lowbit("quantize tacq --in " + dir.file("infinite.safetensors") + " --out " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir.file("infinite.safetensors") + ": tensor 'G': expected finite"),
            std::string::npos)
      << r.output;
  // No calibration.
  io::SafetensorsWriter bare;
  bare.add_matrix("W", inputs.matrix("W"));
  bare.write(dir.file("bare.safetensors"));
  r = lowbit("quantize tacq --in " + dir.file("bare.safetensors") + " --out " + out);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("'H'"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit
