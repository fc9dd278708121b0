// AVX2 W8A8 kernel: register tiles of 4 weight rows x 2 tokens (8 rows x 1
// token for a matrix-vector product, prefetching ahead), 32 input features per
// step, unaligned loads (any stride, any offset), a scalar loop for the last
// depth % 32 features.
//
// Plain AVX2 multiplies with vpmaddubsw (u8 x s8 pairs summed to s16) and
// vpmaddwd (pairs of s16 summed to s32), using the usual sign handling:
// |x| times sign(x)·w equals x·w, and since values are limited to -127..127 a
// pair sum is at most 2·127² and never saturates.
//
// With VNNI (the EVEX form in target isa_avx512_vnni, AVX-VNNI in
// isa_avx2_vnni) vpdpbusd sums four u8 x s8 products into int32 without
// saturation, so the activations are offset instead: (x + 128) is a u8, and
// sum (x + 128)·w = x·w + 128·sum w, with sum w accumulated by the same
// instruction against a vector of ones: one instruction per 32 products (plus
// one per row for sum w, shared by the tile's tokens) where the sign trick
// needs two.
//
// Integer results are exact, so every variant equals the scalar reference.
#pragma once

#ifndef LOWBIT_KERNELS_INT8_GEMM_HPP
#error "lowbit: include <lowbit/kernels/int8_gemm.hpp>, not kernels/detail/"
#endif

#include <immintrin.h>

#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace int8_avx2 {

inline std::int32_t hsum(__m256i v) noexcept {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

inline __m256i load(const std::int8_t* p) noexcept {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

#if defined(LOWBIT_ISA_AVX512_VNNI) || defined(LOWBIT_ISA_AVX_VNNI)

#if defined(LOWBIT_ISA_AVX512_VNNI)
inline constexpr const char* kName = "avx2 (avx512-vnni)";
inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) noexcept {
  return _mm256_dpbusd_epi32(acc, u, s);
}
#else
inline constexpr const char* kName = "avx2 (avx-vnni)";
inline __m256i dpbusd(__m256i acc, __m256i u, __m256i s) noexcept {
  return _mm256_dpbusd_avx_epi32(acc, u, s);
}
#endif

// Rows r0..r0+R-1 against tokens t0..t0+T-1 over the whole depth.
template <int R, int T>
inline void tile(const Int8GemmArgs& a, Index r0, Index t0) noexcept {
  const std::int8_t* w[R];
  const std::int8_t* x[T];
  for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_stride;
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  __m256i acc[R][T], row_sum[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    row_sum[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  }
  const __m256i offset = _mm256_set1_epi8(-128);  // x ^ 0x80 == x + 128 as u8
  const __m256i ones = _mm256_set1_epi8(1);
  const Index body = a.depth - a.depth % 32;
  for (Index k = 0; k < body; k += 32) {
    __m256i xu[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) xu[t] = _mm256_xor_si256(load(x[t] + k), offset);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256i wv = load(w[r] + k);
      // A single token streams the weights: fetch ahead (a prefetch never faults).
      if (T == 1) _mm_prefetch(reinterpret_cast<const char*>(w[r] + k + 512), _MM_HINT_T0);
      row_sum[r] = dpbusd(row_sum[r], ones, wv);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[r][t] = dpbusd(acc[r][t], xu[t], wv);
    }
  }
  std::int32_t dots[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const std::int32_t sum_w = hsum(row_sum[r]);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) dots[r][t] = int8_scalar::remove_offset(hsum(acc[r][t]), sum_w);
  }
  int8_scalar::store_tile<R, T>(a, r0, t0, dots, body);
}

#else  // plain AVX2

inline constexpr const char* kName = "avx2";

template <int R, int T>
inline void tile(const Int8GemmArgs& a, Index r0, Index t0) noexcept {
  const std::int8_t* w[R];
  const std::int8_t* x[T];
  for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_stride;
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  __m256i acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  const Index body = a.depth - a.depth % 32;
  for (Index k = 0; k < body; k += 32) {
    __m256i xv[T], x_abs[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      xv[t] = load(x[t] + k);
      x_abs[t] = _mm256_abs_epi8(xv[t]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m256i wv = load(w[r] + k);
      // A single token streams the weights: fetch ahead (a prefetch never faults).
      if (T == 1) _mm_prefetch(reinterpret_cast<const char*>(w[r] + k + 512), _MM_HINT_T0);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m256i pairs = _mm256_maddubs_epi16(x_abs[t], _mm256_sign_epi8(wv, xv[t]));
        acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  std::int32_t dots[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) dots[r][t] = hsum(acc[r][t]);
  int8_scalar::store_tile<R, T>(a, r0, t0, dots, body);
}

#endif

// Every token against rows r0..r0+R-1: full tiles, then the leftover tokens.
template <int R>
inline void row_block(const Int8GemmArgs& a, Index r0) noexcept {
  constexpr int T = 2;  // 4 x 2 tiles fit the 16 registers AVX2 instructions can name
  Index t = 0;
  for (; t + T <= a.tokens; t += T) tile<R, T>(a, r0, t);
  for (; t < a.tokens; ++t) tile<R, 1>(a, r0, t);
}

inline void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
  Index r = row_begin;
  if (a.tokens == 1)  // matrix-vector: more rows in flight for the memory system
    for (; r + 8 <= row_end; r += 8) tile<8, 1>(a, r, 0);
  constexpr int R = 4;
  for (; r + R <= row_end; r += R) row_block<R>(a, r);
  for (; r < row_end; ++r) row_block<1>(a, r);
}

// The kernel set (see detail::int8::gemm).
struct Isa {
  static constexpr const char* name = kName;
  static void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
    int8_avx2::rows(a, row_begin, row_end);
  }
};

}  // namespace int8_avx2
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
