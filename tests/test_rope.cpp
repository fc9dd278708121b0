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

TEST(Rope, RejectsBadArguments) {
  EXPECT_THROW(rope_tables(8, 3, 10000.0f), Error);  // odd head size
  EXPECT_THROW(rope_tables(8, 0, 10000.0f), Error);
  EXPECT_THROW(rope_tables(-1, 4, 10000.0f), Error);
  EXPECT_THROW(rope_tables(8, 4, 0.0f), Error);
}

}  // namespace
}  // namespace lowbit::model
