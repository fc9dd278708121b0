// The AWQ "GEMM" checkpoint layout of AutoAWQ (awq/modules/linear/gemm.py,
// WQLinear_GEMM), which transformers, vLLM and GPTQModel also read. One
// linear layer is three tensors, 4 bits only:
//   <linear>.qweight  int32 [in, out / 8]       codes, packed along the output dimension
//   <linear>.qzeros   int32 [groups, out / 8]   zero points, packed the same way
//   <linear>.scales   fp16  [groups, out]
//   <linear>.bias     fp16  [out], optional     (checkpoint.hpp)
// Word c of a row holds the values of outputs 8c..8c+7, but not in order:
// its 4-bit field i (bits 4i..4i+3) holds output 8c + kAwqFieldOrder[i]. The
// kernels read the fields in that interleaved order; AutoAWQ's dequantizer
// undoes it with the inverse permutation {0, 4, 1, 5, 2, 6, 3, 7}.
// Zero points are stored as they are (no "zero - 1" of GPTQ v1), so every
// zero in 0..15 round-trips, and weight = scale * (code - zero) per (group,
// output). Groups are contiguous runs of group_size inputs: AWQ has no g_idx.
// Scales round to fp16 as in gptq_format.hpp.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/io/checkpoint.hpp"
#include "lowbit/io/safetensors.hpp"

namespace lowbit::io {

// Which output of a word's eight each 4-bit field holds (field 0 lowest).
inline constexpr std::array<int, 8> kAwqFieldOrder = {0, 2, 4, 6, 1, 3, 5, 7};

// The tensors of one AWQ GEMM linear in memory, flattened row-major.
struct AwqTensors {
  Index in_features = 0;
  Index out_features = 0;
  Index groups = 0;
  std::vector<std::int32_t> qweight;  // [in, out / 8]
  std::vector<std::int32_t> qzeros;   // [groups, out / 8]
  std::vector<float> scales;          // [groups, out], values representable in fp16

