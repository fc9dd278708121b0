#include "options.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>

namespace lowbit::cli {

namespace {

std::optional<long> parse_integer(const std::string& v) {
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE) return std::nullopt;
  return parsed;
}

std::optional<double> parse_real(const std::string& v) {
  char* end = nullptr;
  const double parsed = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(parsed)) return std::nullopt;
  return parsed;
}

std::string number_text(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

}  // namespace

ValueCheck integer_in(long low, long high) {
  return [low, high](const std::string& v) -> std::string {
    const std::optional<long> n = parse_integer(v);
    if (n && *n >= low && *n <= high) return "";
    return "an integer in " + std::to_string(low) + ".." + std::to_string(high);
  };
}

ValueCheck real_in(double low, double high, bool low_open, bool high_open) {
  return [=](const std::string& v) -> std::string {
    const std::optional<double> x = parse_real(v);
    if (x && (low_open ? *x > low : *x >= low) && (high_open ? *x < high : *x <= high)) return "";
    return std::string("a number in ") + (low_open ? "(" : "[") + number_text(low) + ", " +
           number_text(high) + (high_open ? ")" : "]");
  };
}

ValueCheck one_of(const std::vector<std::string>& choices) {
  return [choices](const std::string& v) -> std::string {
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
    std::string list;
    for (std::size_t i = 0; i < choices.size(); ++i)
      list += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
    return list;
  };
}

std::optional<std::pair<int, int>> parse_layer_slice(const std::string& value) {
  const std::size_t colon = value.find(':');
  if (colon == std::string::npos) return std::nullopt;
  const std::optional<long> begin = parse_integer(value.substr(0, colon));
  const std::optional<long> end = parse_integer(value.substr(colon + 1));
  if (!begin || !end || *begin < 0 || *begin >= *end || *end > 1000000) return std::nullopt;
  return std::pair<int, int>(static_cast<int>(*begin), static_cast<int>(*end));
}

namespace {

// -1 (one group per row) or a positive group width.
ValueCheck group_size_check() {
  const ValueCheck positive = integer_in(1, 1 << 20);
  return [positive](const std::string& v) -> std::string {
    if (v == "-1" || positive(v).empty()) return "";
    return "-1 (one group per row) or an integer in 1..1048576";
  };
}

}  // namespace

OptionSpec OptionSpec::accepting(ValueCheck narrower) const {
  OptionSpec copy = *this;
  copy.check = std::move(narrower);
  return copy;
}

