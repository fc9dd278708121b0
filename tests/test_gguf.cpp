// io/gguf.hpp: the golden file ggml wrote (read, and rewritten byte for byte),
// round trips of every value type and tensor type, and a reader that survives
// the hostile corpus in tests/data/gguf_hostile.
#include <lowbit/core/ggml_grid.hpp>
#include <lowbit/io/gguf.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>

#include "ggml_golden.hpp"

namespace lowbit {
namespace {

using io::GgufReader;
using io::GgufType;
using io::GgufValue;
using io::GgufWriter;

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Gguf, ReadsEveryKeyOfTheGoldenFile) {
  const GgufReader f(test::bundled_gguf_golden());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.keys().size(), 18u);
  EXPECT_EQ(f.keys().front(), "general.architecture");
  EXPECT_EQ(f.get<std::string>("general.architecture"), "lowbit-golden");
  EXPECT_EQ(f.get<std::uint8_t>("test.u8"), 200);
  EXPECT_EQ(f.get<std::int8_t>("test.i8"), -100);
  EXPECT_EQ(f.get<std::uint16_t>("test.u16"), 60000);
  EXPECT_EQ(f.get<std::int16_t>("test.i16"), -30000);
  EXPECT_EQ(f.get<std::uint32_t>("test.u32"), 4000000000u);
  EXPECT_EQ(f.get<std::int32_t>("test.i32"), -2000000000);
  EXPECT_EQ(f.get<std::uint64_t>("test.u64"), 18000000000000000000ull);
  EXPECT_EQ(f.get<std::int64_t>("test.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get<float>("test.f32"), 3.25f);
  EXPECT_EQ(f.get<double>("test.f64"), -2.5e-300);
  EXPECT_EQ(f.get<bool>("test.bool"), true);
  EXPECT_EQ(f.get<std::string>("test.str"), "h\xc3\xa9llo, \"gguf\"");
  EXPECT_EQ(f.get<std::vector<std::int32_t>>("test.arr_i32"),
            (std::vector<std::int32_t>{1, -2, 3, -4, 5}));
  EXPECT_EQ(f.get<std::vector<std::string>>("test.arr_str"),
            (std::vector<std::string>{"<s>", "</s>", "\xe2\x96\x81the"}));
  EXPECT_EQ(f.value("test.arr_str").type_string(), "arr[str]");
  EXPECT_EQ(f.get<std::uint32_t>("golden.rows"), 16u);
  EXPECT_EQ(f.get<std::uint32_t>("golden.cols"), 512u);
}

TEST(Gguf, ReadsEveryTensorOfTheGoldenFile) {
  const GgufReader f(test::bundled_gguf_golden());
  ASSERT_EQ(f.tensors().size(), 48u);
  EXPECT_EQ(f.data_offset(), 2912u);  // the 2895-byte header padded to 32
  std::uint64_t offset = 0;
  for (const io::GgufTensorInfo& t : f.tensors()) {  // ggml's writer: in order, each padded
    EXPECT_EQ(t.offset, offset) << t.name;
    offset += (t.bytes + 31) / 32 * 32;
    EXPECT_EQ(t.shape, (t.name == "imatrix" ? std::vector<std::int64_t>{512}
                                            : std::vector<std::int64_t>{512, 16}));
  }
  EXPECT_EQ(f.tensor("q4_K.q").type, GgmlType::q4_k);
  EXPECT_EQ(f.tensor("q4_K.q").bytes, 16u * 2 * 144);
  EXPECT_EQ(f.tensor("tq2_0.q").type, GgmlType::tq2_0);
  // The README's description of x: row 9 zero in columns 0-63, row 10 constant 0.013 in 0-31.
  const MatrixF x = f.matrix("x");
  ASSERT_EQ(x.rows(), 16);
  ASSERT_EQ(x.cols(), 512);
  EXPECT_TRUE(x.row(9).head(64).isZero(0.0f));
  EXPECT_NE(x(9, 64), 0.0f);
  EXPECT_TRUE((x.row(10).head(32).array() == 0.013f).all());
  EXPECT_EQ(f.matrix("imatrix").size(), 512);
}

TEST(Gguf, WriterRewritesGgmlsFileByteForByte) {
  const GgufReader f(test::bundled_gguf_golden());
  GgufWriter writer;
  for (const std::string& key : f.keys()) writer.set(key, f.value(key));
  for (const io::GgufTensorInfo& t : f.tensors())
    writer.add_tensor(t.name, t.type, t.shape, f.data(t.name), t.bytes);
  const std::vector<unsigned char> ours = writer.bytes();
  std::ifstream in(test::bundled_gguf_golden(), std::ios::binary);
  const std::vector<unsigned char> theirs((std::istreambuf_iterator<char>(in)),
                                          std::istreambuf_iterator<char>());
  EXPECT_TRUE(ours == theirs) << "ours " << ours.size() << " bytes, ggml's " << theirs.size();
}

std::vector<unsigned char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Streamed, with every tensor declared first and written last to first: the
// file is still ggml's own, byte for byte.
TEST(Gguf, StreamedWriterRewritesGgmlsFileByteForByte) {
  const GgufReader f(test::bundled_gguf_golden());
  test::TempDir dir;
  const std::string path = dir.file("streamed.gguf");
  {
    GgufWriter writer;
    for (const std::string& key : f.keys()) writer.set(key, f.value(key));
    for (const io::GgufTensorInfo& t : f.tensors()) writer.declare_tensor(t.name, t.type, t.shape);
    io::StagedFile file(path);
    writer.start(file);
    for (auto t = f.tensors().rbegin(); t != f.tensors().rend(); ++t)
      writer.add_tensor(t->name, t->type, t->shape, f.data(t->name), t->bytes);
    writer.finish();
    EXPECT_FALSE(std::filesystem::exists(path)) << "visible before commit";
    file.commit();
  }
  EXPECT_TRUE(file_bytes(path) == file_bytes(test::bundled_gguf_golden()));
}

// Any alignment, tensors added before start() beside declared ones: the
// streamed file is the in-memory writer's bytes.
TEST(Gguf, StreamedFileIsTheInMemoryBytes) {
  for (std::uint32_t alignment : {32u, 8u, 128u}) {
    SCOPED_TRACE(alignment);
    GgufWriter memory(alignment), streamed(alignment);
    std::mt19937 rng(alignment);
    std::vector<std::vector<unsigned char>> payloads;
    for (const GgmlTypeTraits& t : detail::kGgmlTypes) {
      payloads.emplace_back(5 * t.type_size);
      for (auto& b : payloads.back()) b = static_cast<unsigned char>(rng());
    }
    auto add = [&](GgufWriter& w, std::size_t i) {
      const GgmlTypeTraits& t = detail::kGgmlTypes[i];
      w.add_tensor(std::string("t.") + t.name, t.type, {5 * t.block_size}, payloads[i].data(),
                   payloads[i].size());
    };
    for (GgufWriter* w : {&memory, &streamed}) w->set("general.architecture", "test");
    for (std::size_t i = 0; i < payloads.size(); ++i) add(memory, i);
    add(streamed, 0);  // before start(): held, then written by start()
    for (std::size_t i = 1; i < payloads.size(); ++i) {
      const GgmlTypeTraits& t = detail::kGgmlTypes[i];
      streamed.declare_tensor(std::string("t.") + t.name, t.type, {5 * t.block_size});
    }
    test::TempDir dir;
    io::StagedFile file(dir.file("s.gguf"));
    streamed.start(file);
    for (std::size_t i = payloads.size() - 1; i >= 1; --i) add(streamed, i);
    streamed.finish();
    file.commit();
    EXPECT_TRUE(file_bytes(dir.file("s.gguf")) == memory.bytes());
  }
}

// Every way a streamed file can go wrong names the tensor, and a file never
// committed leaves nothing behind.
TEST(Gguf, StreamingMisuseNamesTheTensor) {
  test::TempDir dir;
  const float four[4] = {1, 2, 3, 4};
  {
    GgufWriter writer;
    writer.declare_tensor("a", GgmlType::f32, {4});
    writer.declare_tensor("b", GgmlType::f32, {2, 2});
    EXPECT_NE(error_of([&] {
                writer.declare_tensor("a", GgmlType::f32, {4});
              }).find("tensor 'a' declared twice"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.bytes();
              }).find("tensor 'a' was declared but its bytes were never added"),
              std::string::npos);
    EXPECT_NE(error_of([&] { writer.finish(); }).find("finish() without start()"),
              std::string::npos);
    io::StagedFile file(dir.file("m.gguf"));
    writer.start(file);
    EXPECT_NE(error_of([&] {
                writer.add_tensor("c", GgmlType::f32, {4}, four, 16);
              }).find("tensor 'c': written but never declared"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.add_tensor("a", GgmlType::f32, {4}, four, 12);
              }).find("tensor 'a': holds 12 bytes, its shape needs 16"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.add_tensor("b", GgmlType::f16, {2, 2}, four, 8);
              }).find("tensor 'b': declared as f32 [2, 2], given f16 [2, 2]"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.add_tensor("b", GgmlType::f32, {4}, four, 16);
              }).find("tensor 'b': declared as f32 [2, 2], given f32 [4]"),
              std::string::npos);
    writer.add_tensor("a", GgmlType::f32, {4}, four, 16);
    EXPECT_NE(error_of([&] {
                writer.add_tensor("a", GgmlType::f32, {4}, four, 16);
              }).find("tensor 'a' added twice"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.finish();
              }).find("tensor 'b' was declared but its bytes were never added"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.set("k", std::uint32_t{1});
              }).find("key 'k': the header is written already"),
              std::string::npos);
    EXPECT_NE(error_of([&] {
                writer.declare_tensor("d", GgmlType::f32, {4});
              }).find("tensor 'd': the header is written already"),
              std::string::npos);
    EXPECT_NE(error_of([&] { writer.bytes(); }).find("streams to a file"), std::string::npos);
    EXPECT_NE(error_of([&] { writer.start(file); }).find("start(): the header is written"),
              std::string::npos);
    writer.add_tensor("b", GgmlType::f32, {2, 2}, four, 16);
    writer.finish();
    EXPECT_NE(error_of([&] {
                writer.add_tensor("b", GgmlType::f32, {2, 2}, four, 16);
              }).find("tensor 'b': written after finish()"),
              std::string::npos);
    EXPECT_FALSE(std::filesystem::is_empty(dir.file("")));  // the temporary file
  }                                                         // not committed
  EXPECT_TRUE(std::filesystem::is_empty(dir.file("")));
}

