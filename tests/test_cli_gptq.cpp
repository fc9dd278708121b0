// `lowbit quantize gptq`: a golden GPTQ case through the tool, X as
// calibration, the damping report and misuse (the demo's GPTQ rows are
// checked in test_cli.cpp).
#include <array>
#include <lowbit/core/calibration.hpp>
#include <lowbit/io/ggml_blocks.hpp>
#include <lowbit/quant/gptq.hpp>
#include <map>

#include "test_support.hpp"

namespace lowbit {
namespace {

class CliGptq : public test::ToolTest {};

// Runs `lowbit quantize gptq` on a golden case with the options its metadata
// names and checks the reference's acceptance: qint, zero, g_idx and perm
// exactly, scale and Q within 1e-5 relative. Bundled cases keep W and H in the
// shared inputs file, so their input is assembled in a temporary file; full
// golden files are given to the tool as they are.
void check_golden_through_tool(const CliGptq& cli, const io::SafetensorsReader& f,
                               const std::string& golden_dir, const test::TempDir& dir) {
  std::string in = f.source();
  if (!f.contains("W") || !f.contains("H")) {
    const io::SafetensorsReader inputs(golden_dir + "/" + test::meta(f, "inputs_file"));
    io::SafetensorsWriter writer;
    writer.add_matrix("W", test::golden_input(f, golden_dir, "W"));
    writer.add_matrix("H", f.contains("H") ? f.matrix_d("H") : inputs.matrix_d("H_gptq"),
                      io::Dtype::F32);
    in = dir.file("gptq_in.safetensors");
    writer.write(in);
  }
  std::string args = " --bits " + test::meta(f, "bits") + " --group-size " +
                     test::meta(f, "groupsize") + " --percdamp " + test::meta(f, "percdamp") +
                     " --block-size " + test::meta(f, "blocksize");
  if (test::meta_bool(f, "sym")) args += " --sym";
  if (test::meta_bool(f, "actorder")) args += " --act-order";
  if (test::meta_bool(f, "static_groups")) args += " --static-groups";
  const std::string out = dir.file("gptq.safetensors");
  const test::CommandResult r = cli.lowbit("quantize gptq --in " + in + " --out " + out + args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader result(out);
  EXPECT_EQ(result.ints("qint"), f.ints("qint"));
  EXPECT_TRUE((result.matrix("zero").array() == f.matrix("zero").array()).all());  // -0.0 == 0.0
  EXPECT_EQ(result.ints("g_idx"), f.ints("g_idx"));
  EXPECT_EQ(result.contains("perm"), f.contains("perm"));
  if (f.contains("perm")) {
    EXPECT_EQ(result.ints("perm"), f.ints("perm"));
  }
  EXPECT_LE(test::max_rel_diff(result.matrix("scale"), f.matrix("scale")), 1e-5);
  // The reference Q from its own codes (the bundled subset stores no Q; the
  // API test checks this formula against the full files' Q).
  const MatrixF scale = f.matrix("scale"), zero = f.matrix("zero");
  const std::vector<std::int32_t> qint = f.ints("qint"), g_idx = f.ints("g_idx");
  const Index out_features = scale.cols(), in_features = static_cast<Index>(g_idx.size());
  MatrixF expected(out_features, in_features);
  for (Index r = 0; r < out_features; ++r)
    for (Index c = 0; c < in_features; ++c) {
      const Index g = g_idx[static_cast<std::size_t>(c)];
      expected(r, c) =
          scale(g, r) *
          (static_cast<float>(qint[static_cast<std::size_t>(r * in_features + c)]) - zero(g, r));
    }
  EXPECT_LE(test::max_rel_diff(result.matrix("Q"), expected), 1e-5);
  EXPECT_EQ(result.metadata_value("calibration"), "H");
  EXPECT_EQ(result.metadata_value("failed_factorizations"), "0");
}

// One golden case (act-order, groups, asymmetric): every case runs through the
// library in test_gptq.cpp.
TEST_F(CliGptq, ReproducesTheGoldenReference) {
  check_golden_through_tool(*this, test::golden_case("gptq_w3_g64_asym_act"),
                            test::bundled_golden_dir(), dir);
}

TEST_F(CliGptq, FromActivationsEqualsTheApiOnTheirHessian) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("gptq.safetensors");
  const test::CommandResult r =
      lowbit("quantize gptq --in " + in + " --out " + out +
             " --bits 3 --group-size 64 --act-order --mse --damp 0.02 --block-size 64"
             " --fresh-group-params --threads 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader inputs(in), result(out);
  Calibration calibration(256);
  calibration.add(inputs.matrix("X"));
  GptqConfig config;
  config.bits = 3;
  config.grid.mse = true;
  config.group_size = 64;
  config.act_order = true;
  config.fresh_group_params = true;
  config.damping.percdamp = 0.02;
  config.block_size = 64;
  const GptqResult expected = quantize_gptq(inputs.matrix("W"), calibration, config);
  EXPECT_EQ(result.matrix("Q"), expected.dequantize());
  EXPECT_EQ(result.ints("perm"), expected.report.hessian.column_order);
  EXPECT_EQ(result.info("scale").shape, (std::vector<std::int64_t>{4, 64}));
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"method", "gptq"},
                                                        {"calibration", "X"},
                                                        {"bits", "3"},
                                                        {"group_size", "64"},
                                                        {"mse", "true"},
                                                        {"act_order", "true"},
                                                        {"fresh_group_params", "true"},
                                                        {"block_size", "64"},
                                                        {"damp_used", "0.02"}})
    EXPECT_EQ(result.metadata_value(key), value) << key;
  const MatrixD w = inputs.matrix("W").cast<double>(), x = inputs.matrix("X").cast<double>();
  const double err =
      ((w - result.matrix("Q").cast<double>()) * x.transpose()).norm() / (w * x.transpose()).norm();
  EXPECT_NEAR(std::stod(*result.metadata_value("rel_out_err")), err, 1e-12);
}

