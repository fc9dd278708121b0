// `lowbit quantize-model`: on stories260K (tests named *stories260k*, skipped
// when the file is absent) every linear of the written checkpoint (a GPTQ or
// BPDQ directory, test_hf_export.cpp has the rest of them) reads
// back exactly as the same sequential quantization in this process produced
// it; a separate classifier is written too; a Hugging Face directory
// converted from it quantizes to the same linears (both written in rotate-half
// row order); calibration files; misuse exits with 2.
#include <fstream>
#include <lowbit/core/half.hpp>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/model/hf_export.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <map>
#include <sstream>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

class CliQuantizeModel : public test::ToolTest {};

std::string linear_name(int layer, LinearKind kind) {
  return "layers." + std::to_string(layer) +
         (index(kind) <= index(LinearKind::wo) ? ".attention." : ".feed_forward.") + name(kind);
}

// Rows of a llama2.c linear as a directory stores them (rotate-half q and k).
template <class Weights>
Weights hf_rows(const Weights& w, LinearKind kind) {
  if (kind == LinearKind::wq) return rotate_half_rows(w, 8);  // stories260K's heads
  if (kind == LinearKind::wk) return rotate_half_rows(w, 4);
  return w;
}

float fp16(float v) { return half_to_float(float_to_half(v)); }
double bf16(double v) { return double(bf16_to_float(float_to_bf16(float(v)))); }

