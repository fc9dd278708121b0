// `lowbit quantize gptq`: a golden GPTQ case through the tool, X as
// calibration, the damping report and misuse (the demo's GPTQ rows are
// checked in test_cli.cpp).
#include <lowbit/core/calibration.hpp>
#include <lowbit/quant/gptq.hpp>

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
