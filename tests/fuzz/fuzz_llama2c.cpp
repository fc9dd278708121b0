// fuzz_llama2c (fuzz_main.cpp): any byte string, as a llama2.c checkpoint file, either loads
// (and its layers read back) or is rejected with lowbit::Error.
#include "fuzz_main.hpp"
#include "fuzz_targets.hpp"

int lowbit::fuzz::fuzz_llama2c(const std::uint8_t* data, std::size_t size) {
  static const lowbit::fuzz::ScratchDirectory dir("fuzz_llama2c");
  try {
    lowbit::fuzz::read_llama2c(data, size, dir.path());
  } catch (const lowbit::Error&) {
  }
  return 0;
}
