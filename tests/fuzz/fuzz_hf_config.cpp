// fuzz_hf_config (fuzz_main.cpp): any config.json (and model.safetensors.index.json) of a Hugging
// Face directory holding a tiny model either opens (and its layers read back)
// or is rejected with lowbit::Error. Input: the config, NUL, the index.
#include "fuzz_main.hpp"
#include "fuzz_targets.hpp"

int lowbit::fuzz::fuzz_hf_config(const std::uint8_t* data, std::size_t size) {
  static const lowbit::fuzz::ScratchDirectory dir("fuzz_hf_config");
  static const bool weights_written =
      (lowbit::fuzz::tiny_hf_weights().write(dir.path() + "/model.safetensors"), true);
  (void)weights_written;
  try {
    lowbit::fuzz::read_hf_directory(data, size, dir.path());
  } catch (const lowbit::Error&) {
  }
  return 0;
}
