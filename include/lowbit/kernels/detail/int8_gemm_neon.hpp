// NEON W8A8 kernel: register tiles of 4 weight rows x 4 tokens, 16 input
// features per step. With the dot-product extension vdotq_s32 does four
// signed products and their sum per lane; without it vmull_s8 / vmlal_high_s8
// form 16-bit sums of two products (at most 2·127², no overflow since values
// are limited to -127..127) and vpadalq_s16 widens them into the int32
// accumulators. Integer results are exact, so they equal the scalar reference.
#pragma once

#if defined(__ARM_NEON)

#include <arm_neon.h>

#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"

namespace lowbit::detail {

#if defined(__ARM_FEATURE_DOTPROD)
inline constexpr const char* kInt8NeonVariant = "neon (dotprod)";
#else
inline constexpr const char* kInt8NeonVariant = "neon";
#endif

inline int32x4_t int8_accumulate_neon(int32x4_t acc, int8x16_t w, int8x16_t x) noexcept {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, w, x);
#else
  int16x8_t pairs = vmull_s8(vget_low_s8(w), vget_low_s8(x));
  pairs = vmlal_high_s8(pairs, w, x);
  return vpadalq_s16(acc, pairs);
#endif
}

template <int R, int T>
inline void int8_tile_neon(const Int8GemmArgs& a, Index r0, Index t0) noexcept {
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
      for (int t = 0; t < T; ++t) acc[r][t] = int8_accumulate_neon(acc[r][t], wv, xv[t]);
    }
  }
  std::int32_t dots[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) dots[r][t] = vaddvq_s32(acc[r][t]);
  int8_store_tile<R, T>(a, r0, t0, dots, body);
}

template <int R>
inline void int8_row_block_neon(const Int8GemmArgs& a, Index r0) noexcept {
  constexpr int T = 4;
  Index t = 0;
  for (; t + T <= a.tokens; t += T) int8_tile_neon<R, T>(a, r0, t);
  switch (a.tokens - t) {
    case 3: int8_tile_neon<R, 3>(a, r0, t); break;
    case 2: int8_tile_neon<R, 2>(a, r0, t); break;
    case 1: int8_tile_neon<R, 1>(a, r0, t); break;
    default: break;
  }
}

inline void int8_gemm_rows_neon(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
  constexpr int R = 4;
  Index r = row_begin;
  for (; r + R <= row_end; r += R) int8_row_block_neon<R>(a, r);
  for (; r < row_end; ++r) int8_row_block_neon<1>(a, r);
}

}  // namespace lowbit::detail

#endif  // __ARM_NEON
