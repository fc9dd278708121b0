#include "methods.hpp"

#include <fstream>
#include <limits>
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

std::optional<RelativeError> relative_output_error(const LayerInputs& inputs, const MatrixF& q) {
  const MatrixD w = inputs.w.cast<double>();
  const MatrixD dw = w - q.cast<double>();
  double error = 0, reference = 0;
  if (inputs.x) {
    const MatrixD x = inputs.x->cast<double>();
    error = (dw * x.transpose()).norm();
    reference = (w * x.transpose()).norm();
  } else if (inputs.h) {
    const MatrixD& h = *inputs.h;
    error = std::sqrt((dw * h).cwiseProduct(dw).sum());
    reference = std::sqrt((w * h).cwiseProduct(w).sum());
  } else {
    return std::nullopt;
  }
  if (reference > 0) return RelativeError{error / reference, false};
  return RelativeError{error > 0 ? std::numeric_limits<double>::infinity() : 0.0, true};
}

void require_memory(double bytes, const std::string& what) {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") break;
    meminfo.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  if (key != "MemAvailable:") return;
  const double available = kib * 1024;
  if (bytes <= available) return;
  std::ostringstream message;
  message.precision(3);
  message << what << " needs about " << bytes / 1e9 << " GB of memory; " << available / 1e9
          << " GB are available";
  throw Error(message.str());
}

double hessian_bytes(Index in_features) {
  return 5.0 * static_cast<double>(in_features) * static_cast<double>(in_features) * 8.0;
}

MatrixD layer_hessian(const LayerInputs& inputs) {
  const Index in = inputs.w.cols();
  require_memory(hessian_bytes(in), "H (" + std::to_string(in) + " x " + std::to_string(in) +
                                        ", in double) and its factorization");
  return inputs.hessian();
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