  std::vector<std::int64_t> qweight_shape() const { return {in_features, out_features / 8}; }
  std::vector<std::int64_t> qzeros_shape() const { return {groups, out_features / 8}; }
  std::vector<std::int64_t> scales_shape() const { return {groups, out_features}; }
  // Bytes in a file: int32 words, fp16 scales.
  std::uint64_t file_bytes() const {
    return 4 * (qweight.size() + qzeros.size()) + 2 * scales.size();
  }
};

namespace detail {

// Eight 4-bit values (outputs 8c..8c+7) -> one word in AWQ's field order.
template <class ValueOf>
std::int32_t awq_word(Index c, const ValueOf& value_of) {
  std::uint32_t word = 0;
  for (int field = 0; field < 8; ++field)
    word |= (value_of(8 * c + kAwqFieldOrder[std::size_t(field)]) & 0xFu) << (4 * field);
  return static_cast<std::int32_t>(word);
}

// The value of output 8c + k from its word.
inline unsigned awq_field(std::int32_t word, int k) {
  int field = 0;
  while (kAwqFieldOrder[std::size_t(field)] != k) ++field;
  return (static_cast<std::uint32_t>(word) >> (4 * field)) & 0xFu;
}

}  // namespace detail

inline AwqTensors pack_awq(const UniformWeights& w) {
  using lowbit::detail::require;
  w.validate();
  require(w.bits == 4, "pack_awq: AWQ's GEMM layout holds 4-bit codes, got ", w.bits, " bits");
  require(w.g_idx.empty(), "pack_awq: AWQ groups are contiguous; act-order weights need GPTQ");
  const Index in = w.cols(), out = w.rows(), groups = w.groups();
  require(out % 8 == 0, "pack_awq: out_features must be a multiple of 8, got ", out);
  for (Index g = 0; g < groups; ++g)
    for (Index r = 0; r < out; ++r) {
      const float z = w.zero(g, r);
      require(z >= 0.0f && z <= 15.0f && std::nearbyint(z) == z, "pack_awq: zero(", g, ", ", r,
              ") = ", z, " is not an integer in [0, 15]");
    }
  AwqTensors t;
  t.in_features = in;
  t.out_features = out;
  t.groups = groups;
  const Index words = out / 8;
  t.qweight.resize(std::size_t(in * words));
  for (Index j = 0; j < in; ++j)
    for (Index c = 0; c < words; ++c)
      t.qweight[std::size_t(j * words + c)] =
          detail::awq_word(c, [&](Index r) { return unsigned(w.codes(r, j)); });
  t.qzeros.resize(std::size_t(groups * words));
  t.scales.resize(std::size_t(groups * out));
  for (Index g = 0; g < groups; ++g) {
    for (Index c = 0; c < words; ++c)
      t.qzeros[std::size_t(g * words + c)] =
          detail::awq_word(c, [&](Index r) { return unsigned(w.zero(g, r)); });
    for (Index r = 0; r < out; ++r) {
      const float scale = half_to_float(float_to_half(w.scale(g, r)));
      require(std::isfinite(scale), "pack_awq: scale(", g, ", ", r, ") = ", w.scale(g, r),
              " overflows fp16 (largest 65504)");
      t.scales[std::size_t(g * out + r)] = scale;
    }
  }
  return t;
}

// Rebuilds UniformWeights; `where` prefixes every error (the file and linear).
inline UniformWeights unpack_awq(const AwqTensors& t, const std::string& where = "unpack_awq") {
  using lowbit::detail::require;
  const Index in = t.in_features, out = t.out_features, groups = t.groups, words = out / 8;
  require(in > 0 && out > 0 && out % 8 == 0, where, ": expected positive in_features and ",
          "out_features a multiple of 8, got ", in, " and ", out);
  require(groups > 0 && in % groups == 0, where, ": ", groups,
          " groups do not divide in_features = ", in);
  auto require_size = [&](std::size_t size, Index expected, const char* tensor) {
    require(static_cast<Index>(size) == expected, where, ": ", tensor, " holds ", size,
            " values, its shape needs ", expected);
  };
  require_size(t.qweight.size(), in * words, "qweight");
  require_size(t.qzeros.size(), groups * words, "qzeros");
  require_size(t.scales.size(), groups * out, "scales");
  UniformWeights w;
  w.bits = 4;
  w.group_size = in / groups;
  w.codes.resize(out, in);
  for (Index j = 0; j < in; ++j)
    for (Index r = 0; r < out; ++r)
      w.codes(r, j) = static_cast<std::uint8_t>(
          detail::awq_field(t.qweight[std::size_t(j * words + r / 8)], int(r % 8)));
  w.zero.resize(groups, out);
  for (Index g = 0; g < groups; ++g)
    for (Index r = 0; r < out; ++r)
      w.zero(g, r) = static_cast<float>(
          detail::awq_field(t.qzeros[std::size_t(g * words + r / 8)], int(r % 8)));
  w.scale = Eigen::Map<const MatrixF>(t.scales.data(), groups, out);
  try {
    w.validate();
  } catch (const Error& e) {
    lowbit::detail::fail(where, ": ", e.what());
  }
  return w;
}

// Adds `<linear>.qweight/.qzeros/.scales` of packed tensors.
inline void add_awq_tensors(SafetensorsWriter& out, const std::string& linear,
                            const AwqTensors& t) {
  out.add_ints(linear + ".qweight", t.qweight_shape(), t.qweight.data(), t.qweight.size(),
               Dtype::I32);
  out.add_ints(linear + ".qzeros", t.qzeros_shape(), t.qzeros.data(), t.qzeros.size(), Dtype::I32);
  out.add_floats(linear + ".scales", t.scales_shape(), t.scales.data(), t.scales.size(),
                 Dtype::F16);
}

// Reads the AWQ GEMM linear `linear`, every tensor checked against the others.
// Scales may be any float dtype.
inline UniformWeights read_awq_linear(const SafetensorsReader& file, const std::string& linear) {
  const TensorInfo& qweight = detail::linear_tensor(file, linear, "qweight", 2, Dtype::I32);
  const TensorInfo& qzeros = detail::linear_tensor(file, linear, "qzeros", 2, Dtype::I32);
  const TensorInfo& scales = detail::linear_tensor(file, linear, "scales", 2);
  AwqTensors t;
  t.in_features = qweight.shape[0];
  t.out_features = qweight.shape[1] * 8;
  t.groups = scales.shape[0];
  detail::require_dim(file, scales, 1, t.out_features,
                      "out_features = 8 x " + qweight.name + "[1]");
  detail::require_dim(file, qzeros, 0, t.groups, "groups from " + scales.name);
  detail::require_dim(file, qzeros, 1, qweight.shape[1], "out_features / 8 from " + qweight.name);
  t.qweight = file.ints(qweight.name);
  t.qzeros = file.ints(qzeros.name);
  t.scales = file.floats(scales.name);
  return unpack_awq(t, file.source() + ": linear '" + linear + "'");
}

}  // namespace lowbit::io
