// The GPTQ checkpoint layout of AutoGPTQ and GPTQModel, "gptq" (v1) format.
// One linear layer is five tensors:
//   <linear>.qweight  int32 [in * bits / 32, out]     codes, packed along the input dimension
//   <linear>.qzeros   int32 [groups, out * bits / 32]  zero points minus one, packed along out
//   <linear>.scales   fp16  [groups, out]
//   <linear>.g_idx    int32 [in]                       group of every input column
//   <linear>.bias     fp16  [out], optional            (checkpoint.hpp)
// for 2, 3, 4 and 8 bits. in and out must be multiples of 32: the shape
// formulas of the packers (in // 32 * bits) silently drop the rest otherwise.
//
// Packing. The values along the packed dimension form one little-endian bit
// stream: value i occupies bits [i * bits, (i + 1) * bits) of the words read as
// one long integer, word 0 least significant. With 2, 4 and 8 bits every word
// holds whole values; 3-bit values straddle words (32 values fill 3 words,
// values 10 and 21 are split), which is the layout AutoGPTQ's and GPTQModel's
// pack loops write bit by bit.
//
// Zero points. v1 stores zero - 1, which has no `bits`-bit encoding for a zero
// of 0 (an asymmetric group whose weights are all >= 0). The packers differ:
//  - AutoGPTQ (qlinear_cuda_old.py / qlinear_cuda.py `pack`) subtracts 1 from
//    the float zeros, then casts with `.astype(np.uint32)`: -1 becomes
//    0xFFFFFFFF (on x86; the conversion is undefined in C) and is OR-ed in
//    shifted, so every higher field of that word reads as all ones. That loses
//    the neighbouring zeros; we do not reproduce it.
//  - GPTQModel (utils/model.py `convert_gptq_v2_to_v1_format`) packs the zeros
//    unchanged ("v2"), then for 2, 4 and 8 bits subtracts 0x55555555,
//    0x11111111 or 0x01010101 from every int32 word: a zero of 0 becomes all
//    ones and borrows one from the next field of its word (the top field wraps
//    modulo 2^32). Its reader adds the constant back, undoing the borrow
//    exactly. For 3 bits, whose fields straddle words, current GPTQModel
//    subtracts one per field modulo 8 (`_revert_gptq_v1_qzeros_correction`;
//    older releases used per-word constants at shifted bit positions).
// We write and read exactly as current GPTQModel does, so every zero in
// [0, 2^bits - 1] round-trips. A file without a zero of 0 is what every v1
// writer produces, and we read it as the classic per-field
// ((qzeros >> shift) & mask) + 1 of AutoGPTQ's kernels does. Only files with a
// zero of 0 read differently in those classic readers (that zero and, with 2, 4
// or 8 bits, the next one in its word): a defect of the v1 format itself.
//
// Scales are stored in fp16: a float scale rounds to the nearest fp16 (relative
// error at most 2^-11; larger than 65504 throws). Codes, zeros and g_idx are
// stored exactly, so UniformWeights -> file -> UniformWeights is exact except
// for that rounding, and file -> UniformWeights -> file is bit-exact.
// g_idx is always written (j / group_size when the weights have none, as the
// packers do); on reading, that trivial map becomes an empty g_idx.
#pragma once

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

// The tensors of one GPTQ linear in memory, flattened row-major.
struct GptqTensors {
  int bits = 0;
  Index in_features = 0;
  Index out_features = 0;
  Index groups = 0;
  std::vector<std::int32_t> qweight;  // [in * bits / 32, out]
  std::vector<std::int32_t> qzeros;   // [groups, out * bits / 32]
  std::vector<float> scales;          // [groups, out], values representable in fp16
  std::vector<std::int32_t> g_idx;    // [in]
  bool v2 = false;  // zero points stored as they are (checkpoint_format "gptq_v2"); packs write v1

  std::vector<std::int64_t> qweight_shape() const {
    return {in_features * bits / 32, out_features};
  }
  std::vector<std::int64_t> qzeros_shape() const { return {groups, out_features * bits / 32}; }
  std::vector<std::int64_t> scales_shape() const { return {groups, out_features}; }
  // Bytes in a file: int32 words and g_idx, fp16 scales.
  std::uint64_t file_bytes() const {
    return 4 * (qweight.size() + qzeros.size() + g_idx.size()) + 2 * scales.size();
  }
};

