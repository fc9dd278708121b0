// Tokenizers into GGUF (model/gguf_tokenizer.hpp): the tokenizer.ggml.* keys
// llama.cpp's converter writes, held against SentencePiece's own tools
// (spm_train makes the tokenizer.model, spm_export_vocab lists its pieces and
// scores) and against tokenizer.json / tokenizer_config.json files written
// here by hand in the Hugging Face formats, with the expected keys spelled out
// from convert_hf_to_gguf.py and gguf-py's SpecialVocab.
#include <cstring>
#include <functional>
#include <lowbit/model/gguf_tokenizer.hpp>
#include <sstream>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

using Types = std::vector<std::int32_t>;
using Strings = std::vector<std::string>;

io::GgufReader tokenizer_keys(const std::string& dir, int vocab_size) {
  io::GgufWriter out;
  EXPECT_TRUE(add_gguf_tokenizer(out, dir, vocab_size));
  return io::GgufReader::from_bytes(out.bytes());
}

void expect_error(const std::function<void()>& f, const Strings& fragments) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << fragments.front() << "'";
  } catch (const Error& e) {
    for (const std::string& fragment : fragments)
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// The protobuf encoding (protobuf.dev, "Encoding"): varints, tags
// (field << 3 | wire type), length-delimited and fixed32 fields.
std::string varint(std::uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += char(0x80 | (v & 0x7f));
  return out + char(v);
}
std::string length_delimited(int field, const std::string& payload) {
  return varint(std::uint64_t(field) << 3 | 2) + varint(payload.size()) + payload;
}
std::string piece_message(const std::string& piece, float score, int type) {
  std::string bits(4, '\0');
  std::memcpy(bits.data(), &score, 4);
  return length_delimited(1, piece) + varint(2 << 3 | 5) + bits + varint(3 << 3 | 0) +
         varint(std::uint64_t(type));
}

struct Piece {
  std::string text;
  float score;
  int type;
};

// A ModelProto: a trainer_spec (field 2, skipped) and the pieces.
std::string model_proto(const std::vector<Piece>& pieces) {
  std::string out = length_delimited(2, varint(1 << 3 | 0) + varint(300));
  for (const Piece& p : pieces) out += length_delimited(1, piece_message(p.text, p.score, p.type));
  return out;
}

bool spm_tools_present() { return test::run_command("command -v spm_train").exit_code == 0; }

// spm_export_vocab's "piece<TAB>score" lines.
std::vector<std::pair<std::string, float>> exported_vocab(const std::string& model) {
  const test::CommandResult r = test::run_command("spm_export_vocab --model=" + model);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::pair<std::string, float>> out;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t tab = line.find('\t');
    EXPECT_NE(tab, std::string::npos) << line;
    out.emplace_back(line.substr(0, tab), std::stof(line.substr(tab + 1)));
  }
  return out;
}

