// NEON W8A8 kernel: register tiles of 4 weight rows x 4 tokens, 16 input
// features per step. With the dot-product extension vdotq_s32 does four
// signed products and their sum per lane; without it vmull_s8 / vmlal_high_s8
// form 16-bit sums of two products (at most 2·127², no overflow since values
// are limited to -127..127) and vpadalq_s16 widens them into the int32
// accumulators. Integer results are exact, so they equal the scalar reference.
#pragma once

#ifndef LOWBIT_KERNELS_INT8_GEMM_HPP
#error "lowbit: include <lowbit/kernels/int8_gemm.hpp>, not kernels/detail/"
#endif

#include <arm_neon.h>

#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace int8_neon {

inline int32x4_t accumulate(int32x4_t acc, int8x16_t w, int8x16_t x) noexcept {
#if defined(LOWBIT_ISA_NEON_DOTPROD)
  return vdotq_s32(acc, w, x);
#else
  int16x8_t pairs = vmull_s8(vget_low_s8(w), vget_low_s8(x));
  pairs = vmlal_high_s8(pairs, w, x);
  return vpadalq_s16(acc, pairs);
#endif
}

template <int R, int T>
inline void tile(const Int8GemmArgs& a, Index r0, Index t0) noexcept {
  const std::int8_t* w[R];
  const std::int8_t* x[T];
  for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_stride;
  for (int t = 0; t < T; ++t) x[t] = a.x + (t0 + t) * a.x_stride;
  int32x4_t acc[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) acc[r][t] = vdupq_n_s32(0);

  const Index body = a.depth - a.depth % 16;
  for (Index k = 0; k < body; k += 16) {
    int8x16_t xv[T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) xv[t] = vld1q_s8(x[t] + k);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const int8x16_t wv = vld1q_s8(w[r] + k);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) acc[r][t] = accumulate(acc[r][t], wv, xv[t]);
    }
  }
  std::int32_t dots[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) dots[r][t] = vaddvq_s32(acc[r][t]);
  int8_scalar::store_tile<R, T>(a, r0, t0, dots, body);
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
  constexpr int R = 4;
  Index r = row_begin;
  for (; r + R <= row_end; r += R) row_block<R>(a, r);
  for (; r < row_end; ++r) row_block<1>(a, r);
}

// The kernel set (see detail::int8::gemm).
struct Isa {
#if defined(LOWBIT_ISA_NEON_DOTPROD)
  static constexpr const char* name = "neon (dotprod)";
#else
  static constexpr const char* name = "neon";
#endif
  static void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
    int8_neon::rows(a, row_begin, row_end);
  }
};

}  // namespace int8_neon
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
