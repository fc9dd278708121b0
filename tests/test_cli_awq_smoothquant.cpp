// `lowbit quantize awq` and `lowbit quantize smoothquant`: one golden case
// each through the tool (double and float inputs; the library tests run every
// case), the output tensor contract, and misuse.
#include <lowbit/io/ggml_blocks.hpp>

#include <fstream>
#include <iterator>

#include "test_support.hpp"

namespace lowbit {
namespace {

class CliAwqSmoothQuant : public test::ToolTest {};

// The tool's input for a golden case, written in the case's dtype: W (and W2
// for two linears), X, and the norm when the case has one.
std::string write_case_input(const io::SafetensorsReader& f, const std::string& golden_dir,
                             const std::string& path) {
  const bool f64 = test::meta(f, "dtype") == "float64";
  const io::Dtype dtype = f64 ? io::Dtype::F64 : io::Dtype::F32;
  io::SafetensorsWriter in;
  std::vector<std::string> names{"W", "X"};
  if (f.metadata_value("num_fcs") == "2") names.push_back("W2");
  for (const std::string& name : names)
    in.add_matrix(name, test::golden_tensor<double>(f, golden_dir, name), dtype);
  for (const char* name : {"ln_weight", "ln_bias"})
    if (f.contains(name)) {
      const std::vector<double> v = f.doubles(name);
      in.add_floats(name, {static_cast<std::int64_t>(v.size())}, v.data(), v.size(), dtype);
    }
  in.write(path);
  return path;
}

double max_elementwise_rel(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1e-30));
  return worst;
}

