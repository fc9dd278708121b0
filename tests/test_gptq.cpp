// quant/gptq.hpp: GPTQ against the golden outputs of IST-DASLab gptq
// fasterquant, against a literal (unblocked, untransposed, eager) transcription
// of the reference algorithm, and on properties: kept weights, block-size
// (in)dependence, determinism across threads, damping recovery, bad input.
#include <lowbit/quant/gptq.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

// ---------------------------------------------------------------- golden files

// The case's H, or the one stored once for all bundled 64x256 cases.
MatrixD golden_hessian(const io::SafetensorsReader& f, const std::string& dir) {
  if (f.contains("H")) return f.matrix_d("H");
  return io::SafetensorsReader(dir + "/" + test::meta(f, "inputs_file")).matrix_d("H_gptq");
}

GptqConfig golden_config(const io::SafetensorsReader& f) {
  GptqConfig config;
  config.bits = test::meta_int(f, "bits");
  config.grid.sym = test::meta_bool(f, "sym");
  config.grid.mse = test::meta_bool(f, "mse");
  config.group_size = test::meta_int(f, "groupsize");
  config.act_order = test::meta_bool(f, "actorder");
  config.static_groups = test::meta_bool(f, "static_groups");
  config.damping.percdamp = test::meta_double(f, "percdamp");
  config.block_size = test::meta_int(f, "blocksize");
  return config;
}

struct Agreement {
  int files = 0;
  double scale = 0, q = 0, loss = 0;  // largest relative differences seen
};

void check_gptq_golden(const io::SafetensorsReader& f, const std::string& dir,
                       Agreement& agreement) {
  const MatrixF w = test::golden_input(f, dir, "W");
  const GptqConfig config = golden_config(f);
  const GptqResult result = quantize_gptq(w, golden_hessian(f, dir), config);
  const UniformWeights& q = result.weights;
  const Index out = w.rows(), in = w.cols();

  // qint, zero, g_idx and perm exactly.
  const std::vector<std::int32_t> qint = f.ints("qint");
  ASSERT_EQ(qint.size(), static_cast<std::size_t>(w.size()));
  Index mismatches = 0;
  for (Index r = 0; r < out; ++r)
    for (Index c = 0; c < in; ++c)
      mismatches += q.codes(r, c) != qint[static_cast<std::size_t>(r * in + c)];
  EXPECT_EQ(mismatches, 0) << "qint mismatches";
  const MatrixF zero = f.matrix("zero"), scale = f.matrix("scale");  // [groups, out]
  ASSERT_EQ(zero.rows(), q.groups());
  ASSERT_EQ(zero.cols(), out);
  EXPECT_TRUE((q.zero.array() == zero.array()).all()) << "zero";  // == treats -0.0 as 0.0
  const std::vector<std::int32_t> g_idx = f.ints("g_idx");
  for (Index c = 0; c < in; ++c)
    ASSERT_EQ(q.group_of(c), g_idx[static_cast<std::size_t>(c)]) << "g_idx " << c;
  if (f.contains("perm")) {
    EXPECT_EQ(result.report.hessian.column_order, f.ints("perm"));
  } else {
    EXPECT_TRUE(result.report.hessian.column_order.empty());
  }

  // scale and Q within 1e-5 relative; Q rebuilt from the reference's own codes.
  const double scale_diff = test::max_rel_diff(q.scale, scale);
  EXPECT_LE(scale_diff, 1e-5);
  MatrixF expected(out, in);
  for (Index r = 0; r < out; ++r)
    for (Index c = 0; c < in; ++c) {
      const Index g = g_idx[static_cast<std::size_t>(c)];
      expected(r, c) =
          scale(g, r) *
          (static_cast<float>(qint[static_cast<std::size_t>(r * in + c)]) - zero(g, r));
    }
  if (f.contains("Q")) {
    EXPECT_EQ(expected, f.matrix("Q")) << "the reference Q formula";
  }
  const double q_diff = test::max_rel_diff(result.dequantize(), expected);
  EXPECT_LE(q_diff, 1e-5);

  // The loss fasterquant printed (a float32 sum).
  const double reference_loss = test::meta_double(f, "fasterquant_error_sum");
  const double loss_diff = std::abs(result.report.loss - reference_loss) / reference_loss;
  EXPECT_LE(loss_diff, 1e-4) << result.report.loss << " vs " << reference_loss;
  EXPECT_EQ(result.report.hessian.failed_factorizations, 0);
  EXPECT_EQ(result.report.hessian.percdamp, config.damping.percdamp);

  ++agreement.files;
  agreement.scale = std::max(agreement.scale, scale_diff);
  agreement.q = std::max(agreement.q, q_diff);
  agreement.loss = std::max(agreement.loss, loss_diff);
}

