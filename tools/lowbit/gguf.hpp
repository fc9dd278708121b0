// `lowbit gguf info`, `gguf dequantize` and `gguf logits`: what a GGUF file
// holds, every tensor of it decoded by lowbit, and a model's logits, to hold
// against ggml's and llama.cpp's own.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command gguf_info_command();
Command gguf_dequantize_command();
Command gguf_logits_command();

}  // namespace lowbit::cli