// One value of every type, arrays of each, nested and empty arrays.
std::vector<std::pair<std::string, GgufValue>> every_value() {
  return {{"u8", std::uint8_t{255}},
          {"i8", std::int8_t{-128}},
          {"u16", std::uint16_t{65535}},
          {"i16", std::int16_t{-32768}},
          {"u32", std::uint32_t{4294967295u}},
          {"i32", std::int32_t{-7}},
          {"f32", -0.0f},
          {"bool", false},
          {"str", "multi\nline \xf0\x9f\x99\x82"},
          {"u64", std::uint64_t{1} << 63},
          {"i64", std::int64_t{-1}},
          {"f64", 1e308},
          {"a.u8", std::vector<std::uint8_t>{0, 255}},
          {"a.i8", std::vector<std::int8_t>{-1, 1}},
          {"a.u16", std::vector<std::uint16_t>{1, 2, 3}},
          {"a.i16", std::vector<std::int16_t>{-2}},
          {"a.u32", std::vector<std::uint32_t>{9}},
          {"a.i32", std::vector<std::int32_t>{}},
          {"a.f32", std::vector<float>{1.5f, -2.0f}},
          {"a.bool", std::vector<bool>{true, false, true}},
          {"a.str", std::vector<std::string>{"", "x", std::string(300, 'y')}},
          {"a.u64", std::vector<std::uint64_t>{0, ~std::uint64_t{0}}},
          {"a.i64", std::vector<std::int64_t>{-5, 5}},
          {"a.f64", std::vector<double>{0.25}},
          {"a.nested",
           GgufValue::nested({std::vector<std::int32_t>{1, 2}, std::vector<std::string>{"z"},
                              GgufValue::nested({std::vector<float>{}})})}};
}