namespace detail {

inline void require_gptq_bits(int bits, const std::string& where) {
  lowbit::detail::require(bits == 2 || bits == 3 || bits == 4 || bits == 8, where,
                          ": GPTQ checkpoints hold 2, 3, 4 or 8 bits, got ", bits);
}

// Packs values (each < 2^bits; count * bits a multiple of 32) as one
// little-endian bit stream.
inline std::vector<std::uint32_t> pack_bit_stream(const std::vector<std::uint32_t>& values,
                                                  int bits) {
  std::vector<std::uint32_t> words(values.size() * static_cast<std::size_t>(bits) / 32, 0u);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::size_t bit = i * static_cast<std::size_t>(bits), word = bit / 32, shift = bit % 32;
    words[word] |= values[i] << shift;
    if (shift + static_cast<std::size_t>(bits) > 32) words[word + 1] |= values[i] >> (32 - shift);
  }
  return words;
}

inline std::uint32_t bit_stream_value(const std::vector<std::uint32_t>& words, std::size_t i,
                                      int bits) {
  const std::size_t bit = i * static_cast<std::size_t>(bits), word = bit / 32, shift = bit % 32;
  std::uint64_t window = words[word];
  if (shift + static_cast<std::size_t>(bits) > 32)
    window |= static_cast<std::uint64_t>(words[word + 1]) << 32;
  return static_cast<std::uint32_t>(window >> shift) & ((1u << bits) - 1u);
}

// A one in the lowest bit of every field of a word (2, 4 and 8 bits).
inline std::uint32_t field_ones(int bits) {
  std::uint32_t ones = 0;
  for (int shift = 0; shift < 32; shift += bits) ones |= 1u << shift;
  return ones;
}

// Zero points -> v1 words, as GPTQModel writes them (see the top of the file).
// Unsigned arithmetic wraps modulo 2^32 exactly like torch's int32 words.
inline std::vector<std::uint32_t> encode_v1_zeros(std::vector<std::uint32_t> zeros, int bits) {
  if (bits == 3) {
    for (std::uint32_t& z : zeros) z = (z + 7u) & 7u;  // minus one per field, modulo 8
    return pack_bit_stream(zeros, bits);
  }
  std::vector<std::uint32_t> words = pack_bit_stream(zeros, bits);
  for (std::uint32_t& word : words) word -= field_ones(bits);
  return words;
}

inline std::vector<std::uint32_t> decode_v1_zeros(std::vector<std::uint32_t> words, int bits,
                                                  std::size_t count) {
  if (bits != 3)
    for (std::uint32_t& word : words) word += field_ones(bits);
  std::vector<std::uint32_t> zeros(count);
  for (std::size_t i = 0; i < count; ++i) {
    zeros[i] = bit_stream_value(words, i, bits);
    if (bits == 3) zeros[i] = (zeros[i] + 1u) & 7u;
  }
  return zeros;
}

}  // namespace detail