const OptionTable& option_catalogue() {
  auto entry = [](const char* name, const char* value_name, const char* help,
                  ValueCheck check = {}) {
    return OptionSpec{name, value_name, help, "", false, std::move(check)};
  };
  const ValueCheck fraction_open = real_in(0, 1, true, true);
  static const OptionTable catalogue{
      entry("in", "FILE", "input file: safetensors (gguf commands: GGUF)"),
      entry("out", "FILE", "output safetensors file"),
      entry("bits", "N", "bit width of the uniform grid", integer_in(1, 8)),
      entry("group-size", "N", "input columns per group; -1 = one group per row",
            group_size_check()),
      entry("sym", "",
            "symmetric grid (rtn: the GPTQ reference's; awq: zero point 0, see awq.hpp)"),
      entry("per-tensor", "", "absmax: one scale for the whole tensor"),
      entry("act-order", "", "GPTQ: process columns by descending diag(H)"),
      entry("static-groups", "", "GPTQ: fix every group's grid before the pass"),
      entry("fresh-group-params", "",
            "GPTQ: group grids from the updated weights, not the reference's block-start ones"),
      entry("damp", "F", "damping as a fraction of mean diag(H)", fraction_open),
      entry("percdamp", "F", "GPTQ: the reference's name for --damp", fraction_open),
      entry("block-size", "N", "lazy-update block width of the error feedback",
            integer_in(1, 65536)),
      entry("mse", "", "search shrunk grid ranges (norm 2.4, grid 100, shrink 0.8)"),
      entry("gguf-type", "TYPE",
            "quantize into a ggml block type (q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, "
            "q5_K, q6_K, tq2_0, iq4_nl) and write gguf_blocks, ggml's bytes; rtn: llama.cpp's "
            "quantizer, with diag(H) as its importance matrix when the input has X or H"),
      entry("planes", "K", "BPDQ: number of bit planes", integer_in(1, 4)),
      entry("iters", "N", "BPDQ: refinement iterations", integer_in(1, 1000)),
      entry("ridge", "F", "BPDQ: ridge of the coefficient fit", real_in(0, 1e6)),
      entry("gar", "", "BPDQ: group-aware reordering (--no-gar to disable)"),
      entry("no-gar", "", "BPDQ: disable group-aware reordering"),
      entry("alpha", "F", "SmoothQuant migration strength in [0, 1]", real_in(0, 1)),
      entry("grid", "N", "AWQ: ratios of the scale search, i/N for i < N", integer_in(1, 1000)),
      entry("fraction", "F", "TACQ: fraction of weights kept in full precision, in [0, 1)",
            real_in(0, 1, false, true)),
      entry("outlier-dtype", "T", "TACQ: storage of the kept weights, f16 or f32",
            one_of({"f16", "f32"})),
      entry("saliency-from", "Q", "TACQ: Q(W) in the saliency from gptq or rtn",
            one_of({"gptq", "rtn"})),
      entry("type", "TYPE",
            "quantize-model --format gguf: the ggml type of every matrix, as --gguf-type"),
      entry("tokens", "IDS", "gguf logits: token ids, comma-separated"),
      entry("x", "FILE", "gemv: activations, tensor x (or X), tokens x in, any float dtype"),
      entry("exact", "",
            "gemv: exact float tables and f32 coefficients (default: int8 tables, f16)"),
      entry("threads", "N", "worker threads (all cores unless given)", integer_in(1, 1024)),
      entry("size", "NAME", "demo: layer size, small or large", one_of({"small", "large"})),
      entry("model", "PATH",
            "quantize-model: llama2.c checkpoint file or Hugging Face model directory"),
      entry("method", "NAME",
            "quantize-model: rtn, gptq, awq or bpdq; with --format dequantized also tacq "
            "(task gradients) or tacq-gradient-free (activation proxy)"),
      entry("format", "NAME",
            "quantize-model: checkpoint format, gptq, awq, bpdq, gguf or dequantized",
            one_of({"gptq", "awq", "bpdq", "gguf", "dequantized"})),
      entry("max-shard-size", "SIZE",
            "quantize-model, gptq, awq, bpdq and dequantized: largest safetensors shard, bytes or "
            "with KB, MB, GB, KiB, MiB, GiB"),
      entry("calib", "FILE",
            "quantize-model: calibration token ids, safetensors input_ids (I32/I64 "
            "[sequences, length]) or text (one sequence of ids per line)"),
      entry("task", "FILE",
            "quantize-model --method tacq: task token ids as --calib takes them; safetensors "
            "may add labels (same shape, -100 = not in the loss, else equal to input_ids)"),
      entry("calib-samples", "N", "quantize-model: calibration sequences (the first N of --calib)",
            integer_in(1, 100000)),
      entry("calib-length", "N", "quantize-model: tokens per calibration sequence (at most)",
            integer_in(1, 1 << 20)),
      entry("layers", "A:B",
            "quantize-model: only decoder layers A..B-1 (Python's A:B), a slice for lowbit "
            "merge; needs --calibration float",
            [](const std::string& v) -> std::string {
              return parse_layer_slice(v) ? "" : "A:B, integers with 0 <= A < B";
            }),
      entry("calibration", "MODE",
            "quantize-model: sequential (on the quantized layers' outputs) or float",
            one_of({"sequential", "float"})),
      entry("scratch-dir", "DIR",
            "quantize-model: directory of the calibration's residual stream file "
            "(default: the one --out goes in)"),
  };
  return catalogue;
}

namespace {

const OptionSpec* find_option(const OptionTable& table, const std::string& name) {
  for (const OptionSpec& spec : table)
    if (spec.name == name) return &spec;
  return nullptr;
}

std::string left_column(const OptionSpec& spec) {
  return "--" + spec.name + (spec.value_name.empty() ? "" : " " + spec.value_name);
}

}  // namespace