TEST_F(CliAwqSmoothQuant, AwqGoldenCaseThroughTheTool) {
  auto check = [&](const io::SafetensorsReader& f, const std::string& golden_dir) {
    const std::string in = write_case_input(f, golden_dir, dir.file("in.safetensors"));
    const std::string out = dir.file("awq.safetensors");
    const test::CommandResult r =
        lowbit("quantize awq --in " + in + " --out " + out + " --bits " + test::meta(f, "w_bit") +
               " --group-size " + test::meta(f, "q_group_size"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(out);
    EXPECT_EQ(result.metadata_value("precision"), test::meta(f, "dtype"));
    EXPECT_EQ(std::stod(*result.metadata_value("best_ratio")), test::meta_double(f, "best_ratio"));
    EXPECT_LE(max_elementwise_rel(result.doubles("scales"), f.doubles("scales")), 1e-5);
    EXPECT_LE(max_elementwise_rel(result.doubles("search_loss_history"),
                                  f.doubles("search_loss_history")),
              1e-5);

    const std::vector<double> clip = result.doubles("clip_max_val"),
                              clip_golden = f.doubles("clip_max_val");
    const std::vector<double> q_scales = result.doubles("q_scales"),
                              q_zeros = result.doubles("q_zeros");
    const std::vector<double> q_scales_golden = f.doubles("q_scales"),
                              q_zeros_golden = f.doubles("q_zeros");
    ASSERT_EQ(clip.size(), clip_golden.size());
    ASSERT_EQ(result.info("q_scales").shape, f.info("q_scales").shape);  // [out, groups]
    std::size_t equal = 0;
    for (std::size_t i = 0; i < clip.size(); ++i) {
      if (std::abs(clip[i] - clip_golden[i]) > 1e-6 * std::abs(clip_golden[i])) continue;
      ++equal;
      EXPECT_EQ(q_zeros[i], q_zeros_golden[i]) << i;
      EXPECT_NEAR(q_scales[i], q_scales_golden[i], 1e-6 * q_scales_golden[i]) << i;
    }
    EXPECT_GE(static_cast<double>(equal), 0.97 * static_cast<double>(clip.size()));

    // Q = Wq / s, and the uniform tensors describe Wq exactly.
    const MatrixD wq = result.matrix_d("Wq"), q = result.matrix_d("Q");
    const std::vector<double> s = result.doubles("scales");
    const std::vector<std::int32_t> qint = result.ints("qint");
    const MatrixD scale = result.matrix_d("scale"), zero = result.matrix_d("zero");
    const Index group_size = test::meta_int(f, "q_group_size");
    for (Index row = 0; row < wq.rows(); ++row)
      for (Index j = 0; j < wq.cols(); ++j) {
        ASSERT_NEAR(q(row, j), wq(row, j) / s[static_cast<std::size_t>(j)],
                    1e-6 * std::abs(q(row, j)) + 1e-12);
        const Index g = j / group_size;
        ASSERT_EQ(static_cast<float>(wq(row, j)),
                  static_cast<float>(scale(g, row)) *
                      (static_cast<float>(qint[static_cast<std::size_t>(row * wq.cols() + j)]) -
                       static_cast<float>(zero(g, row))));
      }
    const double err = std::stod(*result.metadata_value("rel_out_err"));
    EXPECT_NEAR(err, test::meta_double(f, "rel_out_err_Q_eff"), 0.01 * err);
  };
  check(test::golden_case("awq_w3_g64_f64"), test::bundled_golden_dir());
}

// --gguf-type: gguf_blocks decode to the quantized W·diag(s); Q is that over
// s, and its output error on X is below llama.cpp's quantizer with its
// importance matrix (quantize rtn --gguf-type on the same file).
TEST_F(CliAwqSmoothQuant, AwqGgufTypeWritesBlocksOfTheScaledWeights) {
  const std::string in = test::bundled_golden_dir() + "/inputs_64x256.safetensors";
  const std::string awq = dir.file("awq.safetensors"), rtn = dir.file("rtn.safetensors");
  const test::CommandResult a =
      lowbit("quantize awq --gguf-type q4_K --in " + in + " --out " + awq);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(lowbit("quantize rtn --gguf-type q4_K --in " + in + " --out " + rtn).exit_code, 0);
  const io::SafetensorsReader result(awq), inputs(in);
  EXPECT_EQ(result.metadata_value("gguf_type"), "q4_K");
  const std::vector<float> s = result.floats("scales");
  MatrixF decoded =
      io::unpack_ggml_blocks(GgmlType::q4_k, 64, 256, result.data("gguf_blocks"), 64 * 144, awq)
          .dequantize();
  for (Index j = 0; j < 256; ++j) decoded.col(j) /= s[std::size_t(j)];
  EXPECT_EQ(decoded, result.matrix("Q"));
  const MatrixF w = inputs.matrix("W"), x = inputs.matrix("X");
  auto error = [&](const MatrixF& q) { return (x * (w - q).transpose()).norm(); };
  EXPECT_LT(error(result.matrix("Q")), 0.95 * error(io::SafetensorsReader(rtn).matrix("Q")));
  const test::CommandResult bad =
      lowbit("quantize awq --gguf-type q4_K --group-size 64 --in " + in + " --out " + awq);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("--group-size does not apply with --gguf-type"), std::string::npos)
      << bad.output;
}

TEST_F(CliAwqSmoothQuant, SmoothQuantGoldenCaseThroughTheTool) {
  auto check = [&](const io::SafetensorsReader& f, const std::string& golden_dir) {
    const std::string in = write_case_input(f, golden_dir, dir.file("in.safetensors"));
    const std::string out = dir.file("sq.safetensors");
    const test::CommandResult r = lowbit("quantize smoothquant --in " + in + " --out " + out +
                                         " --alpha " + test::meta(f, "alpha"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(out);
    EXPECT_EQ(result.metadata_value("precision"), test::meta(f, "dtype"));
    EXPECT_LE(max_elementwise_rel(result.doubles("scales"), f.doubles("scales")), 1e-6);
    EXPECT_LE(
        max_elementwise_rel(result.doubles("ln_weight_smoothed"), f.doubles("ln_weight_smoothed")),
        1e-6);
    EXPECT_LE(
        max_elementwise_rel(result.doubles("ln_bias_smoothed"), f.doubles("ln_bias_smoothed")),
        1e-6);
    for (const char* name : {"W_smoothed", "W2_smoothed"}) {
      if (!f.contains(name)) continue;
      EXPECT_LE(max_elementwise_rel(result.doubles(name), f.doubles(name)), 1e-6) << name;
    }
    EXPECT_EQ(result.contains("W2_smoothed"), f.metadata_value("num_fcs") == "2");

    // W8 (I8) with its row scales is the reference's fake-quantized W8_smoothed,
    // and Q = W8 * w8_scale / s.
    EXPECT_EQ(result.info("W8").dtype, io::Dtype::I8);
    const std::vector<std::int32_t> w8 = result.ints("W8");
    const std::vector<double> w8_scale = result.doubles("w8_scale"), s = result.doubles("scales");
    const std::vector<double> q = result.doubles("Q");
    const std::size_t in_features = s.size();
    std::vector<double> dequantized(w8.size());
    for (std::size_t i = 0; i < w8.size(); ++i) {
      const float value = static_cast<float>(w8_scale[i / in_features]) * static_cast<float>(w8[i]);
      dequantized[i] = value;
      ASSERT_EQ(static_cast<float>(q[i]), value / static_cast<float>(s[i % in_features])) << i;
    }
    if (f.contains("W8_smoothed")) {
      const MatrixD golden = f.matrix_d("W8_smoothed");
      const MatrixD ours =
          Eigen::Map<const MatrixD>(dequantized.data(), golden.rows(), golden.cols());
      EXPECT_LE(test::max_rel_diff(ours, golden), 1e-6);
    }
    const double err = std::stod(*result.metadata_value("rel_out_err_w8a8"));
    EXPECT_NEAR(err, test::meta_double(f, "rel_out_err"), 0.01 * err);
  };
  check(test::golden_case("smoothquant_a0.8_2fc"), test::bundled_golden_dir());
}

TEST_F(CliAwqSmoothQuant, SharedInputNormsAndMisuse) {
  const io::SafetensorsReader inputs(test::bundled_golden_dir() + "/inputs_64x256.safetensors");
  auto write = [&](const std::string& name, const std::vector<std::string>& tensors) {
    io::SafetensorsWriter w;
    for (const std::string& t : tensors)
      if (t == "ln_weight" || t == "ln_bias") {
        const std::vector<float> v(256, t == "ln_weight" ? 1.5f : 0.25f);
        w.add_floats(t, {256}, v.data(), v.size());
      } else {
        w.add_matrix(t, inputs.matrix(t));
      }
    w.write(dir.file(name));
    return dir.file(name);
  };
  const std::string out = dir.file("out.safetensors");
  // Two linears and an RMSNorm: one s, outputs per linear, no bias.
  const std::string rms = write("rms.safetensors", {"W", "W2", "X", "ln_weight"});
  test::CommandResult r =
      lowbit("quantize awq --in " + rms + " --out " + out + " --bits 4 --group-size 64");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    const io::SafetensorsReader result(out);
    for (const char* name :
         {"Q_2", "Wq_2", "q_scales_2", "q_zeros_2", "clip_max_val_2", "ln_weight_scaled"})
      EXPECT_TRUE(result.contains(name)) << name;
    EXPECT_FALSE(result.contains("ln_bias_scaled"));
    EXPECT_EQ(result.metadata_value("linears"), "2");
    const std::vector<double> s = result.doubles("scales"), ln = result.doubles("ln_weight_scaled");
    for (std::size_t j = 0; j < s.size(); ++j)
      EXPECT_FLOAT_EQ(static_cast<float>(ln[j]), 1.5f / static_cast<float>(s[j]));
  }
  r = lowbit("quantize smoothquant --in " + rms + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  {
    const io::SafetensorsReader result(out);
    for (const char* name : {"W2_smoothed", "W8_2", "w8_scale_2", "Q_2", "ln_weight_smoothed"})
      EXPECT_TRUE(result.contains(name)) << name;
    EXPECT_FALSE(result.contains("ln_bias_smoothed"));
    EXPECT_EQ(result.metadata_value("alpha"), "0.5");
  }

  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  const std::string no_x = write("no_x.safetensors", {"W"});
  const std::string bias_only = write("bias.safetensors", {"W", "X", "ln_bias"});
  const std::string plain = write("plain.safetensors", {"W", "X"});
  const std::vector<Case> cases{
      {"quantize awq --in " + no_x + " --out " + out, 2, "tensor 'X'"},
      {"quantize smoothquant --in " + no_x + " --out " + out, 2, "tensor 'X'"},
      {"quantize awq --in " + bias_only + " --out " + out, 2, "'ln_bias' needs 'ln_weight'"},
      {"quantize smoothquant --in " + plain + " --out " + out + " --bits 4", 2,
       "--bits does not apply"},
      {"quantize awq --in " + plain + " --out " + out + " --group-size 48", 1, "group_size"},
      {"quantize awq --in " + plain + " --out " + out + " --bits 9", 2, "option --bits: expected"},
      {"quantize awq --in " + plain + " --out " + out + " --grid 0", 2, "option --grid: expected"},
      {"quantize smoothquant --in " + plain + " --out " + out + " --alpha 1.5", 2,
       "option --alpha: expected"},
  };
  std::filesystem::remove(out);
  for (const Case& c : cases) {
    const test::CommandResult result = lowbit(c.args);
    EXPECT_EQ(result.exit_code, c.exit_code) << c.args << "\n" << result.output;
    EXPECT_NE(result.output.find(c.message), std::string::npos) << c.args << "\n" << result.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

// The same layer with 1 and 2 threads gives byte-identical files: the search
// losses no longer depend on Eigen's thread-dependent GEMM blocking, and the
// metadata records --threads nowhere (nor a timing). A layer large enough
// for Eigen to split its products (384 x 1536, 256 tokens).
TEST_F(CliAwqSmoothQuant, AwqFilesAreByteIdenticalForOneAndTwoThreads) {
  io::SafetensorsWriter in;
  in.add_matrix("W", test::random_weights(384, 1536, 11));
  in.add_matrix("X", test::random_activations(256, 1536, 12));
  in.write(dir.file("in.safetensors"));
  std::vector<std::string> bytes;
  for (const char* threads : {"1", "2"}) {
    const std::string out = dir.file(std::string("awq") + threads + ".safetensors");
    const test::CommandResult r = lowbit("quantize awq --in " + dir.file("in.safetensors") +
                                         " --out " + out + " --threads " + threads);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::ifstream file(out, std::ios::binary);
    bytes.emplace_back(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  }
  EXPECT_EQ(bytes[0].size(), bytes[1].size());
  EXPECT_TRUE(bytes[0] == bytes[1]) << "the files differ";
}

}  // namespace
}  // namespace lowbit
