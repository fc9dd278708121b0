// ggml's block bytes (the block_* structs of ggml-common.h), to and from
// GgmlWeights: exactly the bytes llama.cpp stores in a GGUF tensor and
// multiplies, one row after another, ggml_row_bytes(type, cols) per row.
//
// Every type stores its codes as one or two bit fields: the low bits, and
// for 3-, 5- and 6-bit codes the high bits elsewhere. A field of `width` bits
// packs 8 / width values per byte in runs: element i of a block lands in byte
//   offset + (i / (run * 8 / width)) * run + i % run,  at bit  width * ((i % (run * 8 / width)) /
//   run).
// With run 16 that is Q4_0's "element j and j + 16 share a byte", with run 32
// and width 2 the K-quants' "four 32-element quarters share a byte", with
// width 1 and run 1 Q5_0's 32-bit qh. The integer sub-block scales of Q2_K,
// Q3_K and Q6_K are fields of the same kind; Q4_K and Q5_K pack theirs in 12
// bytes (core/ggml_weights.hpp). d and dmin are little-endian fp16.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_types.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/half.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "lowbit/io/ggml_blocks.hpp assumes a little-endian host"
#endif

namespace lowbit::io {
namespace detail {

struct BitField {
  int from = 0;    // lowest value bit stored here
  int width = 0;   // bits per value; 0: no field
  int offset = 0;  // first byte in the block
  int run = 1;
};

struct BlockLayout {
  GgmlType type;
  int d_at;     // byte offset of d
  int dmin_at;  // of dmin (or m), -1 when absent
  BitField code_low, code_high;
  std::uint8_t code_flip;          // Q8_0 stores the int8 code - 128, i.e. code ^ 0x80
  BitField scale_low, scale_high;  // over [scale + scale_bias..., min...] of the sub-blocks
  int scale_bias;                  // Q3_K stores its signed 6-bit scales + 32
  int k4_scales_at;                // Q4_K, Q5_K: the 12 scale bytes, -1 otherwise
};

// clang-format off
inline constexpr std::array<BlockLayout, 12> kBlockLayouts{{
  // type           d  dmin code fields {from, width, offset, run} flip scale fields    bias k4
  {GgmlType::q4_0,    0, -1, {0, 4,  2, 16}, {},               0,    {}, {},              0, -1},
  {GgmlType::q4_1,    0,  2, {0, 4,  4, 16}, {},               0,    {}, {},              0, -1},
  {GgmlType::q5_0,    0, -1, {0, 4,  6, 16}, {4, 1,   2,  1},  0,    {}, {},              0, -1},
  {GgmlType::q5_1,    0,  2, {0, 4,  8, 16}, {4, 1,   4,  1},  0,    {}, {},              0, -1},
  {GgmlType::q8_0,    0, -1, {0, 8,  2, 32}, {},               0x80, {}, {},              0, -1},
  {GgmlType::q2_k,   80, 82, {0, 2, 16, 32}, {},               0,    {0, 4, 0, 16}, {},   0, -1},
  {GgmlType::q3_k,  108, -1, {0, 2, 32, 32}, {2, 1,   0, 32},  0,
                                                    {0, 4, 96, 8}, {4, 2, 104, 4},     32, -1},
  {GgmlType::q4_k,    0,  2, {0, 4, 16, 32}, {},               0,    {}, {},              0,  4},
  {GgmlType::q5_k,    0,  2, {0, 4, 48, 32}, {4, 1,  16, 32},  0,    {}, {},              0,  4},
  {GgmlType::q6_k,  208, -1, {0, 4,  0, 64}, {4, 2, 128, 32},  0,    {0, 8, 192, 16}, {}, 0, -1},
  {GgmlType::tq2_0,  64, -1, {0, 2,  0, 32}, {},               0,    {}, {},              0, -1},
  {GgmlType::iq4_nl,  0, -1, {0, 4,  2, 16}, {},               0,    {}, {},              0, -1},
}};
// clang-format on

inline const BlockLayout& block_layout(GgmlType type) {
  for (const BlockLayout& l : kBlockLayouts)
    if (l.type == type) return l;
  lowbit::detail::fail("no block layout for ggml type ", ggml_type_name(type));
}

// Byte and bit of element i of a field.
inline void field_position(const BitField& f, Index i, Index& byte, int& shift) {
  const Index per_byte = 8 / f.width, span = f.run * per_byte;
  byte = f.offset + (i / span) * f.run + i % f.run;
  shift = f.width * static_cast<int>((i % span) / f.run);
}

// ORs bits [from, from + width) of every value into the (zeroed) block.
inline void store_field(const BitField& f, const std::uint8_t* values, Index count,
                        std::uint8_t* block) {
  if (f.width == 0) return;
  const unsigned mask = (1u << f.width) - 1u;
  for (Index i = 0; i < count; ++i) {
    Index byte;
    int shift;
    field_position(f, i, byte, shift);
    block[byte] =
        static_cast<std::uint8_t>(block[byte] | (((values[i] >> f.from) & mask) << shift));
  }
}

// ORs the field's bits back into bits [from, from + width) of every value.
inline void load_field(const BitField& f, const std::uint8_t* block, Index count,
                       std::uint8_t* values) {
  if (f.width == 0) return;
  const unsigned mask = (1u << f.width) - 1u;
  for (Index i = 0; i < count; ++i) {
    Index byte;
    int shift;
    field_position(f, i, byte, shift);
    values[i] = static_cast<std::uint8_t>(values[i] | (((block[byte] >> shift) & mask) << f.from));
  }
}

inline void store_half(std::uint16_t h, std::uint8_t* p) {
  p[0] = static_cast<std::uint8_t>(h & 0xFFu);
  p[1] = static_cast<std::uint8_t>(h >> 8);
}

inline std::uint16_t load_half(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}

// Sub-blocks per block: at most 16 (256 / 16), which bounds the scale arrays.
inline Index sub_blocks_per_block(const GgmlBlockFormat& f) {
  return std::min<Index>(f.block / f.sub_block, 16);
}

// The sub-block scales (and mins) of one block as the bytes the fields hold:
// scale + scale_bias (two's complement) for each sub-block, then the mins.
inline Index stored_scales(const GgmlWeights& w, const BlockLayout& layout, Index row, Index block,
                           std::uint8_t* values) {
  const GgmlBlockFormat& f = w.format();
  const Index subs = sub_blocks_per_block(f), first = block * subs;
  for (Index s = 0; s < subs; ++s) {
    values[s] = static_cast<std::uint8_t>(w.sub_scales(row, first + s) + layout.scale_bias);
    if (f.sub_mins) values[subs + s] = w.sub_mins(row, first + s);
  }
  return f.sub_mins ? 2 * subs : subs;
}

inline void pack_block(const GgmlWeights& w, const BlockLayout& layout, Index row, Index block,
                       std::uint8_t* out) {
  const GgmlBlockFormat& f = w.format();
  std::memset(out, 0, ggml_type_traits(w.type).type_size);
  store_half(w.d(row, block), out + layout.d_at);
  if (layout.dmin_at >= 0) store_half(w.dmin(row, block), out + layout.dmin_at);
  std::uint8_t stored[256];
  for (Index i = 0; i < f.block; ++i)
    stored[i] = static_cast<std::uint8_t>(w.codes(row, block * f.block + i) ^ layout.code_flip);
  for (const BitField& field : {layout.code_low, layout.code_high})
    store_field(field, stored, f.block, out);
  if (f.sub_scales == GgmlSubScales::none) return;
  std::uint8_t scales[32];
  const Index count = stored_scales(w, layout, row, block, scales);
  if (layout.k4_scales_at >= 0)
    lowbit::detail::pack_k4_scales(scales, scales + 8, out + layout.k4_scales_at);
  for (const BitField& field : {layout.scale_low, layout.scale_high})
    store_field(field, scales, count, out);
}

inline void unpack_block(const std::uint8_t* in, const BlockLayout& layout, Index row, Index block,
                         GgmlWeights& w) {
  const GgmlBlockFormat& f = w.format();
  w.d(row, block) = load_half(in + layout.d_at);
  if (layout.dmin_at >= 0) w.dmin(row, block) = load_half(in + layout.dmin_at);
  std::uint8_t stored[256] = {};
  for (const BitField& field : {layout.code_low, layout.code_high})
    load_field(field, in, f.block, stored);
  for (Index i = 0; i < f.block; ++i)
    w.codes(row, block * f.block + i) = static_cast<std::uint8_t>(stored[i] ^ layout.code_flip);
  if (f.sub_scales == GgmlSubScales::none) return;
  const Index subs = sub_blocks_per_block(f), first = block * subs;
  std::uint8_t scales[32] = {};
  if (layout.k4_scales_at >= 0)
    lowbit::detail::unpack_k4_scales(in + layout.k4_scales_at, scales, scales + 8);
  for (const BitField& field : {layout.scale_low, layout.scale_high})
    load_field(field, in, f.sub_mins ? 2 * subs : subs, scales);
  for (Index s = 0; s < subs; ++s) {
    w.sub_scales(row, first + s) =
        static_cast<std::int8_t>(static_cast<std::int8_t>(scales[s]) - layout.scale_bias);
    if (f.sub_mins) w.sub_mins(row, first + s) = scales[subs + s];
  }
}

}  // namespace detail

// ggml's bytes for the weights: rows() * ggml_row_bytes(type, cols()).
inline std::vector<std::uint8_t> pack_ggml_blocks(const GgmlWeights& w) {
  w.validate();
  const detail::BlockLayout& layout = detail::block_layout(w.type);
  const std::size_t block_bytes = ggml_type_traits(w.type).type_size;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(w.rows()) *
                                ggml_row_bytes(w.type, w.cols()));
  std::uint8_t* p = out.data();
  for (Index r = 0; r < w.rows(); ++r)
    for (Index b = 0; b < w.blocks(); ++b, p += block_bytes) detail::pack_block(w, layout, r, b, p);
  return out;
}

