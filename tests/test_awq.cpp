// quant/awq.hpp: the golden llm-awq cases (float and double), the search
// mechanics, sets of linears, the documented deviations, and bad arguments.
#include <lowbit/quant/awq.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

template <class Scalar>
bool same_clip(Scalar a, Scalar b) {
  return std::abs(static_cast<double>(a - b)) <= 1e-6 * std::abs(static_cast<double>(b));
}

// Fraction of entries of a within tol * max|b| of b.
template <class A, class B>
double fraction_close(const A& a, const B& b, double tol) {
  const MatrixD da = a.template cast<double>(), db = b.template cast<double>();
  const double bound = tol * db.cwiseAbs().maxCoeff();
  return static_cast<double>(((da - db).cwiseAbs().array() <= bound).count()) /
         static_cast<double>(db.size());
}

template <class Scalar>
void check_golden(const io::SafetensorsReader& f, const std::string& dir) {
  const MatrixT<Scalar> w = test::golden_tensor<Scalar>(f, dir, "W");
  const MatrixT<Scalar> x = test::golden_tensor<Scalar>(f, dir, "X");
  AwqConfig config;
  config.bits = test::meta_int(f, "w_bit");
  config.group_size = test::meta_int(f, "q_group_size");
  config.scale_grid = test::meta_int(f, "n_grid_scale");
  config.clip_grid = test::meta_int(f, "n_grid_clip");
  config.clip_max_shrink = test::meta_double(f, "max_shrink_clip");
  config.clip_sample_tokens = test::meta_int(f, "n_sample_token_clip");
  ASSERT_TRUE(test::meta_bool(f, "zero_point"));
  const AwqResult<Scalar> result = detail::quantize_awq<Scalar>({w}, x, config);
  const UniformWeights& q = result.weights[0];
  const Index groups = q.groups();

  // Scale search: every loss, the chosen ratio, the scales.
  EXPECT_EQ(result.report.search.best_ratio, test::meta_double(f, "best_ratio"));
  const std::vector<double> history = f.doubles("search_loss_history");
  ASSERT_EQ(result.report.search.loss.size(), history.size());
  double loss_err = 0;
  for (std::size_t i = 0; i < history.size(); ++i)
    loss_err = std::max(loss_err, std::abs(result.report.search.loss[i] - history[i]) / history[i]);
  EXPECT_LE(loss_err, 1e-5);
  const double scale_err =
      test::max_rel_diff(result.scales, test::golden_vector<Scalar>(f, "scales"));
  EXPECT_LE(scale_err, 1e-5);

  // Clip search: thresholds equal in at least 97% of the (row, group) cells;
  // the groups with equal thresholds get the reference grid.
  const MatrixT<Scalar> clip_golden = test::golden_tensor<Scalar>(f, dir, "clip_max_val");
  const MatrixT<Scalar> q_scales = test::golden_tensor<Scalar>(f, dir, "q_scales");
  const MatrixT<Scalar> q_zeros = test::golden_tensor<Scalar>(f, dir, "q_zeros");
  const MatrixT<Scalar>& clip = result.report.clip_max_val[0];
  ASSERT_EQ(clip.rows(), w.rows());
  ASSERT_EQ(clip.cols(), groups);
  ASSERT_EQ(clip_golden.cols(), groups);
  Index clip_equal = 0;
  double q_scale_err = 0;
  for (Index r = 0; r < w.rows(); ++r)
    for (Index g = 0; g < groups; ++g) {
      if (!same_clip(clip(r, g), clip_golden(r, g))) continue;
      ++clip_equal;
      EXPECT_EQ(q.zero(g, r), static_cast<float>(q_zeros(r, g))) << "row " << r << " group " << g;
      q_scale_err =
          std::max(q_scale_err, std::abs(q.scale(g, r) - static_cast<double>(q_scales(r, g))) /
                                    static_cast<double>(q_scales(r, g)));
    }
  const double clip_match = static_cast<double>(clip_equal) / static_cast<double>(clip.size());
  EXPECT_GE(clip_match, 0.97);
  EXPECT_LE(q_scale_err, 1e-6);  // float storage of the f64 cases' scales

  // The norm absorbs 1/s (the golden LayerNorm had default init: 1 and 0).
  if (f.contains("ln_weight_scaled")) {
    NormParams<Scalar> norm{VectorT<Scalar>::Ones(w.cols()), VectorT<Scalar>::Zero(w.cols())};
    const NormParams<Scalar> folded = fold_into_norm(norm, result.scales);
    EXPECT_LE(test::max_rel_diff(folded.weight, test::golden_vector<Scalar>(f, "ln_weight_scaled")),
              1e-5);
    EXPECT_EQ(folded.bias, test::golden_vector<Scalar>(f, "ln_bias_scaled"));
  }

  // Output error of the deployed layer: (X/s) Wq^T against X W^T.
  const MatrixD wq = q.dequantize().cast<double>();
  const MatrixD xs = divide_input_channels(x, result.scales).template cast<double>();
  const MatrixD exact = x.template cast<double>() * w.template cast<double>().transpose();
  const double err = (xs * wq.transpose() - exact).norm() / exact.norm();
  const double golden_err = test::meta_double(f, "rel_out_err");
  EXPECT_NEAR(err, golden_err, 0.01 * golden_err);

  // The full files also hold the intermediate matrices.
  if (f.contains("Wq")) {
    EXPECT_LE(test::max_rel_diff(scale_input_channels(w, result.scales), f.matrix_d("W_scaled")),
              1e-5);
    EXPECT_GE(fraction_close(wq, f.matrix_d("Wq"), 1e-6), 0.97);
    EXPECT_GE(fraction_close(result.effective_weight(0), f.matrix_d("Q_eff"), 1e-6), 0.97);
  }
  std::printf(
      "  %s: scales %.1e, losses %.1e, best ratio %.2f, clip equal %.4f, q_scales %.1e, "
      "rel_out_err %.6f (reference %.6f)\n",
      std::filesystem::path(f.source()).filename().c_str(), scale_err, loss_err,
      result.report.search.best_ratio, clip_match, q_scale_err, err, golden_err);
}