void report(const Agreement& a) {
  std::printf(
      "[ gptq golden ] %d files: max rel diff scale %.3g, Q %.3g, loss vs fasterquant_error_sum "
      "%.3g\n",
      a.files, a.scale, a.q, a.loss);
}

TEST(GptqGolden, BundledFilesMatchTheReference) {
  Agreement agreement;
  test::for_each_golden("gptq_", false,
                        [&](const io::SafetensorsReader& f, const std::string& dir) {
                          check_gptq_golden(f, dir, agreement);
                        });
  EXPECT_EQ(agreement.files, 36);
  report(agreement);
}

TEST(GptqGolden, FullGoldenDirectoryMatchesTheReference) {
  Agreement agreement;
  test::for_each_golden("gptq_", true, [&](const io::SafetensorsReader& f, const std::string& dir) {
    check_gptq_golden(f, dir, agreement);
  });
  report(agreement);
}

// --------------------------------------------------- literal reference transcription

// fasterquant as the paper's pseudo-code reads, on W (out x in) in float with
// every error fed back at once into every later column (mathematically the
// same as the lazy block updates). The block structure only decides which
// weights a group's grid is found on: a snapshot taken at each block start
// (the reference), or the current weights (fresh_group_params).
struct Literal {
  MatrixF q;         // original column order, kept weights included
  CodeMatrix codes;  // original column order
  double loss = 0;
};

MatrixF sample_without_kept(MatrixF sample, const CodeMatrix& keep) {
  if (keep.size() == 0) return sample;
  for (Index r = 0; r < sample.rows(); ++r) {
    double sum = 0;
    int n = 0;
    for (Index c = 0; c < sample.cols(); ++c)
      if (!keep(r, c)) sum += sample(r, c), ++n;
    for (Index c = 0; c < sample.cols(); ++c)
      if (keep(r, c)) sample(r, c) = n ? static_cast<float>(sum / n) : 0.0f;
  }
  return sample;
}

