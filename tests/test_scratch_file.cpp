// lowbit/io/scratch_file.hpp: file-backed read-write memory that leaves no
// file in its directory (unnamed from the start, or unlinked at once), keeps
// its bytes through release(), and refuses a size the filesystem cannot
// reserve with an error instead of a SIGBUS later.
#include <sys/resource.h>
#include <lowbit/io/scratch_file.hpp>

#include <csignal>
#include <fstream>

#include "test_support.hpp"

namespace lowbit::io {
namespace {

std::vector<std::string> scratch_test_entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  return names;
}

// The lines of /proc/self/maps that name a file in `dir`.
std::vector<std::string> scratch_test_mappings_in(const std::string& dir) {
  std::ifstream maps("/proc/self/maps");
  std::vector<std::string> lines;
  for (std::string line; std::getline(maps, line);)
    if (line.find(" " + dir + "/") != std::string::npos) lines.push_back(line);
  return lines;
}

TEST(ScratchFile, IsZeroedWritableMappedMemoryWithNoNameInItsDirectory) {
  const test::TempDir dir;
  const std::string path = dir.file("");
  const std::string dir_name = std::filesystem::path(path).parent_path().string();
  {
    const std::size_t bytes = 3 * 4096 + 100;  // not a whole number of pages
    ScratchFile scratch(dir_name, bytes);
    ASSERT_NE(scratch.data(), nullptr);
    EXPECT_EQ(scratch.size(), bytes);
    for (std::size_t i = 0; i < bytes; ++i) ASSERT_EQ(scratch.data()[i], 0) << i;
    for (std::size_t i = 0; i < bytes; ++i) scratch.data()[i] = static_cast<unsigned char>(i * 7);
    EXPECT_TRUE(scratch_test_entries(dir_name).empty());
    // A shared mapping of a deleted file in that directory, not anonymous memory.
    const std::vector<std::string> mapped = scratch_test_mappings_in(dir_name);
    ASSERT_EQ(mapped.size(), 1u);
    EXPECT_NE(mapped[0].find("(deleted)"), std::string::npos) << mapped[0];
    EXPECT_NE(mapped[0].find(" rw-s "), std::string::npos) << mapped[0];
    // Released pages come back from the file with what was written.
    scratch.release(0, bytes);
    scratch.release(4096, 2 * 4096 + 1);
    for (std::size_t i = 0; i < bytes; ++i)
      ASSERT_EQ(scratch.data()[i], static_cast<unsigned char>(i * 7)) << i;
    ScratchFile moved = std::move(scratch);
    EXPECT_EQ(scratch.data(), nullptr);
    EXPECT_EQ(moved.data()[5], 35);
  }
  EXPECT_TRUE(scratch_test_mappings_in(dir_name).empty());
  EXPECT_TRUE(scratch_test_entries(dir_name).empty());
}

TEST(ScratchFile, ErrorsNameTheDirectory) {
  const test::TempDir dir;
  test::expect_error_containing([&] { const ScratchFile none(dir.file("missing"), 4096); },
                                "a scratch file in " + dir.file("missing") + ": cannot create");
  test::expect_error_containing([&] { const ScratchFile empty(dir.file(""), 0); }, "0 bytes");
}

// A file size limit stands in for a full disk (no mount needed): the
// reservation fails, cleanly, and nothing is left in the directory.
TEST(ScratchFile, ASizeTheFilesystemCannotReserveIsAnError) {
  const test::TempDir dir;
  const std::string dir_name = std::filesystem::path(dir.file("")).parent_path().string();
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  void (*const saved_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);  // else it ends the process
  rlimit limit = saved;
  limit.rlim_cur = 1 << 20;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  std::string message;
  try {
    const ScratchFile too_big(dir_name, std::size_t(8) << 20);
  } catch (const Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, saved_handler);
  EXPECT_NE(message.find("a scratch file in " + dir_name + ": cannot reserve 8388608 bytes"),
            std::string::npos)
      << message;
  EXPECT_TRUE(scratch_test_entries(dir_name).empty());
}

}  // namespace
}  // namespace lowbit::io
