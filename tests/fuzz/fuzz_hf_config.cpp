// libFuzzer: any config.json (and model.safetensors.index.json) of a Hugging
// Face directory holding a tiny model either opens (and its layers read back)
// or is rejected with lowbit::Error. Input: the config, NUL, the index.
#include <unistd.h>

#include <filesystem>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string dir = [] {
    const std::string d = std::filesystem::temp_directory_path().string() + "/fuzz_hf_config." +
                          std::to_string(::getpid());
    std::filesystem::create_directories(d);
    lowbit::fuzz::tiny_hf_weights().write(d + "/model.safetensors");
    return d;
  }();
  try {
    lowbit::fuzz::read_hf_directory(data, size, dir);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
