// lowbit quantize-model: every linear of a llama2.c checkpoint or Hugging Face
// directory, quantized sequentially (lowbit/model/sequential_quantization.hpp)
// and written as a Hugging Face GPTQ (v1) directory (lowbit/model/hf_export.hpp)
// or one BPDQ safetensors file with a quantize_config JSON.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command quantize_model_command();

}  // namespace lowbit::cli
