// `lowbit quantize-model --method tacq --format dequantized`: on stories260K
// (tests named *stories260k*, skipped when the file is absent) every written
// linear is the library's quantize_model_for_task result, dequantized here by
// hand (scale x (q - zero), then the kept weights written in), and the
// directory read back by the Hugging Face reader gives the library's
// quantized model's logits; --task labels (Hugging Face's -100) become the
// task mask; a BF16 source stays BF16; slices merge into the whole; misuse
// and bad task files are refused naming the option or file; an interrupted
// run leaves nothing.
#include <fstream>
#include <lowbit/core/half.hpp>
#include <lowbit/model/hf.hpp>
#include <lowbit/model/hf_export.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <lowbit/model/task_gradients.hpp>
#include <map>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

class CliTacq : public test::ToolTest {};

using TacqCliIds = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// scale x (q - zero) per weight, then TACQ's kept weights in their places.
MatrixF tacq_cli_dequantize(const QuantizedLinear& q) {
  const UniformWeights& u = *q.uniform;
  MatrixF w(u.rows(), u.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index j = 0; j < w.cols(); ++j) {
      const Index g = u.group_of(j);
      w(r, j) = u.scale(g, r) * (float(u.codes(r, j)) - u.zero(g, r));
    }
  const SparseOutliers& kept = *q.outliers;
  for (Index r = 0; r < kept.rows; ++r)
    for (std::int32_t k = kept.row_ptr[std::size_t(r)]; k < kept.row_ptr[std::size_t(r) + 1]; ++k)
      w(r, kept.col[std::size_t(k)]) = kept.values[std::size_t(k)];
  return w;
}

// Rows of a stories260K linear as a Hugging Face directory stores them:
// the converter's permute of q and k (8 query and 4 key/value heads) for
// the llama2.c file, as they are for a model read from a directory.
MatrixF tacq_cli_hf_rows(const MatrixF& w, LinearKind kind, bool from_llama2c = true) {
  if (!from_llama2c) return w;
  if (kind == LinearKind::wq) return test::converter_permute(w, 8);
  if (kind == LinearKind::wk) return test::converter_permute(w, 4);
  return w;
}

void tacq_cli_write_ids_text(const std::string& path, const std::vector<Sequence>& sequences) {
  std::ofstream text(path);
  for (const Sequence& s : sequences) {
    for (std::size_t t = 0; t < s.size(); ++t) text << s[t] << (t + 1 < s.size() ? " " : "\n");
  }
}

TacqCliIds tacq_cli_ids(const std::vector<Sequence>& sequences) {
  TacqCliIds ids(Index(sequences.size()), Index(sequences[0].size()));
  for (Index s = 0; s < ids.rows(); ++s)
    for (Index t = 0; t < ids.cols(); ++t) ids(s, t) = sequences[std::size_t(s)][std::size_t(t)];
  return ids;
}

double tacq_cli_max_abs(const MatrixF& m) { return double(m.cwiseAbs().maxCoeff()); }

