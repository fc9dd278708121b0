// quant/bpdq.hpp: the golden files of the official code (planes, coefficients,
// output error, the 8-bit init, the first fit, the kept rounds and GAR
// permutations), the algorithm's invariants, any-precision truncation, and
// bad input.
#include <Eigen/Dense>
#include <lowbit/quant/bpdq.hpp>

#include "bpdq_golden.hpp"

namespace lowbit {
namespace {

void check_golden_case(const io::SafetensorsReader& f, const std::string& dir) {
  const BpdqConfig config = test::golden_bpdq_config(f);
  const MatrixF w = test::golden_input(f, dir, "W");
  const BpdqResult result = quantize_bpdq(w, test::golden_hessian(f, dir), config);
  const BpdqReport& report = result.report;
  const test::BpdqAgreement a = test::compare_with_golden(f, dir, result.weights);
  std::printf("%s: bit mismatch %.2e, c %.2e, rel_out_err %.6f (ref %.6f)\n", f.source().c_str(),
              a.bit_mismatch, a.c_rel_diff, a.rel_out_err, a.ref_rel_out_err);
  test::expect_golden_agreement(a);

  // The 8-bit init, the first fit, the kept rounds and their scores.
  const int k = config.planes;
  const Index groups = w.cols() / config.group_size;
  const MatrixF zero8 = f.matrix("init_zero8");
  EXPECT_LE(test::max_rel_diff(report.init_scale, f.matrix("init_scale8")), 1e-5);
  EXPECT_LE((report.init_zero - zero8).cwiseAbs().maxCoeff(), 0.0f) << "init zero points differ";
  const std::vector<double> c_init = f.doubles("c_init");
  const MatrixD c_init_ref = Eigen::Map<const MatrixD>(c_init.data(), groups * (k + 1), w.rows());
  EXPECT_LE(test::max_rel_diff(report.init_coeffs, c_init_ref), test::bpdq_max_c_rel_diff);
  const std::vector<float> group_score = f.floats("group_score");
  const std::vector<std::int32_t> best_iter = f.ints("best_iter");
  int same_iter = 0;
  for (Index g = 0; g < groups; ++g) {
    const std::size_t i = static_cast<std::size_t>(g);
    EXPECT_NEAR(report.group_score[i], group_score[i], 1e-3 * group_score[i]) << "group " << g;
    same_iter += report.best_iter[i] == best_iter[i];
  }
  std::printf("  best_iter agrees in %d of %ld groups\n", same_iter, static_cast<long>(groups));
  if (config.group_aware_reorder) {
    EXPECT_EQ(report.hessian.column_order, f.ints("final_perm"));
    EXPECT_EQ(report.group_order, f.ints("global_perm"));
  }
  EXPECT_EQ(report.hessian.percdamp, test::meta_double(f, "damp_used"));
  const double avg_loss = report.loss / test::meta_double(f, "nsamples");
  EXPECT_NEAR(avg_loss, test::meta_double(f, "avg_loss"), 0.01 * test::meta_double(f, "avg_loss"));
  // The dead columns' weights were zeroed; the file's W is the modified one.
  for (Index d : report.hessian.dead_columns) EXPECT_EQ(w.col(d).cwiseAbs().maxCoeff(), 0.0f);
}

TEST(BpdqGolden, BundledCasesMatchTheReference) {
  test::for_each_golden("bpdq_", false, check_golden_case);
}

TEST(BpdqGolden, EveryCaseMatchesTheReference) {
  test::for_each_golden("bpdq_", true, check_golden_case);
}

// A small random layer with a calibration of correlated activations.
struct Layer {
  MatrixF w;
  Calibration calibration;
  MatrixF x;
};

Layer random_layer(Index out, Index in, unsigned seed, Index tokens = 256) {
  Layer layer{test::random_weights(out, in, seed), Calibration(in),
              test::random_activations(tokens, in, seed + 1)};
  for (Index j = 1; j < in; ++j) layer.x.col(j) += 0.5f * layer.x.col(j - 1);  // correlated inputs
  layer.calibration.add(layer.x);
  return layer;
}

double rel_out_err(const Layer& layer, const MatrixF& q) {
  const MatrixD x = layer.x.cast<double>();
  const MatrixD w = layer.w.cast<double>();
  return ((w - q.cast<double>()) * x.transpose()).norm() / (w * x.transpose()).norm();
}

// The (k+1)-square systems: LU when regular; a singular one (ridge 0, e.g.
// a plane constant over a group) takes the least-squares solution of least
// norm, as the reference's lstsq does.
using BpdqSystem = double[detail::bpdq::max_features][detail::bpdq::max_features];
using BpdqRight = double[detail::bpdq::max_features];

TEST(BpdqSolve, SingularSystemsTakeTheLeastNormSolution) {
  {  // By hand: [[1, 1], [1, 1]] x = [2, 2] holds on the line x0 + x1 = 2; nearest 0 is (1, 1).
    BpdqSystem a = {{1, 1}, {1, 1}};
    BpdqRight b = {2, 2};
    detail::bpdq::solve_small(2, a, b);
    EXPECT_NEAR(b[0], 1, 1e-15);
    EXPECT_NEAR(b[1], 1, 1e-15);
  }
  {  // A zero row and column (a plane that is 0 over the group): its part of b is unreachable.
    BpdqSystem a = {{2, 0, 0}, {0, 0, 0}, {0, 0, 4}};
    BpdqRight b = {2, 5, 8};
    detail::bpdq::solve_small(3, a, b);
    EXPECT_NEAR(b[0], 1, 1e-15);
    EXPECT_EQ(b[1], 0);
    EXPECT_NEAR(b[2], 2, 1e-15);
  }
  // Rank 3 of 5: the Gram matrix of 0/1 features of which two repeat (LU
  // meets an exact zero pivot, as with planes), against the pseudo-inverse
  // through Eigen's complete orthogonal decomposition.
  Eigen::MatrixXd features(8, 5);
  features << 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1,
      0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1;
  features.col(2) = features.col(1);
  features.col(4) = features.col(0);
  const Eigen::MatrixXd gram = features.transpose() * features;
  const Eigen::VectorXd right = Eigen::VectorXd::LinSpaced(5, -1, 3);
  const Eigen::VectorXd expected = gram.completeOrthogonalDecomposition().solve(right);
  ASSERT_EQ(gram.completeOrthogonalDecomposition().rank(), 3);
  BpdqSystem a = {};
  BpdqRight b = {};
  for (int i = 0; i < 5; ++i) {
    b[i] = right(i);
    for (int j = 0; j < 5; ++j) a[i][j] = gram(i, j);
  }
  detail::bpdq::solve_small(5, a, b);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(b[i], expected(i), 1e-12 * expected.norm()) << i;
  // And a regular system keeps LU's solution.
  BpdqSystem regular = {{4, 1}, {1, 3}};
  BpdqRight x = {1, 2};
  detail::bpdq::solve_small(2, regular, x);
  EXPECT_NEAR(x[0], 1.0 / 11, 1e-15);
  EXPECT_NEAR(x[1], 7.0 / 11, 1e-15);
}

TEST(Bpdq, ResultIsAValidBitPlaneModelAndBeatsItsInit) {
  const Layer layer = random_layer(48, 256, 11);
  for (int k : {1, 2, 3, 4})
    for (bool gar : {false, true}) {
      SCOPED_TRACE(testing::Message() << "k=" << k << " gar=" << gar);
      BpdqConfig config;
      config.planes = k;
      config.group_aware_reorder = gar;
      config.iters = 4;
      const BpdqResult r = quantize_bpdq(layer.w, layer.calibration, config);
      EXPECT_NO_THROW(r.weights.validate());
      EXPECT_EQ(r.weights.planes, k);
      ASSERT_TRUE(r.report.avg_loss.has_value());
      EXPECT_GT(r.report.loss, 0);
      for (int it : r.report.best_iter) EXPECT_TRUE(it >= 1 && it <= config.iters);
      // The first fit with the 8-bit init planes, without feedback, is a baseline BPDQ must beat.
      BitPlaneWeights init = r.weights;
      init.coeffs = r.report.init_coeffs;
      const double err = rel_out_err(layer, r.weights.dequantize());
      EXPECT_LT(err, rel_out_err(layer, init.dequantize()));
      if (gar) {
        EXPECT_EQ(r.report.hessian.column_order.size(), 256u);
      }
    }
}

TEST(Bpdq, MorePlanesLowerTheOutputError) {
  const Layer layer = random_layer(32, 128, 5);
  double previous = 1e30;
  for (int k = 1; k <= 4; ++k) {
    BpdqConfig config;
    config.planes = k;
    config.iters = 3;
    const double err =
        rel_out_err(layer, quantize_bpdq(layer.w, layer.calibration, config).weights.dequantize());
    EXPECT_LT(err, previous) << "k=" << k;
    previous = err;
  }
}

// Any-precision serving: the 2 most significant planes of a k=3 result are a
// valid 2-plane model. Its error is worse than a dedicated k=2 run (the planes
// were fitted jointly with the third) but far better than dropping to 1 plane;
// printed for the notes.
TEST(Bpdq, TruncatingPlanesGivesAValidLowerPrecisionModel) {
  const Layer layer = random_layer(64, 256, 21);
  BpdqConfig config;
  config.iters = 5;
  config.planes = 3;
  const BitPlaneWeights k3 = quantize_bpdq(layer.w, layer.calibration, config).weights;
  config.planes = 2;
  const BitPlaneWeights k2 = quantize_bpdq(layer.w, layer.calibration, config).weights;
  config.planes = 1;
  const BitPlaneWeights k1 = quantize_bpdq(layer.w, layer.calibration, config).weights;
  const BitPlaneWeights k3to2 = truncate_planes(k3, 2);
  EXPECT_NO_THROW(k3to2.validate());
  EXPECT_EQ(k3to2.planes, 2);
  const double e3 = rel_out_err(layer, k3.dequantize()), e2 = rel_out_err(layer, k2.dequantize());
  const double e32 = rel_out_err(layer, k3to2.dequantize()),
               e1 = rel_out_err(layer, k1.dequantize());
  std::printf("rel_out_err: k3 %.4f, k2 %.4f, k3 truncated to 2 planes %.4f, k1 %.4f\n", e3, e2,
              e32, e1);
  EXPECT_LT(e3, e2);
  EXPECT_GT(e32, e2);
  EXPECT_LT(e32, 1.0);
  // Truncation moves each weight by at most half the dropped coefficient.
  const MatrixF diff = (k3to2.dequantize() - k3.dequantize()).cwiseAbs();
  for (Index r = 0; r < diff.rows(); ++r)
    for (Index j = 0; j < diff.cols(); ++j)
      ASSERT_LE(diff(r, j), 0.5 * std::abs(k3.coeff(j / k3.group_size, 0, r)) + 1e-6);
}

TEST(Bpdq, ResultsDoNotDependOnTheThreadCount) {
  const Layer layer = random_layer(600, 128, 3);  // several output panels
  BpdqConfig config;
  config.iters = 3;
  const int threads = Eigen::nbThreads();
  Eigen::setNbThreads(1);
  const BpdqResult one = quantize_bpdq(layer.w, layer.calibration, config);
  Eigen::setNbThreads(std::max(2, threads));
  const BpdqResult many = quantize_bpdq(layer.w, layer.calibration, config);
  Eigen::setNbThreads(threads);
  EXPECT_EQ(one.weights.codes, many.weights.codes);
  EXPECT_EQ(one.weights.coeffs, many.weights.coeffs);
  EXPECT_EQ(one.report.loss, many.report.loss);
}

TEST(Bpdq, DeadColumnsAndWholeRowGroups) {
  Layer layer = random_layer(16, 128, 8);
  MatrixD h = layer.calibration.hessian();
  h.row(9).setZero();
  h.col(9).setZero();
  BpdqConfig config;
  config.group_size = -1;
  config.iters = 2;
  const BpdqResult r = quantize_bpdq(layer.w, h, config);
  EXPECT_EQ(r.report.hessian.dead_columns, std::vector<Index>{9});
  EXPECT_EQ(r.weights.group_size, 128);
  EXPECT_EQ(r.weights.groups(), 1);
  EXPECT_NO_THROW(r.weights.validate());
  EXPECT_FALSE(r.report.avg_loss.has_value());
}

TEST(Bpdq, ProgressReportsEveryBlock) {
  const Layer layer = random_layer(8, 512, 2);
  BpdqConfig config;
  config.iters = 1;
  std::vector<Index> done;
  config.progress = [&](Index columns, Index total) {
    EXPECT_EQ(total, 512);
    done.push_back(columns);
  };
  quantize_bpdq(layer.w, layer.calibration, config);
  EXPECT_EQ(done, (std::vector<Index>{128, 256, 384, 512}));
}

TEST(Bpdq, BadInputGetsClearErrors) {
  const Layer layer = random_layer(8, 128, 1);
  const MatrixD h = layer.calibration.hessian();
  const auto expect_error = [&](const MatrixF& w, const MatrixD& hh, const BpdqConfig& c,
                                const std::string& text) {
    try {
      quantize_bpdq(w, hh, c);
      ADD_FAILURE() << "no error; expected one naming " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  BpdqConfig c;
  c.planes = 0;
  expect_error(layer.w, h, c, "BpdqConfig::planes");
  c.planes = 5;
  expect_error(layer.w, h, c, "BpdqConfig::planes");
  c = {};
  c.group_size = 48;
  expect_error(layer.w, h, c, "BpdqConfig::group_size");
  c = {};
  c.iters = 0;
  expect_error(layer.w, h, c, "BpdqConfig::iters");
  c = {};
  c.ridge = -1;
  expect_error(layer.w, h, c, "BpdqConfig::ridge");
  c = {};
  c.planes = 3;
  c.init_bits = 2;
  expect_error(layer.w, h, c, "BpdqConfig::init_bits");
  c = {};
  c.damping.percdamp = 0;
  expect_error(layer.w, h, c, "percdamp");
  MatrixF bad = layer.w;
  bad(2, 3) = std::numeric_limits<float>::quiet_NaN();
  expect_error(bad, h, {}, "weights");
  MatrixD bad_h = h;
  bad_h(1, 1) = std::numeric_limits<double>::infinity();
  expect_error(layer.w, bad_h, {}, "H");
  expect_error(layer.w, MatrixD::Identity(64, 64), {}, "H");
  MatrixD asymmetric = h;  // refused as GPTQ and TACQ refuse it (core's validate_hessian)
  asymmetric(0, 5) += 1;
  expect_error(layer.w, asymmetric, {}, "quantize_bpdq: H must be symmetric");
  expect_error(MatrixF(0, 128), h, {}, "weights");
  EXPECT_THROW(quantize_bpdq(layer.w, Calibration(64)), Error);
}

}  // namespace
}  // namespace lowbit
