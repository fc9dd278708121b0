// LLaMA models in GGUF (model/gguf_model.hpp, quantize-model --format gguf,
// gguf logits): the tensor names, shapes and keys llama.cpp's loader asks for
// (llama-arch.cpp, models/llama.cpp), q and k rows in llama.cpp's pair order
// whichever RoPE convention the source used (a Hugging Face directory gives
// the same bytes as the llama2.c file it was converted from), and the file
// read back runs as the model it came from.
#include <fstream>
#include <iterator>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/gguf_model.hpp>
#include <lowbit/model/sequences.hpp>
#include <lowbit/model/sequential_quantization.hpp>
#include <map>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

MatrixF model_logits(const Model& m, const std::vector<int>& tokens) {
  KvCache cache(m.config, static_cast<int>(tokens.size()));
  return forward(m, cache, tokens);
}

// convert_hf_to_gguf.py's LlamaModel.permute(w, n_head):
//   w.reshape(n_head, 2, rows // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)
// element [h, s, i] (row h * head + s * head/2 + i) lands at [h, i, s]
// (row h * head + 2i + s).
TEST(GgufModel, RowOrderIsTheConvertersPermute) {
  Config c{64, 96, 1, 8, 2, 10, 16};
  c.rope_style = RopeStyle::half;
  for (LinearKind kind : {LinearKind::wq, LinearKind::wk}) {
    const Index heads = kind == LinearKind::wq ? 8 : 2, head = 8;
    const std::vector<Index> order = gguf_row_order(c, kind);
    ASSERT_EQ(Index(order.size()), heads * head);
    for (Index row = 0; row < heads * head; ++row) {
      const Index h = row / head, s = (row % head) / (head / 2), i = row % (head / 2);
      EXPECT_EQ(order[std::size_t(h * head + 2 * i + s)], row);
    }
  }
  EXPECT_TRUE(gguf_row_order(c, LinearKind::wv).empty());
  c.rope_style = RopeStyle::interleaved;  // llama.cpp's own order already
  EXPECT_TRUE(gguf_row_order(c, LinearKind::wq).empty());
  EXPECT_EQ(gguf_linear_name(3, LinearKind::w2), "blk.3.ffn_down");
  EXPECT_EQ(gguf_file_type(GgmlType::q4_k), 14u);  // LLAMA_FTYPE_MOSTLY_Q4_K_S
  test::expect_error_containing([] { gguf_file_type(GgmlType::q8_1); }, "no llama.cpp file type");
}

// A rotate-half model with q/k/v biases (Qwen2's shape), its linears in F16
// (16-wide rows take llama.cpp's last fallback): read back, with llama.cpp's
// pair order, it computes the same logits up to fp16 rounding.
TEST(GgufModel, HalfRopeModelWithBiasesRunsTheSameAfterTheRoundTrip) {
  Model m = test::tiny_model(5);
  m.config.rope_style = RopeStyle::half;
  m.rope = rope_tables(m.config);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (Layer& layer : m.layers)
    for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv}) {
      VectorF& bias = layer.biases[index(kind)];
      bias.resize(layer.linear(kind).out_features());
      for (Index i = 0; i < bias.size(); ++i) bias(i) = normal(rng);
    }
  io::GgufWriter out;
  add_gguf_metadata(out, m.config, GgmlType::q4_0, "tiny");
  add_gguf_no_tokenizer(out);
  add_gguf_globals(out, m, GgmlType::q4_0);
  for (int l = 0; l < m.config.n_layers; ++l) {
    const Layer& layer = m.layers[std::size_t(l)];
    for (LinearKind kind : kAllLinears) {
      const MatrixF& w = test::weight(m, l, kind);
      const MatrixF x = MatrixF::Random(32, w.cols());
      const QuantSpec spec{"llama.cpp", 4, 32, false, GgmlType::q4_0};
      const std::vector<QuantizedLinear> q = test::quantize_group_on({&w}, x, nullptr, spec);
      add_gguf_linear(out, m.config, l, kind, q[0]);
    }
    add_gguf_layer_vectors(out, m.config, l, layer);
  }
  test::TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  out.write(path);
  const io::GgufReader file(path);
  EXPECT_EQ(file.tensor("blk.1.attn_q.weight").type, GgmlType::f16);
  EXPECT_EQ(file.tensor("token_embd.weight").type, GgmlType::f16);
  EXPECT_EQ(file.tensor("blk.0.attn_k.bias").shape, (std::vector<std::int64_t>{8}));
  const Model back = load_all(open_gguf(path));
  EXPECT_EQ(back.config.rope_style, RopeStyle::interleaved);
  const std::vector<int> tokens{1, 7, 3, 22, 0, 9, 14, 5, 11, 2, 19, 4};
  const MatrixF expected = model_logits(m, tokens), got = model_logits(back, tokens);
  EXPECT_LT((got - expected).cwiseAbs().maxCoeff(), 2e-2 * expected.cwiseAbs().maxCoeff());
  // Without the pair order the model is a different one.
  Model unpermuted = back;
  unpermuted.config.rope_style = RopeStyle::half;
  unpermuted.rope = rope_tables(unpermuted.config);
  EXPECT_GT((model_logits(unpermuted, tokens) - expected).cwiseAbs().maxCoeff(),
            0.1 * expected.cwiseAbs().maxCoeff());
}