// Real tokenizer.model files from sentencepiece's trainer (byte-fallback
// BPE as Llama's, and unigram for non-integer scores): every piece and score
// as spm_export_vocab lists them, the types by sentencepiece's layout (<unk>,
// <s>, </s>, control then user-defined symbols, the 256 byte pieces), and the
// ids past the model up to vocab_size as the converter's "[PAD{id}]".
TEST(GgufTokenizer, SentencePieceModelsTrainedBySentencepiece) {
  if (!spm_tools_present()) GTEST_SKIP() << "spm_train not on PATH (Debian: sentencepiece)";
  test::TempDir dir;
  std::string corpus;
  const Strings words = {"once",  "upon", "a",   "time",    "there", "was",   "little", "girl",
                         "named", "lily", "she", "loved",   "to",    "play",  "in",     "the",
                         "park",  "with", "her", "friends", "café",  "naïve", "über"};
  for (int line = 0; line < 200; ++line) {
    for (int w = 0; w < 10; ++w) corpus += words[(line * 7 + w * w * 3 + w) % words.size()] + " ";
    corpus += "\n";
  }
  test::write_text(dir.file("corpus.txt"), corpus);
  for (const std::string& type :
       Strings{"bpe --byte_fallback=true", "unigram --hard_vocab_limit=false"}) {
    SCOPED_TRACE(type);
    const std::string model_dir = dir.file(type.substr(0, 3));
    std::filesystem::create_directories(model_dir);
    const test::CommandResult trained = test::run_command(
        "spm_train --input=" + dir.file("corpus.txt") + " --model_prefix=" + model_dir +
        "/tokenizer --vocab_size=300 --character_coverage=1.0 '--control_symbols=<ctl>' "
        "'--user_defined_symbols=<usr>' --minloglevel=2 --model_type=" +
        type);
    ASSERT_EQ(trained.exit_code, 0) << trained.output;
    const auto exported = exported_vocab(model_dir + "/tokenizer.model");
    ASSERT_GT(exported.size(), 50u);
    const int vocab_size = int(exported.size()) + 3;
    const io::GgufReader f = tokenizer_keys(model_dir, vocab_size);
    EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "llama");
    EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "default");
    const Strings tokens = f.get<Strings>("tokenizer.ggml.tokens");
    const std::vector<float> scores = f.get<std::vector<float>>("tokenizer.ggml.scores");
    const Types types = f.get<Types>("tokenizer.ggml.token_type");
    ASSERT_EQ(tokens.size(), std::size_t(vocab_size));
    ASSERT_EQ(scores.size(), std::size_t(vocab_size));
    ASSERT_EQ(types.size(), std::size_t(vocab_size));
    int bytes = 0;
    for (std::size_t i = 0; i < exported.size(); ++i) {
      const std::string& piece = exported[i].first;
      EXPECT_EQ(tokens[i], piece) << i;
      EXPECT_NEAR(scores[i], exported[i].second, 1e-5 * (1 + std::abs(exported[i].second))) << i;
      const bool byte = piece.size() == 6 && piece.compare(0, 3, "<0x") == 0;
      bytes += byte;
      const int expected = piece == "<unk>"                                        ? 2
                           : piece == "<s>" || piece == "</s>" || piece == "<ctl>" ? 3
                           : byte                                                  ? 6
                                                                                   : 1;
      EXPECT_EQ(types[i], expected) << piece;
    }
    EXPECT_EQ(tokens[0], "<unk>");
    EXPECT_EQ(tokens[1], "<s>");
    EXPECT_EQ(tokens[2], "</s>");
    EXPECT_EQ(bytes, type.compare(0, 3, "bpe") == 0 ? 256 : 0);
    for (std::size_t i = exported.size(); i < tokens.size(); ++i) {
      EXPECT_EQ(tokens[i], "[PAD" + std::to_string(i) + "]");
      EXPECT_EQ(scores[i], -10000.0f);
      EXPECT_EQ(types[i], 5);
    }
    for (const char* key :
         {"tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token"})
      EXPECT_FALSE(f.contains(key)) << key;  // llama.cpp's SPM defaults apply
  }
}

