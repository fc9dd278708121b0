// quantize-model --layers A:B and `lowbit merge`: slices of stories260K and
// of a Hugging Face directory, merged in shuffled order, are byte for byte
// (every file) what one quantize-model run with --calibration float writes;
// slices that do not fit together (other options, overlap, gap, truncated,
// mixed formats) are refused with errors naming them; misuse exits with 2.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "hf_fixtures.hpp"

namespace lowbit::model {
namespace {

namespace fs = std::filesystem;

class Slices : public test::ToolTest {};

// Every file under `path` (a file, or a directory's regular files) by name.
std::map<std::string, std::vector<std::uint8_t>> slices_files(const std::string& path) {
  std::map<std::string, std::vector<std::uint8_t>> files;
  if (!fs::is_directory(path)) {
    files[""] = test::file_bytes(path);
    return files;
  }
  for (const auto& entry : fs::directory_iterator(path))
    files[entry.path().filename().string()] = test::file_bytes(entry.path().string());
  return files;
}

void slices_expect_same(const std::string& merged, const std::string& single) {
  const auto a = slices_files(merged), b = slices_files(single);
  std::vector<std::string> names_a, names_b;
  for (const auto& [name, bytes] : a) names_a.push_back(name);
  for (const auto& [name, bytes] : b) names_b.push_back(name);
  ASSERT_EQ(names_a, names_b) << merged << " vs " << single;
  for (const auto& [name, bytes] : a) {
    EXPECT_GT(bytes.size(), 0u) << name;
    EXPECT_TRUE(bytes == b.at(name)) << merged << "/" << name << " differs from " << single;
  }
}

// One run, then the slices of each partition merged in a shuffled order;
// `options` must hold --calibration float. Returns the single run's path.
std::string slices_check_partitions(const Slices& t, const std::string& model,
                                    const std::string& options, const std::string& stem,
                                    int n_layers) {
  const std::string single = t.dir.file(stem + "-single");
  const std::string base = "quantize-model --model " + model + " " + options;
  const test::CommandResult r = t.lowbit(base + " --out " + single);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::vector<std::pair<int, int>>> partitions{{{0, 2}, {2, n_layers}}, {}};
  for (int l = 0; l < n_layers; ++l) partitions[1].emplace_back(l, l + 1);
  std::mt19937 rng(7);
  for (std::size_t p = 0; p < partitions.size(); ++p) {
    std::vector<std::string> slices;
    for (const auto& [begin, end] : partitions[p]) {
      const std::string range = std::to_string(begin) + ":" + std::to_string(end);
      slices.push_back(t.dir.file(stem + "-slice" + std::to_string(p) + "-" + range));
      const test::CommandResult s =
          t.lowbit(base + " --layers " + range + " --out " + slices.back());
      EXPECT_EQ(s.exit_code, 0) << s.output;
    }
    std::shuffle(slices.begin(), slices.end(), rng);
    std::string list;
    for (const std::string& s : slices) list += " " + s;
    const std::string merged = t.dir.file(stem + "-merged" + std::to_string(p));
    const test::CommandResult m = t.lowbit("merge " + merged + list);
    EXPECT_EQ(m.exit_code, 0) << m.output;
    SCOPED_TRACE("partition " + std::to_string(p) + ":" + list);
    slices_expect_same(merged, single);
  }
  return single;
}

const char* const kSlicesCalibration = " --calibration float --calib-samples 2 --calib-length 16";

TEST_F(Slices, stories260k_slices_merge_into_the_single_run) {
  const std::optional<std::string> model = test::model_file("stories260K.bin");
  if (!model) GTEST_SKIP() << "stories260K.bin not found";
  // 3 bits and a small shard size: several shards, fields across words.
  const std::string gptq = slices_check_partitions(
      *this, *model,
      std::string("--format gptq --bits 3 --max-shard-size 40KB") + kSlicesCalibration, "gptq", 5);
  EXPECT_TRUE(fs::exists(gptq + "/model.safetensors.index.json"));
  slices_check_partitions(
      *this, *model, std::string("--format gguf --type q4_0 --method rtn") + kSlicesCalibration,
      "gguf", 5);
}

// A Hugging Face source (sharded, F16, separate lm_head, fewer value heads)
// in every format; awq folds its scales into norms and producers.
TEST_F(Slices, hf_slices_merge_into_the_single_run_in_every_format) {
  Model m = test::tiny_model(41, Config{64, 40, 5, 4, 2, 37, 32});
  m.classifier = test::tiny_model(42, Config{64, 40, 1, 4, 2, 37, 32}).token_embedding;
  const std::string hf = dir.file("hf");
  test::write_hf_directory(m, hf, {io::Dtype::F16, 2});
  const std::vector<std::pair<std::string, std::string>> cases{
      {"gptq", "--format gptq --method gptq --act-order"},
      {"awq", "--format awq --method awq --group-size 32"},
      {"bpdq", "--format bpdq --method bpdq --bits 2"},
      {"gguf", "--format gguf --method gptq --type q4_K"}};
  for (const auto& [stem, options] : cases) {
    SCOPED_TRACE(options);
    slices_check_partitions(*this, hf, options + kSlicesCalibration, stem + "-hf", 5);
  }
}

class SlicesHostile : public Slices {
 protected:
  void SetUp() override {
    Slices::SetUp();
    if (IsSkipped()) return;
    const Model m = test::tiny_model(43, Config{64, 40, 5, 4, 2, 37, 32});
    test::write_hf_directory(m, dir.file("hf"));
  }
  // The slice A:B of the model in `format`, with `extra` options.
  std::string slice(const std::string& range, const std::string& format = "gptq",
                    const std::string& extra = "") {
    const std::string out = dir.file(format + extra.substr(0, extra.find(' ')) + range);
    if (fs::exists(out)) return out;
    const test::CommandResult r =
        lowbit("quantize-model --model " + dir.file("hf") + " --format " + format + " " + extra +
               kSlicesCalibration + " --layers " + range + " --out " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }
  // `lowbit merge OUT SLICES` fails with `code`, its message holding each of `texts`.
  void expect_refused(const std::string& slices, int code, const std::vector<std::string>& texts) {
    const std::string out = dir.file("merged");
    const test::CommandResult r = lowbit("merge " + out + " " + slices);
    EXPECT_EQ(r.exit_code, code) << r.output;
    for (const std::string& text : texts)
      EXPECT_NE(r.output.find(text), std::string::npos) << text << "\n" << r.output;
    EXPECT_FALSE(fs::exists(out));
    for (const auto& entry : fs::directory_iterator(dir.file("")))
      EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
  }
};

TEST_F(SlicesHostile, slices_that_do_not_fit_together_are_refused) {
  const std::string a = slice("0:2"), b = slice("2:5"), c = slice("1:5"), d = slice("3:5");
  expect_refused(a + " " + c, 1, {"two slices hold layer 1", a, c});
  expect_refused(a + " " + d, 1, {"no slice holds layer 2 of the model's 5", d});
  expect_refused(a, 1, {"no slice holds layers 2..4 of the model's 5", a});
  expect_refused(a + " " + b + " " + b, 1, {"two slices hold layers 2..4"});
  const std::string bits = slice("2:5", "gptq", "--bits 8");
  expect_refused(a + " " + bits, 1, {bits, "another model or other options", "bits"});
  const std::string awq = slice("2:5", "awq", "--method awq");
  expect_refused(a + " " + awq, 1, {awq, "format"});
  const std::string gguf = slice("2:5", "gguf");
  expect_refused(a + " " + gguf, 1, {"mix formats"});
  expect_refused(gguf, 1, {"no slice holds layers 0..1"});
  expect_refused(dir.file("hf"), 1, {"lowbit-slice.json", "not a slice"});
  expect_refused(dir.file("absent"), 1, {"absent: no such slice"});
  expect_refused("", 2, {"no slices"});
  // Truncated: a shard, and the GGUF file.
  const std::string cut = dir.file("cut");
  fs::copy(b, cut);
  fs::resize_file(cut + "/model.safetensors", fs::file_size(cut + "/model.safetensors") - 100);
  expect_refused(a + " " + cut, 1, {cut + "/model.safetensors"});
  const std::string cut_gguf = dir.file("cut.gguf");
  fs::copy(slice("0:2", "gguf"), cut_gguf);
  fs::resize_file(cut_gguf, fs::file_size(cut_gguf) - 100);
  expect_refused(cut_gguf + " " + gguf, 1, {cut_gguf});
  // A directory where the slice's record file is expected.
  const std::string hollow = dir.file("hollow");
  fs::copy(b, hollow);
  fs::remove(hollow + "/lowbit-slice.json");
  fs::create_directory(hollow + "/lowbit-slice.json");
  expect_refused(a + " " + hollow, 1, {hollow, "lowbit-slice.json"});
  // A slice whose config was edited after it was written.
  const std::string edited = dir.file("edited");
  fs::copy(b, edited);
  std::ofstream(edited + "/config.json", std::ios::app) << " ";
  expect_refused(a + " " + edited, 1, {edited + "/config.json differs"});
  // An output that exists.
  fs::create_directory(dir.file("full"));
  std::ofstream(dir.file("full") + "/x") << "x";
  const test::CommandResult r = lowbit("merge " + dir.file("full") + " " + a + " " + b);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("exists"), std::string::npos) << r.output;
}

TEST_F(SlicesHostile, layers_option_misuse_exits_with_2) {
  const std::string base = "quantize-model --model " + dir.file("hf") + " --out " + dir.file("o") +
                           " --calib-samples 2 --calib-length 16 ";
  test::CommandResult r = lowbit(base + "--layers 0:2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--layers needs --calibration float"), std::string::npos) << r.output;
  r = lowbit(base + "--calibration float --layers 2:9");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the model's 5 layers"), std::string::npos) << r.output;
  for (const char* bad : {"3:2", "2", "-1:2", "a:b", "2:2"}) {
    r = lowbit(base + "--calibration float --layers " + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("option --layers"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(fs::exists(dir.file("o")));
}

}  // namespace
}  // namespace lowbit::model
