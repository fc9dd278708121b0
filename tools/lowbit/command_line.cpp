#include "command_line.hpp"

#include <sstream>

#include "demo.hpp"
#include "gemv.hpp"
#include "gguf.hpp"
#include "merge.hpp"
#include "quantize_model.hpp"

namespace lowbit::cli {
namespace {

const std::vector<Command>& commands() {
  static const std::vector<Command> list{
      quantize_model_command(), gemv_command(), gguf_info_command(), gguf_dequantize_command(),
      gguf_logits_command(),    demo_command(), merge_command()};
  return list;
}

// What `lowbit quantize` reads and writes (lowbit/io/layer_file.hpp).
const char* const kQuantizeDescription =
    "quantizes one linear layer (or several sharing one input) with METHOD.\n\n"
    "Input tensors (any float dtype), by name:\n"
    "  W          out x in weight (required)\n"
    "  H | X      calibration: Hessian proxy (in x in) or activations (tokens x in)\n"
    "  G          out x in gradient magnitudes (TACQ)\n"
    "  W2, W3...  further linears sharing the input (AWQ, SmoothQuant)\n"
    "  ln_weight, ln_bias   a preceding LayerNorm; ln_weight alone: an RMSNorm\n"
    "  F64 inputs run AWQ and SmoothQuant in double (as the references' float64 runs)\n\n"
    "Output tensors (F32 unless noted):\n"
    "  Q          out x in: the dequantized weight as the model sees it (always)\n"
    "  uniform results: qint (I32 out x in), scale and zero ([groups, out]), g_idx (I32 [in]),\n"
    "                   perm (I32 [in]) with --act-order\n"
    "  bit-plane results: B (U8 [k, out, in]), c ([groups, k+1, out]),\n"
    "                     B_packed (I32 [in/32, k, out]; bit j of a word is column 32t+j)\n"
    "  awq: scales ([in]; the layer runs on X/s: fold 1/s into the norm), Wq (the\n"
    "       quantized W*s, also as qint/scale/zero/g_idx), Q = Wq/s, clip_max_val,\n"
    "       q_scales, q_zeros ([out, groups]), search_loss_history (F64),\n"
    "       ln_weight_scaled/ln_bias_scaled with a norm\n"
    "  smoothquant: scales, W_smoothed (W*s), W8 (I8 out x in), w8_scale ([out]),\n"
    "       Q = W8*w8_scale/s, ln_weight_smoothed/ln_bias_smoothed with a norm;\n"
    "       metadata rel_out_err_w8a8 (int8 kernel)\n"
    "  further linears: W2_smoothed...; other per-linear outputs get a suffix: Q_2, Wq_2...\n"
    "  tacq: the uniform tensors (perm with --act-order), mask (U8 out x in), and the kept\n"
    "       weights as CSR: outlier_rowptr (I32 [out+1]), outlier_col (I32 [nnz]),\n"
    "       outlier_val (F16 or F32 [nnz]); Q = the dense part with those values written in\n"
    "Metadata: method, the options that define the result (not --threads: the result is\n"
    "  bit-identical for any), and rel_out_err = ||(W-Q) X^T|| / ||W X^T|| when X is given\n"
    "  (the same through H otherwise; 0 when W X^T and Q X^T are both zero).";

// --in and --out, then the method's own options.
OptionTable quantize_options(const Method& method) {
  OptionTable table{required_option("in"), required_option("out")};
  table.insert(table.end(), method.options.begin(), method.options.end());
  return table;
}

std::string indent(const std::string& text) {
  std::string out = "  ";
  for (char c : text) out += c == '\n' ? std::string("\n  ") : std::string(1, c);
  return out;
}

std::string methods_help() {
  std::string out = "Methods (lowbit quantize METHOD --help: its options and defaults):\n";
  for (const Method& m : all_methods()) {
    out += "  " + m.name + std::string(m.name.size() < 12 ? 12 - m.name.size() : 1, ' ') +
           m.summary + "\n      options:";
    for (const OptionSpec& o : m.options) out += " --" + o.name;
    out += "\n";
  }
  return out;
}

std::string help_text() {
  std::ostringstream out;
  out << "lowbit: low-bit quantization of LLM weight matrices\n\nUsage:\n"
      << "  lowbit quantize METHOD --in FILE --out FILE [options]\n";
  for (const Command& c : commands())
    out << "  lowbit " << c.name << usage_options(c.options)
        << (c.operands.empty() ? "" : " " + c.operands) << "\n";
  out << "  lowbit --help | lowbit COMMAND --help | lowbit quantize METHOD --help\n\n"
      << "quantize: " << kQuantizeDescription << "\n\n";
  for (const Command& c : commands()) out << c.name << ":\n" << indent(c.description) << "\n\n";
  out << methods_help() << "\nOptions:\n"
      << options_help(option_catalogue()) << "\nExit codes: 0 success, 1 failure, 2 misuse.\n";
  return out.str();
}

Invocation parse_quantize(const std::vector<std::string>& args) {
  if (args.empty()) throw UsageError("quantize: missing METHOD (see lowbit --help)");
  Invocation call;
  if (wants_help({args[0]})) {
    call.help = "Usage: lowbit quantize METHOD --in FILE --out FILE [options]\n\n" +
                std::string(kQuantizeDescription) + "\n\n" + methods_help();
    return call;
  }
  call.method = find_method(args[0]);
  if (!call.method)
    throw UsageError("quantize: unknown method '" + args[0] + "' (see lowbit --help)");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (wants_help(rest))
    call.help = command_help("quantize " + call.method->name, call.method->summary,
                             quantize_options(*call.method));
  else
    call.options.emplace(rest, quantize_options(*call.method), "quantize " + call.method->name);
  return call;
}

}  // namespace

Invocation parse_command_line(std::vector<std::string> args) {
  Invocation call;
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    call.help = help_text();
    call.help_exit = args.empty() ? 2 : 0;
    return call;
  }
  std::string name = args[0];
  args.erase(args.begin());
  if (name == "quantize") return parse_quantize(args);
  if (name ==
      "gguf") {  // two words: gguf info, gguf dequantize, gguf logits; the file may come bare
    if (args.empty() || args[0].rfind("--", 0) == 0)
      throw UsageError("gguf: missing its command, info, dequantize or logits (see lowbit --help)");
    name += " " + args[0];
    args.erase(args.begin());
    if (!args.empty() && args[0].rfind("--", 0) != 0) args.insert(args.begin(), "--in");
  }
  if (name == "merge" && !args.empty() && args[0].rfind("--", 0) != 0)
    args.insert(args.begin(), "--out");  // lowbit merge OUT SLICE...
  for (const Command& c : commands()) {
    if (c.name != name) continue;
    call.command = &c;
    if (wants_help(args))
      call.help = command_help(c.name, c.description, c.options, c.operands);
    else
      call.options.emplace(args, c.options, c.name, !c.operands.empty());
    return call;
  }
  throw UsageError("unknown command '" + name + "' (see lowbit --help)");
}

}  // namespace lowbit::cli