Literal literal_gptq(MatrixF w, MatrixD h, const GptqConfig& config,
                     CodeMatrix keep = CodeMatrix()) {
  const Index out = w.rows(), in = w.cols();
  const Index gs = config.group_size == -1 ? in : config.group_size;
  const bool masked = keep.size() != 0;
  const float maxq = grid_maxq(config.bits);
  GridParams params;
  std::vector<GridParams> static_params;
  if (config.group_size == -1)
    params = find_grid_params(sample_without_kept(w, keep), config.bits, config.grid);
  for (Index d = 0; d < in; ++d)
    if (h(d, d) == 0) h(d, d) = 1, w.col(d).setZero();
  if (config.static_groups && config.group_size != -1)
    for (Index g = 0; g < in / gs; ++g)
      static_params.push_back(find_grid_params(
          sample_without_kept(w.middleCols(g * gs, gs),
                              masked ? CodeMatrix(keep.middleCols(g * gs, gs)) : keep),
          config.bits, config.grid));
  Permutation perm(static_cast<std::size_t>(in));
  for (Index j = 0; j < in; ++j) perm[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
  if (config.act_order) {
    perm = act_order_permutation(h);
    w = permute_columns(w, perm);
    h = permute_symmetric(h, perm);
    if (masked) keep = permute_columns(keep, perm);
  }
  const MatrixF u = inverse_hessian_factor(h, config.damping).factor.cast<float>();
  Literal result{MatrixF(out, in), CodeMatrix(out, in), 0};
  MatrixF block_start = w;
  for (Index c = 0; c < in; ++c) {
    if (c % config.block_size == 0) block_start = w;
    if (config.group_size != -1) {
      if (config.static_groups) {
        params = static_params[static_cast<std::size_t>(perm[static_cast<std::size_t>(c)] / gs)];
      } else if (c % gs == 0) {
        const MatrixF& source = config.fresh_group_params ? w : block_start;
        params = find_grid_params(
            sample_without_kept(source.middleCols(c, gs),
                                masked ? CodeMatrix(keep.middleCols(c, gs)) : keep),
            config.bits, config.grid);
      }
    }
    const float d = u(c, c);
    VectorF err(out);
    for (Index r = 0; r < out; ++r) {
      const float x = w(r, c);
      const bool kept = masked && keep(r, c);
      const float code = grid_code(kept ? 0.0f : x, params.scale(r), params.zero(r), maxq);
      const float q = grid_value(code, params.scale(r), params.zero(r)) + (kept ? x : 0.0f);
      result.codes(r, perm[static_cast<std::size_t>(c)]) = static_cast<std::uint8_t>(code);
      result.q(r, perm[static_cast<std::size_t>(c)]) = q;
      result.loss += (x - q) * (x - q) / (d * d) / 2;
      err(r) = (x - q) / d;
    }
    for (Index j = c + 1; j < in; ++j) w.col(j) -= err * u(c, j);
  }
  return result;
}

MatrixD correlated_hessian(Index in, unsigned seed, Index tokens = 0) {
  const MatrixF z = test::random_activations(tokens ? tokens : 3 * in, in, seed);
  MatrixF mix =
      0.3f * test::random_weights(in, in, seed + 1, 1.0f) / std::sqrt(static_cast<float>(in));
  mix.diagonal().array() += 1.0f;
  const MatrixD x = (z * mix).cast<double>();
  return 2.0 / static_cast<double>(x.rows()) * x.transpose() * x;
}

// The blocked, transposed sweep rounds differently from the eager one, and a
// "sym" grid puts each row-group's extreme weight at w / scale = -(maxq+1)/2
// up to the last bit, so a tie can break the other way and the row diverges
// from there on. Such rows must stay rare; every other row agrees to 1e-5.
void expect_matches_literal(const GptqResult& got, const Literal& literal) {
  const MatrixF q = got.dequantize();
  const float scale = literal.q.cwiseAbs().maxCoeff();
  Index diverged = 0;
  float agreement = 0;
  for (Index r = 0; r < q.rows(); ++r) {
    if ((got.weights.codes.row(r).array() != literal.codes.row(r).array()).any()) {
      ++diverged;
      continue;
    }
    agreement = std::max(agreement, (q.row(r) - literal.q.row(r)).cwiseAbs().maxCoeff() / scale);
  }
  EXPECT_LE(diverged, q.rows() / 10) << "rows whose codes differ";
  EXPECT_LE(agreement, 1e-5f);
  EXPECT_NEAR(got.report.loss, literal.loss, (diverged ? 2e-2 : 1e-5) * literal.loss);
}

struct Case {
  const char* name;
  int bits, group_size;
  bool sym, act_order, static_groups, fresh, mse;
  int block_size;
};

TEST(Gptq, MatchesALiteralTranscriptionOfTheReference) {
  const std::vector<Case> cases{
      {"w4 per row", 4, -1, false, false, false, false, false, 128},
      {"w3 g32 sym", 3, 32, true, false, false, false, false, 128},
      {"w4 g32 act", 4, 32, false, true, false, false, false, 64},
      {"w2 g64 act static", 2, 64, false, true, true, false, false, 128},
      {"w4 g96 block 64 (groups span blocks)", 4, 96, false, false, false, false, false, 64},
      {"w4 g96 fresh block 64", 4, 96, false, true, false, true, false, 64},
      {"w3 g32 fresh", 3, 32, true, false, false, true, false, 48},
      {"w8 per row act", 8, -1, true, true, false, false, false, 100},
      {"w3 g48 mse", 3, 48, false, false, false, false, true, 128},
  };
  const Index out = 45, in = 384;
  const MatrixF w = test::random_weights(out, in, 301);
  MatrixD h = correlated_hessian(in, 302);
  h.row(7).setZero();  // a dead input
  h.col(7).setZero();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    GptqConfig config;
    config.bits = c.bits;
    config.grid.sym = c.sym;
    config.grid.mse = c.mse;
    config.group_size = c.group_size;
    config.act_order = c.act_order;
    config.static_groups = c.static_groups;
    config.fresh_group_params = c.fresh;
    config.block_size = c.block_size;
    const GptqResult got = quantize_gptq(w, h, config);
    expect_matches_literal(got, literal_gptq(w, h, config));
    EXPECT_EQ(got.report.hessian.dead_columns, (std::vector<Index>{7}));
    EXPECT_TRUE((got.dequantize().col(7).array() == 0.0f).all())
        << "a dead input's weights are zeroed";
  }
}

