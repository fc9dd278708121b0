#include "options.hpp"

#include <cmath>
#include <cstdlib>

namespace lowbit::cli {

const std::vector<OptionSpec>& option_specs() {
  static const std::vector<OptionSpec> specs{
      {"in", "FILE", "input safetensors file"},
      {"out", "FILE", "output safetensors file"},
      {"bits", "N", "bit width of the uniform grid"},
      {"group-size", "N", "input columns per group; -1 = one group per row"},
      {"sym", "", "symmetric grid (rtn: the GPTQ reference's; awq: zero point 0, see awq.hpp)"},
      {"per-tensor", "", "absmax: one scale for the whole tensor"},
      {"act-order", "", "GPTQ: process columns by descending diag(H)"},
      {"static-groups", "", "GPTQ: fix every group's grid before the pass"},
      {"fresh-group-params", "", "GPTQ: group grids from the updated weights, not the reference's block-start ones"},
      {"damp", "F", "damping as a fraction of mean diag(H)"},
      {"percdamp", "F", "GPTQ: the reference's name for --damp"},
      {"block-size", "N", "GPTQ lazy-update block width"},
      {"mse", "", "search shrunk grid ranges (norm 2.4, grid 100, shrink 0.8)"},
      {"planes", "K", "BPDQ: number of bit planes"},
      {"iters", "N", "BPDQ: refinement iterations"},
      {"ridge", "F", "BPDQ: ridge of the coefficient fit"},
      {"gar", "", "BPDQ: group-aware reordering (--no-gar to disable)"},
      {"no-gar", "", "BPDQ: disable group-aware reordering"},
      {"alpha", "F", "SmoothQuant migration strength in [0, 1] (default 0.5)"},
      {"grid", "N", "AWQ: ratios of the scale search, i/N for i < N (default 20)"},
      {"fraction", "F", "TACQ: fraction of weights kept in full precision, in [0, 1) (default 0.0035)"},
      {"outlier-dtype", "T", "TACQ: storage of the kept weights, f16 (default) or f32"},
      {"saliency-from", "Q", "TACQ: Q(W) in the saliency from gptq (default) or rtn"},
      {"x", "FILE", "gemv: activations, tensor x (or X), tokens x in, any float dtype"},
      {"exact", "", "gemv: exact float tables and f32 coefficients (default: int8 tables, f16)"},
      {"threads", "N", "worker threads"},
      {"size", "NAME", "demo: layer size, small (default) or large"},
      {"model", "FILE", "quantize-model: llama2.c checkpoint"},
      {"method", "NAME", "quantize-model: rtn, gptq or bpdq (default gptq)"},
      {"format", "NAME", "quantize-model: checkpoint format, gptq (default) or bpdq"},
      {"calibration", "N", "quantize-model: calibration sequences of 64 tokens (default 32)"},
  };
  return specs;
}

const OptionSpec* find_option(const std::string& name) {
  for (const OptionSpec& spec : option_specs())
    if (spec.name == name) return &spec;
  return nullptr;
}

Options::Options(const std::vector<std::string>& args, const std::set<std::string>& allowed,
                 const std::string& command) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      throw UsageError(command + ": unexpected argument '" + arg + "'");
    const std::string name = arg.substr(2);
    const OptionSpec* spec = find_option(name);
    if (!spec) throw UsageError(command + ": unknown option --" + name + " (see lowbit --help)");
    if (!allowed.count(name)) throw UsageError(command + ": option --" + name + " does not apply here");
    if (values_.count(name)) throw UsageError(command + ": option --" + name + " given twice");
    if (spec->value_name.empty()) {
      values_[name] = "true";
    } else {
      if (i + 1 >= args.size()) throw UsageError(command + ": option --" + name + " needs a value " + spec->value_name);
      values_[name] = args[++i];
    }
  }
}

std::string Options::text(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) throw UsageError("missing required option --" + name);
  return it->second;
}

std::string Options::text(const std::string& name, const std::string& fallback) const {
  return has(name) ? text(name) : fallback;
}

int Options::integer(const std::string& name, int fallback) const {
  if (!has(name)) return fallback;
  const std::string v = text(name);
  char* end = nullptr;
  const long parsed = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || parsed < -1000000000L || parsed > 1000000000L)
    throw UsageError("option --" + name + ": expected an integer, got '" + v + "'");
  return static_cast<int>(parsed);
}

double Options::real(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string v = text(name);
  char* end = nullptr;
  const double parsed = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(parsed))
    throw UsageError("option --" + name + ": expected a finite number, got '" + v + "'");
  return parsed;
}

bool Options::toggle(const std::string& name, bool fallback) const {
  if (has(name) && has("no-" + name)) throw UsageError("options --" + name + " and --no-" + name + " conflict");
  if (has(name)) return true;
  if (has("no-" + name)) return false;
  return fallback;
}

}  // namespace lowbit::cli
