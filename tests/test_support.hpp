// Shared test helpers: seeded random matrices, golden-file discovery and
// metadata, and running the lowbit command-line tool.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <lowbit/core/error.hpp>
#include <lowbit/core/types.hpp>
#include <lowbit/io/safetensors.hpp>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lowbit::test {

// Heavy-tailed weights (Student-t, 5 dof) like real LLM layers; seed printed on failure.
inline MatrixF random_weights(Index rows, Index cols, unsigned seed, float scale = 0.02f) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> t(5.0f);
  MatrixF w(rows, cols);
  for (Index i = 0; i < w.size(); ++i) w.data()[i] = scale * t(rng);
  return w;
}

// Standard normal entries.
inline MatrixF random_gaussian(Index rows, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

// Gaussian activations with a few outlier channels scaled by 20.
inline MatrixF random_activations(Index tokens, Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixF x(tokens, cols);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  for (Index c = 3; c < cols; c += 61) x.col(c) *= 20.0f;
  return x;
}

// f must throw an E whose message contains `fragment`.
template <class E = Error>
void expect_error_containing(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << fragment << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

inline std::string test_data_dir() { return LOWBIT_TEST_DATA_DIR; }
inline std::string bundled_golden_dir() { return test_data_dir() + "/golden"; }

// The full golden directory: $LOWBIT_GOLDEN_DIR, else the CMake option.
inline std::optional<std::string> full_golden_dir() {
  const char* env = std::getenv("LOWBIT_GOLDEN_DIR");
  std::string dir = env && *env ? env : LOWBIT_GOLDEN_DIR_DEFAULT;
  if (dir.empty() || !std::filesystem::is_directory(dir)) return std::nullopt;
  return dir;
}

// Sorted paths of `dir`/<prefix>*.safetensors.
inline std::vector<std::string> golden_files(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && entry.path().extension() == ".safetensors")
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Runs `check` on every golden file with the prefix: the bundled subset, or
// the full directory when `full` is set (skipping with a message if absent).
template <class Check>
void for_each_golden(const std::string& prefix, bool full, Check check) {
  std::string dir = bundled_golden_dir();
  if (full) {
    const std::optional<std::string> full_dir = full_golden_dir();
    if (!full_dir)
      GTEST_SKIP() << "no full golden directory: set LOWBIT_GOLDEN_DIR (environment or CMake "
                      "option) to run every "
                   << prefix << "* file";
    dir = *full_dir;
  }
  const std::vector<std::string> files = golden_files(dir, prefix);
  ASSERT_FALSE(files.empty()) << "no " << prefix << "*.safetensors in " << dir;
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    check(io::SafetensorsReader(file), std::filesystem::path(file).parent_path().string());
  }
}

// One bundled golden case, e.g. golden_case("gptq_w3_g64_asym_act"): the tool
// proves its plumbing on one case per method (the library tests run them all).
inline io::SafetensorsReader golden_case(const std::string& name) {
  return io::SafetensorsReader(bundled_golden_dir() + "/" + name + ".safetensors");
}

inline std::string meta(const io::SafetensorsReader& f, const std::string& key) {
  const std::optional<std::string> v = f.metadata_value(key);
  if (!v) throw Error(f.source() + ": metadata '" + key + "' missing");
  return *v;
}
inline int meta_int(const io::SafetensorsReader& f, const std::string& key) {
  return std::stoi(meta(f, key));
}
inline double meta_double(const io::SafetensorsReader& f, const std::string& key) {
  return std::stod(meta(f, key));
}
inline bool meta_bool(const io::SafetensorsReader& f, const std::string& key) {
  return meta(f, key) == "True";
}

// A tensor from the case file, or from the shared inputs file it names
// (the bundled subset stores W and X once).
inline MatrixF golden_input(const io::SafetensorsReader& f, const std::string& dir,
                            const std::string& name) {
  if (f.contains(name)) return f.matrix(name);
  return io::SafetensorsReader(dir + "/" + meta(f, "inputs_file")).matrix(name);
}

// A tensor in the precision of the case (float or double): from the case file,
// else from its shared inputs file. The f64 cases were made from exactly the
// float inputs, so the bundled subset stores those once, in float.
template <class Scalar>
MatrixT<Scalar> golden_tensor(const io::SafetensorsReader& f, const std::string& dir,
                              const std::string& name) {
  if (f.contains(name)) {
    if constexpr (std::is_same_v<Scalar, double>)
      return f.matrix_d(name);
    else
      return f.matrix(name);
  }
  return golden_input(f, dir, name).template cast<Scalar>();
}

// A rank-1 tensor of the case file, in float or double.
template <class Scalar>
VectorT<Scalar> golden_vector(const io::SafetensorsReader& f, const std::string& name) {
  const std::vector<double> v = f.doubles(name);
  VectorT<Scalar> out(static_cast<Index>(v.size()));
  for (std::size_t i = 0; i < v.size(); ++i) out(static_cast<Index>(i)) = static_cast<Scalar>(v[i]);
  return out;
}

// Largest |a - b| relative to the largest |b|.
template <class A, class B>
double max_rel_diff(const A& a, const B& b) {
  const double scale = std::max(b.template cast<double>().cwiseAbs().maxCoeff(), 1e-300);
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff() / scale;
}

// The lowbit tool, when it was built alongside the tests.
inline std::optional<std::string> cli_path() {
#ifdef LOWBIT_CLI_PATH
  return std::string(LOWBIT_CLI_PATH);
#else
  return std::nullopt;
#endif
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The inputs of a fuzzer's corpus, tests/data/<fuzzer>_hostile (seeds and the
// inputs that found defects; not its make_corpus.py), sorted.
inline std::vector<std::string> fuzz_corpus(const std::string& fuzzer) {
  std::vector<std::string> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(test_data_dir() + "/" + fuzzer + "_hostile"))
    if (entry.path().extension() != ".py") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}
// Corpus files named valid_* must be accepted; the others refused.
inline bool is_valid_case(const std::string& file) {
  return std::filesystem::path(file).filename().string().rfind("valid_", 0) == 0;
}
inline std::vector<std::uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A fresh empty directory for a test's files, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("lowbit_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// The fixture of tests that run the lowbit tool: skipped when it was not built.
class ToolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cli_path()) GTEST_SKIP() << "the lowbit tool was not built (LOWBIT_BUILD_TOOLS=OFF)";
  }

 public:
  CommandResult lowbit(const std::string& args) const {
    return run_command(*cli_path() + " " + args);
  }
  TempDir dir;
};

