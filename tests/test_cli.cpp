// The lowbit command-line tool: its contract (exit codes, tensor names), `lowbit
// quantize rtn` reproducing a golden reference output, and the demo (help:
// test_cli_help.cpp).
#include <sys/stat.h>

#include <filesystem>
#include <lowbit/quant/absmax.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

class Cli : public test::ToolTest {};

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

// Option values outside what the command accepts are misuse (exit 2), refused before any
// file is read, with a message that names the option as typed, never a config field. The
// unbounded knobs (iterations, grid, threads) have bounds too.
TEST_F(Cli, BadOptionValuesAreMisuseNamingTheOption) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("out.safetensors");
  const std::string io = " --in " + in + " --out " + out;
  struct Case {
    std::string args, option;
  };
  const std::vector<Case> cases{
      {"quantize rtn" + io + " --bits 9", "--bits"},
      {"quantize gptq" + io + " --bits 9", "--bits"},
      {"quantize rtn" + io + " --group-size 0", "--group-size"},
      {"quantize rtn" + io + " --group-size -2", "--group-size"},
      {"quantize bpdq" + io + " --planes 5", "--planes"},
      {"quantize tacq" + io + " --fraction 1", "--fraction"},
      {"quantize gptq" + io + " --damp 0", "--damp"},
      {"quantize gptq" + io + " --percdamp 1", "--percdamp"},
      {"quantize bpdq" + io + " --iters 0", "--iters"},
      {"quantize bpdq" + io + " --iters 1000000000", "--iters"},
      {"quantize bpdq" + io + " --ridge -1", "--ridge"},
      {"quantize smoothquant" + io + " --alpha 1.5", "--alpha"},
      {"quantize awq" + io + " --grid 0", "--grid"},
      {"quantize awq" + io + " --grid 1000000000", "--grid"},
      {"quantize gptq" + io + " --block-size 0", "--block-size"},
      {"quantize absmax" + io + " --bits 1", "--bits"},
      {"quantize rtn" + io + " --threads 100000", "--threads"},
      {"quantize rtn" + io + " --threads 0", "--threads"},
      {"quantize tacq" + io + " --outlier-dtype f64", "--outlier-dtype"},
      {"quantize-model --model /nonexistent.bin --out " + out + " --bits 5", "--bits"},
      {"quantize-model --model /nonexistent.bin --out " + out + " --threads abc", "--threads"},
      {"quantize-model --model /nonexistent.bin --out " + out + " --format onnx", "--format"},
      {"quantize-model --model /nonexistent.bin --out " + out + " --calibration 0",
       "--calibration"},
      {"demo --size huge", "--size"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("option " + c.option + ":"), std::string::npos) << c.args << "\n"
                                                                            << r.output;
    EXPECT_EQ(r.output.find("Config::"), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

// A value-taking option never swallows the next option as its value.
TEST_F(Cli, AnOptionIsNotAValue) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const test::CommandResult r = lowbit("quantize rtn --in " + in + " --out --sym");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("option --out needs a value FILE"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists("--sym"));
}

TEST_F(Cli, EveryCommandsHelpExitsZero) {
  for (const char* args :
       {"--help", "quantize --help", "quantize gptq --help", "quantize-model --help",
        "quantize-model -h", "gemv --help", "demo --help"}) {
    const test::CommandResult r = lowbit(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("Usage:"), std::string::npos) << args << "\n" << r.output;
  }
}

// Names of the files in a directory, for checking that a run left no debris.
std::vector<std::string> files_in(const std::string& directory) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(directory))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// --out that names a device, a FIFO or a symbolic link is written through (the link's
// target replaced), never replaced itself; a directory is refused.
TEST_F(Cli, OutputsThatAreNotRegularFilesAreWrittenThroughOrRefused) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string rtn = "quantize rtn --in " + in + " --out ";
  test::CommandResult r = lowbit(rtn + "/dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::is_character_file("/dev/null"));

  const std::string target = dir.file("target.safetensors"), link = dir.file("link.safetensors");
  std::filesystem::create_symlink(target, link);
  r = lowbit(rtn + link);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_EQ(io::SafetensorsReader(target).metadata_value("method"), "rtn");

  const std::string fifo = dir.file("fifo"), received = dir.file("received.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  r = test::run_command("cat " + fifo + " > " + received + " & " + *test::cli_path() + " " + rtn +
                        fifo + "; status=$?; wait; exit $status");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::is_fifo(fifo));
  EXPECT_EQ(io::SafetensorsReader(received).metadata_value("method"), "rtn");

  const std::string directory = dir.file("a_directory");
  std::filesystem::create_directory(directory);
  r = lowbit(rtn + directory);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("not a regular file"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::is_directory(directory));
  EXPECT_EQ(files_in(dir.file("")),
            (std::vector<std::string>{"a_directory", "fifo", "link.safetensors",
                                      "received.safetensors", "target.safetensors"}));
}