TEST(Gptq, DeadInputsAndEdgeRowsAsTheReferenceTreatsThem) {
  // The golden "_dead" and "_edge" recipes: inputs 5 and 100 never active,
  // W[:, 5] scaled by 8 so that it holds row extremes; row 0 all zero, rows 1
  // and 2 one-signed, row 3 constant, row 4 a single spike.
  const Index out = 16, in = 128;
  MatrixF w = test::random_weights(out, in, 331);
  w.col(5) *= 8.0f;
  w.row(0).setZero();
  w.row(1) = w.row(1).cwiseAbs();
  w.row(2) = -w.row(2).cwiseAbs();
  w.row(3).setConstant(0.01f);
  w.row(4).setZero();
  w(4, 17) = 0.05f;
  MatrixD h = correlated_hessian(in, 332);
  for (Index d : {5, 100}) h.row(d).setZero(), h.col(d).setZero();
  MatrixF zeroed = w;
  zeroed.col(5).setZero();
  zeroed.col(100).setZero();
  for (bool sym : {false, true})
    for (int group_size : {-1, 32}) {
      SCOPED_TRACE(testing::Message() << "sym " << sym << " group_size " << group_size);
      GptqConfig config;
      config.grid.sym = sym;
      config.group_size = group_size;
      const GptqResult got = quantize_gptq(w, h, config);
      expect_matches_literal(got, literal_gptq(w, h, config));
      const MatrixF q = got.dequantize();
      ASSERT_TRUE(q.allFinite());
      EXPECT_EQ(got.report.hessian.dead_columns, (std::vector<Index>{5, 100}));
      EXPECT_TRUE((q.col(5).array() == 0.0f).all() && (q.col(100).array() == 0.0f).all());
      EXPECT_TRUE((q.row(0).array() == 0.0f).all()) << "an all-zero row stays zero";
      EXPECT_EQ(got.weights.scale(0, 0), 2.0f / 15.0f) << "an all-zero range is [-1, 1]";
      // Per-row grids come from the rows BEFORE dead inputs are zeroed (so the
      // scaled column still stretches them); the first group's grid from the
      // zeroed weights at the first block's start.
      const GridParams expected =
          group_size == -1 ? find_grid_params(w, config.bits, config.grid)
                           : find_grid_params(zeroed.leftCols(32), config.bits, config.grid);
      EXPECT_EQ(VectorF(got.weights.scale.row(0).transpose()), expected.scale);
      EXPECT_EQ(VectorF(got.weights.zero.row(0).transpose()), expected.zero);
    }
}

TEST(Gptq, EqualsRoundToNearestWithoutCorrelations) {
  // A diagonal H feeds no error forward: GPTQ is RTN on the same grid.
  const MatrixF w = test::random_weights(20, 128, 311);
  MatrixD h = MatrixD::Zero(128, 128);
  for (Index i = 0; i < 128; ++i) h(i, i) = 1.0 + static_cast<double>(i % 7);
  for (int group_size : {-1, 32}) {
    GptqConfig config;
    config.group_size = group_size;
    RtnConfig rtn;
    rtn.group_size = group_size;
    EXPECT_EQ(quantize_gptq(w, h, config).weights.codes, quantize_rtn(w, rtn).weights.codes)
        << group_size;
  }
}

TEST(Gptq, LowersTheOutputErrorOfRoundToNearest) {
  const Index in = 256;
  const MatrixF w = test::random_weights(64, in, 321);
  const MatrixD h = correlated_hessian(in, 322);
  auto output_error = [&](const MatrixF& q) {
    const MatrixD dw = (w - q).cast<double>();
    return std::sqrt((dw * h).cwiseProduct(dw).sum());
  };
  for (int bits : {2, 3, 4}) {
    GptqConfig config;
    config.bits = bits;
    config.group_size = 64;
    RtnConfig rtn;
    rtn.bits = bits;
    rtn.group_size = 64;
    EXPECT_LT(output_error(quantize_gptq(w, h, config).dequantize()),
              0.9 * output_error(quantize_rtn(w, rtn).weights.dequantize()))
        << bits << " bits";
  }
}

