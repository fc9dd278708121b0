// `lowbit gemv`: y = x W^T with the bit-plane kernel for any quantized file.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command gemv_command();

}  // namespace lowbit::cli
