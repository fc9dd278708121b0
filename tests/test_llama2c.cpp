// lowbit/model/llama2c.hpp: llama2.c checkpoints written here field by field
// load back exactly (tied and separate classifiers), hostile ones fail with
// errors naming the problem; the real stories260K loads with the RoPE tables
// its exporter computed (tests named *stories260k*, skipped when absent).
#include <cstring>
#include <iterator>
#include <limits>
#include <lowbit/model/forward.hpp>
#include <lowbit/model/llama2c.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class Llama2c : public test::SingleThreaded {};

void expect_load_error(const std::string& path, const std::string& fragment) {
  try {
    load_llama2c(path);
    ADD_FAILURE() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

void expect_same_model(const Model& loaded, const Model& m) {
  EXPECT_EQ(loaded.token_embedding, m.token_embedding);
  EXPECT_EQ(loaded.classifier, m.classifier);
  for (int l = 0; l < m.config.n_layers; ++l) {
    for (LinearKind kind : kAllLinears)
      EXPECT_EQ(test::weight(loaded, l, kind), test::weight(m, l, kind)) << name(kind);
    EXPECT_EQ(loaded.layers[std::size_t(l)].attention_norm,
              m.layers[std::size_t(l)].attention_norm);
    EXPECT_EQ(loaded.layers[std::size_t(l)].ffn_norm, m.layers[std::size_t(l)].ffn_norm);
  }
  EXPECT_EQ(loaded.final_norm, m.final_norm);
  EXPECT_EQ(loaded.rope.cos, m.rope.cos);
  KvCache a(m.config), b(m.config);
  EXPECT_EQ(forward(loaded, a, {1, 2, 3}), forward(m, b, {1, 2, 3}));
}

TEST_F(Llama2c, LoadsCheckpointsAndRejectsBadOnes) {
  lowbit::test::TempDir dir;
  const Model m = test::tiny_model(3);
  const std::vector<char> good = test::llama2c_bytes(m);
  test::write_file(dir.file("good.bin"), good);
  expect_same_model(load_llama2c(dir.file("good.bin")), m);

  auto variant = [&](const std::string& file, std::vector<char> bytes) {
    test::write_file(dir.file(file), bytes);
    return dir.file(file);
  };
  auto with_header = [&](int field, std::int32_t value) {
    std::vector<char> bytes = good;
    std::memcpy(bytes.data() + 4 * field, &value, 4);
    return bytes;
  };
  expect_load_error(dir.file("absent.bin"), "cannot open");
  expect_load_error(variant("empty.bin", {}), "truncated (0 bytes");
  expect_load_error(variant("short.bin", std::vector<char>(good.begin(), good.end() - 1)),
                    "(truncated)");
  std::vector<char> longer = good;
  longer.push_back(0);
  expect_load_error(variant("long.bin", longer), "(trailing data)");
  expect_load_error(variant("heads.bin", with_header(3, 0)), "n_heads = 0");
  expect_load_error(variant("kv.bin", with_header(4, 3)),
                    "n_heads 4 is not a multiple of n_kv_heads 3");
  expect_load_error(variant("odd.bin", with_header(3, 16)), "head size 1 must be even");
  // A negative vocabulary announces a classifier this file does not hold.
  expect_load_error(variant("untied.bin", with_header(5, -23)), "(truncated)");
  expect_load_error(variant("vocab.bin", with_header(5, std::numeric_limits<std::int32_t>::min())),
                    "vocab_size = 0 is outside");
  expect_load_error(variant("huge.bin", with_header(0, 1 << 16)),
                    "expected");  // a lying header, not bad_alloc
  expect_load_error(variant("huger.bin", with_header(2, 1 << 30)),
                    "n_layers = 1073741824 is outside");
  std::vector<char> nan = good;
  const float bad = std::numeric_limits<float>::quiet_NaN();
  const std::size_t wk_of_layer1 = 28 + 4 * std::size_t(23 * 16 + 2 * 16 + 2 * 16 * 16 + 8 * 16);
  std::memcpy(nan.data() + wk_of_layer1 + 4, &bad, 4);
  expect_load_error(variant("nan.bin", nan), "wk of layer 1 has non-finite values");
}

TEST_F(Llama2c, ADirectoryIsNotACheckpoint) {
  test::expect_error_containing([] { load_llama2c(std::filesystem::temp_directory_path()); },
                                "not a regular file");
}

TEST_F(Llama2c, LoadsASeparateClassifier) {
  lowbit::test::TempDir dir;
  Model m = test::tiny_model(9);
  m.classifier = test::tiny_model(10).token_embedding;
  test::write_file(dir.file("untied.bin"), test::llama2c_bytes(m));
  const Model loaded = load_llama2c(dir.file("untied.bin"));
  EXPECT_EQ(loaded.config.vocab_size, 23);
  expect_same_model(loaded, m);
  std::vector<char> bytes = test::llama2c_bytes(m);
  bytes[bytes.size() - 2] = '\xff';  // the classifier's last float: a NaN
  bytes[bytes.size() - 1] = '\xff';
  test::write_file(dir.file("nan.bin"), bytes);
  expect_load_error(dir.file("nan.bin"), "classifier has non-finite values");
}

TEST_F(Llama2c, stories260k_loads_and_matches_its_own_rope_tables) {
  REQUIRE_STORIES260K(m);
  const Config& c = m->config;
  EXPECT_EQ((std::vector<int>{c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                              c.vocab_size, c.seq_len}),
            (std::vector<int>{64, 172, 5, 8, 4, 512, 512}));
  EXPECT_EQ(m->classifier.size(), 0);  // tied
  // The checkpoint ends with the RoPE tables its exporter computed: ours agree.
  std::ifstream file(*lowbit::test::model_file("stories260K.bin"),
                     std::ios::binary | std::ios::ate);
  const std::streamoff tables = 2 * 512 * 4 * 4;
  file.seekg(-tables, std::ios::end);
  MatrixF cos(512, 4), sin(512, 4);
  file.read(reinterpret_cast<char*>(cos.data()), tables / 2);
  file.read(reinterpret_cast<char*>(sin.data()), tables / 2);
  EXPECT_LT((cos - m->rope.cos).cwiseAbs().maxCoeff(), 1e-5f);
  EXPECT_LT((sin - m->rope.sin).cwiseAbs().maxCoeff(), 1e-5f);
}

TEST_F(Llama2c, stories260k_rejects_a_truncated_copy) {
  REQUIRE_STORIES260K(m);
  lowbit::test::TempDir dir;
  std::ifstream in(*lowbit::test::model_file("stories260K.bin"), std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes.resize(bytes.size() / 2);
  test::write_file(dir.file("half.bin"), bytes);
  expect_load_error(dir.file("half.bin"), "expected 1056540 bytes");
}

// tests/data/llama2c_hostile (make_corpus.py there), fuzz_llama2c's seeds:
// valid_* load whole; every other file is refused with an error naming it.
TEST_F(Llama2c, FuzzCorpusLoadsOrIsRefusedByName) {
  const std::vector<std::string> files = test::fuzz_corpus("llama2c");
  ASSERT_GE(files.size(), 13u);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    if (test::is_valid_case(file))
      EXPECT_GT(load_llama2c(file).layers.size(), 0u);
    else
      expect_load_error(file, file);
  }
  expect_load_error(test::test_data_dir() + "/llama2c_hostile/n_layers_huge.bin",
                    "n_layers = 1000000000 is outside 1..1024");
}

}  // namespace
}  // namespace lowbit::model
