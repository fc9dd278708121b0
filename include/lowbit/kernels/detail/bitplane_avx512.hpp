// AVX-512 (F + BW) bit-plane lookup-table kernel: the AVX2 kernel at twice the
// width. One 64-byte load of plane bytes covers a whole block (64 rows x one
// pair of chunks); each table is broadcast to the four lanes by a plain load
// (vbroadcasti32x4), so the inner loop is the AVX2 one on zmm registers:
// 11 instructions for 128 lookups. Float tables (16 entries) fit one zmm,
// so the exact path looks entries up with a single vpermps.
//
// The int16 sums come out in 8-row chunks 0,2 | 1,3 | 4,6 | 5,7 per zmm pair,
// which is the order the coefficients are stored in (bitplane_layout.hpp).
// Tables are built by the AVX2 code (identical results).
#pragma once

#ifndef LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP
#error "lowbit: include <lowbit/kernels/bitplane_lut_gemm.hpp>, not kernels/detail/"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "lowbit/kernels/detail/bitplane_avx2.hpp"
#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/isa.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace bitplane_avx512 {

using namespace lowbit::detail::bitplane;

struct CoeffF32 {
  static constexpr std::size_t size = sizeof(float);
  static __m512 load(const std::uint8_t* p) {
    return _mm512_load_ps(reinterpret_cast<const float*>(p));
  }
};
struct CoeffF16 {
  static constexpr std::size_t size = sizeof(std::uint16_t);
  static __m512 load(const std::uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
  }
};

// Coefficients of one slot, stored positions 16j..16j+15.
template <class Coeff>
inline __m512 coefficients(const std::uint8_t* group, int slot, int j) {
  return Coeff::load(group + Coeff::size * static_cast<std::size_t>(slot * kBlockRows + 16 * j));
}

// Accumulators in stored coefficient order -> rows.
inline void store_rows(const __m512 acc[4], float* out) {
  alignas(64) float stored[kBlockRows];
  for (int j = 0; j < 4; ++j) _mm512_store_ps(stored + 16 * j, acc[j]);
  for (Index r = 0; r < kBlockRows; ++r) out[r] = stored[coefficient_position(r)];
}

inline __m512 to_float(__m256i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(v)); }

// One block, tokens t0..t0+T-1, int8 tables.
template <class Coeff, int T>
void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, Index t0,
                float (*out)[kBlockRows]) {
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __m512i ones = _mm512_set1_epi8(1);
  __m512 acc[T][4];
  for (auto& a : acc)
    for (auto& v : a) v = _mm512_setzero_ps();
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const std::int8_t* table[T];
      for (int t = 0; t < T; ++t)
        table[t] = tb.q + ((t0 + t) * tb.chunks + 2 * pair) * kTableEntries;
      __m512 part[T][4];
      for (auto& a : part)
        for (auto& v : a) v = _mm512_setzero_ps();
      for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
        __m512i lo[T], hi[T];
        for (int t = 0; t < T; ++t) lo[t] = hi[t] = _mm512_setzero_si512();
        for (Index q = 0; q < pairs; ++q) {
          const __m512i w = _mm512_load_si512(bytes + q * kPairBytes);
          const __m512i first = _mm512_and_si512(w, nibble);
          const __m512i second = _mm512_and_si512(_mm512_srli_epi16(w, 4), nibble);
          for (int t = 0; t < T; ++t) {
            const std::int8_t* at = table[t] + 2 * kTableEntries * q;
            const __m512i ta =
                _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(at)));
            const __m512i tb2 = _mm512_broadcast_i32x4(
                _mm_load_si128(reinterpret_cast<const __m128i*>(at + kTableEntries)));
            const __m512i a = _mm512_shuffle_epi8(ta, first);
            const __m512i b = _mm512_shuffle_epi8(tb2, second);
            lo[t] = _mm512_add_epi16(lo[t], _mm512_maddubs_epi16(ones, _mm512_unpacklo_epi8(a, b)));
            hi[t] = _mm512_add_epi16(hi[t], _mm512_maddubs_epi16(ones, _mm512_unpackhi_epi8(a, b)));
          }
        }
        __m512 c[4];
        for (int j = 0; j < 4; ++j) c[j] = coefficients<Coeff>(group, p, j);
        for (int t = 0; t < T; ++t) {
          const __m512 f[4] = {to_float(_mm512_castsi512_si256(lo[t])),
                               to_float(_mm512_castsi512_si256(hi[t])),
                               to_float(_mm512_extracti64x4_epi64(lo[t], 1)),
                               to_float(_mm512_extracti64x4_epi64(hi[t], 1))};
          for (int j = 0; j < 4; ++j) part[t][j] = _mm512_fmadd_ps(f[j], c[j], part[t][j]);
        }
      }
      for (int t = 0; t < T; ++t) {
        const __m512 scale = _mm512_set1_ps(tb.scale[(t0 + t) * l.segments() + segment]);
        for (int j = 0; j < 4; ++j) acc[t][j] = _mm512_fmadd_ps(part[t][j], scale, acc[t][j]);
      }
      pair += pairs;
    }
    for (int j = 0; j < 4; ++j) {
      const __m512 bias = coefficients<Coeff>(group, l.planes, j);
      for (int t = 0; t < T; ++t)
        acc[t][j] =
            _mm512_fmadd_ps(bias, _mm512_set1_ps(tb.xsum[(t0 + t) * l.groups + g]), acc[t][j]);
    }
  }
  for (int t = 0; t < T; ++t) store_rows(acc[t], out[t]);
}

