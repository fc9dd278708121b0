// W8A8 matrix multiplication: int8 weights (one scale per output row) times
// int8 activations (one scale per token), accumulated exactly in int32 and
// scaled on the way out:
//
//   y(t, r) = float(sum_k x(t, k) * w(r, k)) * (x.scale(t) * w.scale(r))
//
// y is tokens x out_features, row-major (the next layer's activations). This
// is how absmax W8A8 and SmoothQuant results run as integers.
//
// The instruction set is chosen at compile time: 512-bit VNNI when the
// compiler targets AVX-512 VNNI (__AVX512VNNI__ with F and BW), else AVX2
// (with 256-bit VNNI when targeted) from __AVX2__, NEON (with the dot-product
// extension when targeted) from __ARM_NEON, the scalar reference otherwise or
// when LOWBIT_FORCE_SCALAR is defined. Every variant compiled in is callable
// by name in lowbit::detail (int8_gemm_rows_scalar / _avx2 / _avx512 / _neon)
// and gives the same integers; the float epilogue is the same expression in
// every variant, so floats are bit-identical too.
#pragma once

#include <algorithm>

#include "lowbit/core/error.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/kernels/detail/int8_gemm_avx2.hpp"
#include "lowbit/kernels/detail/int8_gemm_avx512.hpp"
#include "lowbit/kernels/detail/int8_gemm_neon.hpp"
#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"

namespace lowbit {

// The largest depth (in_features) whose dot products cannot overflow int32.
inline constexpr Index kInt8GemmMaxDepth = 2147483647 / (127 * 127);

namespace detail {

inline void int8_gemm_rows(const Int8GemmArgs& args, Index row_begin, Index row_end) noexcept {
#if defined(LOWBIT_FORCE_SCALAR)
  int8_gemm_rows_scalar(args, row_begin, row_end);
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
  int8_gemm_rows_avx512(args, row_begin, row_end);
#elif defined(__AVX2__)
  int8_gemm_rows_avx2(args, row_begin, row_end);
#elif defined(__ARM_NEON)
  int8_gemm_rows_neon(args, row_begin, row_end);
#else
  int8_gemm_rows_scalar(args, row_begin, row_end);
#endif
}

inline Int8GemmArgs int8_gemm_args(const Int8Weights& w, const Int8Activations& x, float* y,
                                   Index y_stride) noexcept {
  Int8GemmArgs args;
  args.w = w.values.data();
  args.w_stride = w.values.outerStride();
  args.w_scale = w.scale.data();
  args.x = x.values.data();
  args.x_stride = x.values.outerStride();
  args.x_scale = x.scale.data();
  args.tokens = x.rows();
  args.depth = w.cols();
  args.y = y;
  args.y_stride = y_stride;
  return args;
}

}  // namespace detail

// The instruction set the dispatcher uses, e.g. "avx2 (avx512-vnni)".
inline const char* int8_gemm_isa() noexcept {
#if defined(LOWBIT_FORCE_SCALAR)
  return "scalar";
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
  return detail::kInt8Avx512Variant;
#elif defined(__AVX2__)
  return detail::kInt8Avx2Variant;
#elif defined(__ARM_NEON)
  return detail::kInt8NeonVariant;
#else
  return "scalar";
#endif
}

// Output rows [row_begin, row_end) of y (tokens x w.rows()), so an engine can
// split the rows over its threads. Never throws, never allocates; the caller
// guarantees what the checked overload below verifies: w and x valid
// (Int8Weights::validate), w.cols() == x.cols() <= kInt8GemmMaxDepth, y of
// shape x.rows() x w.rows(), 0 <= row_begin <= row_end <= w.rows().
inline void int8_gemm(const Int8Weights& w, const Int8Activations& x, Eigen::Ref<MatrixF> y,
                      Index row_begin, Index row_end) noexcept {
  detail::int8_gemm_rows(detail::int8_gemm_args(w, x, y.data(), y.outerStride()), row_begin, row_end);
}

// Checked convenience: validates everything (including a scan of the weights
// for -128), allocates y and splits the rows over OpenMP threads when enabled.
inline MatrixF int8_gemm(const Int8Weights& w, const Int8Activations& x) {
  w.validate();
  detail::require_nonempty(x.values, "int8_gemm: activations");
  detail::require(x.scale.size() == x.rows(), "int8_gemm: activations have ", x.rows(),
                  " tokens but ", x.scale.size(), " scales");
  detail::require_finite(x.scale, "int8_gemm: activation scales");
  detail::require_int8_levels(x.values, "int8_gemm: activations");
  detail::require(x.cols() == w.cols(), "int8_gemm: activations have ", x.cols(),
                  " features, the weights expect ", w.cols());
  detail::require(w.cols() <= kInt8GemmMaxDepth, "int8_gemm: in_features = ", w.cols(),
                  " exceeds ", kInt8GemmMaxDepth, " (int32 accumulators could overflow)");
  MatrixF y(x.rows(), w.rows());
  const detail::Int8GemmArgs args = detail::int8_gemm_args(w, x, y.data(), y.outerStride());
  constexpr Index block = 64;  // rows per task, a multiple of every kernel's row tile
  const Index blocks = (w.rows() + block - 1) / block;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (blocks > 1)
#endif
  for (Index b = 0; b < blocks; ++b)
    detail::int8_gemm_rows(args, b * block, std::min(w.rows(), (b + 1) * block));
  return y;
}

}  // namespace lowbit