std::vector<unsigned char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// declare_gguf_tensors declares what the add_* functions write (a separate
// classifier, llama3's rope_freqs, q/k/v biases, q8_0 rows and F16 ones):
// streamed in the order quantize-model produces them, the file is the
// in-memory writer's, and written in another order it still is.
TEST(GgufModel, DeclaredTensorsAreTheOnesTheAddFunctionsWrite) {
  Model m = test::tiny_model(6, Config{64, 80, 2, 4, 2, 40, 16});
  m.config.rope_scaling = {RopeScaling::Type::llama3, 8.0f, 1.0f, 4.0f, 64};
  m.classifier = MatrixF::Random(40, 64);
  for (Layer& layer : m.layers)
    for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv})
      layer.biases[index(kind)] = VectorF::Random(layer.linear(kind).out_features());
  const GgmlType type = GgmlType::q8_0;  // 80-wide rows of ffn_down fall back to F16
  std::vector<std::vector<QuantizedLinear>> linears(2);
  for (int l = 0; l < 2; ++l)
    for (const LinearGroup& group : linear_groups())
      for (LinearKind kind : group.kinds) {  // what the ggml methods give
        const MatrixF& w = test::weight(m, l, kind);
        QuantizedLinear q;
        const GgmlType stored = ggml_type_for(type, w.cols());
        if (stored == GgmlType::f16)
          q = {std::make_shared<FloatLinear>(w), 16.0, {}, {}, {}};
        else
          q.ggml = quantize_ggml(w, {stored, {}}).weights;
        linears[std::size_t(l)].push_back(std::move(q));
      }
  auto add_layer = [&](io::GgufWriter& out, int l) {
    std::size_t i = 0;
    for (const LinearGroup& group : linear_groups())
      for (LinearKind kind : group.kinds)
        add_gguf_linear(out, m.config, l, kind, linears[std::size_t(l)][i++]);
    add_gguf_layer_vectors(out, m.config, l, m.layers[std::size_t(l)]);
  };
  io::GgufWriter memory;
  add_gguf_metadata(memory, m.config, type, "tiny");
  add_gguf_globals(memory, m, type);
  for (int l = 0; l < 2; ++l) add_layer(memory, l);
  const std::vector<unsigned char> expected = memory.bytes();
  EXPECT_EQ(io::GgufReader::from_bytes(expected).tensor("blk.1.ffn_down.weight").type,
            GgmlType::f16);

  test::TempDir dir;
  for (const bool globals_last : {false, true}) {
    SCOPED_TRACE(globals_last);
    io::GgufWriter streamed;
    add_gguf_metadata(streamed, m.config, type, "tiny");
    declare_gguf_tensors(streamed, m, type, m.layers[1]);
    io::StagedFile file(dir.file("s.gguf"));
    streamed.start(file);
    if (!globals_last) add_gguf_globals(streamed, m, type);
    for (int l = 1; l >= 0; --l) add_layer(streamed, l);
    if (globals_last) add_gguf_globals(streamed, m, type);
    streamed.finish();
    file.commit();
    EXPECT_TRUE(file_bytes(dir.file("s.gguf")) == expected);
  }
  // A layer the declaration did not foresee (a bias the sample has not) is refused by name.
  io::GgufWriter streamed;
  Layer plain = m.layers[0];
  plain.biases = {};
  declare_gguf_tensors(streamed, m, type, plain);
  io::StagedFile file(dir.file("t.gguf"));
  streamed.start(file);
  test::expect_error_containing([&] { add_gguf_layer_vectors(streamed, m.config, 0, m.layers[0]); },
                                "tensor 'blk.0.attn_q.bias': written but never declared");
}