// SIGINT or SIGTERM at any moment of a run (reading, quantizing, writing) ends it with
// 128 + the signal unless it had finished, and leaves no temporary or partial file.
TEST_F(Cli, AnInterruptedRunLeavesNothingBehind) {
  io::SafetensorsWriter big;
  big.add_matrix("W", test::random_weights(1024, 4096, 5));
  big.write(dir.file("in.safetensors"));
  test::expect_interrupted_runs_leave_nothing(
      dir, "quantize rtn --bits 4 --group-size 128 --in " + dir.file("in.safetensors"),
      "in.safetensors", "out.safetensors",
      [&] { EXPECT_TRUE(io::SafetensorsReader(dir.file("out.safetensors")).contains("Q")); });
}

TEST_F(Cli, BadFilesAndBadValuesFailWithCodeOne) {
  const std::string out = dir.file("out.safetensors");
  const std::string hostile =
      test::test_data_dir() + "/safetensors_hostile/overlapping.safetensors";
  test::CommandResult r = lowbit("quantize rtn --in " + hostile + " --out " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("overlap"), std::string::npos) << r.output;
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  r = lowbit("quantize rtn --in " + in + " --out " + out + " --group-size 48");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("group_size"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

// One golden case: the tool passes the options and writes the tensors (every
// case runs through the library in test_rtn.cpp).
TEST_F(Cli, RtnReproducesTheGoldenReference) {
  const io::SafetensorsReader f = test::golden_case("rtn_w3_asym_mse");
  const std::string in = test::bundled_golden_dir() + "/" + test::meta(f, "inputs_file");
  const std::string out = dir.file("rtn.safetensors");
  const test::CommandResult r =
      lowbit("quantize rtn --in " + in + " --out " + out + " --bits 3 --mse");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader result(out);
  EXPECT_EQ(result.ints("qint"), f.ints("qint"));
  EXPECT_EQ(result.floats("zero"), f.floats("zero"));
  EXPECT_EQ(result.floats("scale"), f.floats("scale"));
  EXPECT_EQ(result.info("scale").shape, (std::vector<std::int64_t>{1, 64}));  // [groups, out]
  EXPECT_EQ(result.ints("g_idx"), std::vector<std::int32_t>(256, 0));
  const std::vector<float> scale = f.floats("scale"), zero = f.floats("zero"),
                           q = result.floats("Q");
  const std::vector<std::int32_t> qint = f.ints("qint");
  for (std::size_t i = 0; i < q.size(); ++i)
    ASSERT_EQ(q[i], scale[i / 256] * (static_cast<float>(qint[i]) - zero[i / 256])) << i;
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"method", "rtn"},
                                                        {"bits", "3"},
                                                        {"mse", "true"},
                                                        {"sym", "false"},
                                                        {"options", "--bits 3 --mse"}})
    EXPECT_EQ(result.metadata_value(key), value) << key;
}

TEST_F(Cli, ReportsTheRelativeOutputError) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string out = dir.file("absmax.safetensors");
  const test::CommandResult r =
      lowbit("quantize absmax --in " + in + " --out " + out + " --bits 4 --group-size 64");
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