TEST(Gguf, RoundTripsEveryValueType) {
  GgufWriter writer;
  for (const auto& [key, value] : every_value()) writer.set(key, value);
  writer.set("u8", std::uint8_t{254});  // replaces in place
  const GgufReader f = GgufReader::from_bytes(writer.bytes());
  const auto expected = every_value();
  ASSERT_EQ(f.keys().size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(f.keys()[i], expected[i].first);  // in the order they were set
    if (i > 0) {                                // "u8" was replaced
      EXPECT_TRUE(f.value(expected[i].first) == expected[i].second) << expected[i].first;
    }
  }
  EXPECT_EQ(f.get<std::uint8_t>("u8"), 254);
  EXPECT_TRUE(std::signbit(f.get<float>("f32")));
  EXPECT_EQ(f.get<std::vector<bool>>("a.bool"), (std::vector<bool>{true, false, true}));
  EXPECT_EQ(f.get<std::vector<std::string>>("a.str")[2].size(), 300u);
  const std::vector<GgufValue> nested = f.get<std::vector<GgufValue>>("a.nested");
  ASSERT_EQ(nested.size(), 3u);
  EXPECT_EQ(nested[0].get<std::vector<std::int32_t>>(), (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(nested[2].get<std::vector<GgufValue>>()[0].element_type(), GgufType::f32);
  EXPECT_EQ(f.value("a.nested").type_string(), "arr[arr]");
  EXPECT_TRUE(f.tensors().empty());
}

TEST(Gguf, RoundTripsEveryTensorType) {
  for (std::uint32_t alignment : {32u, 64u, 8u}) {
    SCOPED_TRACE(alignment);
    GgufWriter writer(alignment);
    std::mt19937 rng(alignment);
    std::vector<std::vector<unsigned char>> payloads;
    for (const GgmlTypeTraits& t : detail::kGgmlTypes) {
      std::vector<unsigned char> bytes(3 * 2 * t.type_size);
      for (auto& b : bytes) b = static_cast<unsigned char>(rng());
      writer.add_tensor(std::string("t.") + t.name, t.type, {2 * t.block_size, 3}, bytes.data(),
                        bytes.size());
      payloads.push_back(std::move(bytes));
    }
    const std::vector<unsigned char> file = writer.bytes();
    EXPECT_EQ(file.size() % alignment, 0u);
    const GgufReader f = GgufReader::from_bytes(file);
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.contains("general.alignment"), alignment != 32);
    ASSERT_EQ(f.tensors().size(), detail::kGgmlTypes.size());
    for (std::size_t i = 0; i < f.tensors().size(); ++i) {
      const io::GgufTensorInfo& t = f.tensors()[i];
      EXPECT_EQ(t.type, detail::kGgmlTypes[i].type);
      EXPECT_EQ(t.shape, (std::vector<std::int64_t>{2 * detail::kGgmlTypes[i].block_size, 3}));
      EXPECT_EQ(t.offset % alignment, 0u);
      EXPECT_TRUE(std::equal(payloads[i].begin(), payloads[i].end(), f.data(t.name))) << t.name;
    }
  }
}

TEST(Gguf, RoundTripsMatricesAndBlocks) {
  const MatrixF w = test::random_weights(4, 512, 91);
  GgufWriter writer;
  writer.add_matrix("w.f32", w);
  writer.add_matrix("w.f16", w, GgmlType::f16);
  writer.add_matrix("w.bf16", w, GgmlType::bf16);
  std::vector<GgmlWeights> blocks;
  for (const GgmlBlockFormat& format : detail::kGgmlBlockFormats) {
    blocks.push_back(quantize_ggml(w, {format.type, {}}).weights);
    writer.add_blocks(std::string("w.") + ggml_type_name(format.type), blocks.back());
  }
  const GgufReader f = GgufReader::from_bytes(writer.bytes());
  EXPECT_EQ(f.matrix("w.f32"), w);
  EXPECT_EQ(f.tensor("w.f16").shape, (std::vector<std::int64_t>{512, 4}));
  EXPECT_EQ(f.matrix("w.f16"),
            w.unaryExpr([](float v) { return half_to_float(float_to_half(v)); }));
  EXPECT_EQ(f.matrix("w.bf16"),
            w.unaryExpr([](float v) { return bf16_to_float(float_to_bf16(v)); }));
  for (const GgmlWeights& b : blocks) {
    const std::string name = std::string("w.") + ggml_type_name(b.type);
    const GgmlWeights back = f.blocks(name);
    EXPECT_EQ(back.codes, b.codes) << name;
    EXPECT_EQ(back.d, b.d) << name;
    EXPECT_EQ(back.sub_scales, b.sub_scales) << name;
    EXPECT_TRUE(test::same_bits(f.matrix(name), b.dequantize())) << name;
  }
}

bool is_valid_case(const std::string& file) {
  return std::filesystem::path(file).filename().string().rfind("valid_", 0) == 0;
}

// Reads every value and every tensor the reader can decode.
void read_everything(const GgufReader& f) {
  for (const std::string& key : f.keys()) (void)f.value(key).size();
  for (const io::GgufTensorInfo& t : f.tensors())
    if (t.numel() > 0 && (find_ggml_block_format(t.type) || t.type == GgmlType::f32))
      (void)f.matrix(t.name);
}

TEST(Gguf, HostileCorpusIsRejectedCleanly) {
  const std::vector<std::string> files = test::gguf_files(test::test_data_dir() + "/gguf_hostile");
  ASSERT_GE(files.size(), 45u);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    if (is_valid_case(file)) {
      read_everything(GgufReader(file));
      continue;
    }
    const std::string message = error_of([&] { read_everything(GgufReader(file)); });
    EXPECT_NE(message, "no error") << "accepted a hostile file";
    EXPECT_NE(message.find(file), std::string::npos) << "names the file: " << message;
  }
}