void check_golden_file(const io::SafetensorsReader& f, const std::string& dir) {
  if (test::meta(f, "dtype") == "float64")
    check_golden<double>(f, dir);
  else
    check_golden<float>(f, dir);
}

TEST(AwqGolden, BundledFilesMatchTheReference) {
  test::for_each_golden("awq_", false, check_golden_file);
}
TEST(AwqGolden, FullGoldenDirectoryMatchesTheReference) {
  test::for_each_golden("awq_", true, check_golden_file);
}

AwqConfig small_config(int bits = 4, int group_size = 32) {
  AwqConfig config;
  config.bits = bits;
  config.group_size = group_size;
  return config;
}

TEST(Awq, CascadeSumIsTheExactSumForSmallIntegers) {
  // Integers sum exactly in float in any order: the cascade only reorders.
  MatrixF a(1000, 3);
  for (Index i = 0; i < a.rows(); ++i) a.row(i) << float(i % 7), float(i), 1.0f;
  const VectorF sums = detail::cascade_column_sums(a);
  EXPECT_EQ(sums(0), float((1000 / 7) * 21 + (0 + 1 + 2 + 3 + 4 + 5)));
  EXPECT_EQ(sums(1), 999.0f * 1000.0f / 2.0f);
  EXPECT_EQ(sums(2), 1000.0f);
}

TEST(Awq, BeatsRoundToNearestOnOutlierChannels) {
  const MatrixF w = test::random_weights(48, 128, 101);
  const MatrixF x = test::random_activations(300, 128, 102);
  const AwqResult<float> awq = quantize_awq(w, x, small_config(3, 32));
  // The same grid without scaling or clipping: ratio 0 and no clip search.
  AwqConfig plain = small_config(3, 32);
  plain.scale_grid = 1;
  plain.clip = false;
  const AwqResult<float> rtn = quantize_awq(w, x, plain);
  EXPECT_EQ(rtn.scales, VectorF::Ones(128));
  EXPECT_TRUE(rtn.report.clip_max_val[0].size() == 0);
  auto output_error = [&](const MatrixF& q) {
    return ((w - q) * x.transpose()).norm() / (w * x.transpose()).norm();
  };
  const double awq_err = output_error(awq.effective_weight(0));
  const double rtn_err = output_error(rtn.effective_weight(0));
  EXPECT_LT(awq_err, 0.8 * rtn_err) << awq_err << " vs " << rtn_err;
  // The chosen ratio is the arg-min of the recorded losses.
  const auto& loss = awq.report.search.loss;
  ASSERT_EQ(loss.size(), 20u);
  EXPECT_EQ(awq.report.search.best_index,
            std::min_element(loss.begin(), loss.end()) - loss.begin());
  EXPECT_EQ(awq.report.search.best_ratio, awq.report.search.best_index / 20.0);
  EXPECT_EQ(awq.report.search.best_loss,
            loss[static_cast<std::size_t>(awq.report.search.best_index)]);
  // Scales are normalized so that max(s) * min(s) = 1.
  EXPECT_NEAR(awq.scales.maxCoeff() * awq.scales.minCoeff(), 1.0f, 1e-5f);
}

