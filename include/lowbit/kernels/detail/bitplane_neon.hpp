// NEON (aarch64) bit-plane lookup-table kernel. Same operations in the same
// order as bitplane_scalar.hpp; layout in bitplane_layout.hpp.
//
// A block of 64 rows is taken in four quarters of 16 rows (one 16-byte load
// of plane bytes per pair), quarter after quarter within each segment. int8
// inner loop, per load: split the nibbles (and, shift), look both chunks up
// with vqtbl1q_s8, and add each row's two entries into int16 with vaddl_s8 /
// vaddl_high_s8. Float tables (64 bytes) are looked up with vqtbl4q_u8 on
// byte indices 4i..4i+3.
#pragma once

#ifndef LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP
#error "lowbit: include <lowbit/kernels/bitplane_lut_gemm.hpp>, not kernels/detail/"
#endif

#include <arm_neon.h>

#include <algorithm>
#include <cstdint>

#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/bitplane_scalar.hpp"
#include "lowbit/kernels/detail/isa.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace bitplane_neon {

using namespace lowbit::detail::bitplane;

inline float table_entries(const float* x, Index chunks, float* out) noexcept {
  // Entry i negates x_b where bit b of i is clear (entries 0..7 all negate x3).
  const float32x4_t sign0 = {-1.0f, 1.0f, -1.0f, 1.0f};
  const float32x4_t sign1 = {-1.0f, -1.0f, 1.0f, 1.0f};
  float32x4_t largest = vdupq_n_f32(0.0f);
  for (Index c = 0; c < chunks; ++c, x += kChunkCols, out += kTableEntries) {
    const float32x4_t s0 = vmulq_n_f32(sign0, x[0]);  // exact: a sign change
    const float32x4_t s1 = vmulq_n_f32(sign1, x[1]);
    const float32x4_t s3 = vdupq_n_f32(-x[3]);
    const float32x4_t s01 = vaddq_f32(s0, s1);
    const float32x4_t e0 = vmulq_n_f32(vaddq_f32(vaddq_f32(s01, vdupq_n_f32(-x[2])), s3), 0.5f);
    const float32x4_t e1 = vmulq_n_f32(vaddq_f32(vaddq_f32(s01, vdupq_n_f32(x[2])), s3), 0.5f);
    // e[15 - i] = -e[i] exactly (every rounding step is sign-symmetric).
    const float32x4_t r0 = vnegq_f32(vextq_f32(vrev64q_f32(e0), vrev64q_f32(e0), 2));
    const float32x4_t r1 = vnegq_f32(vextq_f32(vrev64q_f32(e1), vrev64q_f32(e1), 2));
    vst1q_f32(out, e0);
    vst1q_f32(out + 4, e1);
    vst1q_f32(out + 8, r1);
    vst1q_f32(out + 12, r0);
    largest = vmaxq_f32(largest, vmaxq_f32(vabsq_f32(e0), vabsq_f32(e1)));
  }
  return vmaxvq_f32(largest);
}

inline void quantize_tables(const float* entries, Index chunks, float inverse_scale,
                            std::int8_t* out) noexcept {
  for (Index i = 0; i < kTableEntries * chunks; i += 16) {
    int16x8_t h[2];
    for (int k = 0; k < 2; ++k) {
      const int32x4_t a =
          vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(entries + i + 8 * k), inverse_scale));
      const int32x4_t b =
          vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(entries + i + 8 * k + 4), inverse_scale));
      h[k] = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    }
    vst1q_s8(out + i, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
  }
}

struct CoeffF32 {
  static constexpr std::size_t size = sizeof(float);
  static float32x4_t load(const std::uint8_t* p) {
    return vld1q_f32(reinterpret_cast<const float*>(p));
  }
};
struct CoeffF16 {
  static constexpr std::size_t size = sizeof(std::uint16_t);
  static float32x4_t load(const std::uint8_t* p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p))));
  }
};

// Coefficients of one slot for rows 4i..4i+3 of quarter u.
template <class Coeff>
inline float32x4_t coefficients(const std::uint8_t* group, int slot, int u, int i) {
  return Coeff::load(group +
                     Coeff::size * static_cast<std::size_t>(slot * kBlockRows +
                                                            coefficient_position(16 * u + 4 * i)));
}

