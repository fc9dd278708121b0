// Kernels across instruction sets in one binary (the one-definition rule):
// translation units compiled with different flags (CMakeLists.txt) each run
// the kernels their own flags select (the names their compiler macros
// predict, not one merged by the linker), all bit-identical to the scalar
// reference; one translation unit's kernel table runs from another on the
// same packed weights and contexts (runtime choice).
#include <gtest/gtest.h>

#include <iostream>
#include <random>
#include <set>

#include "odr.hpp"

namespace lowbit::odr {

std::vector<TranslationUnit>& translation_units() {
  static std::vector<TranslationUnit> units;
  return units;
}

namespace {

// 70 rows (two blocks), act-order groups of 40 (padded to 48), 3 planes,
// and sparse outliers: every part of the bit-plane kernel runs.
BitPlaneWeights random_bitplanes(std::mt19937& rng) {
  const Index rows = 70, cols = 200, group = 40;
  BitPlaneWeights w;
  w.planes = 3;
  w.group_size = group;
  w.codes.resize(rows, cols);
  for (Index i = 0; i < w.codes.size(); ++i)
    w.codes.data()[i] = static_cast<std::uint8_t>(rng() % 8);
  std::normal_distribution<double> n(0.0, 0.01);
  w.coeffs.resize((cols / group) * (w.planes + 1), rows);
  for (Index i = 0; i < w.coeffs.size(); ++i) w.coeffs.data()[i] = n(rng);
  w.g_idx.resize(static_cast<std::size_t>(cols));
  for (Index j = 0; j < cols; ++j)
    w.g_idx[static_cast<std::size_t>(j)] = static_cast<std::int32_t>((j * 37 % cols) / group);
  return w;
}

MatrixF random_matrix(Index rows, Index cols, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

bool identical(const MatrixF& a, const MatrixF& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

class Odr : public testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(2024);
    const BitPlaneWeights planes = random_bitplanes(rng);
    CodeMatrix mask = CodeMatrix::Zero(planes.rows(), planes.cols());
    for (int i = 0; i < 60; ++i) mask(rng() % planes.rows(), rng() % planes.cols()) = 1;
    w_ = pack_bitplanes(
        planes, sparse_outliers_from_mask(random_matrix(planes.rows(), planes.cols(), rng), mask));
    w8_.values = Int8Matrix(37, 150);
    for (Index i = 0; i < w8_.values.size(); ++i)
      w8_.values.data()[i] = static_cast<std::int8_t>(static_cast<int>(rng() % 255) - 127);
    w8_.scale = VectorF::Constant(37, 0.01f);
    in_.w = &w_;
    in_.x = random_matrix(5, planes.cols(), rng);  // a tile of 4 tokens and 1 more
    in_.w8 = &w8_;
    in_.x8 = quantize_activations(random_matrix(5, 150, rng));
  }

  // The scalar reference, from this translation unit.
  MatrixF reference_bitplane(TableType type) const {
    BitplaneContext ctx(w_, in_.x.rows(), type);
    MatrixF y(in_.x.rows(), w_.rows());
    scalar::bitplane_kernels.load(w_, in_.x.data(), in_.x.rows(), in_.x.cols(), ctx);
    scalar::bitplane_kernels.multiply(w_, ctx, y.data(), w_.rows(), 0, w_.rows());
    return y;
  }
  MatrixF reference_int8() const { return int8_gemm(scalar::int8_kernels, w8_, in_.x8); }

  PackedBitplanes w_;
  Int8Weights w8_;
  Inputs in_;
};

TEST_F(Odr, EachTranslationUnitRunsItsOwnKernels) {
  std::set<std::string> names;
  for (const TranslationUnit& tu : translation_units()) {
    const Outputs out = tu.run(in_);
    std::cout << "  " << tu.name << ": bit-plane " << out.bitplane_isa << ", int8 " << out.int8_isa
              << "\n";
    EXPECT_EQ(out.bitplane_isa, out.expected_bitplane_isa) << tu.name;
    EXPECT_EQ(out.int8_isa, out.expected_int8_isa) << tu.name;
    names.insert(out.bitplane_isa);
  }
  EXPECT_GE(translation_units().size(), 2u);
  EXPECT_TRUE(names.count("scalar")) << "no translation unit compiled for the scalar kernels";
  if (names.size() < 2) GTEST_SKIP() << "this compiler targets no SIMD kernels: nothing to mix";
}

TEST_F(Odr, EveryTranslationUnitEqualsTheScalarReference) {
  const MatrixF int8_tables = reference_bitplane(TableType::int8);
  const MatrixF f32_tables = reference_bitplane(TableType::f32);
  const MatrixF int8 = reference_int8();
  for (const TranslationUnit& tu : translation_units()) {
    SCOPED_TRACE(tu.name);
    const Outputs out = tu.run(in_);
    EXPECT_TRUE(identical(out.y_bitplane[0], int8_tables));
    EXPECT_TRUE(identical(out.y_bitplane[1], f32_tables));
    EXPECT_TRUE(identical(out.y_bitplane_gemm, int8_tables));
    EXPECT_TRUE(identical(out.y_int8, int8));
    EXPECT_TRUE(identical(out.y_int8_checked, int8));
  }
}

// Runtime choice: this translation unit calls each one's kernel tables.
TEST_F(Odr, KernelTablesRunFromAnotherTranslationUnit) {
  const MatrixF int8_tables = reference_bitplane(TableType::int8);
  const MatrixF int8 = reference_int8();
  for (const TranslationUnit& tu : translation_units()) {
    SCOPED_TRACE(tu.name);
    const Outputs out = tu.run(in_);
    EXPECT_TRUE(identical(bitplane_gemm(*out.bitplane, w_, in_.x), int8_tables));
    EXPECT_TRUE(identical(int8_gemm(*out.int8, w8_, in_.x8), int8));
  }
}

// Different targets, different tables (distinct symbols, not merged).
TEST_F(Odr, DifferentTargetsHaveDistinctKernelTables) {
  std::vector<Outputs> outs;
  for (const TranslationUnit& tu : translation_units()) outs.push_back(tu.run(in_));
  for (std::size_t i = 0; i < outs.size(); ++i)
    for (std::size_t j = i + 1; j < outs.size(); ++j)
      if (outs[i].bitplane_isa != outs[j].bitplane_isa || outs[i].int8_isa != outs[j].int8_isa) {
        EXPECT_NE(outs[i].bitplane, outs[j].bitplane);
        EXPECT_NE(outs[i].int8, outs[j].int8);
      }
}

}  // namespace
}  // namespace lowbit::odr
