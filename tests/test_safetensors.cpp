// io/safetensors.hpp: round trips for every dtype, and a reader that survives
// the hostile corpus in tests/data/safetensors_hostile.
#include <lowbit/io/safetensors.hpp>

#include <filesystem>
#include <fstream>

#include "test_support.hpp"

namespace lowbit {
namespace {

using io::Dtype;
using io::SafetensorsReader;
using io::SafetensorsWriter;

TEST(Safetensors, RoundTripsEveryDtype) {
  const std::vector<double> values{0.0, -1.5, 2.25, 100.0, -0.0};
  const std::vector<int> ints{0, 1, -2, 127, -128};
  SafetensorsWriter writer;
  for (Dtype d : {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16})
    writer.add_floats(std::string("f_") + io::dtype_name(d), {5}, values.data(), 5, d);
  for (Dtype d : {Dtype::I64, Dtype::I32, Dtype::I16, Dtype::I8})
    writer.add_ints(std::string("i_") + io::dtype_name(d), {5}, ints.data(), 5, d);
  const std::vector<int> bytes{0, 1, 255, 7, 1};
  writer.add_ints("u8", {5}, bytes.data(), 5, Dtype::U8);
  const std::vector<int> flags{0, 1, 1, 0, 1};
  writer.add_ints("bool", {5}, flags.data(), 5, Dtype::BOOL);
  writer.set_metadata("method", "rtn");

  const SafetensorsReader reader = SafetensorsReader::from_bytes(writer.bytes());
  for (Dtype d : {Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16}) {
    const std::string name = std::string("f_") + io::dtype_name(d);
    EXPECT_EQ(reader.info(name).dtype, d);
    const std::vector<double> back = reader.doubles(name);
    for (std::size_t i = 0; i < values.size(); ++i) EXPECT_EQ(back[i], values[i]) << name;
  }
  for (Dtype d : {Dtype::I64, Dtype::I32, Dtype::I16, Dtype::I8}) {
    const std::vector<std::int32_t> back = reader.ints(std::string("i_") + io::dtype_name(d));
    EXPECT_EQ(std::vector<int>(back.begin(), back.end()), ints);
  }
  EXPECT_EQ(reader.ints("u8"), (std::vector<std::int32_t>{0, 1, 255, 7, 1}));
  EXPECT_EQ(reader.ints("bool"), (std::vector<std::int32_t>{0, 1, 1, 0, 1}));
  EXPECT_EQ(reader.metadata_value("method"), "rtn");
  EXPECT_FALSE(reader.metadata_value("absent").has_value());
}

TEST(Safetensors, MatricesAndFilesOnDisk) {
  test::TempDir dir;
  const MatrixF m = test::random_weights(7, 13, 61);
  SafetensorsWriter writer;
  writer.add_matrix("W", m);
  writer.add_matrix("Wd", m.cast<double>(), Dtype::F64);
  writer.add_matrix("codes", CodeMatrix::Constant(3, 5, 9), Dtype::U8);
  writer.write(dir.file("m.safetensors"));
  const SafetensorsReader reader(dir.file("m.safetensors"));
  EXPECT_EQ(reader.matrix("W"), m);
  EXPECT_EQ(reader.matrix_d("Wd"), m.cast<double>());
  EXPECT_EQ(reader.info("codes").shape, (std::vector<std::int64_t>{3, 5}));
  // Every tensor is naturally aligned in the data section.
  for (const std::string& name : reader.names())
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(reader.data(name)) %
                  io::dtype_size(reader.info(name).dtype),
              0u)
        << name;
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("")))
    files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

// A tensor released after reading (its pages handed back to the page cache)
// reads the same again, and its neighbours, which may share a page, too.
TEST(Safetensors, ReleasedTensorsReadAgain) {
  test::TempDir dir;
  const MatrixF big = test::random_weights(300, 301, 62);
  const MatrixF small = test::random_weights(3, 5, 63);
  SafetensorsWriter writer;
  writer.add_matrix("big", big);
  writer.add_matrix("small", small);
  writer.write(dir.file("r.safetensors"));
  const SafetensorsReader reader(dir.file("r.safetensors"));
  EXPECT_EQ(reader.matrix("big"), big);
  reader.release("big");
  EXPECT_EQ(reader.matrix("small"), small);
  reader.release("small");
  EXPECT_EQ(reader.matrix("big"), big);
  EXPECT_EQ(reader.matrix("small"), small);
  const SafetensorsReader in_memory = SafetensorsReader::from_bytes(writer.bytes());
  in_memory.release("big");  // nothing to release in a buffer
  EXPECT_EQ(in_memory.matrix("big"), big);
}

