// The quantization methods the lowbit tool runs: each takes the layer's
// tensors and the parsed options and returns Q plus its own output tensors.
// `lowbit quantize` and `lowbit demo` run the very same functions.
#pragma once

#include <functional>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/lowbit.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "options.hpp"

namespace lowbit::cli {

// The tensors of one layer, by their contract names.
struct LayerInputs {
  MatrixF w;                           // W, out x in
  std::vector<MatrixF> extra_weights;  // W2, W3, ...: further linears sharing the input
  std::optional<MatrixF> x;            // X, tokens x in
  std::optional<MatrixD> h;            // H, in x in
  std::optional<MatrixF> g;            // G, out x in (TACQ gradient magnitudes)
  std::optional<VectorF> ln_weight;    // a preceding LayerNorm (or RMSNorm: no bias)
  std::optional<VectorF> ln_bias;

  // The same tensors in double, when W is stored as F64: methods with a double
  // path (AWQ, SmoothQuant) then compute as the f64 reference runs do.
  struct Double {
    MatrixD w;
    std::vector<MatrixD> extra_weights;
    std::optional<MatrixD> x;
    std::optional<VectorD> ln_weight;
    std::optional<VectorD> ln_bias;
  };
  std::optional<Double> f64;

  // H as given, else 2/N X^T X; a UsageError when neither H nor X is present.
  MatrixD hessian() const;
};

LayerInputs load_inputs(const io::SafetensorsReader& file);

struct MethodResult {
  MatrixF q;                  // Q: the dequantized weight as the model will see it
  double bits_per_weight = 0; // storage cost including group metadata
  io::SafetensorsWriter tensors;  // method outputs besides Q
  std::map<std::string, std::string> metadata;  // the effective configuration and extras
};

struct Method {
  std::string name;
  std::string summary;
  std::vector<std::string> options;                 // options the method accepts
  std::vector<std::vector<std::string>> demo_runs;  // option sets `lowbit demo` runs
  std::function<MethodResult(const LayerInputs&, const Options&)> run;
};

// Every method, in the order help and the demo list them.
const std::vector<Method>& all_methods();
const Method* find_method(const std::string& name);

// Output helpers shared by the methods.
void add_uniform_tensors(MethodResult& result, const UniformWeights& weights);
void add_bitplane_tensors(MethodResult& result, const BitPlaneWeights& weights);
// Per-linear outputs of W2, W3... carry the suffix "_2", "_3"... (linear 0 is W: none).
std::string linear_suffix(std::size_t linear);
// A rank-1 tensor (F32 unless told otherwise).
void add_vector_tensor(MethodResult& result, const std::string& name, const VectorD& values,
                       io::Dtype dtype = io::Dtype::F32);

// ||(W - Q) X^T|| / ||W X^T|| with X, or the same through H
// (sqrt(tr(dW H dW^T) / tr(W H W^T))); nullopt without either.
std::optional<double> relative_output_error(const LayerInputs& inputs, const MatrixF& q);

// Sets Eigen's (and OpenMP's) thread count from --threads.
void apply_threads(const Options& options);

std::string format_bool(bool value);
// The shortest decimal text that reads back as exactly `value`.
std::string format_double(double value);

// GPTQ's options, shared by the methods that run it (gptq, tacq; method_gptq.cpp):
// the option names, the config they give, the damping-escalation notice on
// stderr, and the metadata describing the run.
std::vector<std::string> gptq_option_names();
GptqConfig gptq_config(const Options& options, int default_bits, const std::string& method);
void announce_damping(const std::string& method, const GptqConfig& config, const HessianReport& report);
std::map<std::string, std::string> gptq_metadata(const LayerInputs& inputs, const GptqConfig& config,
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
