// The kernel variants a translation unit's unqualified entry points must use,
// derived from the compiler's instruction-set macros directly (not through
// kernels/detail/isa.hpp, which these checks test). Internal linkage: the ODR
// test compiles this header in translation units built with different flags.
#pragma once

#include <string>

namespace lowbit::test {
namespace {

inline std::string expected_bitplane_isa() {
#if defined(LOWBIT_FORCE_SCALAR)
  return "scalar";
#elif defined(__AVX512F__) && defined(__AVX512BW__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return "avx2";
#elif defined(__aarch64__) && defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

inline std::string expected_int8_isa() {
#if defined(LOWBIT_FORCE_SCALAR)
  return "scalar";
#elif defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VNNI__)
  return "avx512-vnni";
#elif defined(__AVX512F__) && defined(__AVX512BW__)
  return "avx2";
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__AVXVNNI__)
  return "avx2 (avx-vnni)";
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return "avx2";
#elif defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
  return "neon (dotprod)";
#elif defined(__aarch64__) && defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace
}  // namespace lowbit::test
