// AVX2 (+FMA, F16C) bit-plane lookup-table kernel. Same operations in the same
// order as bitplane_scalar.hpp; layout in bitplane_layout.hpp.
//
// A block of 64 rows is taken as two halves of 32 rows (one 32-byte load of
// plane bytes per pair), half after half within each segment. int8 inner
// loop, per load (32 rows x one pair of chunks): split the nibbles (and,
// shift, and), look both chunks up with vpshufb in tables broadcast to both
// lanes, interleave the two results bytewise (unpacklo/hi) and add each row's
// two entries into int16 with vpmaddubsw(1, .): 11 instructions for 64
// lookups. The int16 sums of a segment are widened to float once and scaled
// by the plane coefficient.
#pragma once

#ifndef LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP
#error "lowbit: include <lowbit/kernels/bitplane_lut_gemm.hpp>, not kernels/detail/"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/isa.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace bitplane_avx2 {

using namespace lowbit::detail::bitplane;

inline __m256 sign_flips(int a, int b, int c, int d, int e, int f, int g, int h) {
  const int s = static_cast<int>(0x80000000u);
  return _mm256_castsi256_ps(
      _mm256_setr_epi32(a * s, b * s, c * s, d * s, e * s, f * s, g * s, h * s));
}

// Entries 0..7 and 8..15 of one chunk's table (scalar: table_entry).
inline void chunk_entries(const float* x, __m256& lo, __m256& hi) {
  // Entry i negates x_b where bit b of i is clear; entries 0..7 all negate x3.
  const __m256 flip0 = sign_flips(1, 0, 1, 0, 1, 0, 1, 0);
  const __m256 flip1 = sign_flips(1, 1, 0, 0, 1, 1, 0, 0);
  const __m256 flip2 = sign_flips(1, 1, 1, 1, 0, 0, 0, 0);
  const __m256 all = sign_flips(1, 1, 1, 1, 1, 1, 1, 1);
  const __m256 s0 = _mm256_xor_ps(_mm256_broadcast_ss(x + 0), flip0);
  const __m256 s1 = _mm256_xor_ps(_mm256_broadcast_ss(x + 1), flip1);
  const __m256 s2 = _mm256_xor_ps(_mm256_broadcast_ss(x + 2), flip2);
  const __m256 s3 = _mm256_xor_ps(_mm256_broadcast_ss(x + 3), all);
  lo = _mm256_mul_ps(_mm256_set1_ps(0.5f),
                     _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s0, s1), s2), s3));
  // e[15 - i] = -e[i] exactly (every rounding step is sign-symmetric).
  hi = _mm256_permutevar8x32_ps(_mm256_xor_ps(lo, all), _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0));
}

inline float table_entries(const float* x, Index chunks, float* out) noexcept {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 largest = _mm256_setzero_ps();
  for (Index c = 0; c < chunks; ++c) {
    __m256 lo, hi;
    chunk_entries(x + kChunkCols * c, lo, hi);
    _mm256_storeu_ps(out + kTableEntries * c, lo);
    _mm256_storeu_ps(out + kTableEntries * c + 8, hi);
    largest = _mm256_max_ps(largest, _mm256_and_ps(lo, abs_mask));  // |hi| are the same values
  }
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps(largest, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Two chunks (a pair; segments always hold whole pairs) per iteration.
inline void quantize_tables(const float* entries, Index chunks, float inverse_scale,
                            std::int8_t* out) noexcept {
  const __m256 inv = _mm256_set1_ps(inverse_scale);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (Index c = 0; c < chunks; c += 2, entries += 2 * kTableEntries, out += 2 * kTableEntries) {
    const __m256i a0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(entries), inv));
    const __m256i a1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(entries + 8), inv));
    const __m256i b0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(entries + 16), inv));
    const __m256i b1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(entries + 24), inv));
    // packs work per 128-bit lane; the dword permutation restores entry order.
    const __m256i bytes =
        _mm256_packs_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(b0, b1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permutevar8x32_epi32(bytes, order));
  }
}

struct CoeffF32 {
  static constexpr std::size_t size = sizeof(float);
  static __m256 load(const std::uint8_t* p) {
    return _mm256_load_ps(reinterpret_cast<const float*>(p));
  }
};
struct CoeffF16 {
  static constexpr std::size_t size = sizeof(std::uint16_t);
  static __m256 load(const std::uint8_t* p) {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p)));
  }
};