TEST(Gguf, CorpusMessagesSayWhatIsWrong) {
  const std::string dir = test::test_data_dir() + "/gguf_hostile/";
  const std::pair<const char*, const char*> cases[] = {
      {"bad_magic", "not a GGUF file"},
      {"big_endian", "byte-swapped (big-endian)"},
      {"version_1", "GGUF version 1 is not supported"},
      {"key_count_huge", "the key count = 18446744073709551615 cannot fit in the 0 bytes left"},
      {"key_duplicate", "key 'a' appears twice"},
      {"bool_two", "key 'a': a bool must be 0 or 1, found 2"},
      {"array_length_huge", "key 'a' array length = 2305843009213693952 cannot fit"},
      {"array_nested_too_deep", "key 'a': arrays nested deeper than 16 levels"},
      {"alignment_not_power_of_two", "'general.alignment' = 48 is not a power of two"},
      {"alignment_not_u32", "'general.alignment' must be u32, is u64"},
      {"tensor_dims_5", "tensor 'w': 5 dims, at most 4 allowed"},
      {"tensor_type_removed", "tensor 'w': unknown ggml type 4"},
      {"tensor_row_not_whole_blocks", "q4_0 rows must hold multiples of 32 weights, shape [48]"},
      {"tensor_offset_unaligned", "tensor 'w': offset 8 is not a multiple of the alignment 32"},
      {"tensor_data_truncated",
       "tensor 'w': 16 bytes at offset 0 run past the data section of 12 bytes"},
      {"tensors_overlap", "tensors 'a' and 'b' overlap"},
      {"q4_0_d_infinite", "tensor 'w': row 0 block 0 of q4_0 has a non-finite d or dmin"},
  };
  for (const auto& [name, expected] : cases) {
    const std::string file = dir + name + ".gguf";
    const std::string message = error_of([&] { read_everything(GgufReader(file)); });
    EXPECT_NE(message.find(expected), std::string::npos) << name << ": " << message;
  }
}

