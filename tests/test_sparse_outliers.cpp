// core/sparse_outliers.hpp: CSR construction, overwrite semantics, validation.
#include <lowbit/core/sparse_outliers.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(SparseOutliers, FromMaskKeepsExactlyTheMaskedValues) {
  const MatrixF w = test::random_weights(6, 40, 71);
  CodeMatrix mask = CodeMatrix::Zero(6, 40);
  mask(0, 3) = mask(0, 39) = mask(2, 0) = mask(5, 17) = 1;
  for (OutlierPrecision precision : {OutlierPrecision::f16, OutlierPrecision::f32}) {
    const SparseOutliers s = sparse_outliers_from_mask(w, mask, precision);
    EXPECT_NO_THROW(s.validate());
    EXPECT_EQ(s.nnz(), 4);
    EXPECT_EQ(s.row_ptr, (std::vector<std::int32_t>{0, 2, 2, 3, 3, 3, 4}));
    EXPECT_EQ(s.col, (std::vector<std::int32_t>{3, 39, 0, 17}));
    MatrixF dense = MatrixF::Zero(6, 40);
    s.overwrite(dense);
    for (Index r = 0; r < 6; ++r)
      for (Index c = 0; c < 40; ++c) {
        if (!mask(r, c)) {
          EXPECT_EQ(dense(r, c), 0.0f);
        } else if (precision == OutlierPrecision::f32) {
          EXPECT_EQ(dense(r, c), w(r, c));
        } else {
          EXPECT_EQ(dense(r, c), half_to_float(float_to_half(w(r, c))));
          EXPECT_NEAR(dense(r, c), w(r, c), std::abs(w(r, c)) / 1024);
        }
      }
  }
}

TEST(SparseOutliers, ValidationCatchesCorruptCsr) {
  const MatrixF w = test::random_weights(3, 8, 72);
  CodeMatrix mask = CodeMatrix::Zero(3, 8);
  mask(1, 2) = mask(1, 5) = 1;
  const SparseOutliers good = sparse_outliers_from_mask(w, mask);
  SparseOutliers s = good;
  s.col[0] = 8;
  EXPECT_THROW(s.validate(), Error);
  s = good;
  std::swap(s.col[0], s.col[1]);
  EXPECT_THROW(s.validate(), Error);
  s = good;
  s.row_ptr.back() = 1;
  EXPECT_THROW(s.validate(), Error);
  s = good;
  s.values[0] = 0.1f + 1e-7f;  // not an fp16 value
  EXPECT_THROW(s.validate(), Error);
  s.precision = OutlierPrecision::f32;
  EXPECT_NO_THROW(s.validate());
  MatrixF wrong(2, 8);
  EXPECT_THROW(good.overwrite(wrong), Error);
  EXPECT_THROW(sparse_outliers_from_mask(w, CodeMatrix::Zero(3, 7)), Error);
}

TEST(SparseOutliers, MaskGivesBackThePositions) {
  const MatrixF w = test::random_weights(5, 9, 74);
  CodeMatrix mask = CodeMatrix::Zero(5, 9);
  mask(0, 8) = mask(2, 0) = mask(2, 3) = mask(4, 4) = 1;
  EXPECT_EQ(outlier_mask(sparse_outliers_from_mask(w, mask)), mask);
  EXPECT_EQ(outlier_mask(sparse_outliers_from_mask(w, CodeMatrix::Zero(5, 9))),
            CodeMatrix::Zero(5, 9));
  SparseOutliers broken = sparse_outliers_from_mask(w, mask);
  broken.col[1] = 9;
  EXPECT_THROW(outlier_mask(broken), Error);
}

TEST(SparseOutliers, BitsPerWeightCountsValuesIndicesAndRowPointers) {
  const MatrixF w = test::random_weights(4, 100, 73);
  CodeMatrix mask = CodeMatrix::Zero(4, 100);
  mask(0, 0) = mask(3, 99) = 1;
  EXPECT_DOUBLE_EQ(sparse_bits_per_weight(sparse_outliers_from_mask(w, mask)),
                   (2 * 48.0 + 5 * 32.0) / 400);
}

}  // namespace
}  // namespace lowbit
