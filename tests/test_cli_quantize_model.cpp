// `lowbit quantize-model`: on stories260K (tests named *stories260k*, skipped
// when the file is absent) every linear of the written checkpoint reads back
// exactly as the same sequential quantization in this process produced it;
// a separate classifier is written too; misuse exits with 2.
#include <fstream>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/io/gptq_format.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <sstream>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class CliQuantizeModel : public test::ToolTest {};

std::string linear_name(int layer, LinearKind kind) {
  return "layers." + std::to_string(layer) +
         (index(kind) <= index(LinearKind::wo) ? ".attention." : ".feed_forward.") + name(kind);
}

// GPTQ v1 at 3 bits (fields straddle words) and BPDQ planes, with their scales
// or coefficients rounded to fp16 as the formats store them.
TEST_F(CliQuantizeModel, stories260k_checkpoints_read_back_exactly) {
  REQUIRE_STORIES260K(loaded);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  const Model m = pad_hidden(*loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 64, 1.0f, 1);
  const std::vector<std::pair<std::string, QuantSpec>> cases{{"gptq", {"rtn", 3, 32, false}},
                                                             {"gptq", {"gptq", 4, 32, true}},
                                                             {"bpdq", {"gptq", 2, 64, false}},
                                                             {"bpdq", {"bpdq", 2, 32, false}}};
  for (const auto& [format, spec] : cases) {
    const std::string out = dir.file(format + ".safetensors");
    const test::CommandResult r =
        lowbit("quantize-model --model " + model_path + " --method " + spec.method + " --bits " +
               std::to_string(spec.bits) + " --group-size " + std::to_string(spec.group_size) +
               " --format " + format + (spec.act_order ? " --act-order" : "") +
               " --calibration 4 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("[20/20] layer 4 w2"), std::string::npos) << r.output;
    const io::SafetensorsReader file(out);
    int linears = 0;
    quantize_model(m, calibration, spec, {}, [&](int l, LinearKind k, const QuantizedLinear& q) {
      const std::string name = linear_name(l, k);
      ++linears;
      if (format == "gptq") {
        const UniformWeights back = io::read_gptq_linear(file, name, spec.bits);
        EXPECT_EQ(back.codes, q.uniform->codes) << name;
        EXPECT_EQ(back.zero, q.uniform->zero) << name;
        if (spec.act_order) {
          EXPECT_FALSE(back.g_idx.empty()) << name;
          EXPECT_EQ(back.g_idx, q.uniform->g_idx) << name;
        }
        for (Index i = 0; i < back.scale.size(); ++i)
          ASSERT_EQ(back.scale.data()[i], half_to_float(float_to_half(q.uniform->scale.data()[i])))
              << name;
      } else {
        const BitPlaneWeights back = io::read_bpdq_linear(file, name);
        EXPECT_EQ(back.codes, q.planes->codes) << name;
        for (Index i = 0; i < back.coeffs.size(); ++i)
          ASSERT_EQ(back.coeffs.data()[i],
                    double(half_to_float(float_to_half(float(q.planes->coeffs.data()[i])))))
              << name;
      }
    });
    EXPECT_EQ(linears, 35);
    EXPECT_EQ(file.matrix("tok_embeddings.weight"), m.token_embedding);
    EXPECT_FALSE(file.contains("output.weight"));  // tied
    for (int l = 0; l < 5; ++l)
      EXPECT_EQ(file.floats("layers." + std::to_string(l) + ".ffn_norm.weight").size(), 64u);
    std::ifstream json(dir.file(format + ".quantize_config.json"));
    std::stringstream text;
    text << json.rdbuf();
    EXPECT_NE(text.str().find("\"quant_method\": \"" + format + "\""), std::string::npos);
    EXPECT_NE(text.str().find("\"hidden_dim_padded\": 192"), std::string::npos);
    EXPECT_EQ(file.metadata_value("quantization_config"), text.str());
  }
}

// llama2.c's separate classifier (negative vocabulary size) is written as
// output.weight beside the embedding.
TEST_F(CliQuantizeModel, WritesASeparateClassifier) {
  Model m = test::tiny_model(21, Config{32, 24, 1, 4, 4, 23, 64});
  m.classifier = test::tiny_model(22, Config{32, 24, 1, 4, 4, 23, 64}).token_embedding;
  test::write_file(dir.file("untied.bin"), test::llama2c_bytes(m));
  const test::CommandResult r =
      lowbit("quantize-model --model " + dir.file("untied.bin") + " --method rtn --bits 4 " +
             "--calibration 2 --out " + dir.file("q.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader file(dir.file("q.safetensors"));
  EXPECT_EQ(file.matrix("output.weight"), m.classifier);
  EXPECT_EQ(file.matrix("tok_embeddings.weight"), m.token_embedding);
  EXPECT_EQ(io::read_gptq_linear(file, "layers.0.feed_forward.w2", 4).cols(), 64);  // padded
}

// The checkpoint and its sidecar appear together or not at all: a sidecar that cannot be
// placed (its name is taken by a directory) fails the run and leaves no checkpoint.
TEST_F(CliQuantizeModel, stories260k_no_checkpoint_without_its_sidecar) {
  REQUIRE_STORIES260K(loaded);
  const std::string out = dir.file("q.safetensors");
  std::filesystem::create_directory(dir.file("q.quantize_config.json"));
  const test::CommandResult r =
      lowbit("quantize-model --model " + *lowbit::test::model_file("stories260K.bin") +
             " --method rtn --calibration 1 --out " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("q.quantize_config.json"), std::string::npos) << r.output;
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("")))
    left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"q.quantize_config.json"});
}

TEST_F(CliQuantizeModel, MisuseExitsWithTwo) {
  const std::string out = dir.file("q.safetensors");
  const std::string model = " --model " + dir.file("absent.bin") + " --out " + out;
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"quantize-model --out " + out, "missing required option --model"},
           {"quantize-model" + model + " --method awq", "no plain checkpoint form"},
           {"quantize-model" + model + " --method bpdq --format gptq", "use --format bpdq"},
           {"quantize-model" + model + " --format bpdq --act-order", "g_idx"},
           {"quantize-model" + model + " --format gguf", "option --format: expected gptq or bpdq"},
           {"quantize-model" + model + " --calibration 0", "option --calibration: expected"},
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