TEST(Gptq, BlockSizeMattersOnlyForTheReferenceGroupGrids) {
  const MatrixF w = test::random_weights(32, 256, 331);
  const MatrixD h = correlated_hessian(256, 332);
  GptqConfig config;
  config.group_size = 64;
  auto codes = [&](int block_size, bool fresh) {
    GptqConfig c = config;
    c.block_size = block_size;
    c.fresh_group_params = fresh;
    return quantize_gptq(w, h, c).weights.codes;
  };
  // The reference grids of a group starting mid-block miss the in-block updates.
  EXPECT_GT((codes(128, false).array() != codes(64, false).array()).count(), w.size() / 50);
  // Fresh grids: the same up to float summation order.
  const CodeMatrix reference = codes(128, true);
  for (int block_size : {16, 64, 100, 256})
    EXPECT_LE((codes(block_size, true).array() != reference.array()).count(), 4) << block_size;
  // With one group per row the block size never changes a grid.
  config.group_size = -1;
  const CodeMatrix per_row = codes(128, false);
  EXPECT_LE((codes(32, false).array() != per_row.array()).count(), 4);
}

TEST(Gptq, IsBitIdenticalForAnyThreadCount) {
  struct Shape {
    Index out, in;
    int block_size;
  };
  // Two panels (the second partial) and chunked triangular products; one
  // panel, where Eigen may split the products itself, with a block deeper
  // than Eigen's threaded depth blocking.
  for (const Shape& shape : {Shape{300, 640, 128}, Shape{100, 512, 320}}) {
    SCOPED_TRACE(testing::Message() << shape.out << " x " << shape.in);
    const MatrixF w = test::random_weights(shape.out, shape.in, 341);
    const MatrixD h = correlated_hessian(shape.in, 342);
    CodeMatrix keep = CodeMatrix::Zero(shape.out, shape.in);
    for (Index i = 0; i < keep.size(); i += 97) keep.data()[i] = 1;
    GptqConfig config;
    config.group_size = 128;
    config.act_order = true;
    config.block_size = shape.block_size;
    const int saved = Eigen::nbThreads();
    Eigen::setNbThreads(1);
    const GptqResult one = quantize_gptq(w, h, config, keep);
    Eigen::setNbThreads(2);
    const GptqResult two = quantize_gptq(w, h, config, keep);
    Eigen::setNbThreads(saved);
    EXPECT_EQ(one.weights.codes, two.weights.codes);
    EXPECT_EQ(one.weights.scale, two.weights.scale);
    EXPECT_EQ(one.weights.zero, two.weights.zero);
    EXPECT_EQ(one.outliers.values, two.outliers.values);
    EXPECT_EQ(one.report.loss, two.report.loss);
  }
}

// ------------------------------------------------------------------ kept weights

TEST(GptqKept, KeptWeightsFollowTheOfficialTacqSemantics) {
  const Index out = 24, in = 192;
  MatrixF w = test::random_weights(out, in, 351);
  const MatrixD h = correlated_hessian(in, 352);
  CodeMatrix keep = CodeMatrix::Zero(out, in);
  for (Index r = 0; r < out; ++r) keep(r, (r * 37) % in) = keep(r, (r * 11 + 5) % in) = 1;
  w(3, 40) = 1.0f;  // a huge weight, kept: it must not stretch row 3's grid
  keep(3, 40) = 1;
  for (bool act_order : {false, true}) {
    for (int group_size : {-1, 64}) {
      SCOPED_TRACE(testing::Message() << "act_order " << act_order << " group_size " << group_size);
      GptqConfig config;
      config.group_size = group_size;
      config.act_order = act_order;
      const GptqResult got = quantize_gptq(w, h, config, keep);
      expect_matches_literal(got, literal_gptq(w, h, config, keep));
      ASSERT_EQ(got.outliers.nnz(), (keep.array() != 0).count());
      const MatrixF dense = got.weights.dequantize();
      for (Index r = 0; r < out; ++r)
        for (Index c = 0; c < in; ++c)
          if (keep(r, c)) {
            EXPECT_EQ(dense(r, c), 0.0f) << r << ", " << c;  // code = zero point
          }
      EXPECT_LT(got.weights.scale(got.weights.group_of(40), 3), 0.05f);
    }
  }
}