// Each file of tests/data/layer_hostile (make_corpus.py there) was once accepted
// and read wrong; its metadata names the command, the exit code and a fragment
// of the message. Every input check is the same for every method.
TEST_F(Cli, HostileLayerCorpusIsRefusedByName) {
  const std::string corpus = test::test_data_dir() + "/layer_hostile";
  const std::vector<std::string> files = test::golden_files(corpus, "");
  ASSERT_GE(files.size(), 12u);
  io::SafetensorsWriter x;
  x.add_matrix("x", MatrixF::Ones(2, 32));
  x.write(dir.file("x32.safetensors"));
  const std::string out = dir.file("out.safetensors");
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const io::SafetensorsReader hostile(file);
    const std::string command = test::meta(hostile, "command");
    const test::CommandResult r =
        lowbit(command + " --in " + file + " --out " + out +
               (command == "gemv" ? " --x " + dir.file("x32.safetensors") : ""));
    EXPECT_EQ(r.exit_code, test::meta_int(hostile, "exit")) << r.output;
    EXPECT_NE(r.output.find(test::meta(hostile, "expect")), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

// W = 0, X = 0 or H = 0: rel_out_err is 0 (W X^T and Q X^T are both zero), never
// NaN, with a warning; an all-zero H is said to leave every input dead.
TEST_F(Cli, DegenerateLayersGiveADefinedErrorAndAWarning) {
  const MatrixF w = test::random_weights(8, 64, 3);
  const MatrixF x = test::random_activations(32, 64, 4);
  struct Case {
    std::string method;
    MatrixF w, x;
    std::string warning;
  };
  const std::vector<Case> cases{
      {"rtn", MatrixF::Zero(8, 64), x, "tensor 'W' is all zero"},
      {"absmax", w, MatrixF::Zero(32, 64), "tensor 'X' is all zero"},
      {"gptq", w, MatrixF::Zero(32, 64), "give Q = 0"},
      {"bpdq", MatrixF::Zero(8, 64), x, "tensor 'W' is all zero"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method + ": " + c.warning);
    io::SafetensorsWriter in;
    in.add_matrix("W", c.w);
    in.add_matrix("X", c.x);
    in.write(dir.file("in.safetensors"));
    const std::string out = dir.file("out.safetensors");
    const test::CommandResult r =
        lowbit("quantize " + c.method + " --in " + dir.file("in.safetensors") + " --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(c.warning), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("rel_out_err = 0 by definition"), std::string::npos) << r.output;
    EXPECT_EQ(test::meta(io::SafetensorsReader(out), "rel_out_err"), "0");
  }
}

// A layer whose H cannot fit is refused before H is formed, saying how much it
// would take (400,000 inputs: H alone is 1.28 TB in double).
TEST_F(Cli, AnHessianBeyondMemoryIsRefusedWithItsSize) {
  if (!std::filesystem::exists("/proc/meminfo")) GTEST_SKIP() << "no /proc/meminfo";
  io::SafetensorsWriter in;
  in.add_matrix("W", MatrixF::Constant(1, 400000, 0.5f));
  in.add_matrix("X", MatrixF::Constant(1, 400000, 1.0f));
  in.write(dir.file("wide.safetensors"));
  const std::string out = dir.file("out.safetensors");
  for (const char* method : {"gptq", "tacq", "bpdq"}) {
    const test::CommandResult r = lowbit(std::string("quantize ") + method + " --in " +
                                         dir.file("wide.safetensors") + " --out " + out);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find("H (400000 x 400000, in double) and its factorization needs about "
                            "6.4e+03 GB of memory"),
              std::string::npos)
        << r.output;
    EXPECT_FALSE(std::filesystem::exists(out));
  }
}

TEST_F(Cli, DemoPrintsOneRowPerRun) {
  const test::CommandResult r = lowbit("demo");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* text :
       {"method", "bits/w", "rel. error", "rtn", "absmax", "gptq", "awq", "smoothquant", "tacq"})
    EXPECT_NE(r.output.find(text), std::string::npos) << text;
}

}  // namespace
}  // namespace lowbit
