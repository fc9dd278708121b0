// lowbit quantize-model: every linear of a llama2.c checkpoint, quantized
// sequentially (examples/decoder/study.hpp) and written as one safetensors
// checkpoint in the GPTQ (v1) or BPDQ format, with a quantize_config JSON.
#pragma once

#include <string>
#include <vector>

namespace lowbit::cli {

int quantize_model_command(const std::vector<std::string>& args);

}  // namespace lowbit::cli