TEST(Awq, ClipThresholdsAreShrunkGroupMaxima) {
  const MatrixF w = test::random_weights(8, 64, 103);
  const MatrixF x = test::random_activations(64, 64, 104);
  const AwqResult<float> r = quantize_awq(w, x, small_config(2, 16));
  const MatrixF ws = scale_input_channels(w, r.scales);
  const MatrixF& clip = r.report.clip_max_val[0];
  ASSERT_EQ(clip.rows(), 8);
  ASSERT_EQ(clip.cols(), 4);
  int shrunk = 0;
  for (Index row = 0; row < 8; ++row)
    for (Index g = 0; g < 4; ++g) {
      const float absmax = ws.block(row, g * 16, 1, 16).cwiseAbs().maxCoeff();
      bool on_grid = false;
      for (int i = 0; i < 10; ++i)
        on_grid |= clip(row, g) == absmax * static_cast<float>(1.0 - i / 20.0);
      EXPECT_TRUE(on_grid) << row << ", " << g;
      shrunk += clip(row, g) < absmax;
    }
  EXPECT_GT(shrunk, 0);  // 2-bit groups almost always prefer some clipping
  // Codes come from the clipped weights on the AWQ grid: every group spans
  // its clipped range, so the lowest or the highest code is used.
  const UniformWeights& q = r.weights[0];
  for (Index row = 0; row < 8; ++row)
    for (Index g = 0; g < 4; ++g) {
      const auto codes = q.codes.block(row, g * 16, 1, 16);
      EXPECT_TRUE(codes.minCoeff() == 0 || codes.maxCoeff() == 3);
    }
}

TEST(Awq, SharedInputLossCoversEveryLinear) {
  const MatrixF w = test::random_weights(16, 64, 105);
  const MatrixF x = test::random_activations(80, 64, 106);
  const AwqConfig config = small_config(3, 16);
  // A linear listed twice: the mean over both outputs equals the single one.
  const AwqResult<float> single = quantize_awq(w, x, config);
  const AwqResult<float> twice = quantize_awq({w, w}, x, config);
  EXPECT_EQ(single.report.search.loss, twice.report.search.loss);
  EXPECT_EQ(single.scales, twice.scales);
  ASSERT_EQ(twice.weights.size(), 2u);
  EXPECT_EQ(twice.weights[1].codes, single.weights[0].codes);
  // Two different linears get one shared s, and each its own grid.
  const MatrixF w2 = test::random_weights(24, 64, 107, 0.05f);
  AwqConfig skip = config;
  skip.skip_clip = {0};
  const AwqResult<float> pair = quantize_awq({w, w2}, x, skip);
  ASSERT_EQ(pair.weights.size(), 2u);
  EXPECT_EQ(pair.weights[1].rows(), 24);
  EXPECT_EQ(pair.report.clip_max_val[0].size(), 0);  // skipped, as the reference does for q and k
  EXPECT_EQ(pair.report.clip_max_val[1].rows(), 24);
  // The skipped linear is W·s on the AWQ grid without clipping.
  MatrixF fake = scale_input_channels(w, pair.scales);
  detail::awq_fake_quantize(fake, 16, 3, true);
  EXPECT_EQ(pair.weights[0].dequantize(), fake);
}

