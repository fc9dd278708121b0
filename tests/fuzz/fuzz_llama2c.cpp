// libFuzzer: any byte string, as a llama2.c checkpoint file, either loads
// (and its layers read back) or is rejected with lowbit::Error.
#include <unistd.h>

#include <filesystem>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string dir = [] {
    const std::string d = std::filesystem::temp_directory_path().string() + "/fuzz_llama2c." +
                          std::to_string(::getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  try {
    lowbit::fuzz::read_llama2c(data, size, dir);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
