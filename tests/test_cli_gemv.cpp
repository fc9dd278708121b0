// `lowbit gemv`: the official BPDQ tensors and `lowbit quantize` outputs
// multiplied through the bit-plane kernel, against Q x (exact path) and
// within the documented bound (int8 tables); its errors and exit codes.
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/quant/rtn.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

class CliGemv : public test::ToolTest {
 protected:
  // Runs gemv and returns y.
  MatrixF gemv(const std::string& in, const std::string& x, const std::string& extra = "") const {
    const std::string out = dir.file("y.safetensors");
    const test::CommandResult r =
        lowbit("gemv --in " + in + " --x " + x + " --out " + out + " " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return io::SafetensorsReader(out).matrix("y");
  }
  std::string inputs() const { return test::bundled_golden_dir() + "/inputs_64x256.safetensors"; }
  void check_bpdq(const io::SafetensorsReader& f, const std::string& golden_dir) const;
};

double max_relative(const MatrixF& y, const MatrixD& reference) {
  return (y.cast<double>() - reference).cwiseAbs().maxCoeff() / reference.cwiseAbs().maxCoeff();
}

// Every entry of y within the kernel's bound for the same weights (f16
// coefficients, int8 tables), plus `slack` for a reference that is not
// exactly these weights.
void expect_within_int8_bound(const BitPlaneWeights& planes, const MatrixF& x, const MatrixF& y,
                              const MatrixD& reference, double slack) {
  const PackedBitplanes w = pack_bitplanes(planes);
  BitplaneContext ctx(w, 1, TableType::int8);
  double worst = 0;
  for (Index t = 0; t < x.rows(); ++t) {
    bitplane_load(w, x.data() + t * x.cols(), 1, x.cols(), ctx);
    const VectorF bound = bitplane_error_bound(w, ctx, 0);
    for (Index r = 0; r < w.rows(); ++r) {
      const double err = std::fabs(y(t, r) - reference(t, r));
      worst = std::max(worst, err / (bound(r) + slack));
      ASSERT_LE(err, bound(r) + slack) << "token " << t << " row " << r;
    }
  }
  std::cout << "  int8 tables: max |y - Q x| / max |Q x| = " << max_relative(y, reference)
            << ", worst error / bound = " << worst << "\n";
}

// The official tensors through the tool, with --exact against Q x, and with
// int8 tables within the bound. Q (full set) is the official dequantized
// weight, equal to c and B to within 1e-8 (golden README): that much times
// sum |x| is the slack; the bundled subset keeps B_packed and c only.
void CliGemv::check_bpdq(const io::SafetensorsReader& f, const std::string& golden_dir) const {
  const std::string x_file = golden_dir + "/" + test::meta(f, "inputs_file");
  const MatrixF x = io::SafetensorsReader(x_file).matrix("X");
  const BitPlaneWeights planes = io::bitplanes_from_bpdq(
      f.info("B_packed").shape, f.ints("B_packed"), f.info("c").shape, f.doubles("c"));
  const MatrixD q = f.contains("Q") ? f.matrix_d("Q") : planes.dequantize().cast<double>();
  const MatrixD reference = x.cast<double>() * q.transpose();
  const MatrixF exact = gemv(f.source(), x_file, "--exact");
  EXPECT_LT(max_relative(exact, reference), 1e-3);
  std::cout << f.source()
            << "\n  --exact: max |y - Q x| / max |Q x| = " << max_relative(exact, reference)
            << "\n";
  expect_within_int8_bound(planes, x, gemv(f.source(), x_file), reference,
                           1e-7 * x.cwiseAbs().rowwise().sum().maxCoeff());
}

// One official file: the tool reads and multiplies it (test_bitplane_lut_gemm.cpp
// packs every bundled one and tests the kernel against dense products).
TEST_F(CliGemv, OfficialBpdqFile) {
  check_bpdq(test::golden_case("bpdq_k3_g64_it5_garon"), test::bundled_golden_dir());
}

TEST_F(CliGemv, UniformOutputOfQuantizeRtn) {
  for (const char* args : {"--bits 4 --group-size 64", "--bits 2 --group-size 128", "--bits 3"}) {
    SCOPED_TRACE(args);
    const std::string q_file = dir.file("q.safetensors");
    const test::CommandResult r =
        lowbit("quantize rtn --in " + inputs() + " --out " + q_file + " " + args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(q_file);
    const MatrixF x = io::SafetensorsReader(inputs()).matrix("X").topRows(40);
    const MatrixD reference = x.cast<double>() * result.matrix_d("Q").transpose();
    io::SafetensorsWriter xs;
    xs.add_matrix("x", x, io::Dtype::F32);
    xs.write(dir.file("x.safetensors"));
    EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors"), "--exact"), reference), 1e-5);
    UniformWeights u;  // as the tool reads it: as many planes as the largest code has bits
    const std::vector<std::int32_t> codes = result.ints("qint");
    u.codes.resize(result.info("qint").shape[0], result.info("qint").shape[1]);
    std::transform(codes.begin(), codes.end(), u.codes.data(),
                   [](std::int32_t c) { return static_cast<std::uint8_t>(c); });
    u.scale = result.matrix("scale");
    u.zero = result.matrix("zero");
    for (u.bits = 1; (1 << u.bits) <= u.codes.maxCoeff();) ++u.bits;
    u.group_size = u.cols() / u.scale.rows();
    // Q rounds scale * (code - zero) to float once: 2^-24 relative per weight of slack.
    const double slack =
        1e-7 * result.matrix("Q").cwiseAbs().maxCoeff() * x.cwiseAbs().rowwise().sum().maxCoeff();
    expect_within_int8_bound(to_bitplanes(u), x, gemv(q_file, dir.file("x.safetensors")), reference,
                             slack);
  }
}

// AWQ stores the codes of W diag(s): the tool divides x by s, so y = x Q^T.
TEST_F(CliGemv, AwqResultsActOnScaledActivations) {
  const std::string q_file = dir.file("awq.safetensors");
  const test::CommandResult r = lowbit("quantize awq --in " + inputs() + " --out " + q_file +
                                       " --bits 4 --group-size 64 --grid 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader result(q_file);
  const MatrixF x = io::SafetensorsReader(inputs()).matrix("X").topRows(24);
  io::SafetensorsWriter xs;
  xs.add_matrix("x", x, io::Dtype::F32);
  xs.write(dir.file("x.safetensors"));
  const MatrixD reference = x.cast<double>() * result.matrix_d("Q").transpose();
  // Q = Wq / s rounded to float, x / s rounded to float: a few 2^-24 per term.
  EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors"), "--exact"), reference), 1e-5);
  EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors")), reference), 0.05);
}

// The file's method decides how it is read: AWQ into a ggml type stores the
// blocks of W diag(s), so x is divided by s there too (the tensor names alone
// looked like a plain ggml file), and SmoothQuant's W8 runs on the int8
// kernel: y = quantize(x / s) W8^T * w8_scale, which is Q x up to the int8
// rounding of the activations (x / s per token to 127 levels).
TEST_F(CliGemv, TheMethodInTheMetadataDecidesHowAFileIsRead) {
  const MatrixF x = io::SafetensorsReader(inputs()).matrix("X").topRows(24);
  io::SafetensorsWriter xs;
  xs.add_matrix("x", x, io::Dtype::F32);
  xs.write(dir.file("x.safetensors"));
  struct Case {
    std::string args;
    double exact, fast;  // bounds on max |y - Q x| / max |Q x|
  };
  for (const Case& c : {Case{"awq --gguf-type q4_K --grid 4", 1e-5, 0.05},
                        Case{"smoothquant --alpha 0.5", 1e-5, 0.02}}) {
    SCOPED_TRACE(c.args);
    const std::string q_file = dir.file("q.safetensors");
    const test::CommandResult r =
        lowbit("quantize " + c.args + " --in " + inputs() + " --out " + q_file);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const MatrixD reference =
        x.cast<double>() * io::SafetensorsReader(q_file).matrix_d("Q").transpose();
    EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors"), "--exact"), reference), c.exact);
    EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors")), reference), c.fast);
  }
}

// GPTQ with act-order (codes in the original column order, groups through
// g_idx) and TACQ (the same plus the sparse part, without gradients): what
// `lowbit quantize` writes, `lowbit gemv` multiplies as Q x.
TEST_F(CliGemv, GptqAndTacqResults) {
  const MatrixF x = io::SafetensorsReader(inputs()).matrix("X").topRows(24);
  io::SafetensorsWriter xs;
  xs.add_matrix("x", x, io::Dtype::F32);
  xs.write(dir.file("x.safetensors"));
  for (const std::string method :
       {"gptq --bits 3 --group-size 64 --act-order",
        "tacq --bits 2 --group-size 64 --fraction 0.01",
        "tacq --bits 3 --group-size 64 --act-order --fraction 0.02 --outlier-dtype f32"}) {
    const std::string q_file = dir.file("q.safetensors");
    const test::CommandResult r =
        lowbit("quantize " + method + " --in " + inputs() + " --out " + q_file);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(q_file);
    EXPECT_EQ(result.contains("outlier_val"), method.rfind("tacq", 0) == 0) << method;
    const MatrixD reference = x.cast<double>() * result.matrix_d("Q").transpose();
    EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors"), "--exact"), reference), 1e-5)
        << method;
    EXPECT_LT(max_relative(gemv(q_file, dir.file("x.safetensors")), reference), 0.05) << method;
  }
}

// Act-order groups, outliers, an F16 input named X, and threads.
TEST_F(CliGemv, ActOrderOutliersAndThreads) {
  const MatrixF wf = test::random_weights(70, 96, 5);
  RtnConfig config;
  config.bits = 3;
  config.group_size = 32;
  UniformWeights u = quantize_rtn(wf, config).weights;
  u.g_idx.resize(96);
  for (int j = 0; j < 96; ++j) u.g_idx[static_cast<std::size_t>(j)] = (j * 5 % 96) / 32;
  CodeMatrix mask = CodeMatrix::Zero(70, 96);
  for (int i = 0; i < 70; ++i) mask(i, (i * 13) % 96) = 1;
  const SparseOutliers outliers = sparse_outliers_from_mask(wf, mask);
  io::SafetensorsWriter q;
  q.add_matrix("qint", u.codes, io::Dtype::I32);
  q.add_matrix("scale", u.scale);
  q.add_matrix("zero", u.zero);
  q.add_vector("g_idx", u.g_idx, io::Dtype::I32);
  q.add_vector("outlier_rowptr", outliers.row_ptr, io::Dtype::I32);
  q.add_vector("outlier_col", outliers.col, io::Dtype::I32);
  q.add_vector("outlier_val", outliers.values, io::Dtype::F16);
  q.write(dir.file("q.safetensors"));
  const MatrixF x = test::random_activations(21, 96, 6).unaryExpr(
      [](float v) { return half_to_float(float_to_half(v)); });
  io::SafetensorsWriter xs;
  xs.add_matrix("X", x, io::Dtype::F16);
  xs.write(dir.file("x.safetensors"));
  MatrixF dense = u.dequantize();
  outliers.overwrite(dense);
  const MatrixD reference = x.cast<double>() * dense.cast<double>().transpose();
  EXPECT_LT(max_relative(gemv(dir.file("q.safetensors"), dir.file("x.safetensors"), "--exact"),
                         reference),
            1e-5);
  const MatrixF one = gemv(dir.file("q.safetensors"), dir.file("x.safetensors"), "--threads 1");
  EXPECT_LT(max_relative(one, reference), 0.05);
  EXPECT_EQ(one, gemv(dir.file("q.safetensors"), dir.file("x.safetensors"), "--threads 2"));
}

TEST_F(CliGemv, MissingTensorsAndMisuseExitWithTwo) {
  const std::string out = dir.file("y.safetensors");
  const std::string q_file = dir.file("q.safetensors");
  ASSERT_EQ(lowbit("quantize rtn --in " + inputs() + " --out " + q_file + " --bits 4").exit_code,
            0);
  io::SafetensorsWriter partial;
  partial.add_matrix("qint", CodeMatrix::Zero(2, 8), io::Dtype::I32);
  partial.add_matrix("scale", MatrixF::Ones(1, 2));
  partial.write(dir.file("partial.safetensors"));
  io::SafetensorsWriter half_outliers;
  half_outliers.add_matrix("qint", CodeMatrix::Zero(2, 8), io::Dtype::I32);
  half_outliers.add_matrix("scale", MatrixF::Ones(1, 2));
  half_outliers.add_matrix("zero", MatrixF::Zero(1, 2));
  half_outliers.add_vector("outlier_rowptr", std::vector<std::int32_t>{0, 0, 0}, io::Dtype::I32);
  half_outliers.write(dir.file("half_outliers.safetensors"));
  io::SafetensorsWriter x8;
  x8.add_matrix("x", MatrixF::Ones(1, 8));
  x8.write(dir.file("x8.safetensors"));
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases{
      {"gemv --in " + q_file + " --out " + out, "missing required option --x"},
      {"gemv --in " + q_file + " --x " + q_file + " --out " + out, "tensor 'x' (or 'X')"},
      {"gemv --in " + inputs() + " --x " + inputs() + " --out " + out, "neither bit-plane tensors"},
      {"gemv --in " + dir.file("partial.safetensors") + " --x " + dir.file("x8.safetensors") +
           " --out " + out,
       "needs tensor 'zero'"},
      {"gemv --in " + dir.file("half_outliers.safetensors") + " --x " + dir.file("x8.safetensors") +
           " --out " + out,
       "needs tensor 'outlier_col'"},
      {"gemv --in " + q_file + " --x " + inputs() + " --out " + out + " --bits 4",
       "--bits does not apply"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(CliGemv, InconsistentOrBadFilesExitWithOne) {
  const std::string out = dir.file("y.safetensors");
  const std::string q_file = dir.file("q.safetensors");
  ASSERT_EQ(lowbit("quantize rtn --in " + inputs() + " --out " + q_file + " --bits 4").exit_code,
            0);
  io::SafetensorsWriter narrow;
  narrow.add_matrix("x", MatrixF::Ones(3, 100));
  narrow.write(dir.file("x100.safetensors"));
  const std::string grouped = dir.file("grouped.safetensors");
  ASSERT_EQ(
      lowbit("quantize rtn --in " + inputs() + " --out " + grouped + " --group-size 64").exit_code,
      0);
  io::SafetensorsWriter x255;
  x255.add_matrix("x", MatrixF::Ones(2, 255));
  x255.write(dir.file("x255.safetensors"));
  io::SafetensorsWriter wide_grid;  // a grid step of 1e5 overflows fp16 coefficients
  wide_grid.add_matrix("qint", CodeMatrix::Zero(2, 8), io::Dtype::I32);
  wide_grid.add_matrix("scale", MatrixF::Constant(1, 2, 1e5f));
  wide_grid.add_matrix("zero", MatrixF::Zero(1, 2));
  wide_grid.write(dir.file("wide_grid.safetensors"));
  io::SafetensorsWriter x8;
  x8.add_matrix("x", MatrixF::Ones(1, 8));
  x8.write(dir.file("x8.safetensors"));
  io::SafetensorsWriter zero_shape;  // zero has 3 rows of outputs, the codes 2
  zero_shape.add_matrix("qint", CodeMatrix::Zero(2, 8), io::Dtype::I32);
  zero_shape.add_matrix("scale", MatrixF::Ones(1, 2));
  zero_shape.add_matrix("zero", MatrixF::Zero(1, 3));
  zero_shape.write(dir.file("zero_shape.safetensors"));
  io::SafetensorsWriter short_rowptr;  // 2 rows need 3 row pointers
  short_rowptr.add_matrix("qint", CodeMatrix::Zero(2, 8), io::Dtype::I32);
  short_rowptr.add_matrix("scale", MatrixF::Ones(1, 2));
  short_rowptr.add_matrix("zero", MatrixF::Zero(1, 2));
  short_rowptr.add_vector("outlier_rowptr", std::vector<std::int32_t>{0, 1}, io::Dtype::I32);
  short_rowptr.add_vector("outlier_col", std::vector<std::int32_t>{3}, io::Dtype::I32);
  short_rowptr.add_vector("outlier_val", std::vector<float>{1.5f}, io::Dtype::F32);
  short_rowptr.write(dir.file("short_rowptr.safetensors"));
  const std::string bpdq = test::bundled_golden_dir() + "/bpdq_k2_g64_it5_garoff.safetensors";
  const std::string hostile =
      test::test_data_dir() + "/safetensors_hostile/overlapping.safetensors";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases{
      {"gemv --in " + q_file + " --x " + dir.file("x100.safetensors") + " --out " + out, "columns"},
      {"gemv --in " + bpdq + " --x " + dir.file("x100.safetensors") + " --out " + out,
       "in_features 100"},
      {"gemv --in " + hostile + " --x " + inputs() + " --out " + out, "overlap"},
      {"gemv --in " + dir.file("wide_grid.safetensors") + " --x " + dir.file("x8.safetensors") +
           " --out " + out,
       "(lowbit gemv --exact keeps coefficients in f32)"},
      {"gemv --in " + grouped + " --x " + dir.file("x255.safetensors") + " --out " + out,
       "tensor 'x' has 255 columns; the layer in " + grouped + " has in_features = 256"},
      {"gemv --in " + dir.file("zero_shape.safetensors") + " --x " + dir.file("x8.safetensors") +
           " --out " + out,
       "UniformWeights::zero"},
      {"gemv --in " + dir.file("short_rowptr.safetensors") + " --x " + dir.file("x8.safetensors") +
           " --out " + out,
       "tensor 'outlier_rowptr' has 2 entries, expected out_features + 1 = 3"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit
