// What the CLI fuzzer runs on one input, shared with the test that replays
// its corpus (tests/data/cli_hostile): the input is split into argument words
// at newlines, parsed as `lowbit` parses its command line, and every option of
// the command read back as each getter reads it, with the checks the commands
// make before any work (ggml type names, byte sizes, GPTQ's configuration).
// Nothing reads or writes a file. UsageError and lowbit::Error are clean
// refusals; any other exception escapes.
#pragma once

#include <lowbit/model/hf_export.hpp>
#include <string>
#include <vector>

#include "../../tools/lowbit/command_line.hpp"

namespace lowbit::fuzz {

inline std::vector<std::string> argument_words(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> words(1);
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == '\n')
      words.emplace_back();
    else
      words.back() += char(data[i]);
  }
  return words;
}

template <class Read>
void refused_cleanly_or_read(Read&& read) {
  try {
    (void)read();
  } catch (const cli::UsageError&) {
  } catch (const Error&) {
  }
}

inline void parse_command_line(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> words = argument_words(data, size);
  if (size == 0) words.clear();
  const cli::Invocation call = cli::parse_command_line(words);
  if (!call.options) return;
  const cli::Options& o = *call.options;
  const cli::OptionTable& table = call.method ? call.method->options : call.command->options;
  for (const cli::OptionSpec& spec : table) {
    const std::string& name = spec.name;
    refused_cleanly_or_read([&] { return o.text(name); });
    refused_cleanly_or_read([&] { return o.integer(name); });
    refused_cleanly_or_read([&] { return o.real(name); });
    refused_cleanly_or_read([&] { return o.toggle(name); });
    if (name == "gguf-type" || name == "type")
      refused_cleanly_or_read([&] { return cli::gguf_type(o, name); });
    if (name == "max-shard-size" && o.defined(name))
      refused_cleanly_or_read([&] { return model::parse_byte_size(o.text(name)); });
  }
  if (call.method && (call.method->name == "gptq" || call.method->name == "tacq"))
    refused_cleanly_or_read([&] { return cli::gptq_config(o, call.method->name).bits; });
}

}  // namespace lowbit::fuzz
