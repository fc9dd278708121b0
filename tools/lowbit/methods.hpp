// The quantization methods the lowbit tool runs: each takes the layer's
// tensors and the parsed options and returns Q plus its own output tensors.
// `lowbit quantize` and `lowbit demo` run the very same functions.
#pragma once

#include <functional>
#include <lowbit/io/ggml_blocks.hpp>
#include <lowbit/io/layer_file.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/lowbit.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "options.hpp"

namespace lowbit::cli {

// The tensors of one layer, by their contract names (lowbit/io/layer_file.hpp).
using io::LayerInputs;

struct MethodResult {
  MatrixF q;                      // Q: the dequantized weight as the model will see it
  double bits_per_weight = 0;     // storage cost including group metadata
  io::SafetensorsWriter tensors;  // method outputs besides Q
  std::map<std::string, std::string> metadata;  // the effective configuration and extras
};

struct Method {
  std::string name;
  std::string summary;
  OptionTable options;  // options the method accepts (besides --in, --out)
  std::vector<std::vector<std::string>> demo_runs;  // option sets `lowbit demo` runs
  std::function<MethodResult(const LayerInputs&, const Options&)> run;
};

// Every method, in the order help and the demo list them.
const std::vector<Method>& all_methods();
const Method* find_method(const std::string& name);

// ||(W - Q) X^T|| / ||W X^T|| with X, or the same through H
// (sqrt(tr(dW H dW^T) / tr(W H W^T))); nullopt without either. When the
// reference output W X^T is zero (W = 0, X = 0 or H = 0) the ratio is 0/0 or
// e/0: it is defined as 0 when (W - Q) X^T is zero too (Q reproduces the zero
// output exactly), else +inf, and zero_reference says so.
struct RelativeError {
  double value = 0;
  bool zero_reference = false;
};
std::optional<RelativeError> relative_output_error(const LayerInputs& inputs, const MatrixF& q);

// Throws unless `bytes` fit in the memory available now (MemAvailable in
// /proc/meminfo; no check where that cannot be read): a refusal that says how
// much `what` needs beats a bad_alloc or the OOM killer minutes later.
void require_memory(double bytes, const std::string& what);

// H as the methods that factor it need it (the file's, else 2/N X^T X), after
// checking that the factorization's in x in double matrices fit in memory.
MatrixD layer_hessian(const LayerInputs& inputs);
// The bytes of those matrices for in_features inputs: about five in x in
// doubles (H, its damped and permuted copy, the inverse, its factor).
double hessian_bytes(Index in_features);

// Sets Eigen's (and OpenMP's) thread count from --threads (given or the command's default).
void apply_threads(const Options& options);

// AWQ and SmoothQuant: the preceding norm, when given, with the scales folded
// in, as ln_weight<suffix> (and ln_bias<suffix> for a LayerNorm).
template <class Scalar>
void add_folded_norm(io::SafetensorsWriter& out, const std::optional<VectorT<Scalar>>& ln_weight,
                     const std::optional<VectorT<Scalar>>& ln_bias, const VectorT<Scalar>& scales,
                     const std::string& suffix) {
  if (!ln_weight) return;
  const NormParams<Scalar> norm{*ln_weight, ln_bias ? *ln_bias : VectorT<Scalar>()};
  io::add_norm(out, fold_into_norm(norm, scales), suffix);
}

// --gguf-type: the ggml block type named (any letter case), none when not given.
std::optional<GgmlType> gguf_type(const Options& options, const std::string& option = "gguf-type");
// gguf_blocks (U8, out x row bytes: exactly ggml's blocks) and the metadata
// gguf_type (io::add_ggml_blocks), so ggml's own dequantization can be held
// against Q; and the storage cost of the type.
void add_gguf_blocks(MethodResult& result, const GgmlWeights& weights);

std::string format_bool(bool value);
// The shortest decimal text that reads back as exactly `value`.
std::string format_double(double value);

// GPTQ's options, shared by the methods that run it (gptq, tacq; method_gptq.cpp):
// the option names, the config they give, the damping-escalation notice on
// stderr, and the metadata describing the run.
OptionTable gptq_options(int default_bits);
GptqConfig gptq_config(const Options& options, const std::string& method);
void announce_damping(const std::string& method, const DampingConfig& requested,
                      const HessianReport& report);
std::map<std::string, std::string> gptq_metadata(const LayerInputs& inputs,
                                                 const GptqConfig& config,
                                                 const GptqReport& report);

// Method factories, one per source file.
Method rtn_method();
Method absmax_method();
Method gptq_method();
Method awq_method();
Method smoothquant_method();
Method tacq_method();
Method bpdq_method();

}  // namespace lowbit::cli
