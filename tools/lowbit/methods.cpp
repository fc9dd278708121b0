#include "methods.hpp"

#include <sstream>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::cli {

const std::vector<Method>& all_methods() {
  static const std::vector<Method> methods{rtn_method(), absmax_method(),      gptq_method(),
                                           awq_method(), smoothquant_method(), tacq_method(),
                                           bpdq_method()};
  return methods;
}

const Method* find_method(const std::string& name) {
  for (const Method& m : all_methods())
    if (m.name == name) return &m;
  return nullptr;
}

std::optional<double> relative_output_error(const LayerInputs& inputs, const MatrixF& q) {
  const MatrixD w = inputs.w.cast<double>();
  const MatrixD dw = w - q.cast<double>();
  if (inputs.x) {
    const MatrixD x = inputs.x->cast<double>();
    return (dw * x.transpose()).norm() / (w * x.transpose()).norm();
  }
  if (inputs.h) {
    const MatrixD& h = *inputs.h;
    return std::sqrt((dw * h).cwiseProduct(dw).sum() / (w * h).cwiseProduct(w).sum());
  }
  return std::nullopt;
}

void apply_threads(const Options& options) {
  if (!options.defined("threads")) return;
  const int threads = options.integer("threads");  // 1..1024 (options.cpp)
  Eigen::setNbThreads(threads);
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
}

std::optional<GgmlType> gguf_type(const Options& options, const std::string& option) {
  if (!options.has(option)) return std::nullopt;
  const std::string name = options.text(option);
  const std::optional<GgmlType> type = parse_ggml_type(name);
  if (!type || !find_ggml_block_format(*type))
    throw UsageError("option --" + option + ": '" + name +
                     "' is not a block type lowbit encodes (q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, "
                     "q3_K, q4_K, q5_K, q6_K, tq2_0, iq4_nl)");
  return type;
}

void add_gguf_blocks(MethodResult& result, const GgmlWeights& weights) {
  io::add_ggml_blocks(result.tensors, weights);
  result.bits_per_weight = bits_per_weight(weights);
}

std::string format_bool(bool value) { return value ? "true" : "false"; }

std::string format_double(double value) {
  std::ostringstream text;
  for (int digits = 6; digits <= 17; ++digits) {
    text.str("");
    text.precision(digits);
    text << value;
    if (std::stod(text.str()) == value) break;
  }
  return text.str();
}

}  // namespace lowbit::cli
