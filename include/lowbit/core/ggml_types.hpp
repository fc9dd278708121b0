// ggml's tensor types: the ids GGUF files store, with the size of every type's
// block, and for the block-quantized types lowbit encodes and decodes, how a
// block maps onto integer codes and scales (ggml-common.h, ggml-quants.c).
//
// Every supported type dequantizes as
//   w = S * v  (+ B),   S = d (fp16) or d * sub_scale (an integer),  v = code - offset
// (IQ4_NL: v = a 16-entry table indexed by the code), per sub-block sharing S:
//   Q4_0 Q5_0 Q8_0 IQ4_NL   blocks of 32, S = d
//   Q4_1 Q5_1               blocks of 32, S = d, B = +m (fp16)
//   Q2_K Q4_K Q5_K          super-blocks of 256, sub-blocks of 16 / 32 / 32,
//                           S = d * scale, B = -(dmin * min) (4- or 6-bit scale and min)
//   Q3_K Q6_K               super-blocks of 256, sub-blocks of 16,
//                           S = d * scale (signed 6-bit, int8), B = 0
//   TQ2_0                   super-blocks of 256, S = d, codes 0..2 for -1, 0, 1
#pragma once

#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

// ggml's type ids (ggml.h `enum ggml_type`); the ids missing here were removed from ggml.
// clang-format off
enum class GgmlType : std::int32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22,
  iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
  tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41, q2_0 = 42,
};
// clang-format on

// What a GGUF reader needs to size any tensor: ggml's name, the number of
// weights one block holds and its size in bytes.
struct GgmlTypeTraits {
  GgmlType type;
  const char* name;
  std::int64_t block_size;
  std::size_t type_size;
};

namespace detail {

// clang-format off
inline constexpr std::array<GgmlTypeTraits, 35> kGgmlTypes{{
    {GgmlType::f32, "f32", 1, 4},           {GgmlType::f16, "f16", 1, 2},
    {GgmlType::q4_0, "q4_0", 32, 18},       {GgmlType::q4_1, "q4_1", 32, 20},
    {GgmlType::q5_0, "q5_0", 32, 22},       {GgmlType::q5_1, "q5_1", 32, 24},
    {GgmlType::q8_0, "q8_0", 32, 34},       {GgmlType::q8_1, "q8_1", 32, 36},
    {GgmlType::q2_k, "q2_K", 256, 84},      {GgmlType::q3_k, "q3_K", 256, 110},
    {GgmlType::q4_k, "q4_K", 256, 144},     {GgmlType::q5_k, "q5_K", 256, 176},
    {GgmlType::q6_k, "q6_K", 256, 210},     {GgmlType::q8_k, "q8_K", 256, 292},
    {GgmlType::iq2_xxs, "iq2_xxs", 256, 66}, {GgmlType::iq2_xs, "iq2_xs", 256, 74},
    {GgmlType::iq3_xxs, "iq3_xxs", 256, 98}, {GgmlType::iq1_s, "iq1_s", 256, 50},
    {GgmlType::iq4_nl, "iq4_nl", 32, 18},   {GgmlType::iq3_s, "iq3_s", 256, 110},
    {GgmlType::iq2_s, "iq2_s", 256, 82},    {GgmlType::iq4_xs, "iq4_xs", 256, 136},
    {GgmlType::i8, "i8", 1, 1},             {GgmlType::i16, "i16", 1, 2},
    {GgmlType::i32, "i32", 1, 4},           {GgmlType::i64, "i64", 1, 8},
    {GgmlType::f64, "f64", 1, 8},           {GgmlType::iq1_m, "iq1_m", 256, 56},
    {GgmlType::bf16, "bf16", 1, 2},         {GgmlType::tq1_0, "tq1_0", 256, 54},
    {GgmlType::tq2_0, "tq2_0", 256, 66},    {GgmlType::mxfp4, "mxfp4", 32, 17},
    {GgmlType::nvfp4, "nvfp4", 64, 36},     {GgmlType::q1_0, "q1_0", 128, 18},
    {GgmlType::q2_0, "q2_0", 64, 18},
}};
// clang-format on

inline bool equal_ignoring_case(const std::string& a, const char* b) {
  std::size_t i = 0;
  for (; i < a.size() && b[i]; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return i == a.size() && !b[i];
}

}  // namespace detail

// The traits of a type id read from a file; nullopt for ids ggml does not define.
inline std::optional<GgmlTypeTraits> find_ggml_type(std::int32_t id) {
  for (const GgmlTypeTraits& t : detail::kGgmlTypes)
    if (static_cast<std::int32_t>(t.type) == id) return t;
  return std::nullopt;
}

inline const GgmlTypeTraits& ggml_type_traits(GgmlType type) {
  for (const GgmlTypeTraits& t : detail::kGgmlTypes)
    if (t.type == type) return t;
  detail::fail("GgmlType ", static_cast<std::int32_t>(type), " is not a ggml type");
}

inline const char* ggml_type_name(GgmlType type) { return ggml_type_traits(type).name; }

// ggml's name ("q4_K"), in any letter case.
inline std::optional<GgmlType> parse_ggml_type(const std::string& name) {
  for (const GgmlTypeTraits& t : detail::kGgmlTypes)
    if (detail::equal_ignoring_case(name, t.name)) return t.type;
  return std::nullopt;
}

// Bytes of one row of `cols` weights: ggml_row_size.
inline std::size_t ggml_row_bytes(GgmlType type, Index cols) {
  const GgmlTypeTraits& t = ggml_type_traits(type);
  detail::require(cols >= 0 && cols % t.block_size == 0, ggml_type_name(type),
                  ": a row must hold a multiple of ", t.block_size, " weights, got ", cols);
  return static_cast<std::size_t>(cols / t.block_size) * t.type_size;
}

// How the sub-block scales of a type are stored.
enum class GgmlSubScales {
  none,     // S = d
  q2_k,     // 4-bit scale and 4-bit min per sub-block
  k4,       // Q4_K, Q5_K: 6-bit scale and 6-bit min, 12 bytes per super-block
  signed6,  // Q3_K: 6-bit scale stored + 32, so -32..31
  signed8,  // Q6_K: int8 scale
};

// A block-quantized type lowbit encodes and decodes (see the table above).
struct GgmlBlockFormat {
  GgmlType type;
  Index block;      // weights per block (ggml's block size)
  Index sub_block;  // weights sharing one scale S
  int code_bits;
  int code_offset;  // v = code - code_offset
  GgmlSubScales sub_scales;
  bool block_min;  // Q4_1, Q5_1: B = +m
  bool sub_mins;   // Q2_K, Q4_K, Q5_K: B = -(dmin * min)