OptionSpec option(const std::string& name, const std::string& fallback) {
  const OptionSpec* spec = find_option(option_catalogue(), name);
  if (!spec) throw std::logic_error("lowbit: option --" + name + " is not in the catalogue");
  OptionSpec copy = *spec;
  copy.fallback = fallback;
  return copy;
}

OptionSpec required_option(const std::string& name) {
  OptionSpec spec = option(name);
  spec.required = true;
  return spec;
}

bool wants_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(),
                     [](const std::string& a) { return a == "--help" || a == "-h"; });
}

std::string usage_options(const OptionTable& table) {
  std::string required, optional;
  for (const OptionSpec& spec : table) {
    if (spec.required)
      required += " " + left_column(spec);
    else
      optional += " [" + left_column(spec) + "]";
  }
  return required + optional;
}

std::string options_help(const OptionTable& table) {
  std::string out;
  for (const OptionSpec& spec : table) {
    const std::string left = left_column(spec);
    out += "  " + left + std::string(left.size() < 24 ? 24 - left.size() : 1, ' ') + spec.help;
    if (spec.required)
      out += " (required)";
    else if (!spec.fallback.empty())
      out += " (default " + spec.fallback + ")";
    out += "\n";
  }
  return out;
}

std::string command_help(const std::string& command, const std::string& description,
                         const OptionTable& table, const std::string& operands) {
  return "Usage: lowbit " + command + usage_options(table) +
         (operands.empty() ? "" : " " + operands) + "\n\n" + description + "\n\nOptions:\n" +
         options_help(table) + "\nExit codes: 0 success, 1 failure, 2 misuse.\n";
}

Options::Options(const std::vector<std::string>& args, OptionTable table,
                 const std::string& command, bool operands)
    : table_(std::move(table)) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (operands && arg.rfind("--", 0) != 0) {
      operands_.push_back(arg);
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError(command + ": unexpected argument '" + arg + "'");
    const std::string name = arg.substr(2);
    if (!find_option(option_catalogue(), name))
      throw UsageError(command + ": unknown option --" + name + " (see lowbit --help)");
    const OptionSpec* spec = find_option(table_, name);
    if (!spec)
      throw UsageError(command + ": option --" + name + " does not apply here (see lowbit " +
                       command + " --help)");
    if (values_.count(name)) throw UsageError(command + ": option --" + name + " given twice");
    if (spec->value_name.empty()) {
      values_[name] = "true";
      continue;
    }
    if (i + 1 >= args.size())
      throw UsageError(command + ": option --" + name + " needs a value " + spec->value_name);
    const std::string& value = args[++i];
    if (value.rfind("--", 0) == 0)  // `--out --sym` must not write a file named --sym
      throw UsageError(command + ": option --" + name + " needs a value " + spec->value_name +
                       ", got the option " + value);
    if (spec->check) {
      const std::string expected = spec->check(value);
      if (!expected.empty())
        throw UsageError(command + ": option --" + name + ": expected " + expected + ", got '" +
                         value + "'");
    }
    values_[name] = value;
  }
}

const OptionSpec& Options::spec(const std::string& name) const {
  const OptionSpec* spec = find_option(table_, name);
  if (!spec) throw std::logic_error("lowbit: option --" + name + " is not in this command's table");
  return *spec;
}

bool Options::toggle(const std::string& name) const {
  if (has(name) && has("no-" + name))
    throw UsageError("options --" + name + " and --no-" + name + " conflict");
  if (has(name)) return true;
  if (has("no-" + name)) return false;
  return spec(name).fallback == "on";
}

std::string Options::text(const std::string& name) const {
  const auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  const OptionSpec& s = spec(name);
  if (s.fallback.empty()) throw UsageError("missing required option --" + name);
  return s.fallback;
}

int Options::integer(const std::string& name) const {
  const std::string v = text(name);
  const std::optional<long> parsed = parse_integer(v);
  if (!parsed || *parsed < -1000000000L || *parsed > 1000000000L)
    throw UsageError("option --" + name + ": expected an integer, got '" + v + "'");
  return static_cast<int>(*parsed);
}

double Options::real(const std::string& name) const {
  const std::string v = text(name);
  const std::optional<double> parsed = parse_real(v);
  if (!parsed) throw UsageError("option --" + name + ": expected a finite number, got '" + v + "'");
  return *parsed;
}

}  // namespace lowbit::cli
