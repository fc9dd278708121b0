// kernels/bitplane_lut_gemm.hpp: the SIMD paths against the scalar oracle
// (int8 tables, float tables and the large-batch path of dequantized tiles,
// each bit for bit), every path against the
// exact product within the documented bound, on shapes that straddle every
// blocking boundary; row splits and thread counts; packing and its errors.
#include <limits>
#include <lowbit/io/bpdq_format.hpp>
#include <lowbit/kernels/bitplane_lut_gemm.hpp>
#include <lowbit/quant/rtn.hpp>

#include "expected_isa.hpp"
#include "test_support.hpp"

namespace lowbit {
namespace {

struct Shape {
  Index rows, cols, group;  // group -1: one group per row
  int planes;
  bool act_order;
};

std::ostream& operator<<(std::ostream& out, const Shape& s) {
  return out << s.rows << "x" << s.cols << " group " << s.group << " planes " << s.planes
             << (s.act_order ? " act-order" : "");
}

// Rows 1, 31..33, 70 (blocks of 64, halves of 32, quarters of 16); columns with 1 group, odd group
// counts, groups that are not a multiple of 8 (padding), and one group per row longer than a
// segment (128 columns: 600 = 4 x 128 + 88, 136 = 128 + 8).
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s{
      {1, 64, 64, 2, false},    {31, 192, 64, 1, false}, {32, 96, 32, 3, false},
      {64, 64, 64, 2, false},   {65, 64, 32, 2, false},  {100, 72, 72, 1, false},
      {33, 128, 128, 4, false}, {70, 200, 40, 2, false}, {5, 36, 12, 3, false},
      {40, 600, -1, 2, false},  {33, 192, 64, 2, true},  {17, 96, 24, 4, true},
      {64, 512, 256, 1, false}, {3, 8, 8, 8, false},     {9, 272, 136, 2, false},
  };
  return s;
}

// BPDQ-like planes: free coefficients of either sign, bias of either sign.
BitPlaneWeights random_bitplanes(const Shape& s, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  BitPlaneWeights w;
  w.planes = s.planes;
  w.group_size = s.group < 0 ? s.cols : s.group;
  w.codes.resize(s.rows, s.cols);
  std::uniform_int_distribution<int> code(0, (1 << s.planes) - 1);
  for (Index i = 0; i < w.codes.size(); ++i)
    w.codes.data()[i] = static_cast<std::uint8_t>(code(rng));
  w.coeffs.resize((s.cols / w.group_size) * (s.planes + 1), s.rows);
  for (Index i = 0; i < w.coeffs.size(); ++i) w.coeffs.data()[i] = 0.01 * n(rng);
  if (s.act_order) {
    std::vector<std::int32_t> perm(static_cast<std::size_t>(s.cols));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    w.g_idx.resize(perm.size());
    for (std::size_t j = 0; j < perm.size(); ++j)
      w.g_idx[static_cast<std::size_t>(perm[j])] =
          static_cast<std::int32_t>(static_cast<Index>(j) / w.group_size);
  }
  return w;
}

// W x in double, W exactly as given (plus outliers replacing entries).
MatrixD exact_product(const BitPlaneWeights& w, const MatrixF& x,
                      const SparseOutliers* outliers = nullptr) {
  MatrixD dense(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index j = 0; j < w.cols(); ++j) {
      const Index g = w.group_of(j);
      double v = w.bias(g, r);
      for (int p = 0; p < w.planes; ++p)
        if ((w.codes(r, j) >> p) & 1u) v += w.coeff(g, p, r);
      dense(r, j) = v;
    }
  if (outliers)
    for (Index r = 0; r < w.rows(); ++r)
      for (std::int32_t i = outliers->row_ptr[static_cast<std::size_t>(r)];
           i < outliers->row_ptr[static_cast<std::size_t>(r) + 1]; ++i)
        dense(r, outliers->col[static_cast<std::size_t>(i)]) =
            outliers->values[static_cast<std::size_t>(i)];
  return x.cast<double>() * dense.transpose();
}

// The three ways a product is computed: int8 tables, float tables, dequantized tiles.
struct BitplaneMode {
  TableType type;
  BitplanePath path;
};

std::ostream& operator<<(std::ostream& out, const BitplaneMode& m) {
  return out << (m.path == BitplanePath::dense ? " dense tiles"
                 : m.type == TableType::int8   ? " int8 tables"
                                               : " f32 tables");
}

const std::vector<BitplaneMode>& bitplane_modes() {
  static const std::vector<BitplaneMode> m{{TableType::int8, BitplanePath::tables},
                                           {TableType::f32, BitplanePath::tables},
                                           {TableType::int8, BitplanePath::dense}};
  return m;
}

// Every SIMD kernel set compiled into this binary (the default is the widest).
std::vector<BitplaneKernels> simd_kernels() {
  std::vector<BitplaneKernels> kernels;
#ifdef LOWBIT_ISA_AVX2
  kernels.push_back(avx2::bitplane_kernels);
#endif
#ifdef LOWBIT_ISA_AVX512
  kernels.push_back(avx512::bitplane_kernels);
#endif
#ifdef LOWBIT_ISA_NEON
  kernels.push_back(neon::bitplane_kernels);
#endif
  return kernels;
}

// Loads x (tokens x cols) and multiplies all rows with the given kernels.
MatrixF run_with(const BitplaneKernels& kernels, const PackedBitplanes& w, const MatrixF& x,
                 BitplaneContext& ctx) {
  MatrixF y(x.rows(), w.rows());
  kernels.load(w, x.data(), x.rows(), x.cols(), ctx);
  kernels.multiply(w, ctx, y.data(), w.rows(), 0, w.rows());
  return y;
}

// The same with the default (widest) or the scalar kernels.
MatrixF run(const PackedBitplanes& w, const MatrixF& x, BitplaneContext& ctx, bool reference) {
  return run_with(reference ? scalar::bitplane_kernels : bitplane_kernels, w, x, ctx);
}

bool identical(const MatrixF& a, const MatrixF& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() && (a.array() == b.array()).all();
}

// Every entry of y within the per-row bound of its token.
void expect_within_bound(const PackedBitplanes& w, const MatrixF& x, BitplaneContext& ctx,
                         const MatrixF& y, const MatrixD& exact) {
  bitplane_load(w, x.data(), x.rows(), x.cols(), ctx);
  for (Index t = 0; t < x.rows(); ++t) {
    const VectorF bound = bitplane_error_bound(w, ctx, t);
    for (Index r = 0; r < w.rows(); ++r)
      ASSERT_LE(std::fabs(y(t, r) - exact(t, r)), bound(r))
          << "token " << t << " row " << r << " y " << y(t, r) << " exact " << exact(t, r);
  }
}

TEST(BitplaneLutGemm, ReportsItsInstructionSet) {
  EXPECT_EQ(std::string(bitplane_kernels.isa), test::expected_bitplane_isa());
  EXPECT_EQ(std::string(scalar::bitplane_kernels.isa), "scalar");
  const std::size_t simd = simd_kernels().size();
  if (test::expected_bitplane_isa() == "scalar")
    EXPECT_EQ(simd, 0u);
  else
    EXPECT_EQ(simd, test::expected_bitplane_isa() == "avx512" ? 2u : 1u);  // avx512 brings avx2
  std::cout << "bit-plane kernel: " << bitplane_kernels.isa << "\n";
}

TEST(BitplaneLutGemm, SimdTablesEqualScalarTables) {
  if (simd_kernels().empty()) GTEST_SKIP() << "no SIMD kernels in this build";
  for (const BitplaneKernels& kernels : simd_kernels())
    for (const Shape& s : shapes()) {
      SCOPED_TRACE(testing::Message() << kernels.isa << " " << s);
      const PackedBitplanes w = pack_bitplanes(random_bitplanes(s, 1));
      const MatrixF x = test::random_activations(3, s.cols, 2);
      for (TableType type : {TableType::int8, TableType::f32}) {
        BitplaneContext simd(w, 3, type), reference(w, 3, type);
        kernels.load(w, x.data(), 3, s.cols, simd);
        scalar::bitplane_kernels.load(w, x.data(), 3, s.cols, reference);
        const auto a = simd.tables(), b = reference.tables();
        const std::size_t n = static_cast<std::size_t>(3 * a.chunks * 16);
        if (type == TableType::int8) {
          EXPECT_EQ(std::memcmp(a.q, b.q, n), 0);
          EXPECT_TRUE(std::equal(a.scale, a.scale + 3 * w.layout().segments(), b.scale));
        } else {
          EXPECT_TRUE(std::equal(a.f, a.f + n, b.f));
        }
        EXPECT_TRUE(std::equal(a.xsum, a.xsum + 3 * w.groups(), b.xsum));
      }
    }
}

TEST(BitplaneLutGemm, SimdEqualsScalarBitForBit) {
  if (simd_kernels().empty()) GTEST_SKIP() << "no SIMD kernels in this build";
  for (const BitplaneKernels& kernels : simd_kernels()) {
    unsigned seed = 10;
    for (const Shape& s : shapes())
      for (CoefficientStorage storage : {CoefficientStorage::f16, CoefficientStorage::f32})
        for (const BitplaneMode& mode : bitplane_modes()) {
          SCOPED_TRACE(testing::Message()
                       << kernels.isa << " " << s << " seed " << seed
                       << (storage == CoefficientStorage::f16 ? " f16" : " f32") << mode);
          const PackedBitplanes w = pack_bitplanes(random_bitplanes(s, seed), {storage});
          // tiles of 4 tokens (tables) and of 6 (dense), and a remainder of each
          const MatrixF x = test::random_activations(7, s.cols, seed + 1);
          ++seed;
          BitplaneContext simd(w, 7, mode.type, mode.path), reference(w, 7, mode.type, mode.path);
          const MatrixF y_simd = run_with(kernels, w, x, simd);
          const MatrixF y_scalar = run_with(scalar::bitplane_kernels, w, x, reference);
          EXPECT_TRUE(identical(y_simd, y_scalar))
              << "max diff " << (y_simd - y_scalar).cwiseAbs().maxCoeff();
        }
  }
}

TEST(BitplaneLutGemm, EveryPathWithinTheDocumentedBound) {
  unsigned seed = 100;
  for (const Shape& s : shapes()) {
    const BitPlaneWeights planes = random_bitplanes(s, seed);
    const MatrixF x = test::random_activations(5, s.cols, seed + 1);
    const MatrixD exact = exact_product(planes, x);
    ++seed;
    for (CoefficientStorage storage : {CoefficientStorage::f16, CoefficientStorage::f32})
      for (const BitplaneMode& mode : bitplane_modes()) {
        SCOPED_TRACE(testing::Message()
                     << s << (storage == CoefficientStorage::f16 ? " f16" : " f32") << mode);
        const PackedBitplanes w = pack_bitplanes(planes, {storage});
        BitplaneContext ctx(w, 5, mode.type, mode.path);
        const MatrixF y = run(w, x, ctx, false);
        expect_within_bound(w, x, ctx, y, exact);
        expect_within_bound(w, x, ctx, run(w, x, ctx, true), exact);
      }
  }
}

// Activations whose segments span every finite magnitude: subnormal (down to
// the smallest), all-zero, tiny normal, ordinary and large, alone and mixed in
// one token. The int8 table scale 127 / max|entry| of a subnormal segment
// overflows float; the bound must hold all the same, on every instruction set.
MatrixF extreme_activations(Index cols, unsigned seed) {
  const float tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<std::vector<float>> magnitudes{{1e-40f},
                                                   {1e-44f},
                                                   {tiny},
                                                   {0.0f},
                                                   {1e-37f},
                                                   {1e30f},
                                                   {1e-40f, 0.0f, 1.0f},
                                                   {0.0f, 1e-45f, 1e-20f},
                                                   {1e20f, 1e-41f, 0.0f}};
  MatrixF x = test::random_activations(static_cast<Index>(magnitudes.size()), cols, seed);
  for (Index t = 0; t < x.rows(); ++t) {
    const std::vector<float>& m = magnitudes[static_cast<std::size_t>(t)];
    for (Index j = 0; j < cols; ++j) {  // per block of 64 columns, cycling through m
      const float scale = m[static_cast<std::size_t>(j / 64) % m.size()];
      x(t, j) = scale == tiny ? (x(t, j) < 0 ? -tiny : tiny) : x(t, j) * scale;
    }
  }
  return x;
}

TEST(BitplaneLutGemm, SubnormalZeroAndHugeActivationsWithinTheBound) {
  std::vector<BitplaneKernels> every = simd_kernels();
  every.push_back(scalar::bitplane_kernels);
  unsigned seed = 200;
  for (const Shape& s : shapes()) {
    const BitPlaneWeights planes = random_bitplanes(s, seed);
    const MatrixF x = extreme_activations(s.cols, seed + 1);
    const MatrixD exact = exact_product(planes, x);
    ++seed;
    for (CoefficientStorage storage : {CoefficientStorage::f16, CoefficientStorage::f32})
      for (const BitplaneMode& mode : bitplane_modes()) {
        const PackedBitplanes w = pack_bitplanes(planes, {storage});
        BitplaneContext reference(w, x.rows(), mode.type, mode.path);
        const MatrixF y_scalar = run_with(scalar::bitplane_kernels, w, x, reference);
        for (const BitplaneKernels& kernels : every) {
          SCOPED_TRACE(testing::Message()
                       << kernels.isa << " " << s
                       << (storage == CoefficientStorage::f16 ? " f16" : " f32") << mode);
          BitplaneContext ctx(w, x.rows(), mode.type, mode.path);
          const MatrixF y = run_with(kernels, w, x, ctx);
          ASSERT_TRUE(y.allFinite());
          EXPECT_TRUE(identical(y, y_scalar));
          expect_within_bound(w, x, ctx, y, exact);
        }
      }
  }
}

// x quantized to int8 with one absmax scale per block of `block` columns, as
// engines do for int8 dot products (llama.cpp Q8_0 / Q8_K): the yardstick
// for the int8 tables.
MatrixF quantize_activations_int8(const MatrixF& x, Index block) {
  MatrixF q = x;
  for (Index t = 0; t < x.rows(); ++t)
    for (Index j0 = 0; j0 < x.cols(); j0 += block) {
      const Index n = std::min(block, x.cols() - j0);
      const float scale = x.row(t).segment(j0, n).cwiseAbs().maxCoeff() / 127.0f;
      for (Index j = j0; j < j0 + n; ++j)
        q(t, j) = scale == 0.0f ? 0.0f : scale * std::nearbyint(x(t, j) / scale);
    }
  return q;
}

// The closed form of the int8 table error (top of bitplane_lut_gemm.hpp):
// sum over segments of (L / 508) max|x| sum_p |c_p|, for groups that are a
// multiple of 8 columns (no padding) and act-order free planes.
VectorD closed_form_table_bound(const BitPlaneWeights& w, const float* x) {
  VectorD bound = VectorD::Zero(w.rows());
  for (Index g = 0; g < w.groups(); ++g)
    for (Index j0 = g * w.group_size; j0 < (g + 1) * w.group_size; j0 += 128) {
      const Index n = std::min<Index>(128, (g + 1) * w.group_size - j0);
      double peak = 0;
      for (Index j = j0; j < j0 + n; ++j) peak = std::max(peak, std::fabs(double(x[j])));
      for (Index r = 0; r < w.rows(); ++r) {
        double sum_c = 0;
        for (int p = 0; p < w.planes; ++p) sum_c += std::fabs(w.coeff(g, p, r));
        bound(r) += double(n) / 508.0 * peak * sum_c;
      }
    }
  return bound;
}

// The exact path is exact to float rounding; the int8 path is measured here
// (figures for the report): within its bound, and about as accurate as int8
// activations with one scale per block of the segment's size (better for
// groups up to 128 columns, within 1.6x for longer groups, whose grid is
// wide relative to the typical weight).
TEST(BitplaneLutGemm, Int8ErrorByGroupSize) {
  const Index rows = 256, cols = 1024;
  for (int planes : {2, 4})
    for (int group : {32, 64, 128, 256, -1}) {
      RtnConfig config;
      config.bits = planes;
      config.group_size = group;
      const MatrixF wf = test::random_weights(rows, cols, 7);
      const UniformWeights uniform = quantize_rtn(wf, config).weights;
      const BitPlaneWeights w = to_bitplanes(uniform);
      const MatrixF x = test::random_activations(4, cols, 8);
      const MatrixD exact = exact_product(w, x);
      const PackedBitplanes packed = pack_bitplanes(w, {CoefficientStorage::f32});
      BitplaneContext ctx(packed, 4, TableType::int8);
      const MatrixF y = run(packed, x, ctx, false);
      const double err = (y.cast<double>() - exact).norm() / exact.norm();
      const Index segment = std::min<Index>(group < 0 ? cols : group, 128);
      const MatrixD q8 = quantize_activations_int8(x, segment).cast<double>() *
                         uniform.dequantize().cast<double>().transpose();
      const double q8_err = (q8 - exact).norm() / exact.norm();
      double bound_ratio = 0;
      for (Index t = 0; t < 4; ++t) {
        bitplane_load(packed, x.data() + t * cols, 1, cols, ctx);
        const VectorF bound = bitplane_error_bound(packed, ctx, 0);
        for (Index r = 0; r < rows; ++r)
          bound_ratio = std::max(bound_ratio, std::fabs(y(t, r) - exact(t, r)) / double(bound(r)));
      }
      // The closed form bounds the table error: int8 against float tables, both with f32
      // coefficients.
      BitplaneContext float_ctx(packed, 4, TableType::f32);
      const MatrixF y_float = run(packed, x, float_ctx, false);
      double closed_ratio = 0;
      for (Index t = 0; t < 4; ++t) {
        const VectorD closed = closed_form_table_bound(w, x.data() + t * cols);
        for (Index r = 0; r < rows; ++r) {
          // less a slack of 1e-3 of the bound for the float rounding of both sums
          const double err = std::fabs(double(y(t, r)) - y_float(t, r)) - 1e-3 * closed(r);
          closed_ratio = std::max(closed_ratio, err / closed(r));
          ASSERT_LE(err, closed(r)) << "token " << t << " row " << r;
        }
      }
      std::cout << "int8 tables, " << planes << " planes, group " << group << ": relative error "
                << err << " (int8 activations per " << segment << " columns: " << q8_err
                << "), worst error / bound " << bound_ratio << ", closed form " << closed_ratio
                << "\n";
      EXPECT_LT(err, (group > 0 && group <= 128 ? 1.0 : 1.6) * q8_err);
      EXPECT_LE(bound_ratio, 1.0);
      // f16 coefficients round the grid scale: about 2^-12 relative.
      const PackedBitplanes packed16 = pack_bitplanes(w);
      BitplaneContext exact_ctx(packed16, 4, TableType::f32);
      EXPECT_LT((run(packed16, x, exact_ctx, false).cast<double>() - exact).norm() / exact.norm(),
                5e-4);
    }
}

TEST(BitplaneLutGemm, UniformWeightsIncludingActOrder) {
  const MatrixF wf = test::random_weights(45, 256, 30);
  for (int bits = 1; bits <= 4; ++bits) {
    RtnConfig config;
    config.bits = bits;
    config.group_size = 64;
    UniformWeights q = quantize_rtn(wf, config).weights;
    for (bool act_order : {false, true}) {
      SCOPED_TRACE(testing::Message() << "bits " << bits << (act_order ? " act-order" : ""));
      if (act_order) {  // the same codes and grids, grouped through a permutation
        q.g_idx.resize(256);
        for (int j = 0; j < 256; ++j) q.g_idx[static_cast<std::size_t>(j)] = (j * 37 % 256) / 64;
      }
      const MatrixF x = test::random_activations(2, 256, 31);
      const MatrixD exact = x.cast<double>() * q.dequantize().cast<double>().transpose();
      const PackedBitplanes w = pack_bitplanes(q, {CoefficientStorage::f32});
      const MatrixF y = bitplane_gemm(w, x, TableType::f32);
      EXPECT_LT((y.cast<double>() - exact).cwiseAbs().maxCoeff(),
                1e-5 * exact.cwiseAbs().maxCoeff());
      BitplaneContext ctx(w, 2, TableType::int8);
      MatrixF y8(2, 45);
      bitplane_gemm(w, x, y8, ctx);
      expect_within_bound(w, x, ctx, y8, exact);
    }
  }
}

TEST(BitplaneLutGemm, SparseOutliersReplaceTheirWeights) {
  const Shape s{37, 192, 64, 3, true};
  const BitPlaneWeights planes = random_bitplanes(s, 40);
  const MatrixF values = test::random_weights(s.rows, s.cols, 41, 0.5f);
  CodeMatrix mask = CodeMatrix::Zero(s.rows, s.cols);
  std::mt19937 rng(42);
  for (int i = 0; i < 150; ++i) mask(rng() % s.rows, rng() % s.cols) = 1;
  const SparseOutliers outliers = sparse_outliers_from_mask(values, mask);
  const MatrixF x = test::random_activations(3, s.cols, 43);
  const MatrixD exact = exact_product(planes, x, &outliers);
  for (TableType type : {TableType::int8, TableType::f32}) {
    const PackedBitplanes w = pack_bitplanes(planes, outliers, {CoefficientStorage::f32});
    EXPECT_EQ(w.outliers(), outliers.nnz());
    BitplaneContext simd(w, 3, type), reference(w, 3, type);
    const MatrixF y = run(w, x, simd, false);
    EXPECT_TRUE(identical(y, run(w, x, reference, true)));
    expect_within_bound(w, x, simd, y, exact);
  }
  // The packed weights are the planes with the outliers written over them.
  MatrixF expected = planes.dequantize();
  outliers.overwrite(expected);
  const PackedBitplanes w = pack_bitplanes(planes, outliers, {CoefficientStorage::f32});
  EXPECT_LT((w.dequantize() - expected).cwiseAbs().maxCoeff(), 1e-6);
}

TEST(BitplaneLutGemm, RowSplitsAndThreadsGiveIdenticalResults) {
  const Shape s{101, 320, 64, 2, true};
  const PackedBitplanes w = pack_bitplanes(random_bitplanes(s, 50));
  const MatrixF x = test::random_activations(5, s.cols, 51);
  for (const BitplaneMode& mode : bitplane_modes()) {
    SCOPED_TRACE(testing::Message() << mode);
    const TableType type = mode.type;
    BitplaneContext ctx(w, 5, type, mode.path);
    const MatrixF whole = run(w, x, ctx, false);
    MatrixF pieces(5, s.rows);
    const Index cuts[] = {0, 1, 5, 31, 32, 33, 64, 100, 101};
    for (std::size_t i = 0; i + 1 < std::size(cuts); ++i)
      bitplane_multiply(w, ctx, pieces.data(), s.rows, cuts[i], cuts[i + 1]);
    EXPECT_TRUE(identical(whole, pieces));
    // One token at a time (another tiling of the tokens) gives the same rows.
    BitplaneContext one(w, 1, type, mode.path);
    MatrixF single(5, s.rows);
    for (Index t = 0; t < 5; ++t) {
      bitplane_load(w, x.data() + t * s.cols, 1, s.cols, one);
      bitplane_multiply(w, one, single.data() + t * s.rows, s.rows, 0, s.rows);
    }
    EXPECT_TRUE(identical(whole, single));
    // The convenience call with 1 and 2 threads, and contexts of 2 and 16 tokens.
    for (int threads : {1, 2}) {
#ifdef _OPENMP
      omp_set_num_threads(threads);
#endif
      for (Index capacity : {2, 16}) {
        BitplaneContext c(w, capacity, type, mode.path);
        MatrixF y(5, s.rows);
        bitplane_gemm(w, x, y, c);
        EXPECT_TRUE(identical(whole, y)) << threads << " threads, capacity " << capacity;
      }
    }
  }
}

// by_batch takes the path measured faster: float tables give way to dequantized
// tiles from 16 tokens at 2 planes and 8 at 4; int8 tables are kept at every
// batch. The choice is the same in every build (scalar twins included).
TEST(BitplaneLutGemm, ByBatchChoosesThePathByTokenCount) {
  struct Case {
    int planes;
    Index tokens;
    TableType type;
    bool dense;
  };
  const Case cases[] = {{2, 15, TableType::f32, false}, {2, 16, TableType::f32, true},
                        {4, 7, TableType::f32, false},  {4, 8, TableType::f32, true},
                        {1, 40, TableType::f32, false}, {4, 40, TableType::int8, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.planes << " planes, " << c.tokens << " tokens");
    const PackedBitplanes w = pack_bitplanes(random_bitplanes({70, 256, 128, c.planes, false}, 80));
    const MatrixF x = test::random_activations(c.tokens, 256, 81);
    BitplaneContext by_batch(w, c.tokens, c.type);
    BitplaneContext forced(w, c.tokens, c.type,
                           c.dense ? BitplanePath::dense : BitplanePath::tables);
    const MatrixF y = run(w, x, by_batch, false);
    EXPECT_EQ(by_batch.tables().dense, c.dense);
    EXPECT_TRUE(identical(y, run(w, x, forced, false)));
    BitplaneContext reference(w, c.tokens, c.type);  // the scalar kernels choose alike
    EXPECT_TRUE(identical(y, run(w, x, reference, true)));
  }
}

// A context holds tables only for the batches that take the table path: with
// float tables by_batch switches to dequantized tiles at 8 tokens for 4 planes
// and 16 for 2, so a 512-token context holds 7 or 15 tokens' tables; one made
// for 4 planes then does not fit 2-plane weights of the same columns.
TEST(BitplaneLutGemm, ContextHoldsTablesOnlyForTheTablePath) {
  const PackedBitplanes w4 = pack_bitplanes(random_bitplanes({70, 256, 128, 4, false}, 82));
  const PackedBitplanes w2 = pack_bitplanes(random_bitplanes({70, 256, 128, 2, false}, 83));
  EXPECT_EQ(BitplaneContext(w4, 512, TableType::f32).table_tokens(), 7);
  EXPECT_EQ(BitplaneContext(w2, 512, TableType::f32).table_tokens(), 15);
  EXPECT_EQ(BitplaneContext(w4, 5, TableType::f32).table_tokens(), 5);
  EXPECT_EQ(BitplaneContext(w4, 512).table_tokens(), 512);  // int8 tables at every batch
  EXPECT_EQ(BitplaneContext(w4, 512, TableType::f32, BitplanePath::tables).table_tokens(), 512);
  EXPECT_EQ(BitplaneContext(w4, 512, TableType::int8, BitplanePath::dense).table_tokens(), 0);
  BitplaneContext ctx(w4, 40, TableType::f32);
  EXPECT_FALSE(ctx.fits(w2));
  MatrixF y(40, 70);
  test::expect_error_containing(
      [&] { bitplane_gemm(w2, test::random_activations(40, 256, 84), y, ctx); }, "another shape");
  EXPECT_TRUE(BitplaneContext(w2, 40, TableType::f32).fits(w4));
  // Every batch through the trimmed context, on both sides of the switch, as the scalar kernels
  // compute it with a context of its own size.
  for (Index tokens : {1, 7, 8, 40}) {
    SCOPED_TRACE(testing::Message() << tokens << " tokens");
    const MatrixF x = test::random_activations(tokens, 256, 85);
    BitplaneContext reference(w4, tokens, TableType::f32, BitplanePath::tables);
    if (tokens >= 8) reference = BitplaneContext(w4, tokens, TableType::f32, BitplanePath::dense);
    EXPECT_TRUE(identical(run(w4, x, ctx, false), run(w4, x, reference, true)));
  }
}

TEST(BitplaneLutGemm, MisalignedAndStridedBuffers) {
  const Shape s{40, 136, 8, 2, false};
  const PackedBitplanes w = pack_bitplanes(random_bitplanes(s, 60));
  const MatrixF x = test::random_activations(3, s.cols, 61);
  BitplaneContext ctx(w, 3);
  const MatrixF expected = run(w, x, ctx, true);
  const Index ldx = s.cols + 3, ldy = s.rows + 5;
  std::vector<float> xs(static_cast<std::size_t>(3 * ldx + 1), 1e30f),
      ys(static_cast<std::size_t>(3 * ldy + 1), -7.0f);
  for (Index t = 0; t < 3; ++t)
    std::copy(x.row(t).data(), x.row(t).data() + s.cols,
              xs.data() + 1 + t * ldx);  // offset by one float
  bitplane_load(w, xs.data() + 1, 3, ldx, ctx);
  bitplane_multiply(w, ctx, ys.data() + 1, ldy, 0, s.rows);
  for (Index t = 0; t < 3; ++t) {
    for (Index r = 0; r < s.rows; ++r)
      EXPECT_EQ(ys[static_cast<std::size_t>(1 + t * ldy + r)], expected(t, r));
    for (Index r = s.rows; r < ldy; ++r)
      EXPECT_EQ(ys[static_cast<std::size_t>(1 + t * ldy + r)], -7.0f);  // untouched
  }
}

TEST(BitplaneLutGemm, ZeroActivationsGiveZero) {
  const PackedBitplanes w = pack_bitplanes(random_bitplanes({33, 64, 32, 3, false}, 70));
  const MatrixF y = bitplane_gemm(w, MatrixF::Zero(2, 64));
  EXPECT_TRUE((y.array() == 0.0f).all());
}

TEST(BitplaneLutGemm, DequantizeMatchesThePlanes) {
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(testing::Message() << s);
    const BitPlaneWeights planes = random_bitplanes(s, 80);
    const MatrixF expected = planes.dequantize();
    const PackedBitplanes w32 = pack_bitplanes(planes, {CoefficientStorage::f32});
    EXPECT_LT((w32.dequantize() - expected).cwiseAbs().maxCoeff(), 1e-7);
    const PackedBitplanes w16 = pack_bitplanes(planes);
    EXPECT_LT((w16.dequantize() - expected).cwiseAbs().maxCoeff(), 1e-4);
    // f32 coefficients take 2 more bytes each: (planes + 1) x 64 per block and group.
    EXPECT_EQ(
        w32.weight_bytes() - w16.weight_bytes(),
        static_cast<std::size_t>(w16.layout().blocks * w16.groups() * 64 * (w16.planes() + 1) * 2));
  }
}