// _create_vocab_sentencepiece's added tokens (added_tokens.json, then
// tokenizer_config.json's added_tokens_decoder, ids past vocab_size skipped)
// and SpecialVocab without tokenizer.json: flags from tokenizer_config.json,
// ids from config.json only.
TEST(GgufTokenizer, SentencePieceAddedAndSpecialTokens) {
  test::TempDir dir;
  test::write_text(dir.file("tokenizer.model"), model_proto({{"<unk>", 0.0f, 2},
                                                             {"<s>", 0.0f, 3},
                                                             {"</s>", 0.0f, 3},
                                                             {"\xe2\x96\x81"
                                                              "a",
                                                              -1.5f, 1},
                                                             {"<0x0A>", 0.0f, 6},
                                                             {"<usr>", 0.0f, 4}}));
  test::write_text(dir.file("added_tokens.json"), R"({"<extra>": 6, "<far>": 40})");
  test::write_text(dir.file("tokenizer_config.json"), R"json({
    "add_bos_token": true, "add_eos_token": false,
    "bos_token": "<s>", "eos_token": {"content": "</s>", "special": true},
    "added_tokens_decoder": {
      "1": {"content": "<s>", "special": true},
      "7": {"content": "<|im_start|>", "special": false},
      "8": {"content": "\u2581hi\u2581there", "special": false},
      "60": {"content": "<gone>", "special": true}},
    "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"})json");
  test::write_text(dir.file("config.json"),
                   R"({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 12})");
  const io::GgufReader f = tokenizer_keys(dir.file(""), 10);
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.tokens"),
            (Strings{"<unk>", "<s>", "</s>",
                     "\xe2\x96\x81"
                     "a",
                     "<0x0A>", "<usr>", "<extra>", "<|im_start|>", " hi there", "[PAD9]"}));
  EXPECT_EQ(f.get<std::vector<float>>("tokenizer.ggml.scores"),
            (std::vector<float>{0, -1000, 0, -1.5f, 0, 0, -1000, -1000, -1000, -10000}));
  EXPECT_EQ(f.get<Types>("tokenizer.ggml.token_type"), (Types{2, 3, 3, 1, 6, 1, 4, 3, 4, 5}));
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_FALSE(f.contains("tokenizer.ggml.padding_token_id"));  // 12: past the vocabulary
  EXPECT_FALSE(f.contains("tokenizer.ggml.unknown_token_id"));
  EXPECT_TRUE(f.get<bool>("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.get<bool>("tokenizer.ggml.add_eos_token"));
  EXPECT_EQ(f.get<std::string>("tokenizer.chat_template"),
            "{% for m in messages %}{{ m.content }}{% endfor %}");
}

// A Llama 3 tokenizer.json in miniature: the pre_tokenizer and post_processor
// as Meta's file has them, "a b" merges, special added tokens.
constexpr const char* kLlama3Tokenizer = R"json({
  "version": "1.0",
  "added_tokens": [
    {"id": 5, "content": "<|begin_of_text|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true},
    {"id": 6, "content": "<|end_of_text|>", "single_word": false, "lstrip": false,
     "rstrip": false, "normalized": false, "special": true},
    {"id": 7, "content": "\u2581x y", "special": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
  "post_processor": {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
              {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
              {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {}}]},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": true,
            "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4},
            "merges": ["a b", "\u0120 ab"]}})json";

TEST(GgufTokenizer, Llama3TokenizerJson) {
  test::TempDir dir;
  test::write_text(dir.file("tokenizer.json"), kLlama3Tokenizer);
  test::write_text(dir.file("tokenizer_config.json"), R"json({
    "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
    "chat_template": "{{ bos_token }}", "model_max_length": 131072})json");
  test::write_text(dir.file("config.json"), R"({"bos_token_id": 5, "eos_token_id": 6})");
  const io::GgufReader f = tokenizer_keys(dir.file(""), 10);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.tokens"),
            (Strings{"a", "b", "ab", "\xc4\xa0",
                     "\xc4\xa0"
                     "ab",
                     "<|begin_of_text|>", "<|end_of_text|>", " x y", "[PAD8]", "[PAD9]"}));
  EXPECT_EQ(f.get<Types>("tokenizer.ggml.token_type"), (Types{1, 1, 1, 1, 1, 3, 3, 4, 5, 5}));
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.merges"), (Strings{"a b", "\xc4\xa0 ab"}));
  EXPECT_FALSE(f.contains("tokenizer.ggml.scores"));
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), 5u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.eos_token_id"), 6u);
  EXPECT_TRUE(f.get<bool>("tokenizer.ggml.add_bos_token"));  // the TemplateProcessing
  EXPECT_FALSE(f.contains("tokenizer.ggml.add_eos_token"));
  EXPECT_EQ(f.get<std::string>("tokenizer.chat_template"), "{{ bos_token }}");
}