TEST(Gguf, ValidCorpusValues) {
  const std::string dir = test::test_data_dir() + "/gguf_hostile/";
  const GgufReader every(dir + "valid_every_type.gguf");
  EXPECT_EQ(every.get<std::uint64_t>("t.10"), 18000000000000000000ull);
  EXPECT_EQ(every.get<std::vector<double>>("t.arr12"), (std::vector<double>{-2.5e-300, -2.5e-300}));
  EXPECT_EQ(every.get<std::string>("t.str"), "h\xc3\xa9llo");
  EXPECT_EQ(every.matrix("w"), (MatrixF(1, 4) << 1.0f, -2.0f, 0.5f, 3.0f).finished());
  const GgufReader unordered(dir + "valid_unordered_offsets.gguf");
  EXPECT_EQ(unordered.matrix("b"), unordered.matrix("a"));
  const GgufReader nested(dir + "valid_nested_arrays.gguf");
  EXPECT_EQ(nested.get<std::vector<GgufValue>>("a")[1].get<std::vector<std::string>>(),
            (std::vector<std::string>{"x", ""}));
  EXPECT_EQ(GgufReader(dir + "valid_version_2.gguf").version(), 2u);
  EXPECT_EQ(GgufReader(dir + "valid_empty_tensor.gguf").tensor("e").numel(), 0);
  EXPECT_EQ(GgufReader(dir + "valid_alignment_64.gguf").data_offset() % 64, 0u);
}