TEST(BitplaneLutGemm, PacksTheOfficialBpdqTensors) {
  test::for_each_golden("bpdq_", false, [](const io::SafetensorsReader& f, const std::string&) {
    const BitPlaneWeights planes = io::bitplanes_from_bpdq(
        f.info("B_packed").shape, f.ints("B_packed"), f.info("c").shape, f.doubles("c"));
    const PackedBitplanes w = pack_bitplanes(planes, {CoefficientStorage::f32});
    const MatrixF reference = f.contains("Q") ? f.matrix("Q") : planes.dequantize();
    EXPECT_LT((w.dequantize() - reference).cwiseAbs().maxCoeff(), 1e-6);
  });
}

TEST(BitplaneLutGemm, BadInputIsRejected) {
  BitPlaneWeights bad = random_bitplanes({4, 16, 8, 2, false}, 90);
  bad.codes(0, 0) = 4;  // bit above plane 1
  EXPECT_THROW(pack_bitplanes(bad), Error);
  BitPlaneWeights huge = random_bitplanes({4, 16, 8, 2, false}, 91);
  huge.coeffs(0, 1) = 1e6;
  try {
    pack_bitplanes(huge);
    ADD_FAILURE() << "fp16 overflow accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overflows fp16"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(pack_bitplanes(huge, {CoefficientStorage::f32}));
  const BitPlaneWeights good = random_bitplanes({4, 16, 8, 2, false}, 92);
  SparseOutliers wrong = sparse_outliers_from_mask(MatrixF::Zero(4, 8), CodeMatrix::Zero(4, 8));
  EXPECT_THROW(pack_bitplanes(good, wrong), Error);
  const PackedBitplanes w = pack_bitplanes(good);
  BitplaneContext ctx(w, 2);
  MatrixF y(2, 4);
  EXPECT_THROW(bitplane_gemm(w, MatrixF::Zero(2, 15), y, ctx), Error);
  EXPECT_THROW(bitplane_gemm(w, MatrixF::Zero(3, 16), y, ctx), Error);
  MatrixF nan = MatrixF::Zero(2, 16);
  nan(1, 3) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(bitplane_gemm(w, nan, y, ctx), Error);
  MatrixF huge_x = MatrixF::Zero(2, 16);
  huge_x(0, 5) = 1e38f;  // finite, but a table entry (half a sum of four) could overflow
  test::expect_error_containing([&] { bitplane_gemm(w, huge_x, y, ctx); }, "2^126");
  huge_x(0, 5) = 8e37f;
  EXPECT_NO_THROW(bitplane_gemm(w, huge_x, y, ctx));
  const PackedBitplanes other = pack_bitplanes(random_bitplanes({4, 32, 8, 2, false}, 93));
  EXPECT_FALSE(ctx.fits(other));
  EXPECT_THROW(bitplane_gemm(other, MatrixF::Zero(2, 32), y, ctx), Error);
  EXPECT_THROW(BitplaneContext(w, 0), Error);
  EXPECT_THROW(bitplane_error_bound(w, ctx, 5), Error);
}

}  // namespace
}  // namespace lowbit
