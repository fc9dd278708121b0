#include "tool.hpp"

#include <iostream>
#include <sstream>

#include "command_line.hpp"

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
int quantize_layer(const Method& method, const Options& options) {
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

int run(const std::vector<std::string>& args) {
  const Invocation call = parse_command_line(args);
  if (call.help) return std::cout << *call.help, call.help_exit;
  return call.method ? quantize_layer(*call.method, *call.options)
                     : call.command->run(*call.options);
}

}  // namespace

int run_tool(const std::vector<std::string>& args) {
  try {
    return run(args);
  } catch (const UsageError& e) {
    std::cerr << "lowbit: " << e.what() << "\n";
    return 2;
  } catch (const io::MissingTensor& e) {
    std::cerr << "lowbit: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "lowbit: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace lowbit::cli