// llama3 rope scaling as llama.cpp's converter writes it (LlamaModel
// generate_extra_tensors): per rotated pair, 1 for wavelengths below
// original / high_freq_factor, the factor above original / low_freq_factor,
// and 1 / ((1 - smooth) / factor + smooth) between; no rope.scaling keys.
TEST(GgufModel, Llama3RopeScalingIsTheConvertersRopeFreqs) {
  Model m = test::tiny_model(3, Config{16, 24, 1, 2, 2, 23, 12});
  m.config.rope_scaling = {RopeScaling::Type::llama3, 8.0f, 1.0f, 4.0f, 64};  // pairs 0, 1, 2+:
  io::GgufWriter out;
  add_gguf_metadata(out, m.config, GgmlType::f16, "tiny");
  add_gguf_globals(out, m, GgmlType::f16);
  const io::GgufReader file = io::GgufReader::from_bytes(out.bytes());
  EXPECT_FALSE(file.contains("llama.rope.scaling.type"));
  const MatrixF factors = file.matrix("rope_freqs.weight");
  ASSERT_EQ(factors.size(), 4);
  const double pi = 3.14159265358979323846;
  const double low_wavelen = 64 / 1.0, high_wavelen = 64 / 4.0;  // 1, smooth, factor
  for (int i = 0; i < 4; ++i) {
    const double freq = 1.0 / std::pow(10000.0, 2.0 * i / 8.0), wavelen = 2 * pi / freq;
    double expected = 1;
    if (wavelen > low_wavelen) {
      expected = 8;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (64 / wavelen - 1.0) / (4.0 - 1.0);
      expected = 1 / ((1 - smooth) / 8 + smooth);
    }
    EXPECT_NEAR(factors.data()[i], expected, 1e-5 * expected) << i;
  }
}

TEST(GgufModel, HostileFilesAreRefusedByName) {
  test::TempDir dir;
  io::GgufWriter out;
  out.set("general.architecture", "qwen3");
  out.write(dir.file("arch.gguf"));
  test::expect_error_containing([&] { open_gguf(dir.file("arch.gguf")); },
                                "general.architecture is 'qwen3'");
  Model m = test::tiny_model(2);
  io::GgufWriter shapes;
  add_gguf_metadata(shapes, m.config, GgmlType::f16, "tiny");
  shapes.set("llama.embedding_length", std::uint32_t{15});
  add_gguf_globals(shapes, m, GgmlType::f16);
  shapes.write(dir.file("shapes.gguf"));
  test::expect_error_containing([&] { open_gguf(dir.file("shapes.gguf")); },
                                "tensor 'token_embd.weight' has shape [16, 23], expected [15, 23]");
}

class GgufModelCli : public test::ToolTest {};

