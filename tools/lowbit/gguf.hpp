// `lowbit gguf info` and `lowbit gguf dequantize`: what a GGUF file holds, and
// every tensor of it decoded by lowbit, to hold against ggml's own decoding.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command gguf_info_command();
Command gguf_dequantize_command();

}  // namespace lowbit::cli