// Quarters u0..u1-1 of one block, tokens t0..t0+T-1, int8 tables: out[t][row].
// Each segment is taken quarter by quarter while its bytes are in L1.
template <class Coeff, int T>
void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, int u0, int u1,
                Index t0, float (*out)[kBlockRows]) {
  const uint8x16_t nibble = vdupq_n_u8(0x0f);
  float32x4_t acc[4][T][4];
  for (auto& quarter : acc)
    for (auto& a : quarter)
      for (auto& v : a) v = vdupq_n_f32(0.0f);
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* segment_bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const std::int8_t* table[T];
      for (int t = 0; t < T; ++t)
        table[t] = tb.q + ((t0 + t) * tb.chunks + 2 * pair) * kTableEntries;
      for (int u = u0; u < u1; ++u) {
        const std::uint8_t* bytes = segment_bytes + 16 * u;
        float32x4_t part[T][4];
        for (auto& a : part)
          for (auto& v : a) v = vdupq_n_f32(0.0f);
        for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
          int16x8_t lo[T], hi[T];
          for (int t = 0; t < T; ++t) lo[t] = hi[t] = vdupq_n_s16(0);
          for (Index q = 0; q < pairs; ++q) {
            const uint8x16_t w = vld1q_u8(bytes + q * kPairBytes);
            const uint8x16_t first = vandq_u8(w, nibble);
            const uint8x16_t second = vshrq_n_u8(w, 4);
            for (int t = 0; t < T; ++t) {
              const std::int8_t* at = table[t] + 2 * kTableEntries * q;
              const int8x16_t a = vqtbl1q_s8(vld1q_s8(at), first);
              const int8x16_t b = vqtbl1q_s8(vld1q_s8(at + kTableEntries), second);
              lo[t] = vaddq_s16(lo[t], vaddl_s8(vget_low_s8(a), vget_low_s8(b)));
              hi[t] = vaddq_s16(hi[t], vaddl_high_s8(a, b));
            }
          }
          float32x4_t c[4];
          for (int i = 0; i < 4; ++i) c[i] = coefficients<Coeff>(group, p, u, i);
          for (int t = 0; t < T; ++t) {
            const float32x4_t f[4] = {vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo[t]))),
                                      vcvtq_f32_s32(vmovl_high_s16(lo[t])),
                                      vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi[t]))),
                                      vcvtq_f32_s32(vmovl_high_s16(hi[t]))};
            for (int i = 0; i < 4; ++i) part[t][i] = vfmaq_f32(part[t][i], f[i], c[i]);
          }
        }
        for (int t = 0; t < T; ++t) {
          const float scale = tb.scale[(t0 + t) * l.segments() + segment];
          for (int i = 0; i < 4; ++i) acc[u][t][i] = vfmaq_n_f32(acc[u][t][i], part[t][i], scale);
        }
      }
      segment_bytes += l.planes * pairs * kPairBytes;
      pair += pairs;
    }
    for (int u = u0; u < u1; ++u)
      for (int i = 0; i < 4; ++i) {
        const float32x4_t bias = coefficients<Coeff>(group, l.planes, u, i);
        for (int t = 0; t < T; ++t)
          acc[u][t][i] = vfmaq_n_f32(acc[u][t][i], bias, tb.xsum[(t0 + t) * l.groups + g]);
      }
  }
  for (int u = u0; u < u1; ++u)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) vst1q_f32(out[t] + 16 * u + 4 * i, acc[u][t][i]);
}

// Entries table[index] for 4 rows: byte indices 4 * index + 0..3 into the 64-byte table.
inline float32x4_t lookup16(const uint8x16x4_t& table, uint8x16_t index, int i) {
  const uint8x16_t spread = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
  const uint8x16_t lanes = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
  const uint8x16_t rows =
      vqtbl1q_u8(index, vaddq_u8(spread, vdupq_n_u8(static_cast<std::uint8_t>(4 * i))));
  return vreinterpretq_f32_u8(vqtbl4q_u8(table, vaddq_u8(vshlq_n_u8(rows, 2), lanes)));
}

