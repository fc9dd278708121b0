// W8A8 matrix multiplication: int8 weights (one scale per output row) times
// int8 activations (one scale per token), accumulated exactly in int32 and
// scaled on the way out:
//
//   y(t, r) = float(sum_k x(t, k) * w(r, k)) * (x.scale(t) * w.scale(r))
//
// y is tokens x out_features, row-major (the next layer's activations). This
// is how absmax W8A8 and SmoothQuant results run as integers.
//
// Instruction sets (detail/isa.hpp): the unqualified entry points use the
// widest kernels the translation unit is compiled for (AVX-512 VNNI, AVX2
// with or without VNNI, NEON with or without the dot-product extension, the
// scalar reference); lowbit::scalar, lowbit::avx2, lowbit::avx512 and
// lowbit::neon name each compiled variant's Int8Kernels
// (lowbit::scalar::int8_kernels is the reference). Every variant gives the
// same integers, and the float epilogue is the same expression in all of
// them, so floats are bit-identical too.
#pragma once
#define LOWBIT_KERNELS_INT8_GEMM_HPP

#include <algorithm>

#include "lowbit/core/error.hpp"
#include "lowbit/core/int8_weights.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/kernels/detail/int8_gemm_scalar.hpp"
#include "lowbit/kernels/detail/isa.hpp"
#if defined(LOWBIT_ISA_AVX2)
#include "lowbit/kernels/detail/int8_gemm_avx2.hpp"
#endif
#if defined(LOWBIT_ISA_AVX512_VNNI)
#include "lowbit/kernels/detail/int8_gemm_avx512.hpp"
#endif
#if defined(LOWBIT_ISA_NEON)
#include "lowbit/kernels/detail/int8_gemm_neon.hpp"
#endif

namespace lowbit {

// The largest depth (in_features) whose dot products cannot overflow int32.
inline constexpr Index kInt8GemmMaxDepth = 2147483647 / (127 * 127);

// One instruction set's kernel, for choosing at run time (see BitplaneKernels
// in bitplane_lut_gemm.hpp). Preconditions are those of int8_gemm below.
struct Int8Kernels {
  const char* isa;  // e.g. "scalar", "avx2 (avx-vnni)", "avx512-vnni", "neon (dotprod)"
  void (*gemm)(const Int8Weights& w, const Int8Activations& x, Eigen::Ref<MatrixF> y,
               Index row_begin, Index row_end) noexcept;
};

namespace detail::int8 {

inline Int8GemmArgs args(const Int8Weights& w, const Int8Activations& x, float* y,
                         Index y_stride) noexcept {
  Int8GemmArgs a;
  a.w = w.values.data();
  a.w_stride = w.values.outerStride();
  a.w_scale = w.scale.data();
  a.x = x.values.data();
  a.x_stride = x.values.outerStride();
  a.x_scale = x.scale.data();
  a.tokens = x.rows();
  a.depth = w.cols();
  a.y = y;
  a.y_stride = y_stride;
  return a;
}

// The generic driver of every kernel set: Isa (detail/int8_gemm_<family>.hpp)
// provides `name` and rows(const Int8GemmArgs&, row_begin, row_end) noexcept.
template <class Isa>
void gemm(const Int8Weights& w, const Int8Activations& x, Eigen::Ref<MatrixF> y, Index row_begin,
          Index row_end) noexcept {
  Isa::rows(args(w, x, y.data(), y.outerStride()), row_begin, row_end);
}

template <class Isa>
constexpr Int8Kernels kernels() {
  return {Isa::name, &gemm<Isa>};
}

}  // namespace detail::int8

// Checked, with the given kernel: validates everything (including a scan of
// the weights for -128), allocates y and splits the rows over OpenMP threads
// when enabled.
inline MatrixF int8_gemm(const Int8Kernels& kernels, const Int8Weights& w,
                         const Int8Activations& x) {
  w.validate();
  detail::require_nonempty(x.values, "int8_gemm: activations");
  detail::require(x.scale.size() == x.rows(), "int8_gemm: activations have ", x.rows(),
                  " tokens but ", x.scale.size(), " scales");
  detail::require_finite(x.scale, "int8_gemm: activation scales");
  detail::require_int8_levels(x.values, "int8_gemm: activations");
  detail::require(x.cols() == w.cols(), "int8_gemm: activations have ", x.cols(),
                  " features, the weights expect ", w.cols());
  detail::require(w.cols() <= kInt8GemmMaxDepth, "int8_gemm: in_features = ", w.cols(), " exceeds ",
                  kInt8GemmMaxDepth, " (int32 accumulators could overflow)");
  MatrixF y(x.rows(), w.rows());
  constexpr Index block = 64;  // rows per task, a multiple of every kernel's row tile
  const Index blocks = (w.rows() + block - 1) / block;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (blocks > 1)
#endif
  for (Index b = 0; b < blocks; ++b)
    kernels.gemm(w, x, y, b * block, std::min(w.rows(), (b + 1) * block));
  return y;
}

// Everything below depends on the instruction set (detail/isa.hpp).
inline namespace LOWBIT_ISA_TARGET {

namespace scalar {
inline constexpr Int8Kernels int8_kernels = detail::int8::kernels<detail::int8_scalar::Isa>();
}
#if defined(LOWBIT_ISA_AVX2)
namespace avx2 {
inline constexpr Int8Kernels int8_kernels = detail::int8::kernels<detail::int8_avx2::Isa>();
}
#endif
#if defined(LOWBIT_ISA_AVX512_VNNI)
namespace avx512 {
inline constexpr Int8Kernels int8_kernels = detail::int8::kernels<detail::int8_avx512::Isa>();
}
#endif
#if defined(LOWBIT_ISA_NEON)
namespace neon {
inline constexpr Int8Kernels int8_kernels = detail::int8::kernels<detail::int8_neon::Isa>();
}
#endif

// The widest kernel this translation unit compiles; the calls below use it.
using LOWBIT_ISA_INT8::int8_kernels;

// Output rows [row_begin, row_end) of y (tokens x w.rows()), so an engine can
// split the rows over its threads. Never throws, never allocates; the caller
// guarantees what the checked overload verifies: w and x valid
// (Int8Weights::validate), w.cols() == x.cols() <= kInt8GemmMaxDepth, y of
// shape x.rows() x w.rows(), 0 <= row_begin <= row_end <= w.rows().
inline void int8_gemm(const Int8Weights& w, const Int8Activations& x, Eigen::Ref<MatrixF> y,
                      Index row_begin, Index row_end) noexcept {
  int8_kernels.gemm(w, x, y, row_begin, row_end);
}

inline MatrixF int8_gemm(const Int8Weights& w, const Int8Activations& x) {
  return lowbit::int8_gemm(int8_kernels, w, x);
}

}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit
