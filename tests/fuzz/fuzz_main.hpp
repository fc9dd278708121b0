// The fuzz targets, one function per input kind (fuzz_<name>.cpp), all in
// one libFuzzer binary (fuzz_main.cpp). Each takes any input and returns 0;
// a reader's lowbit::Error (the command line's: or a usage error) is the
// clean refusal, anything else escapes to libFuzzer as a crash.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lowbit::fuzz {

int fuzz_safetensors(const std::uint8_t* data, std::size_t size);
int fuzz_gguf(const std::uint8_t* data, std::size_t size);
int fuzz_llama2c(const std::uint8_t* data, std::size_t size);
int fuzz_layer_file(const std::uint8_t* data, std::size_t size);
int fuzz_hf_config(const std::uint8_t* data, std::size_t size);
int fuzz_cli(const std::uint8_t* data, std::size_t size);

}  // namespace lowbit::fuzz
