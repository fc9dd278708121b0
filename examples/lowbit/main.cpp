// lowbit: the command-line tool.
//
//   lowbit quantize METHOD --in IN.safetensors --out OUT.safetensors [options]
//   lowbit gemv --in QUANT.safetensors --x X.safetensors --out Y.safetensors [--exact] [--threads N]
//   lowbit demo [--size small|large] [--threads N]
//   lowbit quantize-model --model CKPT.bin --out OUT.safetensors [options]
//
// Exit codes: 0 success, 1 failure (bad file, numerical error), 2 misuse
// (unknown option, missing tensor, bad option value).
#include <chrono>
#include <iostream>
#include <set>
#include <sstream>

#include "demo.hpp"
#include "gemv.hpp"
#include "methods.hpp"
#include "options.hpp"
#include "quantize_model.hpp"

namespace lowbit::cli {
namespace {

std::string help_text() {
  std::ostringstream out;
  out << "lowbit: low-bit quantization of LLM weight matrices\n\n"
         "Usage:\n"
         "  lowbit quantize METHOD --in IN.safetensors --out OUT.safetensors [options]\n"
         "  lowbit gemv --in QUANT.safetensors --x X.safetensors --out Y.safetensors [--exact] [--threads N]\n"
         "  lowbit demo [--size small|large] [--threads N]\n"
         "  lowbit quantize-model --model CKPT.bin --out OUT.safetensors [--method rtn|gptq|bpdq]\n"
         "      [--bits B] [--group-size G] [--format gptq|bpdq] [--act-order] [--calibration N]\n"
         "  lowbit --help\n\n"
         "Input tensors (any float dtype), by name:\n"
         "  W          out x in weight (required)\n"
         "  H | X      calibration: Hessian proxy (in x in) or activations (tokens x in)\n"
         "  G          out x in gradient magnitudes (TACQ)\n"
         "  W2, W3...  further linears sharing the input (AWQ, SmoothQuant)\n"
         "  ln_weight, ln_bias   a preceding LayerNorm; ln_weight alone: an RMSNorm (AWQ, SmoothQuant)\n"
         "  F64 inputs run AWQ and SmoothQuant in double (as the references' float64 runs)\n\n"
         "Output tensors (F32 unless noted):\n"
         "  Q          out x in: the dequantized weight as the model sees it (always)\n"
         "  uniform results: qint (I32 out x in), scale and zero ([groups, out]), g_idx (I32 [in]),\n"
         "                   perm (I32 [in]) with --act-order\n"
         "  bit-plane results: B (U8 [k, out, in]), c ([groups, k+1, out]),\n"
         "                     B_packed (I32 [in/32, k, out]; bit j of a word is column 32t+j)\n"
         "  awq: scales ([in]; the layer runs on X/s: fold 1/s into the norm), Wq (the quantized W*s,\n"
         "       also as qint/scale/zero/g_idx), Q = Wq/s, clip_max_val, q_scales, q_zeros ([out, groups]),\n"
         "       search_loss_history (F64), ln_weight_scaled/ln_bias_scaled with a norm\n"
         "  smoothquant: scales, W_smoothed (W*s), W8 (I8 out x in), w8_scale ([out]), Q = W8*w8_scale/s,\n"
         "       ln_weight_smoothed/ln_bias_smoothed with a norm; metadata rel_out_err_w8a8 (int8 kernel)\n"
         "  further linears: W2_smoothed...; other per-linear outputs get a suffix: Q_2, Wq_2, W8_2...\n"
         "  tacq: the uniform tensors (perm with --act-order), mask (U8 out x in), and the kept weights\n"
         "       as CSR: outlier_rowptr (I32 [out+1]), outlier_col (I32 [nnz]), outlier_val (F16 or F32\n"
         "       [nnz]); Q = the dense part with those values written at their positions\n"
         "Metadata: method, the effective options, seconds, and rel_out_err =\n"
         "  ||(W-Q) X^T|| / ||W X^T|| when X is given (the same through H otherwise).\n\n"
         "gemv: y = x W^T with the bit-plane lookup-table kernel. --in is any file lowbit quantize\n"
         "  writes: bit-plane tensors B_packed and c (+ g_idx), or uniform qint, scale, zero (+ g_idx),\n"
         "  plus outlier_rowptr (I32 [out+1]), outlier_col (I32), outlier_val (F16/F32) when present.\n"
         "  --x holds x or X ([tokens, in], any float dtype); the output holds y ([tokens, out], F32).\n"
         "  AWQ results: x is divided by their input-channel 'scales' first (their codes act on x / s).\n"
         "  Default: int8 tables and f16 coefficients (error bound in kernels/bitplane_lut_gemm.hpp);\n"
         "  --exact: float tables and f32 coefficients.\n\n"
         "Methods:\n";
  for (const Method& m : all_methods()) {
    out << "  " << m.name << std::string(m.name.size() < 12 ? 12 - m.name.size() : 1, ' ')
        << m.summary << "\n      options:";
    for (const std::string& o : m.options) out << " --" << o;
    out << "\n";
  }
  out << "\nOptions:\n";
  for (const OptionSpec& spec : option_specs()) {
    std::string left = "--" + spec.name + (spec.value_name.empty() ? "" : " " + spec.value_name);
    out << "  " << left << std::string(left.size() < 20 ? 20 - left.size() : 1, ' ') << spec.help << "\n";
  }
  out << "\nExit codes: 0 success, 1 failure, 2 misuse.\n";
  return out.str();
}

int quantize(const std::vector<std::string>& args) {
  if (args.empty()) throw UsageError("quantize: missing METHOD (see lowbit --help)");
  const Method* method = find_method(args[0]);
  if (!method) throw UsageError("quantize: unknown method '" + args[0] + "' (see lowbit --help)");
  std::set<std::string> allowed(method->options.begin(), method->options.end());
  allowed.insert({"in", "out"});
  const Options options({args.begin() + 1, args.end()}, allowed, "quantize " + method->name);
  const std::string in_path = options.text("in");
  const std::string out_path = options.text("out");
  apply_threads(options);

  const LayerInputs inputs = load_inputs(io::SafetensorsReader(in_path));
  const auto start = std::chrono::steady_clock::now();
  MethodResult result = method->run(inputs, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  result.tensors.add_matrix("Q", result.q);
  result.tensors.set_metadata("method", method->name);
  result.tensors.set_metadata("seconds", std::to_string(seconds));
  result.tensors.set_metadata("bits_per_weight", std::to_string(result.bits_per_weight));
  for (const auto& [key, value] : result.metadata) result.tensors.set_metadata(key, value);
  std::string given;
  for (const auto& [key, value] : options.given())
    if (key != "in" && key != "out") given += (given.empty() ? "--" : " --") + key + (value == "true" ? "" : " " + value);
  result.tensors.set_metadata("options", given);
  if (const std::optional<double> err = relative_output_error(inputs, result.q)) {
    std::ostringstream text;
    text.precision(17);
    text << *err;
    result.tensors.set_metadata("rel_out_err", text.str());
  }
  result.tensors.write(out_path);
  return 0;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << help_text();
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "quantize") return quantize(args);
  if (command == "quantize-model") return quantize_model_command(args);
  if (command == "gemv") return run_gemv(Options(args, {"in", "x", "out", "exact", "threads"}, "gemv"));
  if (command == "demo") return run_demo(Options(args, {"size", "threads"}, "demo"));
  throw UsageError("unknown command '" + command + "' (see lowbit --help)");
}

}  // namespace
}  // namespace lowbit::cli

int main(int argc, char** argv) {
  try {
    return lowbit::cli::run(argc, argv);
  } catch (const lowbit::cli::UsageError& e) {
    std::cerr << "lowbit: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "lowbit: error: " << e.what() << "\n";
    return 1;
  }
}
