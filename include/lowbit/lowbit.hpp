// lowbit: low-bit quantization of LLM weights in plain C++17 over Eigen.
// This umbrella header brings in everything public that needs nothing but
// Eigen: the core (representations, calibration, configs, errors), every
// quantizer with its config, result and report, and the kernels. File io
// needs nlohmann/json and has its own umbrella, lowbit/io.hpp.
#pragma once

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/calibration.hpp"
#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_grid.hpp"
#include "lowbit/core/ggml_types.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/kernels/bitplane_lut_gemm.hpp"
#include "lowbit/kernels/int8_gemm.hpp"
#include "lowbit/quant/absmax.hpp"
#include "lowbit/quant/awq.hpp"
#include "lowbit/quant/bpdq.hpp"
#include "lowbit/quant/gptq.hpp"
#include "lowbit/quant/gptq_ggml.hpp"
#include "lowbit/quant/rtn.hpp"
#include "lowbit/quant/smoothquant.hpp"
#include "lowbit/quant/tacq.hpp"