// GPTQ v1 at 3 bits (fields straddle words) and BPDQ planes, with their scales
// rounded to fp16 and coefficients to bf16 as the formats store them.
TEST_F(CliQuantizeModel, stories260k_checkpoints_read_back_exactly) {
  REQUIRE_STORIES260K(loaded);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  const Model m = pad_hidden(*loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 64, 1.0f, 1);
  const std::vector<std::pair<std::string, QuantSpec>> cases{{"gptq", {"rtn", 3, 32, false}},
                                                             {"gptq", {"gptq", 4, 32, true}},
                                                             {"bpdq", {"gptq", 2, 64, false}},
                                                             {"bpdq", {"bpdq", 2, 32, false}}};
  for (std::size_t case_no = 0; case_no < cases.size(); ++case_no) {
    // Named copies: a lambda below uses them (C++17 cannot capture structured bindings).
    const std::string& format = cases[case_no].first;
    QuantSpec spec = cases[case_no].second;
    spec.grid.positive_zero = format == "gptq";  // as the tool quantizes for v1
    const std::string stem = format + std::to_string(case_no);
    const std::string out = dir.file(stem);
    const test::CommandResult r =
        lowbit("quantize-model --model " + model_path + " --method " + spec.method + " --bits " +
               std::to_string(spec.bits) + " --group-size " + std::to_string(spec.group_size) +
               " --format " + format + (spec.act_order ? " --act-order" : "") +
               " --calib-samples 4 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("[20/20] layer 4 w2"), std::string::npos) << r.output;
    const io::SafetensorsReader file(out + "/model.safetensors");
    int linears = 0;
    quantize_model(m, calibration, spec, {}, [&](int l, LinearKind k, const QuantizedLinear& q) {
      ++linears;
      const std::string name = detail::hf_linear_name(l, k);
      if (format == "gptq") {
        const UniformWeights expected = hf_rows(*q.uniform, k);
        const UniformWeights back = io::read_gptq_linear(file, name, spec.bits);
        EXPECT_EQ(back.codes, expected.codes) << name;
        EXPECT_EQ(back.zero, expected.zero) << name;
        if (spec.act_order) {
          EXPECT_FALSE(back.g_idx.empty()) << name;
          EXPECT_EQ(back.g_idx, expected.g_idx) << name;
        }
        for (Index i = 0; i < back.scale.size(); ++i)
          ASSERT_EQ(back.scale.data()[i], fp16(expected.scale.data()[i])) << name;
      } else {
        const BitPlaneWeights expected = hf_rows(*q.planes, k);
        const BitPlaneWeights back = io::read_bpdq_linear(file, name);
        EXPECT_EQ(back.codes, expected.codes) << name;
        for (Index i = 0; i < back.coeffs.size(); ++i)
          ASSERT_EQ(back.coeffs.data()[i], bf16(expected.coeffs.data()[i])) << name;
      }
    });
    EXPECT_EQ(linears, 35);
    EXPECT_EQ(file.matrix("model.embed_tokens.weight"),
              m.token_embedding.unaryExpr([](float v) { return fp16(v); }));
    EXPECT_FALSE(file.contains("lm_head.weight"));  // tied
    for (int l = 0; l < 5; ++l)
      EXPECT_EQ(
          file.floats("model.layers." + std::to_string(l) + ".post_attention_layernorm.weight")
              .size(),
          64u);
    std::ifstream json(out + "/config.json");
    const nlohmann::json config = nlohmann::json::parse(json);
    const nlohmann::json& quantization = config["quantization_config"];
    EXPECT_EQ(quantization["quant_method"], format);
    EXPECT_EQ(quantization["checkpoint_format"], format);
    EXPECT_EQ(quantization["desc_act"], spec.act_order);
    EXPECT_EQ(config["intermediate_size"], 192);
    if (format == "gptq") {
      EXPECT_EQ(quantization["bits"], spec.bits);
    } else {  // BPDQ's GPTQModel: bits is the initial grid, the planes are msbits
      EXPECT_EQ(quantization["bits"], 8);
      EXPECT_EQ(quantization["meta"]["bpdq"]["msbits"], spec.bits);
    }
  }
}

// llama2.c's separate classifier (negative vocabulary size) is written as
// lm_head.weight beside the embedding, untied.
TEST_F(CliQuantizeModel, WritesASeparateClassifier) {
  Model m = test::tiny_model(21, Config{32, 24, 1, 4, 4, 23, 64});
  m.classifier = test::tiny_model(22, Config{32, 24, 1, 4, 4, 23, 64}).token_embedding;
  test::write_file(dir.file("untied.bin"), test::llama2c_bytes(m));
  const test::CommandResult r =
      lowbit("quantize-model --model " + dir.file("untied.bin") + " --method rtn --bits 4 " +
             "--calib-samples 2 --out " + dir.file("q"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader file(dir.file("q/model.safetensors"));
  auto rounded = [](const MatrixF& x) {
    return MatrixF(x.unaryExpr([](float v) { return fp16(v); }));
  };
  EXPECT_EQ(file.matrix("lm_head.weight"), rounded(m.classifier));
  EXPECT_EQ(file.matrix("model.embed_tokens.weight"), rounded(m.token_embedding));
  EXPECT_EQ(io::read_gptq_linear(file, "model.layers.0.mlp.down_proj", 4).cols(), 64);  // padded
  std::ifstream json(dir.file("q/config.json"));
  EXPECT_EQ(nlohmann::json::parse(json)["tie_word_embeddings"], false);
}

// The dequantized linears of a written GPTQ directory, by llama2.c name.
std::map<std::string, MatrixF> written_linears(const std::string& path, int bits, int layers) {
  const io::SafetensorsReader file(path + "/model.safetensors");
  std::map<std::string, MatrixF> out;
  for (int l = 0; l < layers; ++l)
    for (LinearKind kind : kAllLinears)
      out[linear_name(l, kind)] =
          io::read_gptq_linear(file, detail::hf_linear_name(l, kind), bits).dequantize();
  return out;
}

// The same calibration ids, as text for the llama2.c file and as safetensors
// input_ids (I64) for the directory: RTN, and GPTQ calibrated on the float
// model's activations, give the same linears (the tool writes the llama2.c
// model's wq and wk rows in the order the converter gave the directory's);
// sequential GPTQ, close ones.
TEST_F(CliQuantizeModel, stories260k_hf_directory_quantizes_as_the_llama2c_file) {
  REQUIRE_STORIES260K(m);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  test::write_hf_directory(*m, dir.file("hf"));
  const std::vector<Sequence> calibration = sample_sequences(*m, 4, 48, 1.0f, 3);
  std::ofstream text(dir.file("calib.txt"));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> ids(4, 48);
  for (int s = 0; s < 4; ++s) {
    for (int t = 0; t < 48; ++t) {
      text << calibration[std::size_t(s)][std::size_t(t)] << (t + 1 < 48 ? " " : "\n");
      ids(s, t) = calibration[std::size_t(s)][std::size_t(t)];
    }
  }
  text.close();
  io::SafetensorsWriter input_ids;
  input_ids.add_matrix("input_ids", ids, io::Dtype::I64);
  input_ids.write(dir.file("calib.safetensors"));

  int run = 0;
  for (const std::string method : {"rtn", "gptq", "gptq --calibration float"}) {
    const std::string common = " --method " + method + " --bits 4 --calib-length 48 ";
    const std::string a_dir = dir.file("a" + std::to_string(run)),
                      b_dir = dir.file("b" + std::to_string(run));
    ++run;
    const test::CommandResult a = lowbit("quantize-model --model " + model_path + common +
                                         "--calib " + dir.file("calib.txt") + " --out " + a_dir);
    ASSERT_EQ(a.exit_code, 0) << a.output;
    const test::CommandResult b =
        lowbit("quantize-model --model " + dir.file("hf") + common + "--calib " +
               dir.file("calib.safetensors") + " --out " + b_dir);
    ASSERT_EQ(b.exit_code, 0) << b.output;
    EXPECT_EQ(a.output.find("samples itself"), std::string::npos) << a.output;
    const std::map<std::string, MatrixF> from_file = written_linears(a_dir, 4, 5),
                                         from_dir = written_linears(b_dir, 4, 5);
    Index differing = 0, total = 0;
    double change = 0, norm = 0;
    for (int l = 0; l < 5; ++l)
      for (LinearKind kind : kAllLinears) {
        const std::string name = linear_name(l, kind);
        const MatrixF& expected = from_file.at(name);
        ASSERT_EQ(from_dir.at(name).rows(), expected.rows()) << name;
        const Index here = (from_dir.at(name).array() != expected.array()).count();
        if (l == 0) {
          EXPECT_EQ(here, 0) << method << " " << name;  // the same inputs
        }
        differing += here;
        total += expected.size();
        change += (from_dir.at(name) - expected).squaredNorm();
        norm += expected.squaredNorm();
      }
    // Layers after 0 see activations that differ by rounding. Calibrated on
    // the float model's, the codes stay the same; sequentially, a flipped code
    // changes the quantized layer's output, which the next layers see, and
    // GPTQ's error feedback carries flips along the rows: some percent differ.
    const double relative = std::sqrt(change / norm);
    std::cout << method << ": " << differing << " of " << total
              << " weights differ, relative change " << relative << "\n";
    if (method == "gptq")
      EXPECT_LT(relative, 0.1);
    else
      EXPECT_LE(double(differing), 1e-3 * double(total));
  }
}

// Without --calib the model samples its own sequences, and says so; bad
// calibration files are named in the error.
TEST_F(CliQuantizeModel, CalibrationFiles) {
  const Model m = test::tiny_model(31, Config{32, 24, 1, 4, 4, 23, 64});
  test::write_file(dir.file("tiny.bin"), test::llama2c_bytes(m));
  const std::string command = "quantize-model --model " + dir.file("tiny.bin") +
                              " --method gptq --format bpdq --out " + dir.file("q");
  const test::CommandResult sampled = lowbit(command + " --calib-samples 2 --calib-length 8");
  ASSERT_EQ(sampled.exit_code, 0) << sampled.output;
  std::filesystem::remove_all(dir.file("q"));
  EXPECT_NE(sampled.output.find("2 sequences of 8 tokens the float model samples itself"),
            std::string::npos)
      << sampled.output;
  // RTN reads no calibration: nothing is sampled.
  const test::CommandResult rtn = lowbit("quantize-model --model " + dir.file("tiny.bin") +
                                         " --method rtn --format bpdq --out " + dir.file("q"));
  ASSERT_EQ(rtn.exit_code, 0) << rtn.output;
  std::filesystem::remove_all(dir.file("q"));
  EXPECT_NE(rtn.output.find("--method rtn reads no calibration"), std::string::npos) << rtn.output;
  EXPECT_EQ(rtn.output.find("samples itself"), std::string::npos) << rtn.output;
  const test::CommandResult floated = lowbit(command + " --calibration float --calib-samples 2");
  EXPECT_EQ(floated.exit_code, 0) << floated.output;
  std::filesystem::remove_all(dir.file("q"));

  struct Case {
    std::string file, contents, message;
  };
  for (const Case& c : std::vector<Case>{
           {"words.txt", "1 2 3\n4 five 6\n", "words.txt:2: 'five' is not a token id"},
           {"negative.txt", "1 -2 3\n", "'-2' is not a token id"},
           {"empty.txt", "\n\n", "holds no token sequences"},
           {"vocab.txt", "1 2 23\n", "sequence 0 holds token 23, outside the vocabulary of 23"},
       }) {
    test::write_file(dir.file(c.file), std::vector<char>(c.contents.begin(), c.contents.end()));
    const test::CommandResult r = lowbit(command + " --calib " + dir.file(c.file));
    EXPECT_EQ(r.exit_code, 1) << c.file << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.file << "\n" << r.output;
  }
  io::SafetensorsWriter floats;
  floats.add_matrix("input_ids", MatrixF::Ones(2, 4));
  floats.write(dir.file("floats.safetensors"));
  io::SafetensorsWriter rank1;
  rank1.add_vector("input_ids", std::vector<std::int32_t>{1, 2, 3}, io::Dtype::I32);
  rank1.write(dir.file("rank1.safetensors"));
  io::SafetensorsWriter other;
  other.add_vector("ids", std::vector<std::int32_t>{1, 2, 3}, io::Dtype::I32);
  other.write(dir.file("other.safetensors"));
  for (const Case& c : std::vector<Case>{
           {"floats.safetensors", "", "tensor 'input_ids' must be I32 or I64, has F32"},
           {"rank1.safetensors", "", "tensor 'input_ids' must have rank 2"},
           {"other.safetensors", "", "tensor 'input_ids' is missing"},
           {"absent.txt", "", "absent.txt: cannot open"},
       }) {
    const test::CommandResult r = lowbit(command + " --calib " + dir.file(c.file));
    EXPECT_EQ(r.exit_code, 1) << c.file << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.file << "\n" << r.output;
  }
}

// --scratch-dir (the residual stream's file): a directory that is missing,
// not a directory or not writable exits with 2 before any work (the default,
// --out's directory, is the output's to check: test_hf_export.cpp); a size the
// filesystem cannot reserve (a file size limit standing in for a full disk)
// exits with 1 naming the scratch file, leaving nothing behind.
TEST_F(CliQuantizeModel, ScratchDirectory) {
  test::write_file(dir.file("m.bin"),
                   test::llama2c_bytes(test::tiny_model(33, Config{64, 128, 1, 4, 4, 64, 512})));
  std::filesystem::create_directory(dir.file("scratch"));
  test::write_text(dir.file("afile"), "x");
  const std::string out = " --out " + dir.file("q");
  const std::string command =
      "quantize-model --model " + dir.file("m.bin") + " --calib-samples 4 --calib-length 256";
  struct Case {
    std::string args, message;
  };
  std::vector<Case> cases{
      {out + " --scratch-dir " + dir.file("missing"),
       "option --scratch-dir: '" + dir.file("missing") + "' is not a directory"},
      {out + " --scratch-dir " + dir.file("afile"),
       "option --scratch-dir: '" + dir.file("afile") + "' is not a directory"}};
  if (::geteuid() != 0) {  // root writes anywhere
    std::filesystem::create_directory(dir.file("locked"));
    std::filesystem::permissions(dir.file("locked"), std::filesystem::perms::owner_read |
                                                         std::filesystem::perms::owner_exec);
    cases.push_back({out + " --scratch-dir " + dir.file("locked"),
                     "option --scratch-dir: '" + dir.file("locked") + "' is not writable"});
  }
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(command + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
    EXPECT_EQ(r.output.find("calibrating"), std::string::npos) << r.output;  // no work began
  }
  // 4 x 256 tokens x 64 floats: 256 KiB, over a 64-block limit in any unit.
  const test::CommandResult full =
      test::run_command("trap '' XFSZ; ulimit -f 64; exec " + *test::cli_path() + " " + command +
                        out + " --scratch-dir " + dir.file("scratch"));
  EXPECT_EQ(full.exit_code, 1) << full.output;
  EXPECT_NE(full.output.find("the residual stream of the calibration sequences (1024 tokens x 64 "
                             "floats): a scratch file in " +
                             dir.file("scratch") + ": cannot reserve 262144 bytes"),
            std::string::npos)
      << full.output;
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("scratch")));
  for (const auto& e : std::filesystem::directory_iterator(dir.file("")))  // no q, no q.tmpPID
    EXPECT_NE(e.path().filename().string().substr(0, 1), "q") << e.path();
  const test::CommandResult fits = lowbit(command + out + " --scratch-dir " + dir.file("scratch"));
  EXPECT_EQ(fits.exit_code, 0) << fits.output;
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("scratch")));
}