inline GptqTensors pack_gptq(const UniformWeights& w) {
  using lowbit::detail::require;
  w.validate();
  detail::require_gptq_bits(w.bits, "pack_gptq");
  const Index in = w.cols(), out = w.rows(), groups = w.groups();
  require(in % 32 == 0, "pack_gptq: in_features must be a multiple of 32, got ", in);
  require(out % 32 == 0, "pack_gptq: out_features must be a multiple of 32, got ", out);
  const float max_zero = static_cast<float>((1u << w.bits) - 1u);
  for (Index g = 0; g < groups; ++g)
    for (Index r = 0; r < out; ++r) {
      const float z = w.zero(g, r);
      require(z >= 0.0f && z <= max_zero && std::nearbyint(z) == z, "pack_gptq: zero(", g, ", ", r,
              ") = ", z, " is not an integer in [0, ", max_zero, "]");
    }

  GptqTensors t;
  t.bits = w.bits;
  t.in_features = in;
  t.out_features = out;
  t.groups = groups;
  const Index weight_words = in * w.bits / 32, zero_words = out * w.bits / 32;
  t.qweight.resize(static_cast<std::size_t>(weight_words * out));
  std::vector<std::uint32_t> column(static_cast<std::size_t>(in));
  for (Index r = 0; r < out; ++r) {
    for (Index j = 0; j < in; ++j) column[static_cast<std::size_t>(j)] = w.codes(r, j);
    const std::vector<std::uint32_t> words = detail::pack_bit_stream(column, w.bits);
    for (Index i = 0; i < weight_words; ++i)
      t.qweight[static_cast<std::size_t>(i * out + r)] =
          static_cast<std::int32_t>(words[static_cast<std::size_t>(i)]);
  }
  t.qzeros.resize(static_cast<std::size_t>(groups * zero_words));
  std::vector<std::uint32_t> zeros(static_cast<std::size_t>(out));
  for (Index g = 0; g < groups; ++g) {
    for (Index r = 0; r < out; ++r)
      zeros[static_cast<std::size_t>(r)] = static_cast<std::uint32_t>(w.zero(g, r));
    const std::vector<std::uint32_t> words = detail::encode_v1_zeros(zeros, w.bits);
    for (Index i = 0; i < zero_words; ++i)
      t.qzeros[static_cast<std::size_t>(g * zero_words + i)] =
          static_cast<std::int32_t>(words[static_cast<std::size_t>(i)]);
  }
  t.scales.resize(static_cast<std::size_t>(groups * out));
  for (Index g = 0; g < groups; ++g)
    for (Index r = 0; r < out; ++r) {
      const float scale = half_to_float(float_to_half(w.scale(g, r)));
      require(std::isfinite(scale), "pack_gptq: scale(", g, ", ", r, ") = ", w.scale(g, r),
              " overflows fp16 (largest 65504)");
      t.scales[static_cast<std::size_t>(g * out + r)] = scale;
    }
  t.g_idx.resize(static_cast<std::size_t>(in));
  for (Index j = 0; j < in; ++j)
    t.g_idx[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(w.group_of(j));
  return t;
}

// Rebuilds UniformWeights; `where` prefixes every error (the file and linear).
inline UniformWeights unpack_gptq(const GptqTensors& t, const std::string& where = "unpack_gptq") {
  using lowbit::detail::require;
  detail::require_gptq_bits(t.bits, where);
  const Index in = t.in_features, out = t.out_features, groups = t.groups;
  require(in > 0 && in % 32 == 0, where, ": in_features must be a positive multiple of 32, got ",
          in);
  require(out > 0 && out % 32 == 0, where, ": out_features must be a positive multiple of 32, got ",
          out);
  require(groups > 0 && in % groups == 0, where, ": ", groups,
          " groups do not divide in_features = ", in);
  auto require_size = [&](std::size_t size, Index expected, const char* tensor) {
    require(static_cast<Index>(size) == expected, where, ": ", tensor, " holds ", size,
            " values, its shape needs ", expected);
  };
  const Index weight_words = in * t.bits / 32, zero_words = out * t.bits / 32;
  require_size(t.qweight.size(), weight_words * out, "qweight");
  require_size(t.qzeros.size(), groups * zero_words, "qzeros");
  require_size(t.scales.size(), groups * out, "scales");
  if (!t.g_idx.empty()) require_size(t.g_idx.size(), in, "g_idx");

  UniformWeights w;
  w.bits = t.bits;
  w.group_size = in / groups;
  w.codes.resize(out, in);
  std::vector<std::uint32_t> words(static_cast<std::size_t>(weight_words));
  for (Index r = 0; r < out; ++r) {
    for (Index i = 0; i < weight_words; ++i)
      words[static_cast<std::size_t>(i)] =
          static_cast<std::uint32_t>(t.qweight[static_cast<std::size_t>(i * out + r)]);
    for (Index j = 0; j < in; ++j)
      w.codes(r, j) = static_cast<std::uint8_t>(
          detail::bit_stream_value(words, static_cast<std::size_t>(j), t.bits));
  }
  w.zero.resize(groups, out);
  for (Index g = 0; g < groups; ++g) {
    const auto first = t.qzeros.begin() + static_cast<std::ptrdiff_t>(g * zero_words);
    const std::vector<std::uint32_t> words(first, first + static_cast<std::ptrdiff_t>(zero_words));
    const std::vector<std::uint32_t> zeros =
        t.v2 ? std::vector<std::uint32_t>()
             : detail::decode_v1_zeros(words, t.bits, std::size_t(out));
    for (Index r = 0; r < out; ++r)
      w.zero(g, r) = static_cast<float>(
          t.v2 ? detail::bit_stream_value(words, std::size_t(r), t.bits) : zeros[std::size_t(r)]);
  }
  w.scale = Eigen::Map<const MatrixF>(t.scales.data(), groups, out);
  bool trivial = true;
  for (Index j = 0; j < static_cast<Index>(t.g_idx.size()); ++j)
    trivial = trivial && t.g_idx[static_cast<std::size_t>(j)] == j / w.group_size;
  if (!trivial) w.g_idx = t.g_idx;
  try {
    w.validate();
  } catch (const Error& e) {
    lowbit::detail::fail(where, ": ", e.what());
  }
  return w;
}

// Adds `<linear>.qweight/.qzeros/.scales/.g_idx` of packed tensors.
inline void add_gptq_tensors(SafetensorsWriter& out, const std::string& linear,
                             const GptqTensors& t) {
  out.add_ints(linear + ".qweight", t.qweight_shape(), t.qweight.data(), t.qweight.size(),
               Dtype::I32);
  out.add_ints(linear + ".qzeros", t.qzeros_shape(), t.qzeros.data(), t.qzeros.size(), Dtype::I32);
  out.add_floats(linear + ".scales", t.scales_shape(), t.scales.data(), t.scales.size(),
                 Dtype::F16);
  out.add_vector(linear + ".g_idx", t.g_idx, Dtype::I32);
}

// The same for weights (add a bias with add_linear_bias).
inline void add_gptq_linear(SafetensorsWriter& out, const std::string& linear,
                            const UniformWeights& w) {
  add_gptq_tensors(out, linear, pack_gptq(w));
}

// Reads the GPTQ linear `linear`. `bits` comes from the checkpoint's
// quantize_config.json (the tensors alone cannot tell 4 bits over in columns
// from 2 bits over 2 * in), `v2` from its checkpoint_format. Every tensor is
// checked against the others; g_idx may be absent (contiguous groups). Scales
// may be any float dtype.
inline UniformWeights read_gptq_linear(const SafetensorsReader& file, const std::string& linear,
                                       int bits, bool v2 = false) {
  using lowbit::detail::require;
  const std::string where = file.source() + ": linear '" + linear + "'";
  detail::require_gptq_bits(bits, where);
  const TensorInfo& qweight = detail::linear_tensor(file, linear, "qweight", 2, Dtype::I32);
  const TensorInfo& qzeros = detail::linear_tensor(file, linear, "qzeros", 2, Dtype::I32);
  const TensorInfo& scales = detail::linear_tensor(file, linear, "scales", 2);
  require(qweight.shape[0] > 0 && qweight.shape[0] % bits == 0 && qweight.shape[1] > 0 &&
              qweight.shape[1] % 32 == 0,
          file.source(), ": tensor '", qweight.name, "' has shape ", qweight.shape_string(),
          ", expected [in_features / 32 * ", bits,
          ", out_features] with out_features a multiple of 32");
  GptqTensors t;
  t.bits = bits;
  t.v2 = v2;
  t.in_features = qweight.shape[0] / bits * 32;
  t.out_features = qweight.shape[1];
  t.groups = scales.shape[0];
  const std::string in_why =
      "in_features = " + std::to_string(t.in_features) + " from " + qweight.name;
  detail::require_dim(file, scales, 1, t.out_features, "out_features from " + qweight.name);
  detail::require_dim(file, qzeros, 0, t.groups, "groups from " + scales.name);
  detail::require_dim(file, qzeros, 1, t.out_features * bits / 32,
                      "out_features * bits / 32 from " + qweight.name);
  require(t.groups > 0 && t.in_features % t.groups == 0, file.source(), ": tensor '", scales.name,
          "' has ", t.groups, " groups, which do not divide ", in_why);
  if (file.contains(linear + ".g_idx")) {
    const TensorInfo& g_idx = detail::linear_tensor(file, linear, "g_idx", 1);
    detail::require_dim(file, g_idx, 0, t.in_features, in_why);
    t.g_idx = file.ints(g_idx.name);
  }
  t.qweight = file.ints(qweight.name);
  t.qzeros = file.ints(qzeros.name);
  t.scales = file.floats(scales.name);
  return unpack_gptq(t, where);
}

}  // namespace lowbit::io
