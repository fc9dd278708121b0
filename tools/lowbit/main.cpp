// lowbit: the command-line tool.
//
//   lowbit quantize METHOD --in IN.safetensors --out OUT.safetensors [options]
//   lowbit quantize-model --model CKPT.bin|HF_DIR --out DIR|OUT.safetensors|OUT.gguf [options]
//   lowbit gemv --in QUANT.safetensors --x X.safetensors --out Y.safetensors [options]
//   lowbit gguf info --in FILE.gguf, lowbit gguf dequantize --in FILE.gguf --out FILE
//   lowbit gguf logits --in FILE.gguf --tokens 1,2,3 --out LOGITS.safetensors
//   lowbit demo [options]
//   lowbit --help, lowbit COMMAND --help, lowbit quantize METHOD --help
//
// Exit codes: 0 success, 1 failure (bad file, numerical error), 2 misuse
// (unknown option, missing tensor, bad option value).
#include <iostream>
#include <sstream>

#include "command_line.hpp"
#include "interrupts.hpp"

namespace lowbit::cli {
namespace {

// Warnings about inputs that are legal but degenerate, or partly unread.
void warn_about_inputs(const io::SafetensorsReader& file, const LayerInputs& inputs) {
  const std::vector<std::string> unread = io::unread_layer_tensors(file);
  if (!unread.empty()) {
    std::cerr << "lowbit: warning: " << file.source() << ": tensors not part of a layer's inputs, "
              << "not read:";
    for (const std::string& name : unread) std::cerr << " " << name;
    std::cerr << "\n";
  }
  const bool zero_h = inputs.h && (inputs.h->array() == 0).all();
  const bool zero_x = !inputs.h && inputs.x && (inputs.x->array() == 0).all();
  if (zero_h || zero_x)
    std::cerr << "lowbit: warning: " << file.source() << ": tensor '" << (zero_h ? "H" : "X")
              << "' is all zero: every input is dead, so the methods that use H (gptq, tacq, "
                 "bpdq) give Q = 0\n";
  if ((inputs.w.array() == 0).all())
    std::cerr << "lowbit: warning: " << file.source() << ": tensor 'W' is all zero\n";
}

// lowbit quantize METHOD: reads the layer, runs the method, writes its result.
int quantize(const Method& method, const Options& options) {
  const std::string in_path = options.text("in");
  const std::string out_path = options.text("out");
  apply_threads(options);

  const io::SafetensorsReader in_file(in_path);
  if (in_file.contains("W") && in_file.contains("H")) {
    const std::int64_t in = in_file.require_rank("W", 2).shape[1];
    require_memory(static_cast<double>(in) * static_cast<double>(in) * 8.0,
                   in_path + ": tensor 'H' (" + std::to_string(in) + " x " + std::to_string(in) +
                       ", read in double)");
  }
  const LayerInputs inputs = io::read_layer_inputs(in_file);
  warn_about_inputs(in_file, inputs);
  MethodResult result = method.run(inputs, options);

  io::add_dequantized(result.tensors, result.q);
  result.tensors.set_metadata("method", method.name);
  result.tensors.set_metadata("bits_per_weight", std::to_string(result.bits_per_weight));
  for (const auto& [key, value] : result.metadata) result.tensors.set_metadata(key, value);
  // The options that define the result: --threads does not (results are
  // bit-identical for any thread count), so files from any are byte-identical.
  std::string given;
  for (const auto& [key, value] : options.given())
    if (key != "in" && key != "out" && key != "threads")
      given += (given.empty() ? "--" : " --") + key + (value == "true" ? "" : " " + value);
  result.tensors.set_metadata("options", given);
  if (const std::optional<RelativeError> err = relative_output_error(inputs, result.q)) {
    if (err->zero_reference)
      std::cerr << "lowbit: warning: " << in_path
                << ": the layer's output W X^T is zero (W, X or H is all zero): rel_out_err = "
                << err->value << " by definition (0 when Q X^T is zero too)\n";
    std::ostringstream text;
    text.precision(17);
    text << err->value;
    result.tensors.set_metadata("rel_out_err", text.str());
  }
  result.tensors.write(out_path);
  return 0;
}

int run(int argc, char** argv) {
  const Invocation call = parse_command_line({argv + 1, argv + argc});
  if (call.help) return std::cout << *call.help, call.help_exit;
  return call.method ? quantize(*call.method, *call.options) : call.command->run(*call.options);
}

}  // namespace
}  // namespace lowbit::cli

int main(int argc, char** argv) {
  lowbit::cli::install_interrupt_handlers();
  try {
    return lowbit::cli::run(argc, argv);
  } catch (const lowbit::cli::UsageError& e) {
    std::cerr << "lowbit: " << e.what() << "\n";
    return 2;
  } catch (const lowbit::io::MissingTensor& e) {
    std::cerr << "lowbit: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "lowbit: error: " << e.what() << "\n";
    return 1;
  }
}