// The tensors llama.cpp's LLaMA loader creates for stories260K (tied
// classifier: no output.weight), in llama.cpp's names and ggml shapes.
TEST_F(GgufModelCli, stories260k_llama2c_and_hf_sources_give_the_same_file) {
  REQUIRE_STORIES260K(m);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  test::write_hf_directory(*m, dir.file("hf"));
  const std::string common =
      " --format gguf --type q8_0 --method rtn --calib-samples 2 --calib-length 16 --out ";
  const test::CommandResult a =
      lowbit("quantize-model --model " + model_path + common + dir.file("a.gguf"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  const test::CommandResult b =
      lowbit("quantize-model --model " + dir.file("hf") + common + dir.file("b.gguf"));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const io::GgufReader file_a(dir.file("a.gguf")), file_b(dir.file("b.gguf"));
  EXPECT_EQ(file_a.get<std::string>("general.architecture"), "llama");
  EXPECT_EQ(file_a.get<std::string>("tokenizer.ggml.model"), "none");
  EXPECT_EQ(file_a.get<std::uint32_t>("general.file_type"), 7u);  // LLAMA_FTYPE_MOSTLY_Q8_0
  const std::vector<std::pair<std::string, std::uint32_t>> counts{
      {"llama.vocab_size", 512},
      {"llama.context_length", 512},
      {"llama.embedding_length", 64},
      {"llama.block_count", 5},
      {"llama.feed_forward_length", 192},
      {"llama.attention.head_count", 8},
      {"llama.attention.head_count_kv", 4},
      {"llama.rope.dimension_count", 8}};
  for (const auto& [key, value] : counts) EXPECT_EQ(file_a.get<std::uint32_t>(key), value) << key;
  EXPECT_EQ(file_a.get<float>("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
  EXPECT_EQ(file_a.get<float>("llama.rope.freq_base"), 10000.0f);

  std::map<std::string, std::pair<GgmlType, std::vector<std::int64_t>>> expected{
      {"token_embd.weight", {GgmlType::q8_0, {64, 512}}},
      {"output_norm.weight", {GgmlType::f32, {64}}}};
  for (int l = 0; l < 5; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    expected[blk + "attn_norm.weight"] = {GgmlType::f32, {64}};
    expected[blk + "ffn_norm.weight"] = {GgmlType::f32, {64}};
    expected[blk + "attn_q.weight"] = {GgmlType::q8_0, {64, 64}};
    expected[blk + "attn_k.weight"] = {GgmlType::q8_0, {64, 32}};
    expected[blk + "attn_v.weight"] = {GgmlType::q8_0, {64, 32}};
    expected[blk + "attn_output.weight"] = {GgmlType::q8_0, {64, 64}};
    expected[blk + "ffn_gate.weight"] = {GgmlType::q8_0, {64, 192}};
    expected[blk + "ffn_up.weight"] = {GgmlType::q8_0, {64, 192}};
    expected[blk + "ffn_down.weight"] = {GgmlType::q8_0, {192, 64}};
  }
  ASSERT_EQ(file_a.tensors().size(), expected.size());
  for (const io::GgufTensorInfo& t : file_a.tensors()) {
    ASSERT_EQ(expected.count(t.name), 1u) << t.name;
    EXPECT_EQ(t.type, expected[t.name].first) << t.name;
    EXPECT_EQ(t.shape, expected[t.name].second) << t.name;
    // Q8_0 ignores the importance matrix: the Hugging Face directory's q and k,
    // stored in its own pair order, come out in llama.cpp's as the file's do.
    const io::GgufTensorInfo& u = file_b.tensor(t.name);
    ASSERT_EQ(u.bytes, t.bytes) << t.name;
    EXPECT_TRUE(std::equal(file_a.data(t.name), file_a.data(t.name) + t.bytes, file_b.data(t.name)))
        << t.name;
  }
}

// GPTQ and AWQ into Q4_K (llama.cpp's fallback Q5_0 for 64- and 192-wide
// rows; AWQ's scales folded into the norms) and llama.cpp's quantizer: `gguf logits` on the written
// file computes what the same quantization in this process computes (calibrated on the sequences
// the tool samples, seed 1), with token_embd in Q5_0 as the file stores it.
TEST_F(GgufModelCli, stories260k_gguf_logits_are_the_quantized_models) {
  REQUIRE_STORIES260K(m);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  const Model padded = pad_hidden(*m, 64);
  const std::vector<Sequence> calibration = sample_sequences(padded, 4, 64, 1.0f, 1);
  const std::vector<Sequence> text = sample_sequences(*m, 1, 40, 1.0f, 11);
  std::string tokens;
  for (int t : text[0]) tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
  for (const auto& [method, internal] : std::vector<std::pair<std::string, std::string>>{
           {"gptq", "gptq-gguf"}, {"awq", "awq-gguf"}, {"rtn", "llama.cpp"}}) {
    SCOPED_TRACE(method);
    const std::string file_name = dir.file(method + ".gguf");
    const test::CommandResult q =
        lowbit("quantize-model --model " + model_path + " --format gguf --method " + method +
               " --calib-samples 4 --out " + file_name);
    ASSERT_EQ(q.exit_code, 0) << q.output;
    const io::GgufReader file(file_name);
    EXPECT_EQ(file.tensor("blk.2.ffn_down.weight").type, GgmlType::q5_0);
    EXPECT_EQ(file.get<std::uint32_t>("general.file_type"), 14u);
    const test::CommandResult r =
        lowbit("gguf logits " + file_name + " --tokens " + tokens + " --out " + dir.file("l.st"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const MatrixF got = io::SafetensorsReader(dir.file("l.st")).matrix("logits");

    QuantizedModel expected =
        quantize_model(padded, calibration, {internal, 4, 32, false, GgmlType::q4_k});
    expected.model.token_embedding =
        quantize_ggml(padded.token_embedding, {GgmlType::q5_0, {}}).weights.dequantize();
    const MatrixF want = model_logits(expected.model, text[0]);
    ASSERT_EQ(got.rows(), want.rows());
    EXPECT_LT((got - want).cwiseAbs().maxCoeff(), 1e-4 * want.cwiseAbs().maxCoeff());
  }
}

// The tool streams its file; the same quantization written whole in memory,
// tensor by tensor in the order the tool produces them, gives the same bytes.
TEST_F(GgufModelCli, stories260k_streamed_file_is_the_in_memory_one) {
  REQUIRE_STORIES260K(m);
  const std::string model_path = *lowbit::test::model_file("stories260K.bin");
  const test::CommandResult q =
      lowbit("quantize-model --model " + model_path +
             " --format gguf --method rtn --calib-samples 4 --out " + dir.file("s.gguf"));
  ASSERT_EQ(q.exit_code, 0) << q.output;

  const Model padded = pad_hidden(*m, 64);
  const GgmlType type = GgmlType::q4_k;
  std::vector<std::array<QuantizedLinear, kLinearsPerLayer>> linears(
      std::size_t(padded.config.n_layers));
  const QuantizedModel quantized = quantize_model(
      padded, sample_sequences(padded, 4, 64, 1.0f, 1), {"llama.cpp", 4, 32, false, type}, {},
      [&](int l, LinearKind kind, const QuantizedLinear& r) {
        linears[std::size_t(l)][index(kind)] = r;
      });
  io::GgufWriter out;
  add_gguf_metadata(out, padded.config, type, "stories260K");
  add_gguf_no_tokenizer(out);
  out.set("general.quantized_by", "lowbit quantize-model --method llama.cpp");
  add_gguf_globals(out, padded, type);
  for (int l = 0; l < padded.config.n_layers; ++l) {
    for (const LinearGroup& group : linear_groups())
      for (LinearKind kind : group.kinds)
        add_gguf_linear(out, padded.config, l, kind, linears[std::size_t(l)][index(kind)]);
    add_gguf_layer_vectors(out, padded.config, l, quantized.model.layers[std::size_t(l)]);
  }
  const std::vector<unsigned char> streamed = file_bytes(dir.file("s.gguf"));
  EXPECT_TRUE(streamed == out.bytes()) << streamed.size() << " bytes streamed";
}

// SIGINT or SIGTERM while the file streams ends the run with 128 + the signal
// and leaves neither the file nor its temporary.
TEST_F(GgufModelCli, AnInterruptedRunLeavesNoFile) {
  test::write_file(dir.file("m.bin"),
                   test::llama2c_bytes(test::tiny_model(44, Config{256, 512, 3, 8, 8, 512, 64})));
  test::expect_interrupted_runs_leave_nothing(
      dir,
      "quantize-model --model " + dir.file("m.bin") +
          " --format gguf --method rtn --calib-samples 2 --calib-length 8",
      "m.bin", "q.gguf");
}

TEST_F(GgufModelCli, MisuseExitsWithTwo) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"quantize-model --model m.bin --out o.gguf --format gguf --bits 4", "--bits does not apply"},
      {"quantize-model --model m.bin --out o.gguf --format gguf --method bpdq",
       "--format gguf takes --method gptq"},
      {"quantize-model --model m.bin --out o.gguf --format gguf --gguf-type q9_K",
       "option --gguf-type: 'q9_K'"},
      {"quantize-model --model m.bin --out o.st --gguf-type q4_0",
       "--gguf-type needs --format gguf"},
      {"quantize-model --model m.bin --out o.st --type q4_0", "--type needs --format gguf"},
      {"quantize-model --model m.bin --out o.gguf --format gguf --type q4_k --gguf-type q4_k",
       "give --type or --gguf-type, not both"},
      {"quantize-model --model m.bin --out o.gguf --format gguf --type q7_k",
       "option --type: 'q7_k'"},
      {"quantize-model --model m.bin --out o.gguf --format gguf --method rtn --act-order",
       "--act-order applies to --method gptq only"},
      {"gguf logits x.gguf --tokens 1,a --out l.st", "option --tokens: 'a' is not a token id"},
      {"gguf logits x.gguf --tokens , --out l.st", "is not a token id"},
  };
  for (const auto& [args, message] : cases) {
    const test::CommandResult r = lowbit(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace lowbit::model