TEST(Awq, FewTokensUseThemAllAndManyAreSampled) {
  const MatrixF w = test::random_weights(64, 64, 108);
  // Fewer than 512 tokens: the reference fails (slice step 0); we use all.
  const MatrixF few = test::random_activations(100, 64, 109);
  const AwqResult<float> r = quantize_awq(w, few, small_config(3, 32));
  const MatrixF ws = scale_input_channels(w, r.scales);
  const MatrixF xs = divide_input_channels(few, r.scales);
  EXPECT_EQ(r.report.clip_max_val[0],
            detail::awq_search_clip<float>(ws, xs, small_config(3, 32), 32));
  // 1100 tokens: every second one (step 1100 / 512 = 2), 550 of them.
  const MatrixF many = test::random_activations(1100, 64, 110);
  const AwqResult<float> m = quantize_awq(w, many, small_config(3, 32));
  const MatrixF xm = divide_input_channels(many, m.scales);
  MatrixF sampled(550, 64);
  for (Index t = 0; t < 550; ++t) sampled.row(t) = xm.row(2 * t);
  EXPECT_EQ(m.report.clip_max_val[0],
            detail::awq_search_clip<float>(scale_input_channels(w, m.scales), sampled,
                                           small_config(3, 32), 32));
}

TEST(Awq, AnyOutputCountAndOneGroupPerRow) {
  // 37 rows: the reference's row batches would refuse it; rows are independent.
  const MatrixF w = test::random_weights(37, 96, 111);
  const MatrixF x = test::random_activations(50, 96, 112);
  AwqConfig config = small_config(4, -1);
  const AwqResult<float> r = quantize_awq(w, x, config);
  EXPECT_EQ(r.weights[0].groups(), 1);
  EXPECT_EQ(r.report.clip_max_val[0].cols(), 1);
  const double err =
      ((w - r.effective_weight(0)) * x.transpose()).norm() / (w * x.transpose()).norm();
  EXPECT_LT(err, 0.2);
}

TEST(Awq, SymmetricGridIsTheReferencesIntendedBranch) {
  const MatrixF w = test::random_weights(12, 64, 113);
  const MatrixF x = test::random_activations(40, 64, 114);
  AwqConfig config = small_config(4, 32);
  config.sym = true;
  const AwqResult<float> r = quantize_awq(w, x, config);
  const UniformWeights& q = r.weights[0];
  EXPECT_TRUE((q.zero.array() == 8.0f).all());  // levels -8..7 stored with zero point 8
  // scale = max|clip(W·s)| / 7 per group.
  MatrixF ws = scale_input_channels(w, r.scales);
  for (Index row = 0; row < 12; ++row)
    for (Index g = 0; g < 2; ++g) {
      const float limit = r.report.clip_max_val[0](row, g);
      const float absmax = ws.block(row, g * 32, 1, 32).cwiseAbs().cwiseMin(limit).maxCoeff();
      EXPECT_EQ(q.scale(g, row), absmax / 7.0f);
    }
  const double err =
      ((w - r.effective_weight(0)) * x.transpose()).norm() / (w * x.transpose()).norm();
  EXPECT_LT(err, 0.2);
}

TEST(Awq, DoublePrecisionAgreesWithFloat) {
  const MatrixF w = test::random_weights(16, 64, 115);
  const MatrixF x = test::random_activations(70, 64, 116);
  const AwqResult<float> f = quantize_awq(w, x, small_config());
  const AwqResult<double> d =
      quantize_awq(MatrixD(w.cast<double>()), MatrixD(x.cast<double>()), small_config());
  EXPECT_EQ(f.report.search.best_index, d.report.search.best_index);
  EXPECT_LE(test::max_rel_diff(f.scales, d.scales), 1e-6);
}

TEST(Awq, Deterministic) {
  const MatrixF w = test::random_weights(20, 64, 117);
  const MatrixF x = test::random_activations(90, 64, 118);
  const AwqResult<float> a = quantize_awq(w, x, small_config()),
                         b = quantize_awq(w, x, small_config());
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.weights[0].codes, b.weights[0].codes);
  EXPECT_EQ(a.report.search.loss, b.report.search.loss);
}

