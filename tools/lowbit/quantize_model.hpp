// lowbit quantize-model: every linear of a llama2.c checkpoint, quantized
// sequentially (lowbit/model/sequential_quantization.hpp) and written as one safetensors
// checkpoint in the GPTQ (v1) or BPDQ format, with a quantize_config JSON.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command quantize_model_command();

}  // namespace lowbit::cli
