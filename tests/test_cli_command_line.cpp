// tools/lowbit/command_line.hpp: the tool's command line is parsed and checked
// before any file is touched. tests/data/cli_hostile (make_corpus.py there),
// fuzz_cli's seeds and findings, one argument per line: valid_* parse, the
// others are refused with a usage error, and no command line gives another
// exception, whichever option is then read and however.
#include <filesystem>

#include "fuzz/fuzz_cli_target.hpp"
#include "test_support.hpp"

namespace lowbit::cli {
namespace {

TEST(CliCommandLine, FuzzCorpusParsesOrIsRefused) {
  const std::vector<std::string> files = test::fuzz_corpus("cli");
  ASSERT_GE(files.size(), 31u);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const std::vector<std::uint8_t> bytes = test::file_bytes(file);
    std::vector<std::string> words = fuzz::argument_words(bytes.data(), bytes.size());
    if (bytes.empty()) words.clear();
    if (test::is_valid_case(file))
      EXPECT_NO_THROW(parse_command_line(words));
    else
      EXPECT_THROW(parse_command_line(words), UsageError);
    try {
      fuzz::parse_command_line(bytes.data(), bytes.size());
    } catch (const UsageError&) {
    } catch (const Error&) {
    }
  }
}

TEST(CliCommandLine, SaysWhatRunsWithoutRunningIt) {
  const test::TempDir dir;
  const std::string out = dir.file("out.safetensors");
  const Invocation gptq =
      parse_command_line({"quantize", "gptq", "--in", dir.file("absent"), "--out", out});
  ASSERT_TRUE(gptq.method && gptq.options);
  EXPECT_EQ(gptq.method->name, "gptq");
  EXPECT_EQ(gptq.options->integer("bits"), 4);
  EXPECT_FALSE(std::filesystem::exists(out));
  const Invocation info = parse_command_line({"gguf", "info", "model.gguf"});
  ASSERT_TRUE(info.command && info.options);
  EXPECT_EQ(info.command->name, "gguf info");
  EXPECT_EQ(info.options->text("in"), "model.gguf");
  const Invocation bare = parse_command_line({});
  EXPECT_TRUE(bare.help && bare.help_exit == 2);
  EXPECT_EQ(parse_command_line({"demo", "--help"}).help_exit, 0);
}

}  // namespace
}  // namespace lowbit::cli
