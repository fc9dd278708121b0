// AVX-512 VNNI W8A8 kernel: 512-bit vpdpbusd on register tiles of 4 weight
// rows x 4 tokens (32 registers hold them), 64 input features per step, and a
// masked step for the last depth % 64 features (masked-out bytes load as 0
// and add nothing). Activations are offset to u8 as in the AVX2 VNNI variant:
// sum (x + 128)·w = x·w + 128·sum w, with sum w from the same instruction
// against ones. Integer results are exact, so they equal the scalar reference.
#pragma once

#ifndef LOWBIT_KERNELS_INT8_GEMM_HPP
#error "lowbit: include <lowbit/kernels/int8_gemm.hpp>, not kernels/detail/"
#endif

#include <immintrin.h>

#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace int8_avx512 {

// Sum of the 16 lanes modulo 2^32 (GCC's _mm512_reduce_add_epi32 finishes in
// signed int arithmetic, which must not overflow; the offset sums may).
inline std::int32_t hsum(__m512i v) noexcept {
  __m256i s = _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(1, 0, 3, 2)));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(h);
}

template <int R, int T>
inline void tile(const Int8GemmArgs& a, Index r0, Index t0) noexcept {
  const std::int8_t* w[R];
  const std::int8_t* x[T];
  for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_stride;
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  __m512i acc[R][T], row_sum[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    row_sum[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
  }
  const __m512i offset = _mm512_set1_epi8(-128);  // x ^ 0x80 == x + 128 as u8
  const __m512i ones = _mm512_set1_epi8(1);
  const Index depth = a.depth;
  for (Index k = 0; k < depth; k += 64) {
    // The last step masks off the bytes past depth (they load as 0).
    const __mmask64 mask = depth - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (depth - k)) - 1;
    __m512i xu[T];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t)
      xu[t] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, x[t] + k), offset);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i wv = _mm512_maskz_loadu_epi8(mask, w[r] + k);
      if (T == 1) _mm_prefetch(reinterpret_cast<const char*>(w[r] + k + 2048), _MM_HINT_T0);
      row_sum[r] = _mm512_dpbusd_epi32(row_sum[r], ones, wv);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], xu[t], wv);
    }
  }
  std::int32_t dots[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const std::int32_t sum_w = hsum(row_sum[r]);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) dots[r][t] = int8_scalar::remove_offset(hsum(acc[r][t]), sum_w);
  }
  int8_scalar::store_tile<R, T>(a, r0, t0, dots, a.depth);
}

template <int R>
inline void row_block(const Int8GemmArgs& a, Index r0) noexcept {
  constexpr int T = 4;
  Index t = 0;
  for (; t + T <= a.tokens; t += T) tile<R, T>(a, r0, t);
  switch (a.tokens - t) {
    case 3:
      tile<R, 3>(a, r0, t);
      break;
    case 2:
      tile<R, 2>(a, r0, t);
      break;
    case 1:
      tile<R, 1>(a, r0, t);
      break;
    default:
      break;
  }
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
  static constexpr const char* name = "avx512-vnni";
  static void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
    int8_avx512::rows(a, row_begin, row_end);
  }
};

}  // namespace int8_avx512
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
