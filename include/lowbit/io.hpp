// lowbit's file io: safetensors and GGUF reading and writing (with ggml's
// block bytes), the checkpoint layouts engines load (GPTQ v1, BPDQ) and the
// tool's single-layer layout. Separate from lowbit/lowbit.hpp because it needs
// nlohmann/json (link lowbit::io); it includes the core types it reads and
// writes.
#pragma once

#include "lowbit/io/awq_format.hpp"
#include "lowbit/io/bpdq_format.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/ggml_blocks.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/io/gptq_format.hpp"
#include "lowbit/io/layer_file.hpp"
#include "lowbit/io/safetensors.hpp"
