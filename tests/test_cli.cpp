// The lowbit command-line tool: its contract (help, exit codes, tensor names)
// and `lowbit quantize rtn` reproducing the golden reference outputs.
#include <lowbit/quant/absmax.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

class Cli : public test::ToolTest {};

TEST_F(Cli, HelpDocumentsTheContract) {
  const test::CommandResult help = lowbit("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* text : {"quantize METHOD", "demo", "rtn", "absmax", "--group-size", "B_packed", "g_idx"})
    EXPECT_NE(help.output.find(text), std::string::npos) << text;
  EXPECT_EQ(lowbit("").exit_code, 2);
}

TEST_F(Cli, MisuseExitsWithCodeTwoAndSaysWhy) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("out.safetensors");
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases{
      {"frobnicate", "unknown command"},
      {"quantize", "missing METHOD"},
      {"quantize nosuch --in " + in + " --out " + out, "unknown method 'nosuch'"},
      {"quantize rtn --in " + in + " --out " + out + " --bogus", "unknown option --bogus"},
      {"quantize rtn --in " + in + " --out " + out + " --planes 2", "--planes does not apply"},
      {"quantize rtn --in " + in + " --out " + out + " --bits four", "expected an integer"},
      {"quantize rtn --in " + in + " --out " + out + " --bits", "needs a value"},
      {"quantize rtn --out " + out, "missing required option --in"},
      {"quantize rtn --in " + test::bundled_golden_dir() + "/rtn_w4_sym.safetensors --out " + out,
       "required tensor 'W'"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(Cli, BadFilesAndBadValuesFailWithCodeOne) {
  const std::string out = dir.file("out.safetensors");
  const std::string hostile = test::test_data_dir() + "/safetensors_hostile/overlapping.safetensors";
  test::CommandResult r = lowbit("quantize rtn --in " + hostile + " --out " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("overlap"), std::string::npos) << r.output;
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  r = lowbit("quantize rtn --in " + in + " --out " + out + " --group-size 48");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("group_size"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(Cli, RtnReproducesTheGoldenReference) {
  int checked = 0;
  test::for_each_golden("rtn_", false, [&](const io::SafetensorsReader& f, const std::string& golden_dir) {
    std::string args = " --bits " + test::meta(f, "bits");
    if (test::meta_bool(f, "sym")) args += " --sym";
    if (test::meta_bool(f, "mse")) args += " --mse";
    const std::string in = f.contains("W") ? f.source() : golden_dir + "/" + test::meta(f, "inputs_file");
    const std::string out = dir.file("rtn.safetensors");
    const test::CommandResult r = lowbit("quantize rtn --in " + in + " --out " + out + args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(out);
    EXPECT_EQ(result.ints("qint"), f.ints("qint"));
    EXPECT_EQ(result.floats("zero"), f.floats("zero"));
    EXPECT_EQ(result.floats("scale"), f.floats("scale"));
    EXPECT_EQ(result.info("scale").shape, (std::vector<std::int64_t>{1, 64}));  // [groups, out]
    EXPECT_EQ(result.ints("g_idx"), std::vector<std::int32_t>(256, 0));
    const std::vector<float> scale = f.floats("scale"), zero = f.floats("zero"), q = result.floats("Q");
    const std::vector<std::int32_t> qint = f.ints("qint");
    for (std::size_t i = 0; i < q.size(); ++i)
      ASSERT_EQ(q[i], scale[i / 256] * (static_cast<float>(qint[i]) - zero[i / 256])) << i;
    EXPECT_EQ(result.metadata_value("method"), "rtn");
    ++checked;
  });
  EXPECT_EQ(checked, 12);
}

TEST_F(Cli, ReportsTheRelativeOutputError) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("absmax.safetensors");
  const test::CommandResult r = lowbit("quantize absmax --in " + in + " --out " + out + " --bits 4 --group-size 64");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader inputs(in), result(out);
  const MatrixD w = inputs.matrix("W").cast<double>(), x = inputs.matrix("X").cast<double>();
  const MatrixD q = result.matrix("Q").cast<double>();
  const double expected = ((w - q) * x.transpose()).norm() / (w * x.transpose()).norm();
  EXPECT_NEAR(std::stod(*result.metadata_value("rel_out_err")), expected, 1e-12);
  EXPECT_EQ(result.metadata_value("granularity"), "group");
  EXPECT_EQ(result.info("scale").shape, (std::vector<std::int64_t>{4, 64}));
  AbsmaxConfig config;
  config.bits = 4;
  config.granularity = AbsmaxGranularity::per_group;
  config.group_size = 64;
  EXPECT_EQ(result.matrix("Q"), quantize_absmax(inputs.matrix("W"), config).weights.dequantize());
}

TEST_F(Cli, DemoPrintsOneRowPerRun) {
  const test::CommandResult r = lowbit("demo");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* text : {"method", "bits/w", "rel. error", "rtn", "absmax", "gptq", "awq", "smoothquant", "tacq"})
    EXPECT_NE(r.output.find(text), std::string::npos) << text;
}

}  // namespace
}  // namespace lowbit