// Both methods: the written linears and the read-back logits.
TEST_F(CliTacq, stories260k_dequantized_linears_and_logits_match_the_library) {
  REQUIRE_STORIES260K(loaded);
  const std::string model_path = *test::model_file("stories260K.bin");
  const Model m = pad_hidden(*loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 48, 1.0f, 5);
  tacq_cli_write_ids_text(dir.file("calib.txt"), calibration);
  for (const std::string method : {"tacq", "tacq-gradient-free"}) {
    const std::string out = dir.file(method);
    const test::CommandResult r =
        lowbit("quantize-model --model " + model_path + " --method " + method +
               " --format dequantized --bits 2 --group-size 32 --calib " + dir.file("calib.txt") +
               " --calib-length 48 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("task gradients") != std::string::npos, method == "tacq") << r.output;
    const io::SafetensorsReader file(out + "/model.safetensors");
    Index kept = 0, linears = 0;
    Model fake_quantized = m;  // FloatLinears of the weights dequantized by hand
    const QuantizedModel q = quantize_model_for_task(
        m, calibration, {method, 2, 32}, next_token_task(calibration), {},
        [&](int l, LinearKind kind, const QuantizedLinear& result) {
          const std::string name = detail::hf_linear_name(l, kind) + ".weight";
          const MatrixF expected = tacq_cli_hf_rows(tacq_cli_dequantize(result), kind);
          kept += result.outliers->nnz();
          fake_quantized.layers[std::size_t(l)].linears[index(kind)] =
              std::make_shared<FloatLinear>(tacq_cli_dequantize(result));
          ++linears;
          EXPECT_EQ(file.info(name).dtype, io::Dtype::F32) << name;
          const MatrixF written = file.matrix(name);
          ASSERT_EQ(written.rows(), expected.rows()) << name;
          EXPECT_LE(tacq_cli_max_abs(written - expected), 1e-6 * tacq_cli_max_abs(expected))
              << method << " " << name;
        });
    EXPECT_EQ(linears, 35);
    EXPECT_GT(kept, 0);
    std::ifstream json(out + "/config.json");
    const nlohmann::json config = nlohmann::json::parse(json);
    EXPECT_FALSE(config.contains("quantization_config"));
    EXPECT_EQ(config["torch_dtype"], "float32");
    EXPECT_FALSE(std::filesystem::exists(out + "/quantize_config.json"));

    const Model back = load_hf(out);
    for (const Sequence& tokens : {calibration[0], calibration[3]}) {
      KvCache a(back.config), b(m.config), c(m.config);
      const MatrixF read_back = forward(back, a, tokens),
                    expected = forward(fake_quantized, b, tokens),
                    float_model = forward(m, c, tokens);
      EXPECT_LE(tacq_cli_max_abs(read_back - expected), 1e-5 * tacq_cli_max_abs(expected))
          << method;
      EXPECT_GT(tacq_cli_max_abs(read_back - float_model), 1e-2 * tacq_cli_max_abs(expected))
          << method;
    }
  }
}

// --task with labels: -100 positions leave the loss, so G and the written
// linears change; the written ones are the library's for that mask.
TEST_F(CliTacq, stories260k_task_labels_are_the_mask) {
  REQUIRE_STORIES260K(loaded);
  const std::string model_path = *test::model_file("stories260K.bin");
  const Model m = pad_hidden(*loaded, 64);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 48, 1.0f, 5);
  tacq_cli_write_ids_text(dir.file("calib.txt"), calibration);
  const std::vector<Sequence> sequences = sample_sequences(m, 3, 40, 1.0f, 9);
  // A prompt of 20 tokens, then the answer the loss counts (sample 2: all).
  TacqCliIds labels = tacq_cli_ids(sequences);
  std::vector<TaskSample> masked;
  for (Index s = 0; s < labels.rows(); ++s) {
    TaskSample sample{sequences[std::size_t(s)], std::vector<std::uint8_t>(40, 1)};
    for (Index t = 0; t < (s == 2 ? 0 : 20); ++t) {
      labels(s, t) = -100;
      sample.mask[std::size_t(t)] = 0;
    }
    masked.push_back(sample);
  }
  io::SafetensorsWriter with_labels;
  with_labels.add_matrix("input_ids", tacq_cli_ids(sequences), io::Dtype::I64);
  with_labels.add_matrix("labels", labels, io::Dtype::I64);
  with_labels.write(dir.file("task.safetensors"));
  io::SafetensorsWriter ids_only;
  ids_only.add_matrix("input_ids", tacq_cli_ids(sequences), io::Dtype::I32);
  ids_only.write(dir.file("ids.safetensors"));

  const TaskGradients g_masked = task_gradients(m, masked),
                      g_all = task_gradients(m, next_token_task(sequences));
  EXPECT_GT((g_masked.sum(0, LinearKind::wq) - g_all.sum(0, LinearKind::wq)).norm(),
            0.01 * g_all.sum(0, LinearKind::wq).norm());

  for (const std::string task : {"task", "ids"}) {
    const test::CommandResult r =
        lowbit("quantize-model --model " + model_path +
               " --method tacq --format dequantized --bits 2 --calib " + dir.file("calib.txt") +
               " --calib-length 48 --task " + dir.file(task + ".safetensors") + " --out " +
               dir.file(task));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const io::SafetensorsReader file(dir.file("task/model.safetensors")),
      unmasked(dir.file("ids/model.safetensors"));
  Index differing = 0;
  quantize_model_for_task(
      m, calibration, {"tacq", 2, 32}, masked, {},
      [&](int l, LinearKind kind, const QuantizedLinear& result) {
        const std::string name = detail::hf_linear_name(l, kind) + ".weight";
        const MatrixF expected = tacq_cli_hf_rows(tacq_cli_dequantize(result), kind);
        EXPECT_LE(tacq_cli_max_abs(file.matrix(name) - expected), 1e-6 * tacq_cli_max_abs(expected))
            << name;
        differing += (file.matrix(name).array() != unmasked.matrix(name).array()).count();
      });
  EXPECT_GT(differing, 0);
}

// A BF16 Hugging Face source (sharded, with a tokenizer file) gives a BF16
// directory of the same shape: the source's config but the padded width,
// the tokenizer copied, shards and index past --max-shard-size.
TEST_F(CliTacq, stories260k_bf16_source_stays_bf16) {
  REQUIRE_STORIES260K(loaded);
  test::write_hf_directory(*loaded, dir.file("hf"), {io::Dtype::BF16, 2});
  test::write_text(dir.file("hf/tokenizer_config.json"), "{\"model_max_length\": 512}\n");
  const std::string out = dir.file("q");
  const test::CommandResult r =
      lowbit("quantize-model --model " + dir.file("hf") +
             " --method tacq --format dequantized --bits 3 --calib-samples 4 --calib-length 32 "
             "--max-shard-size 300KB --out " +
             out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors.index.json"));
  EXPECT_EQ(test::file_bytes(out + "/tokenizer_config.json"),
            test::file_bytes(dir.file("hf/tokenizer_config.json")));
  std::ifstream json(out + "/config.json"), source_json(dir.file("hf/config.json"));
  nlohmann::json config = nlohmann::json::parse(json);
  EXPECT_EQ(config["intermediate_size"], 192);
  config["intermediate_size"] = 172;
  EXPECT_EQ(config, nlohmann::json::parse(source_json));

  const Model source = pad_hidden(load_hf(dir.file("hf")), 64);
  const std::vector<Sequence> calibration = sample_sequences(source, 4, 32, 1.0f, 1);
  const detail::HfTensors written(out);
  quantize_model_for_task(source, calibration, {"tacq", 3, 32}, next_token_task(calibration), {},
                          [&](int l, LinearKind kind, const QuantizedLinear& result) {
                            const std::string name = detail::hf_linear_name(l, kind) + ".weight";
                            const io::SafetensorsReader& shard = written.shard_of(name);
                            EXPECT_EQ(shard.info(name).dtype, io::Dtype::BF16) << name;
                            // Within one bf16 rounding (8 significant bits) of the library's value.
                            const MatrixF expected =
                                tacq_cli_hf_rows(tacq_cli_dequantize(result), kind, false);
                            const MatrixF back = shard.matrix(name);
                            for (Index i = 0; i < back.size(); ++i)
                              ASSERT_LE(std::abs(back.data()[i] - expected.data()[i]),
                                        std::ldexp(std::abs(expected.data()[i]), -8) + 1e-30)
                                  << name << " " << i;
                          });
}

// Slices with --calibration float (the whole model's G in each) merge into
// what one run writes, byte for byte.
TEST_F(CliTacq, stories260k_slices_merge_into_the_whole) {
  REQUIRE_STORIES260K(loaded);
  const std::string common = "quantize-model --model " + *test::model_file("stories260K.bin") +
                             " --method tacq --format dequantized --calibration float "
                             "--calib-samples 4 --calib-length 32 --max-shard-size 200KB ";
  for (const std::string part : {"", "0:2", "2:5"}) {
    const test::CommandResult r =
        lowbit(common + (part.empty() ? "" : "--layers " + part) + " --out " +
               dir.file(part.empty() ? "whole" : "slice" + part.substr(0, 1)));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  const test::CommandResult m =
      lowbit("merge " + dir.file("merged") + " " + dir.file("slice2") + " " + dir.file("slice0"));
  ASSERT_EQ(m.exit_code, 0) << m.output;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("whole")))
    names.push_back(e.path().filename().string());
  EXPECT_GT(names.size(), 3u);  // shards, their index, config.json
  for (const std::string& name : names)
    EXPECT_EQ(test::file_bytes(dir.file("merged/" + name)),
              test::file_bytes(dir.file("whole/" + name)))
        << name;
}

TEST_F(CliTacq, MisuseExitsWithTwo) {
  const std::string model = " --model " + dir.file("absent.bin") + " --out " + dir.file("q");
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"--method tacq", "--method tacq needs --format dequantized"},
           {"--method tacq --format gguf", "which the gguf format cannot hold"},
           {"--method tacq-gradient-free --format awq", "which the awq format cannot hold"},
           {"--method gptq --task t.txt", "option --task applies to --method tacq only"},
           {"--method tacq-gradient-free --format dequantized --task t.txt",
            "option --task applies to --method tacq only"},
           {"--method gptq --fraction 0.01",
            "option --fraction applies to --method tacq and tacq-gradient-free only"},
           {"--method tacq --format dequantized --fraction 1", "option --fraction: expected"},
           {"--method smoothquant-w8a8 --format dequantized", "no plain checkpoint form"},
       }) {
    const test::CommandResult r = lowbit("quantize-model" + model + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

// Bad task files fail before any work (exit 1), naming the file and what is
// wrong, and leave no output.
TEST_F(CliTacq, BadTaskFilesAreNamed) {
  const Model m = test::tiny_model(31, Config{32, 24, 1, 4, 4, 23, 64});
  test::write_file(dir.file("tiny.bin"), test::llama2c_bytes(m));
  const std::string command = "quantize-model --model " + dir.file("tiny.bin") +
                              " --method tacq --format dequantized --calib-samples 2 --out " +
                              dir.file("q") + " --task ";
  const TacqCliIds ids = (TacqCliIds(2, 5) << 1, 2, 3, 4, 5, 6, 7, 8, 9, 10).finished();
  const auto write = [&](const std::string& name, const TacqCliIds* input_ids,
                         const TacqCliIds* labels) {
    io::SafetensorsWriter w;
    if (input_ids) w.add_matrix("input_ids", *input_ids, io::Dtype::I64);
    if (labels) w.add_matrix("labels", *labels, io::Dtype::I64);
    if (!input_ids) w.add_matrix("ids", ids, io::Dtype::I64);
    w.write(dir.file(name));
  };
  TacqCliIds wrong = ids;
  wrong(1, 3) = 7;
  TacqCliIds only_first = TacqCliIds::Constant(2, 5, -100);
  only_first(0, 0) = 1;
  only_first.row(1) = ids.row(1);
  const TacqCliIds narrow = ids.leftCols(4);
  write("wrong.safetensors", &ids, &wrong);
  write("none.safetensors", &ids, &only_first);
  write("shape.safetensors", &ids, &narrow);
  write("noids.safetensors", nullptr, nullptr);
  io::SafetensorsWriter float_labels;
  float_labels.add_matrix("input_ids", ids, io::Dtype::I64);
  float_labels.add_matrix("labels", MatrixF::Ones(2, 5));
  float_labels.write(dir.file("float.safetensors"));
  std::string long_line;
  for (int t = 0; t < 70; ++t) long_line += "1 ";
  test::write_text(dir.file("long.txt"), long_line + "\n");
  test::write_text(dir.file("vocab.txt"), "1 2 23\n");
  struct Case {
    std::string file, message;
  };
  for (const Case& c : std::vector<Case>{
           {"wrong.safetensors",
            "wrong.safetensors: labels[1][3] is 7: expected -100 (not in the loss) or the token "
            "there, 9"},
           {"none.safetensors", "none.safetensors: sequence 0 has no label after its first token"},
           {"shape.safetensors", "tensor 'labels' must have the shape of 'input_ids'"},
           {"noids.safetensors", "noids.safetensors: tensor 'input_ids' is missing"},
           {"float.safetensors", "tensor 'labels' must be I32 or I64, has F32"},
           {"long.txt", "long.txt: sequence 0 has 70 tokens; TACQ's task takes 2 to 64"},
           {"vocab.txt", "vocab.txt: sequence 0 holds token 23, outside the vocabulary of 23"},
           {"absent.txt", "absent.txt: cannot open"},
       }) {
    const test::CommandResult r = lowbit(command + dir.file(c.file));
    EXPECT_EQ(r.exit_code, 1) << c.file << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.file << "\n" << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir.file("q"))) << c.file;
  }
}

// SIGINT or SIGTERM during the gradients or the layers ends the run with
// 128 + the signal and leaves no directory.
TEST_F(CliTacq, AnInterruptedRunLeavesNoDirectory) {
  test::write_file(dir.file("m.bin"),
                   test::llama2c_bytes(test::tiny_model(43, Config{128, 256, 3, 4, 4, 256, 64})));
  test::expect_interrupted_runs_leave_nothing(
      dir,
      "quantize-model --model " + dir.file("m.bin") +
          " --method tacq --format dequantized --calib-samples 2 --calib-length 16 "
          "--max-shard-size 100KB",
      "m.bin", "q", [] {}, "scratch");
}

}  // namespace
}  // namespace lowbit::model
