// Command-line options of the lowbit tool. Every command (and every method of
// `lowbit quantize`) has one table of the options it accepts, with the help
// and the default of each: the parser applies those defaults and the help text
// is generated from the same tables, so what --help says is what runs.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lowbit::cli {

// Misuse of the command line (unknown option, missing tensor, bad value): exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What an option's value must be: returns "" when `value` is acceptable, else
// what was expected ("an integer in 1..8").
using ValueCheck = std::function<std::string(const std::string& value)>;
ValueCheck integer_in(long low, long high);
ValueCheck real_in(double low, double high, bool low_open = false, bool high_open = false);
ValueCheck one_of(const std::vector<std::string>& choices);

// "A:B", integers with 0 <= A < B: decoder layers A..B-1 (as Python's slice).
std::optional<std::pair<int, int>> parse_layer_slice(const std::string& value);

struct OptionSpec {
  std::string name;        // without the leading "--"
  std::string value_name;  // empty for a flag
  std::string help;
  std::string fallback;  // the default the parser applies and help shows; "" = none
                         // (a flag with fallback "on" is on unless --no-<name>)
  bool required = false;
  ValueCheck check;  // applied to the value when given; empty: any value

  // The same option with a narrower check (a method's own range).
  OptionSpec accepting(ValueCheck narrower) const;
};
using OptionTable = std::vector<OptionSpec>;

// The option `name` as every command describes it, with this command's default.
OptionSpec option(const std::string& name, const std::string& fallback = "");
// The option `name`, which the command requires.
OptionSpec required_option(const std::string& name);
// Every option any command knows, in the order the top-level help lists them.
const OptionTable& option_catalogue();

// True when the arguments ask for help (--help or -h).
bool wants_help(const std::vector<std::string>& args);
// "--in FILE --out FILE [--exact] [--threads N]": the required options, then the others.
std::string usage_options(const OptionTable& table);
// One line per option: "--name VALUE  help (default X)" or "(required)".
std::string options_help(const OptionTable& table);
// A command's --help: "Usage: lowbit <command> <usage_options> <operands>",
// the description, and its options.
std::string command_help(const std::string& command, const std::string& description,
                         const OptionTable& table, const std::string& operands = "");

class Options {
 public:
  // Parses "--name value" and "--flag" arguments; only the table's options are
  // accepted, and every value given must pass its option's check (UsageError
  // naming the option otherwise), so misuse is refused before any work starts.
  // With `operands`, bare arguments are the command's operands (merge's SLICE...).
  Options(const std::vector<std::string>& args, OptionTable table, const std::string& command,
          bool operands = false);

  bool has(const std::string& name) const { return values_.count(name) != 0; }  // given
  bool defined(const std::string& name) const { return has(name) || !spec(name).fallback.empty(); }
  bool flag(const std::string& name) const { return has(name); }
  // --name / --no-name, else the table's default ("on" or none).
  bool toggle(const std::string& name) const;
  // The value given, else the table's default; UsageError when neither exists.
  std::string text(const std::string& name) const;
  int integer(const std::string& name) const;
  double real(const std::string& name) const;

  // The options given, for the output metadata.
  const std::map<std::string, std::string>& given() const { return values_; }
  const std::vector<std::string>& operands() const { return operands_; }

 private:
  const OptionSpec& spec(const std::string& name) const;
  OptionTable table_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> operands_;
};

// A command of the tool besides `quantize` (which has a table per method).
struct Command {
  std::string name;
  std::string description;
  OptionTable options;
  std::function<int(const Options&)> run;
  std::string operands = "";  // what its bare arguments are ("SLICE..."); "": none
};

}  // namespace lowbit::cli
