// `lowbit gemv`: y = x W^T with the bit-plane kernel for any quantized file.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

int run_gemv(const Options& options);

}  // namespace lowbit::cli
