// lowbit's file io: safetensors reading and writing, and the checkpoint
// layouts engines load (GPTQ v1, BPDQ). Separate from lowbit/lowbit.hpp
// because it needs nlohmann/json (link lowbit::io); it includes the core
// types it reads and writes.
#pragma once

#include "lowbit/io/bpdq_format.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/gptq_format.hpp"
#include "lowbit/io/safetensors.hpp"
