// GgmlWeights: a weight matrix in one of ggml's block-quantized types
// (core/ggml_types.hpp), unpacked into what each block stores: an integer
// code per weight, the block's fp16 d (and dmin or m), and the integer scale
// (and min) of each sub-block. io/ggml_blocks.hpp converts it to and from
// ggml's bytes; core/ggml_grid.hpp produces it as llama.cpp's quantizer does.
//
// Dequantization is bit for bit ggml's (dequantize_row_* in ggml-quants.c):
// every product there is exact in float (an fp16 d has 11 significant bits,
// a sub-block scale at most 8 and a code at most 8, and their product at most
// 24), so the only rounding is the final addition of the bias, and the result
// is the same whether or not a compiler fuses it into a multiply-add.
#pragma once

#include <cstdint>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_types.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

using HalfMatrix = Eigen::Matrix<std::uint16_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using SubScaleMatrix = Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {

// Q4_K and Q5_K keep 8 six-bit scales and 8 six-bit mins in 12 bytes
// (ggml-quants.c get_scale_min_k4): sub-blocks 0-3 in the low 6 bits of bytes
// 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 as nibbles in bytes 8-11 with
// their top two bits in bits 6-7 of bytes 0-7. Packing uses ggml's own stores,
// so a value above 63 spills into its neighbours exactly as ggml's does.
inline void pack_k4_scales(const std::uint8_t* scales, const std::uint8_t* mins,
                           std::uint8_t* bytes) {
  for (int j = 0; j < 4; ++j) {
    bytes[j] = scales[j];
    bytes[j + 4] = mins[j];
  }
  for (int j = 4; j < 8; ++j) {
    bytes[j + 4] = static_cast<std::uint8_t>((scales[j] & 0xFu) | ((mins[j] & 0xFu) << 4));
    bytes[j - 4] = static_cast<std::uint8_t>(bytes[j - 4] | ((scales[j] >> 4) << 6));
    bytes[j] = static_cast<std::uint8_t>(bytes[j] | ((mins[j] >> 4) << 6));
  }
}

inline void unpack_k4_scales(const std::uint8_t* bytes, std::uint8_t* scales, std::uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = bytes[j] & 63u;
    mins[j] = bytes[j + 4] & 63u;
  }
  for (int j = 4; j < 8; ++j) {
    scales[j] = static_cast<std::uint8_t>((bytes[j + 4] & 0xFu) | ((bytes[j - 4] >> 6) << 4));
    mins[j] = static_cast<std::uint8_t>((bytes[j + 4] >> 4) | ((bytes[j] >> 6) << 4));
  }
}

}  // namespace detail

// The integer v a code stands for: code - offset, or IQ4_NL's table entry.
inline int ggml_level(const GgmlBlockFormat& f, std::uint8_t code) {
  return f.table() ? detail::kIq4nlValues[code & 15u] : int(code) - f.code_offset;
}

// One weight as ggml's dequantize_row_* computes it: S * v, plus B for the
// types that have one (without, the product's -0 is kept).
inline float ggml_value(const GgmlBlockFormat& f, float scale, float bias, std::uint8_t code) {
  const float product = scale * static_cast<float>(ggml_level(f, code));
  return f.has_dmin() ? product + bias : product;
}

struct GgmlWeights {
  GgmlType type = GgmlType::q4_0;
  CodeMatrix codes;           // out x in: 0 .. 2^code_bits - 1 (Q8_0: the int8 value + 128)
  HalfMatrix d;               // out x blocks: fp16 bits of each block's d
  HalfMatrix dmin;            // out x blocks: Q4_1, Q5_1: the block's m; Q2_K, Q4_K, Q5_K:
                              // the scale of the sub-block mins; empty for other types
  SubScaleMatrix sub_scales;  // out x sub-blocks: the integer that multiplies d (K-quants)
  CodeMatrix sub_mins;  // out x sub-blocks: the integer that multiplies dmin (Q2_K, Q4_K, Q5_K)

  const GgmlBlockFormat& format() const { return ggml_block_format(type); }
  Index rows() const { return codes.rows(); }
  Index cols() const { return codes.cols(); }
  Index blocks() const { return cols() / format().block; }          // per row
  Index sub_blocks() const { return cols() / format().sub_block; }  // per row

  // An empty matrix of the type's shape, everything zero.
  static GgmlWeights zeros(GgmlType type, Index rows, Index cols) {
    const GgmlBlockFormat& f = ggml_block_format(type);
    detail::require(rows > 0 && cols > 0 && cols % f.block == 0, "GgmlWeights ",
                    ggml_type_name(type),
                    ": expected rows > 0 and in_features a positive multiple of ", f.block,
                    ", got ", rows, " x ", cols);
    const bool subs = f.sub_scales != GgmlSubScales::none;
    GgmlWeights w;
    w.type = type;
    w.codes = CodeMatrix::Zero(rows, cols);
    w.d = HalfMatrix::Zero(rows, cols / f.block);
    w.dmin = HalfMatrix::Zero(f.has_dmin() ? rows : 0, f.has_dmin() ? cols / f.block : 0);
    w.sub_scales = SubScaleMatrix::Zero(subs ? rows : 0, subs ? cols / f.sub_block : 0);
    w.sub_mins = CodeMatrix::Zero(f.sub_mins ? rows : 0, f.sub_mins ? cols / f.sub_block : 0);
    return w;
  }