// Reads `rows` rows of `cols` weights of a block type from ggml's bytes.
// Every bit pattern is a valid code or scale; a d or dmin that is Inf or NaN
// (which ggml's own validation rejects too) throws an Error naming `where`,
// the row and the block.
inline GgmlWeights unpack_ggml_blocks(GgmlType type, Index rows, Index cols,
                                      const std::uint8_t* bytes, std::size_t size,
                                      const std::string& where) {
  const GgmlBlockFormat& format = ggml_block_format(type);
  lowbit::detail::require(rows > 0 && cols > 0 && cols % format.block == 0, where, ": ",
                          ggml_type_name(type), " needs rows > 0 and a positive multiple of ",
                          format.block, " weights per row, got ", rows, " x ", cols);
  const std::size_t expected = static_cast<std::size_t>(rows) * ggml_row_bytes(type, cols);
  lowbit::detail::require(size == expected, where, ": ", rows, " x ", cols, " ",
                          ggml_type_name(type), " weights take ", expected, " bytes, got ", size);
  GgmlWeights w = GgmlWeights::zeros(type, rows, cols);
  const detail::BlockLayout& layout = detail::block_layout(type);
  const std::size_t block_bytes = ggml_type_traits(type).type_size;
  const std::uint8_t* p = bytes;
  for (Index r = 0; r < rows; ++r)
    for (Index b = 0; b < w.blocks(); ++b, p += block_bytes) {
      detail::unpack_block(p, layout, r, b, w);
      const bool finite = (w.d(r, b) & 0x7c00u) != 0x7c00u &&
                          (w.dmin.size() == 0 || (w.dmin(r, b) & 0x7c00u) != 0x7c00u);
      lowbit::detail::require(finite, where, ": row ", r, " block ", b, " of ",
                              ggml_type_name(type), " has a non-finite d or dmin (",
                              half_to_float(w.d(r, b)), ")");
    }
  return w;
}

}  // namespace lowbit::io
