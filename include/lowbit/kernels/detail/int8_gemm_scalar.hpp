// The W8A8 product as raw pointers, and its scalar reference: every SIMD
// variant computes exactly these integer dot products and this epilogue.
#pragma once

#ifndef LOWBIT_KERNELS_INT8_GEMM_HPP
#error "lowbit: include <lowbit/kernels/int8_gemm.hpp>, not kernels/detail/"
#endif

#include <cstdint>

#include "lowbit/core/types.hpp"
#include "lowbit/kernels/detail/isa.hpp"

namespace lowbit::detail {

// Rows of W (int8, w_stride bytes apart) against tokens of X (int8, x_stride
// bytes apart) over `depth` input features. Outputs are indexed (token, row):
//   dots(t, r) = sum_k x(t, k) * w(r, k)                      (when dots is set)
//   y(t, r)    = float(dots(t, r)) * (x_scale[t] * w_scale[r]) (when y is set)
// Values must lie in -127..127 and depth * 127^2 must fit in int32.
struct Int8GemmArgs {
  const std::int8_t* w = nullptr;
  Index w_stride = 0;
  const float* w_scale = nullptr;
  const std::int8_t* x = nullptr;
  Index x_stride = 0;
  const float* x_scale = nullptr;
  Index tokens = 0;
  Index depth = 0;
  float* y = nullptr;
  Index y_stride = 0;
  std::int32_t* dots = nullptr;
  Index dots_stride = 0;
};

inline namespace LOWBIT_ISA_TARGET {
namespace int8_scalar {

inline void store(const Int8GemmArgs& a, Index t, Index r, std::int32_t dot) noexcept {
  if (a.dots) a.dots[t * a.dots_stride + r] = dot;
  if (a.y) a.y[t * a.y_stride + r] = static_cast<float>(dot) * (a.x_scale[t] * a.w_scale[r]);
}

inline std::int32_t dot(const std::int8_t* w, const std::int8_t* x, Index n) noexcept {
  std::int32_t sum = 0;
  for (Index k = 0; k < n; ++k)
    sum += static_cast<std::int32_t>(w[k]) * static_cast<std::int32_t>(x[k]);
  return sum;
}

// sum (x + 128)·w minus 128·sum w, for the kernels that offset activations to
// u8. The offset sums can pass 2^31 where the dot product fits, so this is
// computed modulo 2^32 (as the vector lanes already are) without signed overflow.
inline std::int32_t remove_offset(std::int32_t offset_dot, std::int32_t row_sum) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(offset_dot) -
                                   128u * static_cast<std::uint32_t>(row_sum));
}

// The SIMD tiles' epilogue: dots[r][t] holds the products over the first
// `done` features of row r0 + r and token t0 + t; the scalar loop adds the rest.
// (The tiles keep their accumulators in registers only when every loop over
// them is fully unrolled, hence the pragmas there and this separate step.)
template <int R, int T>
inline void store_tile(const Int8GemmArgs& a, Index r0, Index t0, std::int32_t (&dots)[R][T],
                       Index done) noexcept {
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      const std::int8_t* w = a.w + (r0 + r) * a.w_stride + done;
      const std::int8_t* x = a.x + (t0 + t) * a.x_stride + done;
      store(a, t0 + t, r0 + r, dots[r][t] + dot(w, x, a.depth - done));
    }
}

inline void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
  for (Index r = row_begin; r < row_end; ++r)
    for (Index t = 0; t < a.tokens; ++t)
      store(a, t, r, dot(a.w + r * a.w_stride, a.x + t * a.x_stride, a.depth));
}

// The kernel set (see detail::int8::gemm).
struct Isa {
  static constexpr const char* name = "scalar";
  static void rows(const Int8GemmArgs& a, Index row_begin, Index row_end) noexcept {
    int8_scalar::rows(a, row_begin, row_end);
  }
};

}  // namespace int8_scalar
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
