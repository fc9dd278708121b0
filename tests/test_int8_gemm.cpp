// kernels/int8_gemm.hpp: every instruction-set variant compiled into this
// binary gives exactly the scalar reference's integers and floats, on shapes
// straddling the SIMD widths, from aligned and misaligned memory, for any row
// range; the checked entry point validates and matches the float product.
#include <lowbit/kernels/int8_gemm.hpp>
#include <lowbit/quant/absmax.hpp>

#include <cstring>
#include <functional>

#include "expected_isa.hpp"
#include "test_support.hpp"

namespace lowbit {
namespace {

using RowsKernel = std::function<void(const detail::Int8GemmArgs&, Index, Index)>;

// Every SIMD variant this build compiles, by name, on raw arguments (any
// offset and stride, integer dot products).
std::vector<std::pair<std::string, RowsKernel>> simd_variants() {
  std::vector<std::pair<std::string, RowsKernel>> v;
#if defined(LOWBIT_ISA_AVX2)
  v.emplace_back(detail::int8_avx2::Isa::name, detail::int8_avx2::Isa::rows);
#endif
#if defined(LOWBIT_ISA_AVX512_VNNI)
  v.emplace_back(detail::int8_avx512::Isa::name, detail::int8_avx512::Isa::rows);
#endif
#if defined(LOWBIT_ISA_NEON)
  v.emplace_back(detail::int8_neon::Isa::name, detail::int8_neon::Isa::rows);
#endif
  return v;
}

const RowsKernel scalar_rows = detail::int8_scalar::Isa::rows;

// Int8 values in -127..127 at an arbitrary byte offset and row stride.
struct Int8Buffer {
  std::vector<std::int8_t> storage;
  std::int8_t* data = nullptr;
  Index stride = 0;

  Int8Buffer(Index rows, Index cols, Index offset, Index pad, unsigned seed, bool extremes) {
    std::mt19937 rng(seed);
    stride = cols + pad;
    storage.assign(static_cast<std::size_t>(rows * stride + offset + 64), 0);
    data = storage.data() + offset;
    std::uniform_int_distribution<int> value(-127, 127), coin(0, 1);
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < cols; ++c)
        data[r * stride + c] =
            static_cast<std::int8_t>(extremes ? (coin(rng) ? 127 : -127) : value(rng));
  }
};

struct Problem {
  Index rows, tokens, depth;
  Int8Buffer w, x;
  std::vector<float> w_scale, x_scale;

  Problem(Index rows_, Index tokens_, Index depth_, Index offset, bool extremes, unsigned seed)
      : rows(rows_),
        tokens(tokens_),
        depth(depth_),
        w(rows_, depth_, offset, offset ? 3 : 0, seed, extremes),
        x(tokens_, depth_, offset ? offset + 1 : 0, offset ? 5 : 0, seed + 1, extremes) {
    std::mt19937 g(seed + 2);
    std::uniform_real_distribution<float> scale(1e-4f, 1e-1f);
    for (Index r = 0; r < rows; ++r) w_scale.push_back(scale(g));
    for (Index t = 0; t < tokens; ++t) x_scale.push_back(scale(g));
  }