TEST_F(CliQuantizeModel, MisuseExitsWithTwo) {
  const std::string out = dir.file("q.safetensors");
  const std::string model = " --model " + dir.file("absent.bin") + " --out " + out;
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"quantize-model --out " + out, "missing required option --model"},
           {"quantize-model" + model + " --method smoothquant-w8a8", "no plain checkpoint form"},
           {"quantize-model" + model + " --method awq", "use --format awq"},
           {"quantize-model" + model + " --method bpdq --format gptq", "use --format bpdq"},
           {"quantize-model" + model + " --format bpdq --act-order", "g_idx"},
           {"quantize-model" + model + " --format onnx",
            "option --format: expected gptq, awq, bpdq, gguf or dequantized"},
           {"quantize-model" + model + " --calib-samples 0", "option --calib-samples: expected"},
           {"quantize-model" + model + " --calib-length 1", "--calib-length must be >= 2"},
           {"quantize-model" + model + " --calibration dynamic",
            "option --calibration: expected sequential or float"},
           {"quantize-model" + model + " --bits 5", "the gptq format packs 2, 3, 4 or 8 bits"},
           {"quantize-model" + model + " --method bpdq --format bpdq --bits 5", "1..4 bit planes"},
       }) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  const test::CommandResult absent = lowbit("quantize-model" + model);
  EXPECT_EQ(absent.exit_code, 1) << absent.output;
  EXPECT_NE(absent.output.find("cannot open"), std::string::npos) << absent.output;
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit::model