// Coefficients of one slot (plane p or the bias) for rows 8i..8i+7 of half h.
template <class Coeff>
inline __m256 coefficients(const std::uint8_t* group, int slot, int h, int i) {
  return Coeff::load(group +
                     Coeff::size * static_cast<std::size_t>(slot * kBlockRows +
                                                            coefficient_position(32 * h + 8 * i)));
}

// int16 sums (lo: rows 0-7 | 16-23, hi: rows 8-15 | 24-31) to float rows 0-7, 8-15, 16-23, 24-31.
inline void widen(__m256i lo, __m256i hi, __m256 f[4]) {
  f[0] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo)));
  f[1] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi)));
  f[2] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo, 1)));
  f[3] = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi, 1)));
}

// One block, tokens t0..t0+T-1, int8 tables: out[t][row]. Each segment is
// taken half by half while its bytes are in L1.
template <class Coeff, int T>
void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, Index t0,
                float (*out)[kBlockRows]) {
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi8(1);
  __m256 acc[2][T][4];
  for (auto& half : acc)
    for (auto& a : half)
      for (auto& v : a) v = _mm256_setzero_ps();
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* segment_bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const std::int8_t* table[T];
      for (int t = 0; t < T; ++t)
        table[t] = tb.q + ((t0 + t) * tb.chunks + 2 * pair) * kTableEntries;
      for (int h = 0; h < 2; ++h) {
        const std::uint8_t* bytes = segment_bytes + 32 * h;
        __m256 part[T][4];
        for (auto& a : part)
          for (auto& v : a) v = _mm256_setzero_ps();
        for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
          __m256i lo[T], hi[T];
          for (int t = 0; t < T; ++t) lo[t] = hi[t] = _mm256_setzero_si256();
          for (Index q = 0; q < pairs; ++q) {
            const __m256i w =
                _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes + q * kPairBytes));
            const __m256i first = _mm256_and_si256(w, nibble);
            const __m256i second = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);
            for (int t = 0; t < T; ++t) {
              const std::int8_t* at = table[t] + 2 * kTableEntries * q;
              const __m256i ta =
                  _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(at)));
              const __m256i tb2 = _mm256_broadcastsi128_si256(
                  _mm_load_si128(reinterpret_cast<const __m128i*>(at + kTableEntries)));
              const __m256i a = _mm256_shuffle_epi8(ta, first);
              const __m256i b = _mm256_shuffle_epi8(tb2, second);
              lo[t] =
                  _mm256_add_epi16(lo[t], _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(a, b)));
              hi[t] =
                  _mm256_add_epi16(hi[t], _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(a, b)));
            }
          }
          __m256 c[4];
          for (int i = 0; i < 4; ++i) c[i] = coefficients<Coeff>(group, p, h, i);
          for (int t = 0; t < T; ++t) {
            __m256 f[4];
            widen(lo[t], hi[t], f);
            for (int i = 0; i < 4; ++i) part[t][i] = _mm256_fmadd_ps(f[i], c[i], part[t][i]);
          }
        }
        for (int t = 0; t < T; ++t) {
          const __m256 scale = _mm256_set1_ps(tb.scale[(t0 + t) * l.segments() + segment]);
          for (int i = 0; i < 4; ++i)
            acc[h][t][i] = _mm256_fmadd_ps(part[t][i], scale, acc[h][t][i]);
        }
      }
      segment_bytes += l.planes * pairs * kPairBytes;
      pair += pairs;
    }
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 4; ++i) {
        const __m256 bias = coefficients<Coeff>(group, l.planes, h, i);
        for (int t = 0; t < T; ++t)
          acc[h][t][i] =
              _mm256_fmadd_ps(bias, _mm256_set1_ps(tb.xsum[(t0 + t) * l.groups + g]), acc[h][t][i]);
      }
  }
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < T; ++t)
      for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out[t] + 32 * h + 8 * i, acc[h][t][i]);
}