// Qwen2 in miniature: its Split regex (\p{N} one digit at a time), [a, b]
// merges (spaces inside a part as U+0120), added tokens past model.vocab with
// a gap the converter fills with "[PAD{id}]", eos and pad from
// tokenizer_config.json, bos from config.json only.
TEST(GgufTokenizer, Qwen2TokenizerJson) {
  test::TempDir dir;
  test::write_text(dir.file("tokenizer.json"), R"json({
  "added_tokens": [
    {"id": 4, "content": "<|endoftext|>", "special": true},
    {"id": 6, "content": "<|im_end|>", "special": true},
    {"id": 5, "content": "<tool_call>", "special": false}],
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "byte_fallback": false,
            "vocab": {"\u0120": 0, "a": 1, "a b": 2, "\u0120a b": 3},
            "merges": [["a", " b"], ["\u0120", "a b"]]}})json");
  test::write_text(dir.file("tokenizer_config.json"), R"json({
    "add_prefix_space": false, "bos_token": null, "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>", "unk_token": null, "add_bos_token": false})json");
  test::write_text(dir.file("config.json"),
                   R"({"bos_token_id": 4, "eos_token_id": 4, "vocab_size": 9})");
  const io::GgufReader f = tokenizer_keys(dir.file(""), 9);
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.pre"), "qwen2");
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.tokens"),
            (Strings{"\xc4\xa0", "a", "a b",
                     "\xc4\xa0"
                     "a b",
                     "<|endoftext|>", "<tool_call>", "<|im_end|>", "[PAD7]", "[PAD8]"}));
  // <tool_call> is not special and does not look it: USER_DEFINED.
  EXPECT_EQ(f.get<Types>("tokenizer.ggml.token_type"), (Types{1, 1, 1, 1, 3, 4, 3, 5, 5}));
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.merges"), (Strings{"a \xc4\xa0"
                                                              "b",
                                                              "\xc4\xa0 a\xc4\xa0"
                                                              "b"}));
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.eos_token_id"), 6u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.padding_token_id"), 4u);
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), 4u);
  EXPECT_FALSE(f.get<bool>("tokenizer.ggml.add_bos_token"));
  EXPECT_FALSE(f.contains("tokenizer.chat_template"));
}

TEST(GgufTokenizer, NoTokenizerFilesWritesNothing) {
  test::TempDir dir;
  test::write_text(dir.file("config.json"), R"({"bos_token_id": 1})");
  io::GgufWriter out;
  EXPECT_FALSE(add_gguf_tokenizer(out, dir.file(""), 32));
  EXPECT_TRUE(io::GgufReader::from_bytes(out.bytes()).keys().empty());
}

