// core/half.hpp: fp16 and bf16 conversions against exhaustive and independent checks.
#include <lowbit/core/half.hpp>

#include <cmath>
#include <random>

#include "test_support.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace lowbit {
namespace {

TEST(Half, EveryHalfRoundTrips) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    ASSERT_EQ(float_to_half(f), h) << std::hex << h;
  }
}

// Nearest-even rounding, computed independently in double from the value grid.
std::uint16_t reference_half(float f) {
  const double x = f;
  if (std::isnan(x)) return 0x7e00;
  const double a = std::abs(x);
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (a >= 65520.0) return sign | 0x7c00;
  int e;
  std::frexp(a, &e);                                          // a = m * 2^e, m in [0.5, 1)
  const double ulp = std::ldexp(1.0, std::max(e - 11, -24));  // 10 mantissa bits; subnormal floor
  const double q = std::nearbyint(a / ulp) * ulp;             // exact in double, ties to even
  if (q == 0) return sign;
  int qe;
  const double m = std::frexp(q, &qe);
  if (qe < -13) return sign | static_cast<std::uint16_t>(q / std::ldexp(1.0, -24));
  return sign |
         static_cast<std::uint16_t>(((qe + 14) << 10) | static_cast<int>((m * 2 - 1) * 1024));
}

TEST(Half, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(51);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    // Focus on the representable range, including subnormals and overflow.
    std::uint32_t u = bits(rng);
    u = (u & 0x807fffffu) | ((100u + (u >> 23) % 45u) << 23);
    const float f = bits_float(u);
    ASSERT_EQ(float_to_half(f), reference_half(f)) << f;
#if defined(__F16C__)
    // _mm_cvtps_ph, not _cvtss_sh: clang's _cvtss_sh expands to a C99 compound literal.
    const __m128i h = _mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT);
    ASSERT_EQ(float_to_half(f), static_cast<std::uint16_t>(_mm_cvtsi128_si32(h))) << f;
#endif
  }
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), 0x3c00);  // tie goes to even
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_half(-INFINITY), 0xfc00);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_float(static_cast<std::uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_bf16(f), b);
  }
}

}  // namespace
}  // namespace lowbit