TEST(GptqKept, KeepingEverythingReturnsTheWeights) {
  // No weight is quantized, so no error is fed back and every kept value is original.
  const MatrixF w = test::random_weights(10, 64, 361);
  const GptqResult got =
      quantize_gptq(w, correlated_hessian(64, 362), {}, CodeMatrix::Ones(10, 64));
  EXPECT_EQ(got.dequantize(), w);
  EXPECT_EQ(got.report.loss, 0.0);
}

TEST(GptqKept, KeptValuesAbsorbTheFeedback) {
  // Column 1 kept: its value is the weight after column 0's error was fed back.
  const MatrixF w = test::random_weights(8, 32, 371);
  const MatrixD h = correlated_hessian(32, 372);
  CodeMatrix keep = CodeMatrix::Zero(8, 32);
  keep.col(1).setOnes();
  const GptqResult got = quantize_gptq(w, h, {}, keep);
  const Literal literal = literal_gptq(w, h, {}, keep);
  for (Index r = 0; r < 8; ++r) {
    EXPECT_FLOAT_EQ(got.dequantize()(r, 1), literal.q(r, 1));
    EXPECT_NE(got.dequantize()(r, 1), w(r, 1));
  }
}

TEST(GptqKept, KeptWeightsHaveZeroErrorAndPropagateNothing) {
  // Whatever values the kept weights hold, the quantized part is the same bit
  // for bit: they neither stretch a grid nor feed any error forward (their
  // error is zero), and each kept value moves by exactly its own change.
  const Index out = 16, in = 128;
  const MatrixF w = test::random_weights(out, in, 411);
  const MatrixD h = correlated_hessian(in, 412);
  CodeMatrix keep = CodeMatrix::Zero(out, in);
  for (Index r = 0; r < out; ++r) keep(r, (r * 29 + 3) % in) = keep(r, (r * 7 + 64) % in) = 1;
  keep.col(5).setOnes();  // a whole column, processed early
  MatrixF changed = w;
  for (Index r = 0; r < out; ++r)
    for (Index c = 0; c < in; ++c)
      if (keep(r, c)) changed(r, c) = (r + c) % 2 ? 4.0f : -0.75f;
  for (bool act_order : {false, true})
    for (int group_size : {-1, 32}) {
      SCOPED_TRACE(testing::Message() << "act_order " << act_order << " group_size " << group_size);
      GptqConfig config;
      config.act_order = act_order;
      config.group_size = group_size;
      const GptqResult a = quantize_gptq(w, h, config, keep),
                       b = quantize_gptq(changed, h, config, keep);
      EXPECT_EQ(a.weights.codes, b.weights.codes);
      EXPECT_EQ(a.weights.scale, b.weights.scale);
      EXPECT_EQ(a.weights.zero, b.weights.zero);
      EXPECT_EQ(a.report.loss, b.report.loss);
      ASSERT_EQ(a.outliers.col, b.outliers.col);
      const MatrixF qa = a.dequantize(), qb = b.dequantize();
      for (Index r = 0; r < out; ++r)
        for (Index c = 0; c < in; ++c)
          if (keep(r, c)) {
            EXPECT_NEAR(qb(r, c) - qa(r, c), changed(r, c) - w(r, c), 1e-5f) << r << ", " << c;
          } else {
            EXPECT_EQ(qa(r, c), qb(r, c));
          }
    }
}

// ------------------------------------------------------------ robustness and misuse

TEST(Gptq, AnIndefiniteHessianRaisesTheDamping) {
  const Index in = 64;
  MatrixD h = correlated_hessian(in, 381);
  h(0, 1) = h(1, 0) = 2 * std::sqrt(h(0, 0) * h(1, 1));  // not positive semi-definite
  const GptqResult got = quantize_gptq(test::random_weights(8, in, 382), h);
  EXPECT_GT(got.report.hessian.failed_factorizations, 0);
  EXPECT_GT(got.report.hessian.percdamp, 0.01);
  EXPECT_TRUE(got.dequantize().allFinite());
}