// Bit-identical for 1 and 2 threads, search losses included: a layer large
// enough for Eigen to split one product by threads (which changed the losses'
// last bits before the products went through fixed panels).
TEST(Awq, IdenticalForAnyThreadCount) {
  const MatrixF w = test::random_weights(384, 1536, 119);
  const MatrixF x = test::random_activations(256, 1536, 120);
  const int saved = Eigen::nbThreads();
  std::vector<AwqResult<float>> results;
  for (int threads : {1, 2}) {
    Eigen::setNbThreads(threads);
    results.push_back(quantize_awq(w, x, AwqConfig{}));
  }
  Eigen::setNbThreads(saved);
  EXPECT_EQ(results[0].report.search.loss, results[1].report.search.loss);
  EXPECT_EQ(results[0].scales, results[1].scales);
  EXPECT_EQ(results[0].report.clip_max_val[0], results[1].report.clip_max_val[0]);
  EXPECT_EQ(results[0].weights[0].codes, results[1].weights[0].codes);
}

TEST(Awq, ZeroActivationsAndDeadChannels) {
  const MatrixF w = test::random_weights(8, 32, 119);
  MatrixF x = test::random_activations(20, 32, 120);
  x.col(5).setZero();  // mean|x| = 0: clamped to 1e-4 before normalizing
  const AwqResult<float> r = quantize_awq(w, x, small_config(4, 16));
  EXPECT_TRUE(r.scales.allFinite());
  EXPECT_GT(r.scales.minCoeff(), 0.0f);
  // All-zero activations: every loss is 0 and the first ratio (0) wins.
  const AwqResult<float> z = quantize_awq(w, MatrixF::Zero(20, 32), small_config(4, 16));
  EXPECT_EQ(z.report.search.best_index, 0);
  EXPECT_EQ(z.scales, VectorF::Ones(32));
}

TEST(Awq, ProgressCountsTheSearchAndTheClips) {
  const MatrixF w = test::random_weights(8, 64, 123);
  const MatrixF x = test::random_activations(30, 64, 124);
  AwqConfig config = small_config(4, 32);
  config.skip_clip = {0};  // of three linears, two are clipped
  std::vector<Index> done;
  config.progress = [&](Index steps, Index total) {
    EXPECT_EQ(total, 20 * 3 + 2);
    done.push_back(steps);
  };
  const AwqResult<float> r = quantize_awq({w, w, w}, x, config);
  ASSERT_EQ(done.size(), 62u);
  for (std::size_t i = 0; i < done.size(); ++i) EXPECT_EQ(done[i], static_cast<Index>(i) + 1);
  EXPECT_GE(r.report.seconds, 0.0);
}

TEST(Awq, BadArgumentsThrow) {
  const MatrixF w = test::random_weights(8, 32, 121);
  const MatrixF x = test::random_activations(10, 32, 122);
  auto throws = [&](const AwqConfig& config, const std::string& what) {
    try {
      quantize_awq(w, x, config);
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  AwqConfig c = small_config(4, 16);
  c.bits = 9;
  throws(c, "AwqConfig::bits");
  c = small_config(1, 16);
  c.sym = true;
  throws(c, "AwqConfig::bits");
  throws(small_config(4, 12), "AwqConfig::group_size");
  c = small_config(4, 16);
  c.scale_grid = 0;
  throws(c, "AwqConfig::scale_grid");
  c = small_config(4, 16);
  c.clip_max_shrink = 1.0;
  throws(c, "clip_max_shrink");
  c = small_config(4, 16);
  c.clip_sample_tokens = 0;
  throws(c, "clip_sample_tokens");
  c = small_config(4, 16);
  c.skip_clip = {1};
  throws(c, "skip_clip");
  EXPECT_THROW(quantize_awq(w, MatrixF(x.leftCols(31)), small_config(4, 16)), Error);
  EXPECT_THROW(quantize_awq(w, MatrixF(0, 32), small_config(4, 16)), Error);
  EXPECT_THROW(quantize_awq(std::vector<MatrixFRef>{}, x, small_config(4, 16)), Error);
  EXPECT_THROW(quantize_awq({w, MatrixF(w.leftCols(16))}, x, small_config(4, 16)), Error);
  MatrixF bad = x;
  bad(3, 3) = NAN;
  EXPECT_THROW(quantize_awq(w, bad, small_config(4, 16)), Error);
}

}  // namespace
}  // namespace lowbit
