// The ggml block golden files (tests/data/golden/gguf, made by ggml itself; see
// the README there): shared by the tests of the block representation, the
// codec, the encoders and the GGUF reader.
#pragma once

#include <lowbit/io/gguf.hpp>

#include "test_support.hpp"

namespace lowbit::test {

inline std::string bundled_gguf_golden() { return bundled_golden_dir() + "/gguf/ggml_blocks.gguf"; }

// Sorted *.gguf files of a directory.
inline std::vector<std::string> gguf_files(const std::string& dir) {
  std::vector<std::string> files;
  if (!std::filesystem::is_directory(dir)) return files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".gguf") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Runs `check` on the bundled golden file, or with `full` on every golden
// GGUF of $LOWBIT_GOLDEN_DIR/gguf (the held-back cases too; skipped if absent).
template <class Check>
void for_each_gguf_golden(bool full, Check check) {
  std::vector<std::string> files{bundled_gguf_golden()};
  if (full) {
    const std::optional<std::string> dir = full_golden_dir();
    if (!dir)
      GTEST_SKIP() << "no full golden directory: set LOWBIT_GOLDEN_DIR to run its gguf/*.gguf";
    files = gguf_files(*dir + "/gguf");
    ASSERT_FALSE(files.empty()) << "no *.gguf in " << *dir << "/gguf";
  }
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    check(io::GgufReader(file));
  }
}

// The block types of a golden file: every tensor "T.q".
inline std::vector<GgmlType> golden_block_types(const io::GgufReader& golden) {
  std::vector<GgmlType> types;
  for (const io::GgufTensorInfo& t : golden.tensors())
    if (t.name.size() > 2 && t.name.compare(t.name.size() - 2, 2, ".q") == 0)
      types.push_back(t.type);
  return types;
}

inline std::string golden_name(GgmlType type, const char* suffix) {
  return std::string(ggml_type_name(type)) + "." + suffix;
}

// Bitwise equality of two float matrices (NaN payloads and the sign of zero count).
inline ::testing::AssertionResult same_bits(const MatrixF& actual, const MatrixF& expected) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols())
    return ::testing::AssertionFailure() << "shape " << actual.rows() << " x " << actual.cols()
                                         << " vs " << expected.rows() << " x " << expected.cols();
  Index differ = 0, first = -1;
  for (Index i = 0; i < actual.size(); ++i)
    if (float_bits(actual.data()[i]) != float_bits(expected.data()[i]) && differ++ == 0) first = i;
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << differ << " of " << actual.size() << " values differ, first at ("
         << first / actual.cols() << ", " << first % actual.cols() << "): " << actual.data()[first]
         << " vs " << expected.data()[first];
}

}  // namespace lowbit::test