// Quarters u0..u1-1 of one block, one token, exact float tables.
template <class Coeff>
void block_f32(const Layout& l, const Tables& tb, const std::uint8_t* group, int u0, int u1,
               Index token, float* out) {
  const uint8x16_t nibble = vdupq_n_u8(0x0f);
  float32x4_t acc[4][4];
  for (auto& quarter : acc)
    for (auto& v : quarter) v = vdupq_n_f32(0.0f);
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* segment_bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const float* table = tb.f + (token * tb.chunks + 2 * pair) * kTableEntries;
      for (int u = u0; u < u1; ++u) {
        const std::uint8_t* bytes = segment_bytes + 16 * u;
        float32x4_t part[4];
        for (auto& v : part) v = vdupq_n_f32(0.0f);
        for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
          float32x4_t sum[4];
          for (auto& v : sum) v = vdupq_n_f32(0.0f);
          for (Index q = 0; q < pairs; ++q) {
            const auto* at = reinterpret_cast<const std::uint8_t*>(table + 2 * kTableEntries * q);
            const uint8x16x4_t ta = vld1q_u8_x4(at);
            const uint8x16x4_t tb2 = vld1q_u8_x4(at + sizeof(float) * kTableEntries);
            const uint8x16_t w = vld1q_u8(bytes + q * kPairBytes);
            const uint8x16_t first = vandq_u8(w, nibble), second = vshrq_n_u8(w, 4);
            for (int i = 0; i < 4; ++i) {
              sum[i] = vaddq_f32(sum[i], lookup16(ta, first, i));
              sum[i] = vaddq_f32(sum[i], lookup16(tb2, second, i));
            }
          }
          for (int i = 0; i < 4; ++i)
            part[i] = vfmaq_f32(part[i], sum[i], coefficients<Coeff>(group, p, u, i));
        }
        const float scale = tb.scale[token * l.segments() + segment];
        for (int i = 0; i < 4; ++i) acc[u][i] = vfmaq_n_f32(acc[u][i], part[i], scale);
      }
      segment_bytes += l.planes * pairs * kPairBytes;
      pair += pairs;
    }
    const float xsum = tb.xsum[token * l.groups + g];
    for (int u = u0; u < u1; ++u)
      for (int i = 0; i < 4; ++i)
        acc[u][i] = vfmaq_n_f32(acc[u][i], coefficients<Coeff>(group, l.planes, u, i), xsum);
  }
  for (int u = u0; u < u1; ++u)
    for (int i = 0; i < 4; ++i) vst1q_f32(out + 16 * u + 4 * i, acc[u][i]);
}

// The kernel set (see detail::bitplane::load and multiply).
struct Isa {
  static constexpr const char* name = "neon";
  using F16 = CoeffF16;
  using F32 = CoeffF32;
  static float table_entries(const float* x, Index chunks, float* out) noexcept {
    return bitplane_neon::table_entries(x, chunks, out);
  }
  static void quantize_tables(const float* e, Index chunks, float inv, std::int8_t* out) noexcept {
    bitplane_neon::quantize_tables(e, chunks, inv, out);
  }
  // The quarters (16 rows) of the block that hold rows [first, last).
  template <class Coeff>
  static void block_f32(const Layout& l, const Tables& tb, const std::uint8_t* group, Index first,
                        Index last, Index token, float* out) noexcept {
    bitplane_neon::block_f32<Coeff>(l, tb, group, quarter(first), quarter(last + 15), token, out);
  }
  template <class Coeff, int T>
  static void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, Index first,
                         Index last, Index t0, float (*out)[kBlockRows]) noexcept {
    bitplane_neon::block_int8<Coeff, T>(l, tb, group, quarter(first), quarter(last + 15), t0, out);
  }
  static int quarter(Index row) noexcept { return static_cast<int>(row / 16); }
  static void multiply_blocks(const Layout& l, const Tables& t, float* y, Index ldy, Index r0,
                              Index r1) noexcept {
    bitplane::multiply_blocks<Isa>(l, t, y, ldy, r0, r1);
  }
  // The large-batch path runs the scalar twin here (no NEON micro-kernel yet).
  static void dequantize_segment(const float* bias, const float* half_c, int planes,
                                 const std::uint8_t* bytes, Index pairs, float* tile) noexcept {
    bitplane_scalar::dequantize_segment(bias, half_c, planes, bytes, pairs, tile);
  }
  static void accumulate_segment(const float* tile, Index cols, const float* x, Index ldx,
                                 Index tokens, bool assign, Index first, Index last, float* y,
                                 Index ldy) noexcept {
    bitplane_scalar::accumulate_segment(tile, cols, x, ldx, tokens, assign, first, last, y, ldy);
  }
};

}  // namespace bitplane_neon
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
