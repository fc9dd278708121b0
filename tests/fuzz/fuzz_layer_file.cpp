// fuzz_layer_file (fuzz_main.cpp): a layer or checkpoint file described by the input (shapes,
// dtypes and fills of the tensors the readers look for; fuzz_targets.hpp)
// either reads back or is rejected with lowbit::Error, by every reader.
#include "fuzz_main.hpp"
#include "fuzz_targets.hpp"

int lowbit::fuzz::fuzz_layer_file(const std::uint8_t* data, std::size_t size) {
  try {
    lowbit::fuzz::read_layer_file(data, size);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