TEST(Gptq, CalibrationOverloadAndProgress) {
  const Index in = 96;
  const MatrixF w = test::random_weights(16, in, 391);
  Calibration calibration(in);
  calibration.add(test::random_activations(200, in, 392));
  GptqConfig config;
  config.block_size = 32;
  std::vector<Index> done;
  config.progress = [&](Index columns, Index total) {
    EXPECT_EQ(total, in);
    done.push_back(columns);
  };
  const GptqResult got = quantize_gptq(w, calibration, config);
  EXPECT_EQ(done, (std::vector<Index>{32, 64, 96}));
  config.progress = nullptr;
  EXPECT_EQ(got.weights.codes, quantize_gptq(w, calibration.hessian(), config).weights.codes);
  EXPECT_GT(got.report.seconds, 0.0);
}

// The moving entry (H's storage becomes the prologue's and the factor's)
// gives the same result bit for bit, act-order's in-place reordering included.
TEST(Gptq, ConsumingTheHessianGivesTheSameResult) {
  const Index in = 160;
  const MatrixF w = test::random_weights(24, in, 393);
  const MatrixD h = correlated_hessian(in, 394);
  for (bool act_order : {false, true}) {
    GptqConfig config;
    config.group_size = 32;
    config.act_order = act_order;
    const GptqResult copied = quantize_gptq(w, h, config);
    MatrixD moved = h;
    const GptqResult consumed = quantize_gptq_consuming_hessian(w, std::move(moved), config);
    EXPECT_EQ(moved.size(), 0);
    EXPECT_EQ(consumed.weights.codes, copied.weights.codes) << act_order;
    EXPECT_EQ(consumed.weights.scale, copied.weights.scale) << act_order;
    EXPECT_EQ(consumed.weights.g_idx, copied.weights.g_idx) << act_order;
    EXPECT_EQ(consumed.report.loss, copied.report.loss) << act_order;
    EXPECT_EQ(consumed.report.hessian.column_order, copied.report.hessian.column_order);
  }
}

TEST(Gptq, RejectsBadInput) {
  const MatrixF w = test::random_weights(4, 64, 401);
  const MatrixD h = correlated_hessian(64, 402);
  auto message = [&](const MatrixF& weights, const MatrixD& hessian, const GptqConfig& config,
                     const CodeMatrix& keep = CodeMatrix()) -> std::string {
    try {
      quantize_gptq(weights, hessian, config, keep);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  GptqConfig ok;
  MatrixF nan_w = w;
  nan_w(1, 2) = NAN;
  EXPECT_NE(message(nan_w, h, ok).find("weights: expected finite"), std::string::npos);
  MatrixD inf_h = h;
  inf_h(3, 3) = INFINITY;
  EXPECT_NE(message(w, inf_h, ok).find("H: expected finite"), std::string::npos);
  EXPECT_NE(message(w, h.topLeftCorner(32, 32), ok).find("expected shape 64 x 64"),
            std::string::npos);
  MatrixD asymmetric = h;
  asymmetric(0, 5) += 1;
  EXPECT_NE(message(w, asymmetric, ok).find("symmetric"), std::string::npos);
  GptqConfig c = ok;
  c.group_size = 48;
  EXPECT_NE(message(w, h, c).find("GptqConfig::group_size"), std::string::npos);
  for (int bits : {1, 9}) {
    c = ok;
    c.bits = bits;
    EXPECT_NE(message(w, h, c).find("GptqConfig::bits: expected 2..8"), std::string::npos) << bits;
  }
  c = ok;
  c.block_size = 0;
  EXPECT_NE(message(w, h, c).find("block_size"), std::string::npos);
  c = ok;
  c.damping.percdamp = 0;
  EXPECT_NE(message(w, h, c).find("percdamp"), std::string::npos);
  EXPECT_NE(message(w, h, ok, CodeMatrix::Zero(4, 63)).find("outlier_mask"), std::string::npos);
  EXPECT_NE(message(MatrixF(0, 64), h, ok).find("non-empty"), std::string::npos);
  Calibration wrong(32);
  wrong.add(test::random_activations(10, 32, 403));
  EXPECT_THROW(quantize_gptq(w, wrong), Error);
}

}  // namespace
}  // namespace lowbit