// One block, one token, exact float tables. Plane bytes are read in the
// stored coefficient order (8-row chunks 0,2 | 1,3 | 4,6 | 5,7).
template <class Coeff>
void block_f32(const Layout& l, const Tables& tb, const std::uint8_t* group, Index token,
               float* out) {
  const __m512i nibble = _mm512_set1_epi32(15);
  __m512 acc[4];
  for (auto& v : acc) v = _mm512_setzero_ps();
  Index pair = 0, segment = 0;
  for (Index g = 0; g < l.groups; ++g, group += l.group_bytes) {
    prefetch_ahead(group, l.group_bytes);
    const std::uint8_t* bytes = group + l.coeff_bytes;
    for (Index s = 0; s < l.segments_per_group; ++s, ++segment) {
      const Index pairs = l.segment_pairs(s);
      const float* table = tb.f + (token * tb.chunks + 2 * pair) * kTableEntries;
      __m512 part[4];
      for (auto& v : part) v = _mm512_setzero_ps();
      for (int p = 0; p < l.planes; ++p, bytes += pairs * kPairBytes) {
        __m512 sum[4];
        for (auto& v : sum) v = _mm512_setzero_ps();
        for (Index q = 0; q < pairs; ++q) {
          const __m512 ta = _mm512_loadu_ps(table + 2 * kTableEntries * q);
          const __m512 tb2 = _mm512_loadu_ps(table + 2 * kTableEntries * q + kTableEntries);
          const std::uint8_t* unit = bytes + q * kPairBytes;
          for (int j = 0; j < 4; ++j) {
            // Stored positions 16j..16j+15 are rows 8 * order[2j] + 0..7
            // and 8 * order[2j + 1] + 0..7.
            const __m128i rows = _mm_unpacklo_epi64(
                _mm_loadl_epi64(
                    reinterpret_cast<const __m128i*>(unit + coefficient_position(16 * j))),
                _mm_loadl_epi64(
                    reinterpret_cast<const __m128i*>(unit + coefficient_position(16 * j + 8))));
            const __m512i v = _mm512_cvtepu8_epi32(rows);
            sum[j] = _mm512_add_ps(sum[j], _mm512_permutexvar_ps(_mm512_and_si512(v, nibble), ta));
            sum[j] = _mm512_add_ps(sum[j], _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tb2));
          }
        }
        for (int j = 0; j < 4; ++j)
          part[j] = _mm512_fmadd_ps(sum[j], coefficients<Coeff>(group, p, j), part[j]);
      }
      const __m512 scale = _mm512_set1_ps(tb.scale[token * l.segments() + segment]);
      for (int j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(part[j], scale, acc[j]);
      pair += pairs;
    }
    const __m512 xsum = _mm512_set1_ps(tb.xsum[token * l.groups + g]);
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm512_fmadd_ps(coefficients<Coeff>(group, l.planes, j), xsum, acc[j]);
  }
  store_rows(acc, out);
}

// The kernel set (see detail::bitplane::load and multiply).
struct Isa {
  static constexpr const char* name = "avx512";
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
    bitplane_avx512::block_f32<Coeff>(l, tb, group, token, out);
  }
  template <class Coeff, int T>
  static void block_int8(const Layout& l, const Tables& tb, const std::uint8_t* group, Index, Index,
                         Index t0, float (*out)[kBlockRows]) noexcept {
    bitplane_avx512::block_int8<Coeff, T>(l, tb, group, t0, out);
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

}  // namespace bitplane_avx512
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