  bool has_dmin() const { return block_min || sub_mins; }
  bool table() const { return type == GgmlType::iq4_nl; }
};

namespace detail {

// clang-format off
inline constexpr std::array<GgmlBlockFormat, 12> kGgmlBlockFormats{{
    //               block sub bits offset sub-block scales         block_min sub_mins
    {GgmlType::q4_0,    32,  32,  4,   8,  GgmlSubScales::none,    false,    false},
    {GgmlType::q4_1,    32,  32,  4,   0,  GgmlSubScales::none,    true,     false},
    {GgmlType::q5_0,    32,  32,  5,  16,  GgmlSubScales::none,    false,    false},
    {GgmlType::q5_1,    32,  32,  5,   0,  GgmlSubScales::none,    true,     false},
    {GgmlType::q8_0,    32,  32,  8, 128,  GgmlSubScales::none,    false,    false},
    {GgmlType::q2_k,   256,  16,  2,   0,  GgmlSubScales::q2_k,    false,    true},
    {GgmlType::q3_k,   256,  16,  3,   4,  GgmlSubScales::signed6, false,    false},
    {GgmlType::q4_k,   256,  32,  4,   0,  GgmlSubScales::k4,      false,    true},
    {GgmlType::q5_k,   256,  32,  5,   0,  GgmlSubScales::k4,      false,    true},
    {GgmlType::q6_k,   256,  16,  6,  32,  GgmlSubScales::signed8, false,    false},
    {GgmlType::tq2_0,  256, 256,  2,   1,  GgmlSubScales::none,    false,    false},
    {GgmlType::iq4_nl,  32,  32,  4,   0,  GgmlSubScales::none,    false,    false},
}};
// clang-format on

// IQ4_NL's non-uniform levels (ggml-common.h kvalues_iq4nl).
inline constexpr std::array<std::int8_t, 16> kIq4nlValues{-127, -104, -83, -65, -49, -35, -22, -10,
                                                          1,    13,   25,  38,  53,  69,  89,  113};

}  // namespace detail

// nullptr when lowbit does not encode and decode the type.
inline const GgmlBlockFormat* find_ggml_block_format(GgmlType type) {
  for (const GgmlBlockFormat& f : detail::kGgmlBlockFormats)
    if (f.type == type) return &f;
  return nullptr;
}

inline const GgmlBlockFormat& ggml_block_format(GgmlType type) {
  const GgmlBlockFormat* format = find_ggml_block_format(type);
  detail::require(format != nullptr, "ggml type ", ggml_type_name(type),
                  " is not a block type lowbit encodes (q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, "
                  "q3_K, q4_K, q5_K, q6_K, tq2_0, iq4_nl)");
  return *format;
}

// The range of the integer sub-block scales (and mins) of a format.
inline int ggml_sub_scale_min(GgmlSubScales s) {
  return s == GgmlSubScales::signed6 ? -32 : s == GgmlSubScales::signed8 ? -128 : 0;
}
inline int ggml_sub_scale_max(GgmlSubScales s) {
  switch (s) {
    case GgmlSubScales::q2_k:
      return 15;
    case GgmlSubScales::k4:
      return 63;
    case GgmlSubScales::signed6:
      return 31;
    case GgmlSubScales::signed8:
      return 127;
    case GgmlSubScales::none:
      break;
  }
  return 0;
}

}  // namespace lowbit
