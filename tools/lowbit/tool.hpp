// The whole tool behind main(), in the tool library so that main.cpp compiles
// none of it: parses the command line, runs the command or quantization method
// and turns what it throws into the exit code (message on stderr).
#pragma once

#include <string>
#include <vector>

namespace lowbit::cli {

// The arguments after the program name. Returns 0 on success, 1 on failure (a
// bad file, a numerical error), 2 on misuse (an unknown or refused option, a
// missing tensor, a bad option value).
int run_tool(const std::vector<std::string>& args);

}  // namespace lowbit::cli