// Entry table[index] of a 16-float table held as two halves, for 8 indices.
inline __m256 lookup16(__m256 low_half, __m256 high_half, __m256i index) {
  const __m256 from_low = _mm256_permutevar8x32_ps(low_half, index);
  const __m256 from_high = _mm256_permutevar8x32_ps(high_half, index);
  return _mm256_blendv_ps(from_low, from_high, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}

// One block, one token, exact float tables.
template <class Coeff>
void block_f32(const Layout& l, const Tables& tb, const std::uint8_t* group, Index token,
               float* out) {
  const __m256i nibble = _mm256_set1_epi32(15);
  __m256 acc[2][4];
  for (auto& half : acc)
    for (auto& v : half) v = _mm256_setzero_ps();
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* segment_bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const float* table = tb.f + (token * tb.chunks + 2 * pair) * kTableEntries;
      for (int h = 0; h < 2; ++h) {
        const std::uint8_t* bytes = segment_bytes + 32 * h;
        __m256 part[4];
        for (auto& v : part) v = _mm256_setzero_ps();
        for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
          __m256 sum[4];
          for (auto& v : sum) v = _mm256_setzero_ps();
          for (Index q = 0; q < pairs; ++q) {
            const float* at = table + 2 * kTableEntries * q;
            const __m256 a0 = _mm256_loadu_ps(at), a1 = _mm256_loadu_ps(at + 8);
            const __m256 b0 = _mm256_loadu_ps(at + 16), b1 = _mm256_loadu_ps(at + 24);
            for (int i = 0; i < 4; ++i) {
              const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
                  reinterpret_cast<const __m128i*>(bytes + q * kPairBytes + 8 * i)));
              sum[i] = _mm256_add_ps(sum[i], lookup16(a0, a1, _mm256_and_si256(v, nibble)));
              sum[i] = _mm256_add_ps(sum[i], lookup16(b0, b1, _mm256_srli_epi32(v, 4)));
            }
          }
          for (int i = 0; i < 4; ++i)
            part[i] = _mm256_fmadd_ps(sum[i], coefficients<Coeff>(group, p, h, i), part[i]);
        }
        const __m256 scale = _mm256_set1_ps(tb.scale[token * l.segments() + segment]);
        for (int i = 0; i < 4; ++i) acc[h][i] = _mm256_fmadd_ps(part[i], scale, acc[h][i]);
      }
      segment_bytes += l.planes * pairs * kPairBytes;
      pair += pairs;
    }
    const __m256 xsum = _mm256_set1_ps(tb.xsum[token * l.groups + g]);
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 4; ++i)
        acc[h][i] = _mm256_fmadd_ps(coefficients<Coeff>(group, l.planes, h, i), xsum, acc[h][i]);
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + 32 * h + 8 * i, acc[h][i]);
}

// The kernel set (see detail::bitplane::load and multiply).
// The large-batch path's primitives (scalar twins in bitplane_scalar.hpp).
// Dequantizing: 8 rows' plane bytes widened to 32-bit lanes once per pair,
// then per column the bit shifted into the sign, which selects +-c_p / 2.
inline void dequantize_segment(const float* bias, const float* half_c, int planes,
                               const std::uint8_t* bytes, Index pairs, float* tile) noexcept {
  for (Index r = 0; r < kBlockRows; r += 8) {
    const __m256 b0 = _mm256_load_ps(bias + r);
    for (Index q = 0; q < pairs; ++q) {
      __m256i bits[8];
      for (int p = 0; p < planes; ++p)
        bits[p] = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
            reinterpret_cast<const __m128i*>(bytes + (p * pairs + q) * kPairBytes + r)));
      for (Index b = 0; b < kPairCols; ++b) {
        const __m128i shift = _mm_cvtsi32_si128(31 - static_cast<int>(b));
        __m256 v = b0;
        for (int p = 0; p < planes; ++p) {
          const __m256 h = _mm256_load_ps(half_c + p * kBlockRows + r);
          const __m256 sign = _mm256_castsi256_ps(_mm256_sll_epi32(bits[p], shift));
          v = _mm256_add_ps(v, _mm256_blendv_ps(_mm256_sub_ps(_mm256_setzero_ps(), h), h, sign));
        }
        _mm256_store_ps(tile + (q * kPairCols + b) * kBlockRows + r, v);
      }
    }
  }
}