TEST(Gguf, EveryTruncationIntoHeaderOrDataIsRejected) {
  GgufWriter writer;
  writer.set("general.architecture", "llama");
  writer.set("v", std::vector<std::string>{"ab", "c"});
  writer.add_matrix("w", test::random_weights(2, 5, 92));
  writer.add_blocks("q",
                    quantize_ggml(test::random_weights(1, 32, 93), {GgmlType::q5_1, {}}).weights);
  const std::vector<unsigned char> bytes = writer.bytes();
  const GgufReader full = GgufReader::from_bytes(bytes);
  std::size_t end = 0;  // the last byte a tensor needs; the padding after it is optional
  for (const io::GgufTensorInfo& t : full.tensors())
    end = std::max(end, full.data_offset() + static_cast<std::size_t>(t.offset) + t.bytes);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<unsigned char> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    if (n < end) {
      EXPECT_THROW(GgufReader::from_bytes(cut), Error) << n;
    } else {
      EXPECT_NO_THROW(GgufReader::from_bytes(cut)) << n;
    }
  }
}

TEST(Gguf, MisuseGetsClearErrors) {
  GgufWriter writer;
  writer.set("k", std::uint32_t{3});
  writer.add_tensor("ids", GgmlType::i32, {2}, std::vector<std::int32_t>{1, 2}.data(), 8);
  const GgufReader f = GgufReader::from_bytes(writer.bytes(), "m.gguf");
  EXPECT_NE(error_of([&] {
              f.get<std::int32_t>("k");
            }).find("m.gguf: key 'k' is u32, not the type requested"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.value("absent"); }).find("m.gguf: key 'absent' is missing"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.tensor("absent"); }).find("m.gguf: tensor 'absent' is missing"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.matrix("ids"); }).find("tensor 'ids' is i32, not a float type"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.blocks("ids"); }).find("not a non-empty tensor of a block type"),
            std::string::npos);
  EXPECT_THROW(GgufReader("/nonexistent/file.gguf"), Error);

  float four[4] = {};
  EXPECT_NE(
      error_of([&] { writer.add_tensor("ids", GgmlType::f32, {4}, four, 16); }).find("added twice"),
      std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.add_tensor(std::string(64, 'n'), GgmlType::f32, {4}, four, 16);
            }).find("1 to 63 bytes"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.add_tensor("x", GgmlType::f32, {1, 1, 1, 1, 4}, four, 16);
            }).find("expected 1 to 4 dims, got 5"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.add_tensor("x", GgmlType::f32, {4}, four, 12);
            }).find("holds 12 bytes, its shape needs 16"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.add_tensor("x", GgmlType::q4_0, {16}, four, 16);
            }).find("multiples of 32"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.add_matrix("x", MatrixF::Ones(1, 4), GgmlType::q4_0);
            }).find("add_matrix stores f32, f16 or bf16"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              writer.set("general.alignment", std::uint32_t{64});
            }).find("set by the constructor"),
            std::string::npos);
  EXPECT_THROW(GgufWriter(12), Error);
  EXPECT_THROW(GgufWriter(4), Error);
  EXPECT_THROW(GgufValue::nested({std::uint8_t{1}}), Error);
  EXPECT_THROW(GgufValue(std::uint8_t{1}).get<std::string>(), Error);
}

TEST(Gguf, WritesFilesOnDisk) {
  test::TempDir dir;
  GgufWriter writer;
  writer.set("general.architecture", "llama");
  writer.add_matrix("w", test::random_weights(3, 7, 94));
  writer.write(dir.file("m.gguf"));
  const GgufReader f(dir.file("m.gguf"));
  EXPECT_EQ(f.get<std::string>("general.architecture"), "llama");
  EXPECT_EQ(f.matrix("w"), test::random_weights(3, 7, 94));
}

}  // namespace
}  // namespace lowbit