  // Throws lowbit::Error naming the first inconsistency: shapes, codes and
  // sub-block scales out of range, a non-finite d or dmin.
  void validate() const {
    const GgmlBlockFormat& f = format();
    detail::require_nonempty(codes, "GgmlWeights::codes");
    detail::require(cols() % f.block == 0, "GgmlWeights ", ggml_type_name(type),
                    ": in_features = ", cols(), " is not a multiple of the block size ", f.block);
    const Index r = rows(), b = cols() / f.block, s = cols() / f.sub_block;
    const bool subs = f.sub_scales != GgmlSubScales::none;
    detail::require_shape(d, r, b, "GgmlWeights::d");
    detail::require_shape(dmin, f.has_dmin() ? r : 0, f.has_dmin() ? b : 0, "GgmlWeights::dmin");
    detail::require_shape(sub_scales, subs ? r : 0, subs ? s : 0, "GgmlWeights::sub_scales");
    detail::require_shape(sub_mins, f.sub_mins ? r : 0, f.sub_mins ? s : 0,
                          "GgmlWeights::sub_mins");
    for (Index i = 0; i < d.size(); ++i) require_finite_half(d.data()[i], "d", i / b, i % b);
    for (Index i = 0; i < dmin.size(); ++i)
      require_finite_half(dmin.data()[i], "dmin", i / b, i % b);
    const int lowest = ggml_sub_scale_min(f.sub_scales), highest = ggml_sub_scale_max(f.sub_scales);
    for (Index i = 0; i < sub_scales.size(); ++i)
      detail::require(sub_scales.data()[i] >= lowest && sub_scales.data()[i] <= highest,
                      "GgmlWeights::sub_scales(", i / s, ", ", i % s,
                      ") = ", int(sub_scales.data()[i]), " is outside ", lowest, "..", highest,
                      " for ", ggml_type_name(type));
    for (Index i = 0; i < sub_mins.size(); ++i)
      detail::require(sub_mins.data()[i] <= highest, "GgmlWeights::sub_mins(", i / s, ", ", i % s,
                      ") = ", int(sub_mins.data()[i]), " is above ", highest, " for ",
                      ggml_type_name(type));
    const unsigned limit = 1u << f.code_bits;
    for (Index i = 0; i < codes.size(); ++i)
      detail::require(codes.data()[i] < limit, "GgmlWeights::codes(", i / cols(), ", ", i % cols(),
                      ") = ", int(codes.data()[i]), " does not fit in ", f.code_bits, " bits");
  }

  // S of a sub-block: d, or d times its integer scale, in float as ggml computes it.
  float sub_block_scale(Index row, Index sub) const {
    const GgmlBlockFormat& f = format();
    const float block_d = half_to_float(d(row, sub * f.sub_block / f.block));
    if (f.sub_scales == GgmlSubScales::none) return block_d;
    return block_d * static_cast<float>(sub_scales(row, sub));
  }

  // B of a sub-block: +m (Q4_1, Q5_1), -(dmin * min) (Q2_K, Q4_K, Q5_K), else 0.
  float sub_block_bias(Index row, Index sub) const {
    const GgmlBlockFormat& f = format();
    if (!f.has_dmin()) return 0.0f;
    const float block_dmin = half_to_float(dmin(row, sub * f.sub_block / f.block));
    if (f.block_min) return block_dmin;
    return -(block_dmin * static_cast<float>(sub_mins(row, sub)));
  }

  // S * v (+ B) per weight, bit for bit ggml's dequantize_row_*.
  MatrixF dequantize() const {
    validate();
    const GgmlBlockFormat& f = format();
    MatrixF w(rows(), cols());
    for (Index r = 0; r < rows(); ++r)
      for (Index s = 0; s < sub_blocks(); ++s) {
        const float scale = sub_block_scale(r, s), bias = sub_block_bias(r, s);
        for (Index c = s * f.sub_block; c < (s + 1) * f.sub_block; ++c)
          w(r, c) = ggml_value(f, scale, bias, codes(r, c));
      }
    return w;
  }

 private:
  void require_finite_half(std::uint16_t h, const char* name, Index row, Index block) const {
    detail::require((h & 0x7c00u) != 0x7c00u, "GgmlWeights::", name, "(", row, ", ", block, ") of ",
                    ggml_type_name(type), " is ", half_to_float(h), ", expected a finite fp16");
  }
};

// Storage per weight, exactly ggml's: block bytes * 8 / block size.
inline double bits_per_weight(const GgmlWeights& w) {
  const GgmlTypeTraits& t = ggml_type_traits(w.type);
  return 8.0 * static_cast<double>(t.type_size) / static_cast<double>(t.block_size);
}

// Every type but IQ4_NL is a uniform grid per sub-block, so it converts to bit
// planes losslessly: k = code bits, groups = sub-blocks, c_p = S * 2^p and
// bias = B - S * offset. Every term is a float with at most 24 significant
// bits between 2^-24 and 2^28, so the double sums are exact and round once to
// ggml's value (equal as floats; a zero may change its sign).
inline BitPlaneWeights to_bitplanes(const GgmlWeights& w) {
  w.validate();
  const GgmlBlockFormat& f = w.format();
  detail::require(!f.table(), "to_bitplanes: ", ggml_type_name(w.type),
                  " is a non-uniform grid (a 16-entry table) and has no exact bit-plane form");
  BitPlaneWeights out;
  out.planes = f.code_bits;
  out.group_size = f.sub_block;
  out.codes = w.codes;
  out.coeffs.resize(w.sub_blocks() * (f.code_bits + 1), w.rows());
  for (Index s = 0; s < w.sub_blocks(); ++s)
    for (Index r = 0; r < w.rows(); ++r) {
      const double scale = w.sub_block_scale(r, s);
      for (int p = 0; p < f.code_bits; ++p)
        out.coeff(s, p, r) = scale * static_cast<double>(1u << p);
      out.coeff(s, f.code_bits, r) =
          static_cast<double>(w.sub_block_bias(r, s)) - scale * f.code_offset;
    }
  return out;
}

}  // namespace lowbit