// 16 rows x T tokens of one segment: 2T accumulators, one broadcast of x per
// token and column, two loads of the tile per column.
template <int T>
inline void accumulate_rows(const float* tile, Index cols, const float* x, Index ldx, Index r0,
                            bool assign, Index first, Index last, float* y, Index ldy) noexcept {
  __m256 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (Index k = 0; k < cols; ++k) {
    const __m256 w0 = _mm256_load_ps(tile + k * kBlockRows + r0);
    const __m256 w1 = _mm256_load_ps(tile + k * kBlockRows + r0 + 8);
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_broadcast_ss(x + t * ldx + k);
      acc[t][0] = _mm256_fmadd_ps(w0, xv, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, xv, acc[t][1]);
    }
  }
  const bool whole = first <= r0 && r0 + 16 <= last;
  for (int t = 0; t < T; ++t) {
    float* out = y + t * ldy + r0;
    if (whole) {
      for (int h = 0; h < 2; ++h) {
        const __m256 s =
            assign ? acc[t][h] : _mm256_add_ps(_mm256_loadu_ps(out + 8 * h), acc[t][h]);
        _mm256_storeu_ps(out + 8 * h, s);
      }
    } else {
      alignas(32) float s[16];
      _mm256_store_ps(s, acc[t][0]);
      _mm256_store_ps(s + 8, acc[t][1]);
      for (Index r = std::max(first, r0); r < std::min(last, r0 + 16); ++r)
        out[r - r0] = assign ? s[r - r0] : out[r - r0] + s[r - r0];
    }
  }
}

inline void accumulate_segment(const float* tile, Index cols, const float* x, Index ldx,
                               Index tokens, bool assign, Index first, Index last, float* y,
                               Index ldy) noexcept {
  constexpr int kTokens = 6;
  for (Index t0 = 0; t0 < tokens; t0 += kTokens) {
    const Index n = std::min<Index>(kTokens, tokens - t0);
    const float* xt = x + t0 * ldx;
    float* yt = y + t0 * ldy;
    for (Index r0 = first / 16 * 16; r0 < last; r0 += 16) {
      switch (n) {
        case 1:
          accumulate_rows<1>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
        case 2:
          accumulate_rows<2>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
        case 3:
          accumulate_rows<3>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
        case 4:
          accumulate_rows<4>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
        case 5:
          accumulate_rows<5>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
        default:
          accumulate_rows<6>(tile, cols, xt, ldx, r0, assign, first, last, yt, ldy);
          break;
      }
    }
  }
}

struct Isa {
  static constexpr const char* name = "avx2";
  using F16 = CoeffF16;
  using F32 = CoeffF32;
  static float table_entries(const float* x, Index chunks, float* out) noexcept {
    return bitplane_avx2::table_entries(x, chunks, out);
  }
  static void quantize_tables(const float* e, Index chunks, float inv, std::int8_t* out) noexcept {
    bitplane_avx2::quantize_tables(e, chunks, inv, out);
  }
  // Whole blocks: the rows outside [first, last) cost nothing extra here.
  template <class Coeff>
  static void block_f32(const Layout& l, const Tables& tb, const std::uint8_t* group, Index, Index,
                        Index token, float* out) noexcept {
    bitplane_avx2::block_f32<Coeff>(l, tb, group, token, out);
  }
  template <class Coeff, int T>
  static void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, Index, Index,
                         Index t0, float (*out)[kBlockRows]) noexcept {
    bitplane_avx2::block_int8<Coeff, T>(l, tb, group, t0, out);
  }
  static void multiply_blocks(const Layout& l, const Tables& t, float* y, Index ldy, Index r0,
                              Index r1) noexcept {
    bitplane::multiply_blocks<Isa>(l, t, y, ldy, r0, r1);
  }
  static void dequantize_segment(const float* bias, const float* half_c, int planes,
                                 const std::uint8_t* bytes, Index pairs, float* tile) noexcept {
    bitplane_avx2::dequantize_segment(bias, half_c, planes, bytes, pairs, tile);
  }
  static void accumulate_segment(const float* tile, Index cols, const float* x, Index ldx,
                                 Index tokens, bool assign, Index first, Index last, float* y,
                                 Index ldy) noexcept {
    bitplane_avx2::accumulate_segment(tile, cols, x, ldx, tokens, assign, first, last, y, ldy);
  }
};

}  // namespace bitplane_avx2
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
