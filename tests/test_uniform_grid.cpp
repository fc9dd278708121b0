// core/uniform_grid.hpp: the reference Quantizer's quirks, one by one.
#include <lowbit/core/uniform_grid.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

GridParams params_of(std::initializer_list<float> values, GridConfig config = {}) {
  MatrixF row(1, static_cast<Index>(values.size()));
  Index i = 0;
  for (float v : values) row(0, i++) = v;
  return find_grid_params(row, 4, config);
}

TEST(UniformGrid, RangeAlwaysIncludesZero) {
  const GridParams p = params_of({0.5f, 1.0f, 2.0f});  // all positive: xmin = 0
  EXPECT_FLOAT_EQ(p.scale(0), 2.0f / 15);
  EXPECT_EQ(p.zero(0), 0.0f);
  const GridParams n = params_of({-3.0f, -1.0f});  // all negative: xmax = 0
  EXPECT_FLOAT_EQ(n.scale(0), 3.0f / 15);
  EXPECT_EQ(n.zero(0), 15.0f);
}

TEST(UniformGrid, AllZeroRowUsesMinusOneToOne) {
  const GridParams p = params_of({0.0f, 0.0f});
  EXPECT_EQ(p.scale(0), 2.0f / 15);
  // -xmin / scale is 1 / 0.13333334f = 7.4999996f in float, so zero = 7, as in the reference.
  EXPECT_EQ(p.zero(0), 7.0f);
}

TEST(UniformGrid, SymIsTheReferenceAsymmetricVariant) {
  GridConfig config;
  config.sym = true;
  const GridParams p = params_of({-1.0f, 0.5f}, config);
  EXPECT_EQ(p.zero(0), 8.0f);
  EXPECT_FLOAT_EQ(p.scale(0), 2.0f / 15);
  // Levels run -8..7 steps: the positive end is clipped below +absmax.
  EXPECT_FLOAT_EQ(grid_value(grid_code(1.0f, p.scale(0), p.zero(0), 15), p.scale(0), p.zero(0)),
                  7 * 2.0f / 15);
  EXPECT_FLOAT_EQ(grid_value(grid_code(-1.05f, p.scale(0), p.zero(0), 15), p.scale(0), p.zero(0)),
                  -8 * 2.0f / 15);
  // No negative value: xmin stays 0, so the scale is xmax / maxq and values clip near xmax / 2.
  const GridParams q = params_of({0.2f, 0.3f}, config);
  EXPECT_FLOAT_EQ(q.scale(0), 0.3f / 15);
  EXPECT_NEAR(grid_value(grid_code(0.3f, q.scale(0), q.zero(0), 15), q.scale(0), q.zero(0)),
              7 * 0.3f / 15, 1e-7);
}

TEST(UniformGrid, RoundsHalfToEvenAfterDividing) {
  EXPECT_EQ(grid_code(2.5f, 1.0f, 0.0f, 15), 2.0f);
  EXPECT_EQ(grid_code(3.5f, 1.0f, 0.0f, 15), 4.0f);
  EXPECT_EQ(grid_code(-0.5f, 1.0f, 8.0f, 15), 8.0f);
  EXPECT_EQ(grid_code(100.0f, 1.0f, 8.0f, 15), 15.0f);  // clamped
  EXPECT_EQ(grid_code(-100.0f, 1.0f, 8.0f, 15), 0.0f);
}

TEST(UniformGrid, MseKeepsTheFirstStrictMinimum) {
  // A single outlier: shrinking the range clips it but refines every other value.
  GridConfig config;
  config.mse = true;
  std::vector<float> values(256, 0.1f);
  values[0] = 1.0f;
  MatrixF row = Eigen::Map<MatrixF>(values.data(), 1, 256);
  const GridParams p = find_grid_params(row, 2, config);
  EXPECT_LT(p.scale(0), 1.0f / 3);
  // Evaluate the chosen grid and the unshrunk one: the chosen error is lower.
  auto error = [&](float scale, float zero) {
    double e = 0;
    for (float v : values)
      e += std::pow(std::abs(grid_value(grid_code(v, scale, zero, 3), scale, zero) - v), 2.4);
    return e;
  };
  EXPECT_LT(error(p.scale(0), p.zero(0)), error(1.0f / 3, 0.0f));
}

TEST(UniformGrid, PositiveZeroWidensOnlyRangesWhoseZeroRoundsToZero) {
  GridConfig config;
  config.positive_zero = true;
  // All >= 0: zero 1, scale max / (maxq - 1) = 2 / 14; the top level is still 2.
  const GridParams p = params_of({0.5f, 1.0f, 2.0f}, config);
  EXPECT_EQ(p.zero(0), 1.0f);
  EXPECT_FLOAT_EQ(p.scale(0), 2.0f / 14);
  EXPECT_FLOAT_EQ(grid_value(15, p.scale(0), p.zero(0)), 2.0f);
  // A tiny negative minimum (-xmin / scale < 0.5): the level below 0 must reach it.
  const GridParams tiny = params_of({-0.05f, 2.0f}, config);
  EXPECT_EQ(tiny.zero(0), 1.0f);
  EXPECT_FLOAT_EQ(tiny.scale(0), 2.0f / 14);
  EXPECT_LE(grid_value(0, tiny.scale(0), tiny.zero(0)), -0.05f);
  // Rows whose reference zero is >= 1 are untouched, with or without the MSE search.
  for (bool mse : {false, true}) {
    GridConfig plain, positive = config;
    plain.mse = positive.mse = mse;
    const MatrixF rows = test::random_weights(16, 64, 3);
    const GridParams a = find_grid_params(rows, 3, plain), b = find_grid_params(rows, 3, positive);
    for (Index r = 0; r < rows.rows(); ++r) {
      EXPECT_GE(b.zero(r), 1.0f);
      if (a.zero(r) >= 1) {
        EXPECT_EQ(b.scale(r), a.scale(r));
      }
    }
    // Shifted to be non-negative, every row changes, and every value stays within its levels.
    const MatrixF shifted = rows.array() - rows.minCoeff();
    const GridParams c = find_grid_params(shifted, 3, positive);
    for (Index r = 0; r < shifted.rows(); ++r) {
      EXPECT_EQ(c.zero(r), 1.0f);
      if (!mse) {
        EXPECT_LE(shifted.row(r).maxCoeff(), grid_value(7, c.scale(r), c.zero(r)) * 1.0001f);
      }
    }
  }
  EXPECT_THROW(find_grid_params(MatrixF::Ones(1, 4), 1, config), Error);  // no level to spare
}

TEST(UniformGrid, RejectsBadConfigs) {
  MatrixF row = MatrixF::Ones(1, 4);
  GridConfig config;
  EXPECT_THROW(find_grid_params(row, 0, config), Error);
  EXPECT_THROW(find_grid_params(row, 9, config), Error);
  config.mse = true;
  config.mse_grid = 0;
  EXPECT_THROW(find_grid_params(row, 4, config), Error);
  config.mse_grid = 100;
  config.mse_max_shrink = 1.5;
  EXPECT_THROW(find_grid_params(row, 4, config), Error);
}

}  // namespace
}  // namespace lowbit