// Runs `lowbit ARGS --out dir/OUT` once to its end, timing it (T), then again
// in the background, sending SIGINT or SIGTERM at fractions of T from 10% to
// 98%: the signals land while the input is read, while the work runs and while
// the output is written, on a fast machine or a slow (sanitized, loaded) one
// alike. An interrupted run exits with 128 + the signal and leaves only
// `input` in `dir`; a run that finished first leaves OUT beside it. A signal
// after OUT was renamed into place (whole) but before the process ended also
// exits 128 + the signal and leaves OUT, which `check_whole` then reads (as
// after the first run): never anything else. Expects at least one run to be
// interrupted before its output was in place. With `scratch` (quantize-model),
// the runs get --scratch-dir dir/SCRATCH, which must be empty after each.
inline void expect_interrupted_runs_leave_nothing(
    const TempDir& dir, const std::string& args, const std::string& input, const std::string& out,
    const std::function<void()>& check_whole = [] {}, const std::string& scratch = "") {
  std::string command = *cli_path() + " " + args + " --out " + dir.file(out);
  std::vector<std::string> kept{input};  // what every run leaves
  if (!scratch.empty()) {
    std::filesystem::create_directory(dir.file(scratch));
    command += " --scratch-dir " + dir.file(scratch);
    kept.push_back(scratch);
  }
  std::sort(kept.begin(), kept.end());
  std::vector<std::string> both = kept;
  both.push_back(out);
  std::sort(both.begin(), both.end());
  const auto files_left = [&] {
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(dir.file("")))
      left.push_back(e.path().filename().string());
    std::sort(left.begin(), left.end());
    if (!scratch.empty()) {
      EXPECT_TRUE(std::filesystem::is_empty(dir.file(scratch)));
    }
    return left;
  };
  const auto start = std::chrono::steady_clock::now();
  const CommandResult whole = run_command(command);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  ASSERT_EQ(files_left(), both);
  check_whole();
  int interrupted = 0;
  const std::pair<double, const char*> moments[] = {{0.1, "INT"},   {0.4, "TERM"}, {0.7, "INT"},
                                                    {0.85, "TERM"}, {0.93, "INT"}, {0.98, "TERM"}};
  for (const auto& [fraction, signal] : moments) {
    std::filesystem::remove_all(dir.file(out));
    const CommandResult r =
        run_command(command + " & pid=$!; sleep " + std::to_string(fraction * seconds) +
                    "; kill -" + signal + " $pid; wait $pid");
    SCOPED_TRACE(testing::Message()
                 << "SIG" << signal << " after " << fraction << " x " << seconds << " s");
    const std::vector<std::string> left = files_left();
    if (r.exit_code == 0) {  // finished before the signal
      EXPECT_EQ(left, both);
      continue;
    }
    EXPECT_EQ(r.exit_code, std::string(signal) == "INT" ? 130 : 143) << r.output;
    if (left == both) {  // the signal came after the output was in place
      check_whole();
      continue;
    }
    ++interrupted;
    EXPECT_EQ(left, kept);
  }
  EXPECT_GT(interrupted, 0);
}

// A real model file (see shared/models/README.md): in $LOWBIT_MODELS_DIR, else
// in the CMake default (../shared/models beside the repository).
inline std::optional<std::string> model_file(const std::string& name) {
  const char* env = std::getenv("LOWBIT_MODELS_DIR");
  for (const std::string& dir :
       {std::string(env ? env : ""), std::string(LOWBIT_MODELS_DIR_DEFAULT)})
    if (!dir.empty() && std::filesystem::is_regular_file(dir + "/" + name)) return dir + "/" + name;
  return std::nullopt;
}

}  // namespace lowbit::test
