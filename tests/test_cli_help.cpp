// The tool's help is generated from the option tables the parser uses: what
// it documents is what runs. Every command and method answers --help; the
// defaults a method's help states are the ones applied (giving each
// explicitly changes nothing in the output); the flags it lists are accepted
// and every other option is refused; required options are required.
#include <cstring>
#include <iterator>
#include <regex>
#include <sstream>

#include "../tools/lowbit/command_line.hpp"
#include "test_support.hpp"

namespace lowbit {
namespace {

class CliHelp : public test::ToolTest {
 protected:
  std::string inputs() const { return test::bundled_golden_dir() + "/inputs_64x256.safetensors"; }
};

struct DocumentedOption {
  std::string name, value_name, fallback;  // fallback: the "(default X)" of the help line
  bool required = false;
};

// The option lines ("  --name VALUE  help (default X)") of a help text.
std::vector<DocumentedOption> documented_options(const std::string& help) {
  static const std::regex line(
      R"(^  --([a-z0-9-]+)( [A-Z]+)? .*?(\(default (\S+)\)|\(required\))?$)");
  std::vector<DocumentedOption> options;
  std::istringstream in(help);
  for (std::string text; std::getline(in, text);) {
    std::smatch m;
    if (!std::regex_match(text, m, line)) continue;
    options.push_back(
        {m[1], m[2].length() ? std::string(m[2]).substr(1) : "", m[4], m[3] == "(required)"});
  }
  return options;
}

// The first words of the lines of the section that starts with `header`
// (up to the next empty line) that match `pattern`.
std::vector<std::string> listed(const std::string& help, const std::string& header,
                                const std::regex& pattern) {
  std::vector<std::string> names;
  std::istringstream in(help);
  bool inside = false;
  for (std::string text; std::getline(in, text);) {
    if (text.rfind(header, 0) == 0)
      inside = true;
    else if (text.empty())
      inside = false;
    std::smatch m;
    if (inside && std::regex_match(text, m, pattern)) names.push_back(m[1]);
  }
  return names;
}

// A command line's words (the test's paths have no spaces).
std::vector<std::string> help_test_words(const std::string& line) {
  std::istringstream in(line);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

// Every tensor (name, dtype, shape, bytes) and metadata value but the run time
// and the options given.
bool same_output(const io::SafetensorsReader& a, const io::SafetensorsReader& b) {
  if (a.names().size() != b.names().size()) return false;
  for (const std::string& name : a.names()) {
    if (!b.contains(name)) return false;
    const io::TensorInfo &x = a.info(name), &y = b.info(name);
    if (x.dtype != y.dtype || x.shape != y.shape ||
        std::memcmp(a.data(name), b.data(name), x.end - x.begin) != 0)
      return false;
  }
  std::map<std::string, std::string> ma = a.metadata(), mb = b.metadata();
  for (auto* m : {&ma, &mb}) m->erase("seconds"), m->erase("options");
  return ma == mb;
}

TEST_F(CliHelp, EveryCommandAndMethodAnswersHelp) {
  const test::CommandResult help = lowbit("--help");
  ASSERT_EQ(help.exit_code, 0);
  EXPECT_EQ(lowbit("").exit_code, 2);
  EXPECT_EQ(lowbit("help").output, help.output);
  const std::vector<std::string> commands =
      listed(help.output, "Usage:", std::regex(R"(^  lowbit ([a-z][a-z-]*(?: [a-z]+)?) .*)"));
  EXPECT_EQ(commands,
            (std::vector<std::string>{"quantize", "quantize-model", "gemv", "gguf info",
                                      "gguf dequantize", "gguf logits", "demo", "merge"}));
  const std::vector<std::string> methods =
      listed(help.output, "Methods", std::regex(R"(^  ([a-z0-9]+) .*)"));
  EXPECT_EQ(methods, (std::vector<std::string>{"rtn", "absmax", "gptq", "awq", "smoothquant",
                                               "tacq", "bpdq"}));
  for (const std::string& command : commands) {
    const test::CommandResult r = lowbit(command + " --help");
    EXPECT_EQ(r.exit_code, 0) << command << "\n" << r.output;
    EXPECT_NE(r.output.find("Usage: lowbit " + command), std::string::npos) << r.output;
  }
  for (const std::string& method : methods) {
    const test::CommandResult r = lowbit("quantize " + method + " --help");
    EXPECT_EQ(r.exit_code, 0) << method;
    EXPECT_NE(r.output.find("Usage: lowbit quantize " + method + " --in FILE --out FILE"),
              std::string::npos)
        << r.output;
  }
  // The layout the tool reads and writes is documented.
  for (const char* text : {"B_packed", "g_idx", "clip_max_val", "W8 (I8", "outlier_rowptr"})
    EXPECT_NE(help.output.find(text), std::string::npos) << text;
}

// Each command without arguments names its first required option.
TEST_F(CliHelp, RequiredOptionsAreRequired) {
  for (const std::string command : {"quantize-model", "gemv", "quantize rtn", "merge"}) {
    const std::vector<DocumentedOption> options =
        documented_options(lowbit(command + " --help").output);
    ASSERT_FALSE(options.empty()) << command;
    ASSERT_TRUE(options[0].required) << command;
    const test::CommandResult r = lowbit(command);
    EXPECT_EQ(r.exit_code, 2) << command;
    EXPECT_NE(r.output.find("missing required option --" + options[0].name), std::string::npos)
        << command << "\n"
        << r.output;
  }
}

// For every method: the run with every documented default given explicitly
// writes what the run without them writes; each documented flag runs; every
// option of the tool the method does not list is refused.
TEST_F(CliHelp, MethodHelpIsWhatRuns) {
  const std::vector<DocumentedOption> catalogue = documented_options(lowbit("--help").output);
  ASSERT_GT(catalogue.size(), 20u);
  for (const std::string method : {"rtn", "absmax", "gptq", "awq", "smoothquant", "tacq", "bpdq"}) {
    SCOPED_TRACE(method);
    const std::vector<DocumentedOption> options =
        documented_options(lowbit("quantize " + method + " --help").output);
    std::string defaults;
    for (const DocumentedOption& o : options)
      if (!o.fallback.empty())
        defaults += " --" + o.name + (o.value_name.empty() ? "" : " " + o.fallback);
    ASSERT_FALSE(defaults.empty());
    const std::string base = "quantize " + method + " --in " + inputs() + " --out ";
    const test::CommandResult implicit = lowbit(base + dir.file("implicit.safetensors"));
    const test::CommandResult explicit_ =
        lowbit(base + dir.file("explicit.safetensors") + defaults);
    ASSERT_EQ(implicit.exit_code, 0) << implicit.output;
    ASSERT_EQ(explicit_.exit_code, 0) << defaults << "\n" << explicit_.output;
    EXPECT_TRUE(same_output(io::SafetensorsReader(dir.file("implicit.safetensors")),
                            io::SafetensorsReader(dir.file("explicit.safetensors"))))
        << defaults;

    for (const DocumentedOption& o : options)
      if (o.value_name.empty() && o.fallback.empty()) {
        const test::CommandResult r = lowbit(base + dir.file("flag.safetensors") + " --" + o.name);
        EXPECT_EQ(r.exit_code, 0) << "--" << o.name << "\n" << r.output;
      }
    // The parser refuses the rest before any file is touched; the tool runs
    // what it returns, so one refusal is checked through the tool itself and
    // the others in this process (a tool launch per option took half of this
    // test's time under the sanitizers).
    bool refused_by_tool = false;
    for (const DocumentedOption& o : catalogue) {
      const bool listed = std::any_of(options.begin(), options.end(),
                                      [&](const DocumentedOption& m) { return m.name == o.name; });
      if (listed) continue;
      const std::string args = base + dir.file("refused.safetensors") + " --" + o.name + " 1";
      const std::string refusal = "--" + o.name + " does not apply";
      if (!refused_by_tool) {
        const test::CommandResult r = lowbit(args);
        EXPECT_EQ(r.exit_code, 2) << "--" << o.name;
        EXPECT_NE(r.output.find(refusal), std::string::npos) << r.output;
        refused_by_tool = true;
        continue;
      }
      try {
        cli::parse_command_line(help_test_words(args));
        ADD_FAILURE() << "--" << o.name << " is accepted";
      } catch (const cli::UsageError& e) {
        EXPECT_NE(std::string(e.what()).find(refusal), std::string::npos) << e.what();
      }
    }
    EXPECT_TRUE(refused_by_tool);
  }
}

}  // namespace
}  // namespace lowbit