  // Runs `kernel` on rows [begin, end) into fresh outputs (sentinels elsewhere).
  struct Output {
    std::vector<std::int32_t> dots;
    std::vector<float> y;
  };
  void run(const RowsKernel& kernel, Output& out, Index begin, Index end) const {
    if (out.dots.empty()) {
      out.dots.assign(static_cast<std::size_t>(tokens * rows), INT32_MIN);
      out.y.assign(static_cast<std::size_t>(tokens * rows), NAN);
    }
    detail::Int8GemmArgs args;
    args.w = w.data;
    args.w_stride = w.stride;
    args.w_scale = w_scale.data();
    args.x = x.data;
    args.x_stride = x.stride;
    args.x_scale = x_scale.data();
    args.tokens = tokens;
    args.depth = depth;
    args.y = out.y.data();
    args.y_stride = rows;
    args.dots = out.dots.data();
    args.dots_stride = rows;
    kernel(args, begin, end);
  }
};

TEST(Int8Gemm, ScalarReferenceIsTheExactProduct) {
  const Problem p(5, 3, 77, 1, false, 401);
  Problem::Output out;
  p.run(scalar_rows, out, 0, p.rows);
  for (Index t = 0; t < p.tokens; ++t)
    for (Index r = 0; r < p.rows; ++r) {
      std::int64_t dot = 0;
      for (Index k = 0; k < p.depth; ++k)
        dot += std::int64_t{p.w.data[r * p.w.stride + k]} * p.x.data[t * p.x.stride + k];
      const std::size_t i = static_cast<std::size_t>(t * p.rows + r);
      EXPECT_EQ(out.dots[i], dot);
      EXPECT_EQ(out.y[i], static_cast<float>(dot) * (p.x_scale[t] * p.w_scale[r]));
    }
}

TEST(Int8Gemm, SimdEqualsScalarOnShapesStraddlingTheVectorWidths) {
  if (simd_variants().empty()) GTEST_SKIP() << "no SIMD variant in this build";
  for (const auto& [name, kernel] : simd_variants()) {
    SCOPED_TRACE(name);
    unsigned seed = 500;
    for (Index depth : {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 129, 257})
      for (Index rows : {1, 3, 4, 5, 8, 9})
        for (Index tokens : {1, 2, 3, 4, 5, 9})
          for (Index offset : {0, 1})
            for (bool extremes : {false, true}) {
              const Problem p(rows, tokens, depth, offset, extremes, ++seed);
              Problem::Output expected, got;
              p.run(scalar_rows, expected, 0, rows);
              p.run(kernel, got, 0, rows);
              ASSERT_EQ(got.dots, expected.dots)
                  << "depth " << depth << " rows " << rows << " tokens " << tokens << " offset "
                  << offset << " extremes " << extremes << " seed " << seed;
              // Bit-identical floats (the same epilogue expression everywhere).
              ASSERT_EQ(0,
                        std::memcmp(got.y.data(), expected.y.data(), got.y.size() * sizeof(float)))
                  << "depth " << depth << " seed " << seed;
            }
  }
  std::printf("  int8 kernels checked against scalar: the default is %s\n", int8_kernels.isa);
}

TEST(Int8Gemm, RowRangesComposeToTheWholeProduct) {
  const Problem p(23, 6, 200, 1, false, 601);
  for (const auto& [name, kernel] : simd_variants()) {
    SCOPED_TRACE(name);
    Problem::Output whole, pieces;
    p.run(kernel, whole, 0, p.rows);
    // Uneven splits, not multiples of any row tile.
    for (const auto& [begin, end] :
         std::vector<std::pair<Index, Index>>{{0, 5}, {5, 6}, {6, 13}, {13, 17}, {17, 23}})
      p.run(kernel, pieces, begin, end);
    EXPECT_EQ(pieces.dots, whole.dots);
    Problem::Output empty;
    p.run(kernel, empty, 7, 7);  // an empty range writes nothing
    EXPECT_TRUE(std::all_of(empty.dots.begin(), empty.dots.end(),
                            [](std::int32_t d) { return d == INT32_MIN; }));
  }
}

TEST(Int8Gemm, LongRowsAtTheInt32Limit) {
  // 127 * 127 * depth stays below 2^31 up to kInt8GemmMaxDepth; the u8-offset
  // kernels' intermediate sums (x + 128)·w pass 2^31 long before that.
  EXPECT_LE(std::int64_t{kInt8GemmMaxDepth} * 127 * 127, std::int64_t{INT32_MAX});
  EXPECT_GT(std::int64_t{kInt8GemmMaxDepth + 1} * 127 * 127, std::int64_t{INT32_MAX});
  for (bool all_max : {false, true}) {
    Problem p(3, 2, kInt8GemmMaxDepth, 0, true, 701);
    if (all_max) {  // every product +127·127: the largest dot product there is
      std::fill(p.w.storage.begin(), p.w.storage.end(), std::int8_t{127});
      std::fill(p.x.storage.begin(), p.x.storage.end(), std::int8_t{127});
    }
    Problem::Output expected;
    p.run(scalar_rows, expected, 0, 3);
    if (all_max) {
      EXPECT_EQ(expected.dots[0], kInt8GemmMaxDepth * 127 * 127);
    }
    for (const auto& [name, kernel] : simd_variants()) {
      Problem::Output got;
      p.run(kernel, got, 0, 3);
      EXPECT_EQ(got.dots, expected.dots) << name;
    }
  }
}

TEST(Int8Gemm, ReportsItsInstructionSet) {
  EXPECT_EQ(std::string(int8_kernels.isa), test::expected_int8_isa());
  EXPECT_EQ(std::string(scalar::int8_kernels.isa), "scalar");
  const std::size_t simd = simd_variants().size();
  if (test::expected_int8_isa() == "scalar")
    EXPECT_EQ(simd, 0u);
  else
    EXPECT_EQ(simd, test::expected_int8_isa() == "avx512-vnni" ? 2u : 1u);  // avx512 brings avx2
  std::cout << "int8 kernel: " << int8_kernels.isa << "\n";
}

TEST(Int8Gemm, CheckedEntryMatchesTheDequantizedProduct) {
  const MatrixF w = test::random_weights(37, 150, 801);
  const MatrixF x = test::random_activations(7, 150, 802);
  const Int8Weights qw = to_int8_weights(quantize_absmax(w).weights);
  const Int8Activations qx = quantize_activations(x);
  const MatrixF y = int8_gemm(qw, qx);
  ASSERT_EQ(y.rows(), 7);
  ASSERT_EQ(y.cols(), 37);
  const MatrixD expected =
      qx.dequantize().cast<double>() * qw.dequantize().cast<double>().transpose();
  EXPECT_LE(test::max_rel_diff(y, expected), 1e-6);
  // The noexcept row-range entry into a caller's buffer gives the same.
  MatrixF y2 = MatrixF::Constant(7, 37, NAN);
  int8_gemm(qw, qx, y2, 0, 20);
  int8_gemm(qw, qx, y2, 20, 37);
  EXPECT_EQ(y2, y);
  // The scalar reference through the same entry points: the same bits.
  EXPECT_EQ(int8_gemm(scalar::int8_kernels, qw, qx), y);
  // W8A8 is close to the float product.
  const MatrixD exact = x.cast<double>() * w.cast<double>().transpose();
  EXPECT_LT((y.cast<double>() - exact).norm() / exact.norm(), 0.03);
}

TEST(Int8Gemm, CheckedEntryRejectsBadOperands) {
  const Int8Weights w = to_int8_weights(quantize_absmax(test::random_weights(4, 32, 901)).weights);
  const Int8Activations x = quantize_activations(test::random_activations(3, 32, 902));
  EXPECT_THROW(int8_gemm(w, quantize_activations(test::random_activations(3, 31, 903))), Error);
  Int8Activations bad = x;
  bad.values(1, 1) = -128;
  EXPECT_THROW(int8_gemm(w, bad), Error);
  bad = x;
  bad.scale.resize(2);
  EXPECT_THROW(int8_gemm(w, bad), Error);
  Int8Weights bad_w = w;
  bad_w.values(0, 0) = -128;
  EXPECT_THROW(int8_gemm(bad_w, x), Error);
  EXPECT_THROW(int8_gemm(w, Int8Activations{}), Error);
}

}  // namespace
}  // namespace lowbit
