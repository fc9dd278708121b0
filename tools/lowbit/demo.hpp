// `lowbit demo`: every method on one realistic synthetic layer, in one table.
#pragma once

#include "options.hpp"

namespace lowbit::cli {

Command demo_command();

}  // namespace lowbit::cli
