// What the per-linear checkpoint formats (gptq_format.hpp, bpdq_format.hpp)
// share: one linear layer is a set of tensors named `<linear>.<part>` in a
// safetensors file, checked against each other with errors that name the file,
// the tensor and the mismatch; and the optional `<linear>.bias`, stored in
// fp16 as AutoGPTQ, GPTQModel and the BPDQ checkpoints store it (lossy: a
// float bias is rounded to the nearest fp16).
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/io/safetensors.hpp"

namespace lowbit::io {

namespace detail {

// Tensor `name` with the rank and (when given) the dtype a reader insists on.
inline const TensorInfo& typed_tensor(const SafetensorsReader& file, const std::string& name,
                                      std::size_t rank, std::optional<Dtype> dtype = std::nullopt) {
  const TensorInfo& t = file.require_rank(name, rank);
  if (dtype)
    lowbit::detail::require(t.dtype == *dtype, file.source(), ": tensor '", name, "' must be ",
                            dtype_name(*dtype), ", is ", dtype_name(t.dtype));
  return t;
}

// The tensor `<linear>.<part>` with the given rank (and dtype, when given).
inline const TensorInfo& linear_tensor(const SafetensorsReader& file, const std::string& linear,
                                       const std::string& part, std::size_t rank,
                                       std::optional<Dtype> dtype = std::nullopt) {
  const std::string name = linear + "." + part;
  lowbit::detail::require(file.contains(name), file.source(), ": tensor '", name,
                          "' is missing (linear '", linear, "')");
  return typed_tensor(file, name, rank, dtype);
}

// Throws unless dimension `dim` of `t` equals `expected`; `why` says where the
// expected value comes from.
inline void require_dim(const SafetensorsReader& file, const TensorInfo& t, std::size_t dim,
                        std::int64_t expected, const std::string& why) {
  lowbit::detail::require(t.shape[dim] == expected, file.source(), ": tensor '", t.name,
                          "' has shape ", t.shape_string(), ", expected dim ", dim, " = ", expected,
                          " (", why, ")");
}

// `value` as it reads back after being stored in `dtype` (a float dtype);
// throws when it is not finite there (fp16 overflows above 65504).
inline double stored_value(double value, Dtype dtype, const std::string& where) {
  double stored = value;
  switch (dtype) {
    case Dtype::F64:
      break;
    case Dtype::F32:
      stored = static_cast<float>(value);
      break;
    case Dtype::F16:
      stored = half_to_float(float_to_half(static_cast<float>(value)));
      break;
    case Dtype::BF16:
      stored = bf16_to_float(float_to_bf16(static_cast<float>(value)));
      break;
    default:
      lowbit::detail::fail(where, ": ", dtype_name(dtype), " is not a float dtype");
  }
  lowbit::detail::require(std::isfinite(stored), where, ": value ", value,
                          " is not finite when stored as ", dtype_name(dtype));
  return stored;
}

}  // namespace detail

// Writes `<linear>.bias` [out] as fp16.
inline void add_linear_bias(SafetensorsWriter& out, const std::string& linear,
                            const VectorF& bias) {
  lowbit::detail::require(bias.size() > 0, "add_linear_bias: '", linear, "' bias is empty");
  std::vector<float> values(static_cast<std::size_t>(bias.size()));
  for (Index i = 0; i < bias.size(); ++i)
    values[static_cast<std::size_t>(i)] =
        static_cast<float>(detail::stored_value(bias(i), Dtype::F16, linear + ".bias"));
  out.add_vector(linear + ".bias", values, Dtype::F16);
}

// `<linear>.bias` if the file has it (any float dtype), checked to hold
// out_features values.
inline std::optional<VectorF> read_linear_bias(const SafetensorsReader& file,
                                               const std::string& linear, Index out_features) {
  if (!file.contains(linear + ".bias")) return std::nullopt;
  const TensorInfo& t = detail::linear_tensor(file, linear, "bias", 1);
  detail::require_dim(file, t, 0, out_features, "out_features of the weights");
  const std::vector<float> values = file.floats(t.name);
  const VectorF bias = Eigen::Map<const VectorF>(values.data(), out_features);
  lowbit::detail::require(bias.allFinite(), file.source(), ": tensor '", t.name,
                          "' has non-finite values");
  return bias;
}

}  // namespace lowbit::io
