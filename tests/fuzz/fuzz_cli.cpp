// fuzz_cli (fuzz_main.cpp): any command line (the input's lines are the arguments) is either
// parsed, every option reading back, or refused with UsageError or
// lowbit::Error, before any file is touched (fuzz_cli_target.hpp).
#include "fuzz_cli_target.hpp"
#include "fuzz_main.hpp"

int lowbit::fuzz::fuzz_cli(const std::uint8_t* data, std::size_t size) {
  try {
    lowbit::fuzz::parse_command_line(data, size);
  } catch (const lowbit::cli::UsageError&) {
  } catch (const lowbit::Error&) {
  }
  return 0;
}