// Truncated and malformed tokenizer.model files: an error naming the file,
// never a crash or a silently shorter vocabulary inside a piece.
TEST(GgufTokenizer, HostileSentencePieceModels) {
  test::TempDir dir;
  const std::string path = dir.file("tokenizer.model");
  auto refused = [&](const std::string& bytes, const std::string& what) {
    test::write_text(path, bytes);
    io::GgufWriter out;
    expect_error([&] { add_gguf_tokenizer(out, dir.file(""), 64); }, {path, what});
  };
  const std::string good = model_proto({{"<unk>", 0.0f, 2}, {"hello", -2.0f, 1}});
  for (std::size_t cut = 1; cut < good.size(); ++cut) {
    test::write_text(path, good.substr(0, cut));
    io::GgufWriter out;
    try {
      add_gguf_tokenizer(out, dir.file(""), 64);
      // A cut between two fields of the model is a valid, shorter model.
      const std::size_t first =
          good.size() - length_delimited(1, piece_message("hello", -2, 1)).size();
      EXPECT_TRUE(cut == first) << cut;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  refused(std::string(12, '\xff'), "varint longer than 10 bytes");
  refused(varint(1 << 3 | 3), "unsupported protobuf wire type 3");
  refused(varint(1 << 3 | 2) + varint(1000) + "abc", "runs past the end");
  refused(varint(1 << 3 | 0) + varint(5), "field 1 has wire type 0, expected 2");
  refused(length_delimited(1, piece_message("x", 0.0f, 9)), "has type 9, expected 1..6");
  refused(length_delimited(2, "spec"), "no SentencePiece pieces");
  refused(model_proto(std::vector<Piece>(65, {"p", 0.0f, 1})),
          "more than config.json's vocab_size 64");
  test::write_text(path, model_proto({{"<unk>", 0.0f, 2}, {"hello", 0.0f, 1}}));
  test::write_text(dir.file("added_tokens.json"), R"({"hello": 5})");
  expect_error(
      [&] {
        io::GgufWriter out;
        add_gguf_tokenizer(out, dir.file(""), 64);
      },
      {"token 'hello' is both id 1 and id 5"});
  test::write_text(dir.file("added_tokens.json"), R"({"<x>": -3})");
  expect_error(
      [&] {
        io::GgufWriter out;
        add_gguf_tokenizer(out, dir.file(""), 64);
      },
      {dir.file("added_tokens.json"), "token id -3"});
}

// tokenizer.json files of the wrong shape: an error naming the file.
TEST(GgufTokenizer, HostileTokenizerJson) {
  test::TempDir dir;
  const std::string path = dir.file("tokenizer.json");
  auto refused = [&](const std::string& json, const std::string& what, int vocab_size = 16) {
    test::write_text(path, json);
    io::GgufWriter out;
    expect_error([&] { add_gguf_tokenizer(out, dir.file(""), vocab_size); }, {path, what});
  };
  std::string llama3 = kLlama3Tokenizer;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = llama3;
    const std::size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  refused("[1, 2]", "expected a JSON object");
  refused("{\"model\": ", "malformed JSON");
  refused(with(R"("ab": 2)", R"("ab": 9)"), "model.vocab ids are not dense 0..4");
  refused(with(R"("ab": 2)", R"("ab": 1)"), "token id 1 is both");
  refused(with(R"("ab": 2)", R"("ab": "2")"), "is not an integer token id");
  refused(with(R"("id": 6)", R"("id": 40)"), "added token '<|end_of_text|>' has id 40, past");
  refused(kLlama3Tokenizer, "past config.json's vocab_size 7", 7);
  refused(with(R"("id": 6)", R"("id": 2)"), "token id 2 is both 'ab' and '<|end_of_text|>'");
  refused(with("\\\\p{N}{1,3}", "\\\\p{N}+"), "pre-tokenizer not recognized");
  refused(with(R"("type": "BPE")", R"("type": "Unigram")"), "model.type is not \"BPE\"");
  refused(with(R"("byte_fallback": false)", R"("byte_fallback": true)"),
          "needs its tokenizer.model");
  refused(with(R"(["a b", "\u0120 ab"])", R"(["a b", ["x"]])"), "merge 1 is neither");
}

// quantize-model --format gguf carries a Hugging Face directory's tokenizer
// over and says so only when there is none.
class GgufTokenizerCli : public test::ToolTest {};

TEST_F(GgufTokenizerCli, QuantizeModelWritesTheDirectorysTokenizer) {
  const Model m = test::tiny_model(3);
  test::write_hf_directory(m, dir.file("hf"));
  const std::string args = "quantize-model --model " + dir.file("hf") +
                           " --format gguf --gguf-type q8_0 --method rtn --calib-samples 2 "
                           "--calib-length 8 --out ";
  const test::CommandResult none = lowbit(args + dir.file("none.gguf"));
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_NE(none.output.find("no tokenizer"), std::string::npos) << none.output;
  EXPECT_EQ(io::GgufReader(dir.file("none.gguf")).get<std::string>("tokenizer.ggml.model"), "none");

  std::vector<Piece> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
  for (int i = 3; i < m.config.vocab_size; ++i)
    pieces.push_back({"p" + std::to_string(i), -float(i), 1});
  test::write_text(dir.file("hf/tokenizer.model"), model_proto(pieces));
  const test::CommandResult spm = lowbit(args + dir.file("spm.gguf"));
  ASSERT_EQ(spm.exit_code, 0) << spm.output;
  EXPECT_EQ(spm.output.find("no tokenizer"), std::string::npos) << spm.output;
  const io::GgufReader f(dir.file("spm.gguf"));
  EXPECT_EQ(f.get<std::string>("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f.get<Strings>("tokenizer.ggml.tokens").size(), std::size_t(m.config.vocab_size));
  EXPECT_EQ(f.get<std::uint32_t>("tokenizer.ggml.bos_token_id"), std::uint32_t(m.config.bos_token));

  test::write_text(dir.file("hf/tokenizer.model"), "\xff\xff\xff");
  const test::CommandResult bad = lowbit(args + dir.file("bad.gguf"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("tokenizer.model"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace lowbit::model
