// lowbit/model/rope.hpp: the tables against the closed form in double, the
// rotation of consecutive pairs per head against complex multiplication, and
// bad arguments.
#include <complex>
#include <lowbit/model/rope.hpp>

#include "test_support.hpp"

namespace lowbit::model {
namespace {

TEST(Rope, TablesFollowTheClosedForm) {
  for (const float theta : {10000.0f, 500000.0f}) {
    const RopeTables rope = rope_tables(64, 8, theta);
    EXPECT_EQ(rope.cos.rows(), 64);
    EXPECT_EQ(rope.head_size(), 8);
    for (int pos = 0; pos < 64; ++pos)
      for (int i = 0; i < 4; ++i) {
        const double angle = pos * std::pow(double(theta), -2.0 * i / 8);
        EXPECT_NEAR(rope.cos(pos, i), std::cos(angle), 2e-5) << pos << " " << i;
        EXPECT_NEAR(rope.sin(pos, i), std::sin(angle), 2e-5) << pos << " " << i;
      }
  }
}

// Pair (2i, 2i+1) of every head of token t turns by (start + t) times the
// pair's frequency: (x0 + i x1) e^{i angle}.
TEST(Rope, RotatesConsecutivePairsOfEveryHead) {
  const RopeTables rope = rope_tables(16, 4, 10000.0f);
  const MatrixF x = test::random_activations(3, 12, 5);  // 3 heads of 4
  MatrixF rotated = x;
  apply_rope(rope, rotated, 7);
  for (Index t = 0; t < 3; ++t)
    for (Index j = 0; j < 12; j += 2) {
      const Index i = (j % 4) / 2;
      const std::complex<double> turned =
          std::complex<double>(x(t, j), x(t, j + 1)) *
          std::complex<double>(rope.cos(7 + t, i), rope.sin(7 + t, i));
      EXPECT_NEAR(rotated(t, j), turned.real(), 1e-5);
      EXPECT_NEAR(rotated(t, j + 1), turned.imag(), 1e-5);
    }
}

// Hugging Face's pairing rotates (i, i + head/2) by the angle of pair i: the
// interleaved rotation of the rows reordered as transformers' converter does.
TEST(Rope, HalfPairingIsTheInterleavedOneOnReorderedRows) {
  const RopeTables interleaved = rope_tables(16, 8, 10000.0f);
  const RopeTables half = rope_tables(16, 8, 10000.0f, RopeStyle::half);
  EXPECT_EQ(half.cos, interleaved.cos);
  const MatrixF x = test::random_activations(3, 16, 6);  // 2 heads of 8
  MatrixF reordered(3, 16);  // column h*8 + j*4 + i holds column h*8 + 2i + j
  for (Index h = 0; h < 2; ++h)
    for (Index i = 0; i < 4; ++i)
      for (Index j = 0; j < 2; ++j) reordered.col(h * 8 + j * 4 + i) = x.col(h * 8 + 2 * i + j);
  MatrixF a = x, b = reordered;
  apply_rope(interleaved, a, 3);
  apply_rope(half, b, 3);
  for (Index h = 0; h < 2; ++h)
    for (Index i = 0; i < 4; ++i)
      for (Index j = 0; j < 2; ++j)
        EXPECT_EQ(b.col(h * 8 + j * 4 + i), a.col(h * 8 + 2 * i + j)) << h << " " << i << j;
}

// transformers' scalings of the inverse frequencies f_i = theta^(-2i/d):
// linear divides every one by the factor; llama3 (factor 8, low 1, high 4,
// original context 8192, Llama 3.1's) keeps wavelengths 2 pi / f below
// 8192 / 4, divides those above 8192 / 1, and blends between with
// smooth = (8192 / wavelength - 1) / (4 - 1).
TEST(Rope, LinearAndLlama3Scaling) {
  const int head = 128;
  const float theta = 500000.0f;
  const RopeTables plain = rope_tables(2, head, theta);
  const RopeTables linear =
      rope_tables(2, head, theta, RopeStyle::half, {RopeScaling::Type::linear, 4.0f});
  const RopeTables llama3 = rope_tables(2, head, theta, RopeStyle::half,
                                        {RopeScaling::Type::llama3, 8.0f, 1.0f, 4.0f, 8192});
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < head / 2; ++i) {
    // Position 1's angle is the frequency itself (all below pi here).
    const double f = std::pow(double(theta), -2.0 * i / head), wavelength = 2 * M_PI / f;
    EXPECT_NEAR(std::atan2(linear.sin(1, i), linear.cos(1, i)), f / 4, 1e-6 * f + 1e-9);
    double expected = f / 8;
    if (wavelength < 2048) {
      expected = f;
      ++kept;
    } else if (wavelength > 8192) {
      ++divided;
    } else {
      const double smooth = (8192 / wavelength - 1) / 3;
      expected = (1 - smooth) * f / 8 + smooth * f;
      ++blended;
    }
    EXPECT_NEAR(std::atan2(llama3.sin(1, i), llama3.cos(1, i)), expected, 1e-5 * f + 1e-9) << i;
    EXPECT_NEAR(std::atan2(plain.sin(1, i), plain.cos(1, i)), f, 1e-5 * f + 1e-9) << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  EXPECT_THROW(rope_tables(2, 8, theta, RopeStyle::half,
                           {RopeScaling::Type::llama3, 8.0f, 4.0f, 1.0f, 8192}),
               Error);  // high_freq_factor must exceed low_freq_factor
}

TEST(Rope, RejectsBadArguments) {
  EXPECT_THROW(rope_tables(8, 3, 10000.0f), Error);  // odd head size
  EXPECT_THROW(rope_tables(8, 0, 10000.0f), Error);
  EXPECT_THROW(rope_tables(-1, 4, 10000.0f), Error);
  EXPECT_THROW(rope_tables(8, 4, 0.0f), Error);
}

}  // namespace
}  // namespace lowbit::model
