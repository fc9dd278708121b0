// The command line of the lowbit tool, parsed and checked before any file is
// touched: which command (or quantization method) runs with which options,
// or which help text to print. run_tool (tool.hpp) runs what this returns;
// the CLI fuzzer (tests/fuzz/fuzz_cli.cpp) calls it alone.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "methods.hpp"
#include "options.hpp"

namespace lowbit::cli {

struct Invocation {
  std::optional<std::string> help;   // print this and exit with help_exit
  int help_exit = 0;                 // 2 for a bare `lowbit` (misuse), else 0
  const Method* method = nullptr;    // `lowbit quantize METHOD`
  const Command* command = nullptr;  // every other command
  std::optional<Options> options;    // the options of the method or command
};

// Parses the arguments after the program name; throws UsageError on misuse
// (unknown command, method or option, a value its option refuses).
Invocation parse_command_line(std::vector<std::string> args);

}  // namespace lowbit::cli