TEST(Safetensors, ClearErrorsForMisuse) {
  SafetensorsWriter writer;
  writer.add_matrix("W", MatrixF::Ones(2, 2));
  writer.add_ints("idx", {2}, std::vector<int>{1, 2}.data(), 2);
  const SafetensorsReader reader = SafetensorsReader::from_bytes(writer.bytes(), "f.safetensors");
  auto message = [](auto&& action) {
    try {
      action();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { reader.matrix("X"); }).find("tensor 'X' is missing"), std::string::npos);
  EXPECT_NE(message([&] { reader.floats("idx"); }).find("float dtype"), std::string::npos);
  EXPECT_NE(message([&] { reader.ints("W"); }).find("integer dtype"), std::string::npos);
  EXPECT_NE(message([&] { reader.require_rank("idx", 2); }).find("rank 2"), std::string::npos);
  EXPECT_THROW(writer.add_matrix("W", MatrixF::Ones(1, 1)), Error);  // duplicate
  EXPECT_THROW(writer.add_ints("big", {1}, std::vector<int>{300}.data(), 1, Dtype::U8), Error);
  EXPECT_THROW(SafetensorsReader("/nonexistent/file.safetensors"), Error);
}

// Borrowed bytes and tensors appended from another writer make the file that
// copies added in the same order make (a merge of slices relies on it).
TEST(Safetensors, BorrowedAndAppendedTensorsWriteTheSameFile) {
  const MatrixF w = MatrixF::Random(3, 5);
  const std::vector<std::uint8_t> codes{1, 2, 3, 4};
  SafetensorsWriter copied;
  copied.add_raw("codes", Dtype::U8, {4}, codes.data(), codes.size());
  copied.add_matrix("W", w, Dtype::F16);
  const SafetensorsReader reader = SafetensorsReader::from_bytes(copied.bytes());
  SafetensorsWriter merged, group;
  merged.add_borrowed("codes", Dtype::U8, {4}, codes.data(), codes.size());
  const io::TensorInfo& t = reader.info("W");
  group.add_borrowed("W", t.dtype, t.shape, reader.data("W"), t.end - t.begin);
  merged.append(std::move(group));
  EXPECT_EQ(merged.names(), copied.names());
  EXPECT_EQ(merged.data_bytes(), copied.data_bytes());
  EXPECT_EQ(merged.bytes(), copied.bytes());
  EXPECT_TRUE(group.names().empty());
  SafetensorsWriter twice;
  twice.add_borrowed("codes", Dtype::U8, {4}, codes.data(), codes.size());
  EXPECT_THROW(twice.append(std::move(merged)), Error);  // "codes" again
  EXPECT_THROW(twice.add_borrowed("short", Dtype::F32, {2}, codes.data(), 4), Error);
}

TEST(Safetensors, HostileCorpusIsRejectedCleanly) {
  const std::string dir = test::test_data_dir() + "/safetensors_hostile";
  const std::vector<std::string> files = test::golden_files(dir, "");
  ASSERT_GE(files.size(), 25u);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const bool valid = std::filesystem::path(file).filename().string().rfind("valid_", 0) == 0;
    if (valid) {
      const SafetensorsReader reader(file);
      for (const std::string& name : reader.names()) {
        const io::TensorInfo& t = reader.info(name);
        if (io::is_float_dtype(t.dtype))
          EXPECT_EQ(reader.floats(name).size(), std::size_t(t.numel()));
        else
          EXPECT_EQ(reader.ints(name).size(), std::size_t(t.numel()));
      }
      continue;
    }
    try {
      SafetensorsReader reader(file);
      ADD_FAILURE() << "accepted a hostile file";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos)
          << "names the file: " << e.what();
    }
  }
}

TEST(Safetensors, ValidCorpusValues) {
  const SafetensorsReader reader(test::test_data_dir() +
                                 "/safetensors_hostile/valid_all_dtypes.safetensors");
  EXPECT_EQ(reader.doubles("D"), (std::vector<double>{1.0, -2.0}));
  EXPECT_EQ(reader.floats("H"), (std::vector<float>{0.5f, -1.5f}));
  EXPECT_EQ(reader.floats("B"), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(reader.ints("L"), (std::vector<std::int32_t>{5, -6}));
  EXPECT_EQ(reader.ints("C"), (std::vector<std::int32_t>{11, -12}));
  EXPECT_EQ(reader.metadata_value("purpose"), "every dtype");
  const SafetensorsReader empty(test::test_data_dir() +
                                "/safetensors_hostile/valid_empty_tensor.safetensors");
  EXPECT_EQ(empty.info("E").numel(), 0);
  EXPECT_EQ(empty.ints("S"), (std::vector<std::int32_t>{-7}));
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  SafetensorsWriter writer;
  writer.add_matrix("W", test::random_weights(3, 4, 62));
  writer.set_metadata("k", "v");
  const std::vector<unsigned char> bytes = writer.bytes();
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(
        SafetensorsReader::from_bytes({bytes.begin(), bytes.begin() + static_cast<long>(n)}), Error)
        << n;
  EXPECT_NO_THROW(SafetensorsReader::from_bytes(bytes));
}

TEST(Safetensors, ReadsTheGoldenFiles) {
  const SafetensorsReader inputs(test::bundled_golden_dir() + "/inputs_64x256.safetensors");
  EXPECT_EQ(inputs.matrix("X").rows(), 512);
  EXPECT_EQ(inputs.ints("outliers"), (std::vector<std::int32_t>{7, 61, 130, 201}));
}

}  // namespace
}  // namespace lowbit