// --gguf-type: gguf_blocks holds ggml's bytes for the type the metadata names,
// and they decode (io/ggml_blocks.hpp, held against ggml's golden file) to
// exactly Q. With GPTQ's error feedback the layer's output error is below that
// of llama.cpp's quantizer with its importance matrix (rtn on a file with X),
// which is below llama.cpp's plain quantizer (rtn on W alone).
TEST_F(CliGptq, GgufTypeWritesGgmlBlocksThatDecodeToQ) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const io::SafetensorsReader inputs(in);
  io::SafetensorsWriter w_only;
  w_only.add_matrix("W", inputs.matrix("W"));
  w_only.write(dir.file("w_only.safetensors"));
  std::map<std::string, MatrixF> q;
  const std::vector<std::array<std::string, 3>> runs{
      {"gptq", "gptq", in},
      {"rtn", "rtn", in},
      {"rtn-plain", "rtn", dir.file("w_only.safetensors")}};
  for (const auto& [method, command, source] : runs) {
    const std::string out = dir.file("gguf.safetensors");
    const test::CommandResult r =
        lowbit("quantize " + command + " --gguf-type Q3_k --in " + source + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(out);
    EXPECT_EQ(result.metadata_value("gguf_type"), "q3_K");
    EXPECT_EQ(std::stod(*result.metadata_value("bits_per_weight")), 3.4375);
    const io::TensorInfo& blocks = result.info("gguf_blocks");
    EXPECT_EQ(blocks.dtype, io::Dtype::U8);
    ASSERT_EQ(blocks.shape, (std::vector<std::int64_t>{64, 110}));  // one 110-byte block per row
    const GgmlWeights decoded =
        io::unpack_ggml_blocks(GgmlType::q3_k, 64, 256, result.data("gguf_blocks"), 64 * 110, out);
    EXPECT_EQ(decoded.dequantize(), result.matrix("Q")) << method;
    q[method] = result.matrix("Q");
  }
  const MatrixD w = inputs.matrix("W").cast<double>(), x = inputs.matrix("X").cast<double>();
  auto error = [&](const std::string& method) {
    return ((w - q[method].cast<double>()) * x.transpose()).norm() / (w * x.transpose()).norm();
  };
  EXPECT_LT(error("gptq"), 0.8 * error("rtn"));

  // gemv runs the blocks through the bit-plane kernel (--exact: f32 tables and coefficients).
  const std::string out = dir.file("gguf.safetensors");
  ASSERT_EQ(lowbit("quantize gptq --gguf-type q4_0 --in " + in + " --out " + out).exit_code, 0);
  io::SafetensorsWriter x_file;
  const MatrixF x_few = inputs.matrix("X").topRows(5);
  x_file.add_matrix("x", x_few);
  x_file.write(dir.file("x.safetensors"));
  const test::CommandResult r =
      lowbit("gemv --exact --in " + out + " --x " + dir.file("x.safetensors") + " --out " +
             dir.file("y.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const MatrixF expected = x_few * io::SafetensorsReader(out).matrix("Q").transpose();
  EXPECT_LE(
      test::max_rel_diff(io::SafetensorsReader(dir.file("y.safetensors")).matrix("y"), expected),
      1e-5);
  EXPECT_LT(error("rtn"), error("rtn-plain"));
}

TEST_F(CliGptq, ReportsRaisedDamping) {
  // H with a negative eigenvalue: the tool recovers by raising the damping and says so.
  const Index in = 64;
  MatrixD h = MatrixD::Identity(in, in);
  h(0, 1) = h(1, 0) = 2;
  io::SafetensorsWriter writer;
  writer.add_matrix("W", test::random_weights(8, in, 77));
  writer.add_matrix("H", h, io::Dtype::F64);
  const std::string in_file = dir.file("indefinite.safetensors"),
                    out = dir.file("gptq.safetensors");
  writer.write(in_file);
  const test::CommandResult r = lowbit("quantize gptq --in " + in_file + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("damping raised to"), std::string::npos) << r.output;
  const io::SafetensorsReader result(out);
  EXPECT_NE(result.metadata_value("failed_factorizations"), "0");
  EXPECT_GT(std::stod(*result.metadata_value("damp_used")), 0.01);
  EXPECT_TRUE(result.matrix("Q").allFinite());
}

TEST_F(CliGptq, MisuseAndBadInputsSayWhy) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("out.safetensors");
  io::SafetensorsWriter no_calibration;
  no_calibration.add_matrix("W", test::random_weights(8, 64, 78));
  const std::string w_only = dir.file("w_only.safetensors");
  no_calibration.write(w_only);
  io::SafetensorsWriter non_finite;
  MatrixF x = test::random_activations(32, 64, 79);
  x(3, 4) = NAN;
  non_finite.add_matrix("W", test::random_weights(8, 64, 80));
  non_finite.add_matrix("X", x);
  const std::string nan_file = dir.file("nan.safetensors");
  non_finite.write(nan_file);
  io::SafetensorsWriter wrong_h;
  wrong_h.add_matrix("W", test::random_weights(8, 64, 81));
  wrong_h.add_matrix("H", MatrixD::Identity(32, 32), io::Dtype::F64);
  const std::string wrong_h_file = dir.file("wrong_h.safetensors");
  wrong_h.write(wrong_h_file);
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  const std::string gptq = "quantize gptq --out " + out + " --in ";
  const std::vector<Case> cases{
      {gptq + in + " --planes 2", 2, "--planes does not apply"},
      {gptq + in + " --damp 0.01 --percdamp 0.01", 2, "give one"},
      {gptq + in + " --block-size x", 2, "expected an integer"},
      {gptq + w_only, 2, "tensor 'H' (in x in) or 'X'"},
      {gptq + in + " --bits 9", 2, "option --bits: expected an integer in 2..8"},
      {gptq + in + " --group-size 48", 1, "group_size"},
      {gptq + in + " --block-size 0", 2, "option --block-size: expected"},
      {gptq + in + " --damp 1.5", 2, "option --damp: expected a number in (0, 1)"},
      {gptq + nan_file, 1, "finite"},
      {gptq + wrong_h_file, 1, "tensor 'H' must be 64 x 64"},
      {gptq + in + " --gguf-type q3_K --bits 3", 2, "--bits does not apply with --gguf-type"},
      {gptq + in + " --gguf-type q9_K", 2, "'q9_K' is not a block type lowbit encodes"},
      {gptq + in + " --gguf-type f16", 2, "'f16' is not a block type lowbit encodes"},
      {gptq + w_only + " --gguf-type q4_0", 2, "tensor 'H' (in x in) or 'X'"},
      {gptq + nan_file + " --gguf-type q4_0", 1, "finite"},
      {"quantize rtn --out " + out + " --in " + w_only + " --gguf-type q4_K", 1,
       "q4_K needs in_features to be a multiple of 256, got 64"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit
