// The bit-plane lookup-table matmul: y = W x for W in bit-plane form
// (BitPlaneWeights, hence every uniform grid through to_bitplanes), plus an
// optional sparse full-precision part (SparseOutliers, TACQ).
//
// How an engine uses it:
//
//   // once, at load time (allocates, validates, throws lowbit::Error):
//   lowbit::PackedBitplanes w = lowbit::pack_bitplanes(planes);        // or (planes, outliers)
//   lowbit::BitplaneContext ctx(w, /*max_tokens=*/16);                 // table scratch, reusable
//   // every forward pass (noexcept, no allocation):
//   lowbit::bitplane_load(w, x, tokens, ldx, ctx);         // gathers x, builds the tables (one thread)
//   lowbit::bitplane_multiply(w, ctx, row_begin, row_end, y, ldy);     // any row range, any thread
//
// bitplane_multiply may run concurrently on disjoint row ranges with the same
// context. Each row's result depends only on that row, so the output is bit
// for bit the same for every split and thread count. bitplane_gemm() is the
// checked, Eigen-typed convenience (OpenMP over rows when available).
//
// The computation (DESIGN.md section 6; layout in detail/bitplane_layout.hpp):
// for every chunk of 4 activations a table of the 16 centred partial sums
// e[i] = 1/2 (±x0 ± x1 ± x2 ± x3); every packed plane nibble selects an entry;
// entries are summed per segment (at most 128 columns of one group), scaled
// by the plane coefficient, and the group's bias' multiplies the group's
// sum of activations. With TableType::int8 each segment's tables are
// quantized to int8 with one scale s = max|e| / 127 and summed in int16
// (vpshufb / vqtbl1q); with TableType::f32 the float entries are summed.
//
// Error of the fast path. Against y_exact = W x with W exactly as given:
//   |y_r - y_exact_r| <= sum_segments s_seg (1/2 + 1e-4) * (L_seg / 4) * sum_p |c_p[g, r]|   (int8 tables)
//                      + 2^-11 * sum_g ( sum_p |c_p| * 1/2 sum_{j in g} |x_j| + |bias'| |sum_{j in g} x_j| )
//                                                                   (f16 coefficients, normal range)
//                      + float rounding of the sums (about 1e-6 of the same magnitudes),
// where L_seg is the segment's column count (padding included). Derivation of
// the table term: a stored entry is round(e / s), within 1/2 of e / s (plus
// the float rounding of the product, far below 1e-4 of a step); a row's plane
// sum over a segment adds L_seg / 4 entries and is multiplied by s and c_p.
// Since max|e| = 1/2 max_chunk sum|x| <= 2 max_{j in seg}|x_j|, s_seg <= 2 max|x| / 127
// and the table term is at most
//   sum_seg (L_seg / 508) max_{j in seg}|x_j| sum_p |c_p|.
// For a uniform grid sum_p |c_p| = scale (2^bits - 1) = R, the group's grid
// range, so relative to sum_j R |x_j| the table error is at most
// (max|x| / mean|x| over the segment) / 508: it grows with the segment length
// (the group size, up to 128 columns) through the peak-to-mean ratio of the
// activations. That is the order of rounding x itself to int8 with one
// absmax scale per segment (<= |w| max|x| / 254 per weight). The rounding
// errors are independent, so the typical error is far below the bound.
// bitplane_error_bound() evaluates the first two terms for a loaded context;
// the tests check the measured error against it and against the closed form.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/detail/grouping.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"
#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/bitplane_scalar.hpp"

// Compile-time dispatch: the widest kernel the build targets (AVX-512 BW,
// else AVX2 with FMA and F16C, else NEON on aarch64), the scalar reference
// otherwise or with LOWBIT_FORCE_SCALAR. Every compiled kernel stays callable
// (the tests compare each one with the scalar reference).
#if !defined(LOWBIT_FORCE_SCALAR) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LOWBIT_BITPLANE_AVX2 1
#include "lowbit/kernels/detail/bitplane_avx2.hpp"
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define LOWBIT_BITPLANE_AVX512 1
#include "lowbit/kernels/detail/bitplane_avx512.hpp"
#endif
#elif !defined(LOWBIT_FORCE_SCALAR) && defined(__ARM_NEON) && defined(__aarch64__)
#define LOWBIT_BITPLANE_NEON 1
#include "lowbit/kernels/detail/bitplane_neon.hpp"
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit {

struct BitplanePackConfig {
  CoefficientStorage coefficients = CoefficientStorage::f16;
};

// A weight matrix in the kernel's own layout. Built by pack_bitplanes().
class PackedBitplanes {
 public:
  PackedBitplanes() = default;

  Index rows() const { return layout_.rows; }
  Index cols() const { return cols_; }
  int planes() const { return layout_.planes; }
  Index group_size() const { return group_size_; }
  Index groups() const { return layout_.groups; }
  CoefficientStorage coefficients() const { return layout_.coefficients; }
  Index outliers() const { return static_cast<Index>(outlier_corr_.size()); }

  // Bytes one multiplication streams: plane bytes, coefficients, sparse part.
  std::size_t weight_bytes() const {
    return data_.size() + outlier_corr_.size() * (sizeof(float) + sizeof(std::int32_t)) +
           outlier_rowptr_.size() * sizeof(std::int32_t);
  }

  // The weights exactly as the kernel multiplies them (coefficients as stored,
  // outliers included), out x in in the original column order, each value
  // computed in double and rounded once to float.
  MatrixF dequantize() const;

  // For the kernels.
  detail::bitplane::Layout layout() const {
    detail::bitplane::Layout l = layout_;
    l.data = data_.data();
    return l;
  }
  const std::vector<std::int32_t>& gather() const { return gather_; }  // packed column -> column or -1
  bool identity_gather() const { return identity_gather_; }
  const std::vector<std::int32_t>& outlier_rowptr() const { return outlier_rowptr_; }
  const std::vector<std::int32_t>& outlier_position() const { return outlier_position_; }  // packed column
  const std::vector<float>& outlier_correction() const { return outlier_corr_; }

 private:
  friend PackedBitplanes pack_bitplanes(const BitPlaneWeights&, const SparseOutliers*,
                                        const BitplanePackConfig&);
  double dense_value(Index row, Index packed_col) const;  // without outliers

  detail::bitplane::Layout layout_;
  Index cols_ = 0;
  Index group_size_ = 0;
  detail::bitplane::AlignedArray<std::uint8_t> data_;
  std::vector<std::int32_t> gather_;
  bool identity_gather_ = true;
  std::vector<std::int32_t> outlier_rowptr_;
  std::vector<std::int32_t> outlier_position_;
  std::vector<float> outlier_corr_;  // stored value - packed dense value
};

namespace detail::bitplane {

inline std::size_t coefficient_size(CoefficientStorage s) {
  return s == CoefficientStorage::f16 ? sizeof(std::uint16_t) : sizeof(float);
}

// Coefficient as stored: rounded to the storage type, returned as a double.
inline double stored_coefficient(double c, CoefficientStorage s, const char* what, Index group,
                                 Index row) {
  const float f = static_cast<float>(c);
  if (s == CoefficientStorage::f32) return f;
  const float h = half_to_float(float_to_half(f));
  require(std::isfinite(h), "pack_bitplanes: ", what, " of group ", group, ", row ", row, " = ", c,
          " overflows fp16; pack with BitplanePackConfig::coefficients = CoefficientStorage::f32");
  return h;
}

inline void store_coefficient(std::uint8_t* at, double value, CoefficientStorage s) {
  if (s == CoefficientStorage::f32) {
    const float f = static_cast<float>(value);
    std::memcpy(at, &f, sizeof f);
  } else {
    const std::uint16_t h = float_to_half(static_cast<float>(value));
    std::memcpy(at, &h, sizeof h);
  }
}

}  // namespace detail::bitplane

// Packs bit-plane weights (1..8 planes; any group size; g_idx act-order
// groups are gathered through a stored permutation) and, when given, the
// sparse outliers whose values replace the dense weights at their positions.
inline PackedBitplanes pack_bitplanes(const BitPlaneWeights& w, const SparseOutliers* outliers,
                                      const BitplanePackConfig& config) {
  using namespace detail::bitplane;
  w.validate();
  PackedBitplanes packed;
  const int k = w.planes;
  const Index rows = w.rows(), cols = w.cols(), g_size = w.group_size, groups = w.groups();
  Layout& l = packed.layout_;
  l.rows = rows;
  l.blocks = (rows + kBlockRows - 1) / kBlockRows;
  l.planes = k;
  l.groups = groups;
  l.group_pairs = (g_size + kPairCols - 1) / kPairCols;
  l.segments_per_group = (l.group_pairs + kMaxSegmentPairs - 1) / kMaxSegmentPairs;
  l.coefficients = config.coefficients;
  l.coeff_bytes = static_cast<std::size_t>((k + 1) * kBlockRows) * coefficient_size(config.coefficients);
  l.group_bytes = l.coeff_bytes + static_cast<std::size_t>(l.group_pairs * k * kPairBytes);
  l.block_bytes = static_cast<std::size_t>(groups) * l.group_bytes;
  packed.cols_ = cols;
  packed.group_size_ = g_size;
  packed.data_ = AlignedArray<std::uint8_t>(static_cast<std::size_t>(l.blocks) * l.block_bytes);

  // Packed column g * padded_group + i holds column order[g * group_size + i].
  const Index padded_group = l.group_pairs * kPairCols;
  const std::vector<std::int32_t> order = detail::group_contiguous_order(w.g_idx, g_size, cols);
  packed.gather_.assign(static_cast<std::size_t>(groups * padded_group), -1);
  std::vector<std::int32_t> position(static_cast<std::size_t>(cols));
  for (Index g = 0; g < groups; ++g)
    for (Index i = 0; i < g_size; ++i) {
      const std::int32_t col = order[static_cast<std::size_t>(g * g_size + i)];
      packed.gather_[static_cast<std::size_t>(g * padded_group + i)] = col;
      position[static_cast<std::size_t>(col)] = static_cast<std::int32_t>(g * padded_group + i);
    }
  packed.identity_gather_ = padded_group == g_size;
  for (Index j = 0; j < cols && packed.identity_gather_; ++j)
    packed.identity_gather_ = position[static_cast<std::size_t>(j)] == j;

  const std::size_t csize = coefficient_size(config.coefficients);
  for (Index block = 0; block < l.blocks; ++block)
    for (Index g = 0; g < groups; ++g) {
      std::uint8_t* group = packed.data_.data() + static_cast<std::size_t>(block) * l.block_bytes +
                            static_cast<std::size_t>(g) * l.group_bytes;
      for (Index r = 0; r < kBlockRows && block * kBlockRows + r < rows; ++r) {
        const Index row = block * kBlockRows + r;
        double bias = w.bias(g, row);
        for (int p = 0; p < k; ++p) {
          bias += 0.5 * w.coeff(g, p, row);
          const double c = stored_coefficient(w.coeff(g, p, row), config.coefficients, "coefficient", g, row);
          store_coefficient(group + csize * static_cast<std::size_t>(p * kBlockRows + coefficient_position(r)), c,
                            config.coefficients);
        }
        store_coefficient(group + csize * static_cast<std::size_t>(k * kBlockRows + coefficient_position(r)),
                          stored_coefficient(bias, config.coefficients, "bias", g, row), config.coefficients);
        for (Index i = 0; i < g_size; ++i) {
          const std::uint8_t code = w.codes(row, order[static_cast<std::size_t>(g * g_size + i)]);
          const Index pair = i / kPairCols, segment = pair / kMaxSegmentPairs;
          const Index pairs = l.segment_pairs(segment), in_segment = pair % kMaxSegmentPairs;
          const int shift = static_cast<int>(i % kPairCols);  // nibble (i % 8) / 4, bit i % 4
          std::uint8_t* seg = group + l.coeff_bytes +
                              static_cast<std::size_t>(segment * kMaxSegmentPairs * k * kPairBytes);
          for (int p = 0; p < k; ++p)
            seg[(p * pairs + in_segment) * kPairBytes + r] |=
                static_cast<std::uint8_t>(((code >> p) & 1u) << shift);
        }
      }
    }

  if (outliers) {
    outliers->validate();
    detail::require(outliers->rows == rows && outliers->cols == cols, "pack_bitplanes: outliers are ",
            outliers->rows, " x ", outliers->cols, ", the weights ", rows, " x ", cols);
    packed.outlier_rowptr_ = outliers->row_ptr;
    for (Index r = 0; r < rows; ++r)
      for (std::int32_t i = outliers->row_ptr[static_cast<std::size_t>(r)];
           i < outliers->row_ptr[static_cast<std::size_t>(r) + 1]; ++i) {
        const std::int32_t at = position[static_cast<std::size_t>(outliers->col[static_cast<std::size_t>(i)])];
        packed.outlier_position_.push_back(at);
        packed.outlier_corr_.push_back(static_cast<float>(
            static_cast<double>(outliers->values[static_cast<std::size_t>(i)]) - packed.dense_value(r, at)));
      }
  }
  return packed;
}

inline PackedBitplanes pack_bitplanes(const BitPlaneWeights& w, const BitplanePackConfig& config = {}) {
  return pack_bitplanes(w, nullptr, config);
}
inline PackedBitplanes pack_bitplanes(const BitPlaneWeights& w, const SparseOutliers& outliers,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(w, &outliers, config);
}
// Any uniform result (absmax, RTN, GPTQ, AWQ; act-order included), losslessly via to_bitplanes.
inline PackedBitplanes pack_bitplanes(const UniformWeights& w, const BitplanePackConfig& config = {}) {
  return pack_bitplanes(to_bitplanes(w), nullptr, config);
}
inline PackedBitplanes pack_bitplanes(const UniformWeights& w, const SparseOutliers& outliers,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(to_bitplanes(w), &outliers, config);
}

inline double PackedBitplanes::dense_value(Index row, Index packed_col) const {
  using namespace detail::bitplane;
  const Layout l = layout();
  const Index padded_group = l.group_pairs * kPairCols;
  const Index g = packed_col / padded_group, i = packed_col % padded_group;
  const Index pair = i / kPairCols, segment = pair / kMaxSegmentPairs, r = row % kBlockRows;
  const Index pairs = l.segment_pairs(segment), in_segment = pair % kMaxSegmentPairs;
  const std::uint8_t* group = l.data + static_cast<std::size_t>(row / kBlockRows) * l.block_bytes +
                              static_cast<std::size_t>(g) * l.group_bytes;
  const std::uint8_t* seg = group + l.coeff_bytes +
                            static_cast<std::size_t>(segment * kMaxSegmentPairs * l.planes * kPairBytes);
  double value = detail::bitplane_scalar::coefficient(l, group, l.planes, r);
  for (int p = 0; p < l.planes; ++p) {
    const int bit = (seg[(p * pairs + in_segment) * kPairBytes + r] >> (i % kPairCols)) & 1;
    value += (bit - 0.5) * detail::bitplane_scalar::coefficient(l, group, p, r);
  }
  return value;
}

inline MatrixF PackedBitplanes::dequantize() const {
  MatrixF w(rows(), cols());
  for (std::size_t j = 0; j < gather_.size(); ++j) {
    if (gather_[j] < 0) continue;
    for (Index row = 0; row < rows(); ++row) w(row, gather_[j]) = static_cast<float>(dense_value(row, static_cast<Index>(j)));
  }
  for (Index row = 0; row < rows() && !outlier_rowptr_.empty(); ++row)
    for (std::int32_t i = outlier_rowptr_[static_cast<std::size_t>(row)];
         i < outlier_rowptr_[static_cast<std::size_t>(row) + 1]; ++i) {
      const auto at = static_cast<std::size_t>(outlier_position_[static_cast<std::size_t>(i)]);
      w(row, gather_[at]) = static_cast<float>(dense_value(row, static_cast<Index>(at)) +
                                               outlier_corr_[static_cast<std::size_t>(i)]);
    }
  return w;
}

// Scratch for one call: the gathered activations, the tables, their scales
// and the group sums, for up to max_tokens tokens. Made once per weight
// shape (it fits every PackedBitplanes with the same column layout).
class BitplaneContext {
 public:
  BitplaneContext() = default;
  BitplaneContext(const PackedBitplanes& w, Index max_tokens = 1, TableType tables = TableType::int8)
      : type_(tables), max_tokens_(max_tokens) {
    using namespace detail::bitplane;
    detail::require(max_tokens >= 1, "BitplaneContext: max_tokens must be >= 1, got ", max_tokens);
    const Layout l = w.layout();
    padded_cols_ = l.padded_cols();
    chunks_ = l.chunks();
    segments_ = l.segments();
    groups_ = l.groups;
    const auto n = static_cast<std::size_t>(max_tokens);
    x_ = AlignedArray<float>(n * static_cast<std::size_t>(padded_cols_));
    if (tables == TableType::int8) {
      q_ = AlignedArray<std::int8_t>(n * static_cast<std::size_t>(chunks_ * kTableEntries));
      entries_ = AlignedArray<float>(static_cast<std::size_t>(kMaxSegmentChunks * kTableEntries));
    } else {
      f_ = AlignedArray<float>(n * static_cast<std::size_t>(chunks_ * kTableEntries));
    }
    scale_ = AlignedArray<float>(n * static_cast<std::size_t>(segments_));
    xsum_ = AlignedArray<float>(n * static_cast<std::size_t>(groups_));
  }

  TableType table_type() const { return type_; }
  Index max_tokens() const { return max_tokens_; }
  Index tokens() const { return tokens_; }  // loaded by the last bitplane_load
  bool fits(const PackedBitplanes& w) const {
    const detail::bitplane::Layout l = w.layout();
    return max_tokens_ > 0 && l.padded_cols() == padded_cols_ && l.segments() == segments_ &&
           l.groups == groups_;
  }

  detail::bitplane::Tables tables() const {
    detail::bitplane::Tables t;
    t.type = type_;
    t.tokens = tokens_;
    t.chunks = chunks_;
    t.q = q_.data();
    t.f = f_.data();
    t.scale = scale_.data();
    t.xsum = xsum_.data();
    t.x = x_.data();
    t.padded_cols = padded_cols_;
    return t;
  }

  // For the shared loading code.
  float* x() { return x_.data(); }
  std::int8_t* q() { return q_.data(); }
  float* f() { return f_.data(); }
  float* entries() { return entries_.data(); }
  float* scale() { return scale_.data(); }
  float* xsum() { return xsum_.data(); }
  void set_tokens(Index tokens) { tokens_ = tokens; }

 private:
  TableType type_ = TableType::int8;
  Index max_tokens_ = 0;
  Index tokens_ = 0;
  Index padded_cols_ = 0, chunks_ = 0, segments_ = 0, groups_ = 0;
  detail::bitplane::AlignedArray<float> x_;
  detail::bitplane::AlignedArray<std::int8_t> q_;
  detail::bitplane::AlignedArray<float> f_;
  detail::bitplane::AlignedArray<float> entries_;
  detail::bitplane::AlignedArray<float> scale_;
  detail::bitplane::AlignedArray<float> xsum_;
};

namespace detail::bitplane {

// Gathers x, builds each segment's tables with the ISA's primitives, and the
// group sums (in one fixed order, shared by every ISA).
template <class Kernels>
void load(const PackedBitplanes& w, const float* x, Index tokens, Index ldx, BitplaneContext& ctx) noexcept {
  const Layout l = w.layout();
  const Index padded = l.padded_cols(), chunks = l.chunks(), cols = w.cols();
  for (Index t = 0; t < tokens; ++t) {
    float* xg = ctx.x() + t * padded;
    const float* xt = x + t * ldx;
    if (w.identity_gather()) {
      std::memcpy(xg, xt, sizeof(float) * static_cast<std::size_t>(cols));
    } else {
      for (Index j = 0; j < padded; ++j) {
        const std::int32_t col = w.gather()[static_cast<std::size_t>(j)];
        xg[j] = col < 0 ? 0.0f : xt[col];
      }
    }
    Index chunk = 0;
    for (Index g = 0; g < l.groups; ++g) {
      float sum = 0.0f;
      for (Index c = 0; c < 2 * l.group_pairs; ++c) {
        const float* v = xg + kChunkCols * (chunk + c);
        sum += ((v[0] + v[1]) + v[2]) + v[3];
      }
      ctx.xsum()[t * l.groups + g] = sum;
      for (Index s = 0; s < l.segments_per_group; ++s) {
        const Index n = 2 * l.segment_pairs(s);
        float& scale = ctx.scale()[t * l.segments() + g * l.segments_per_group + s];
        const float* xs = xg + kChunkCols * chunk;
        const std::size_t at = static_cast<std::size_t>((t * chunks + chunk) * kTableEntries);
        if (ctx.table_type() == TableType::f32) {
          Kernels::table_entries(xs, n, ctx.f() + at);
          scale = 1.0f;
        } else {
          const float largest = Kernels::table_entries(xs, n, ctx.entries());
          scale = largest / 127.0f;
          Kernels::quantize_tables(ctx.entries(), n, largest > 0.0f ? 127.0f / largest : 0.0f, ctx.q() + at);
        }
        chunk += n;
      }
    }
  }
  ctx.set_tokens(tokens);
}

template <class Kernels>
void multiply(const PackedBitplanes& w, const BitplaneContext& ctx, Index row_begin, Index row_end,
              float* y, Index ldy) noexcept {
  const Tables tables = ctx.tables();
  Kernels::multiply_blocks(w.layout(), tables, row_begin, row_end, y, ldy);
  const std::vector<std::int32_t>& rowptr = w.outlier_rowptr();
  if (rowptr.empty()) return;
  for (Index t = 0; t < tables.tokens; ++t) {
    const float* xg = tables.x + t * tables.padded_cols;
    for (Index r = row_begin; r < row_end; ++r) {
      float acc = y[t * ldy + r];
      for (std::int32_t i = rowptr[static_cast<std::size_t>(r)]; i < rowptr[static_cast<std::size_t>(r) + 1]; ++i)
        acc = fmadd(w.outlier_correction()[static_cast<std::size_t>(i)],
                    xg[w.outlier_position()[static_cast<std::size_t>(i)]], acc);
      y[t * ldy + r] = acc;
    }
  }
}

struct ScalarKernels {
  static float table_entries(const float* x, Index chunks, float* out) noexcept {
    return bitplane_scalar::table_entries(x, chunks, out);
  }
  static void quantize_tables(const float* e, Index chunks, float inv, std::int8_t* out) noexcept {
    bitplane_scalar::quantize_tables(e, chunks, inv, out);
  }
  static void multiply_blocks(const Layout& l, const Tables& t, Index r0, Index r1, float* y, Index ldy) noexcept {
    bitplane_scalar::multiply_blocks(l, t, r0, r1, y, ldy);
  }
};

#if defined(LOWBIT_BITPLANE_AVX512)
using NativeKernels = bitplane_avx512::Kernels;
#elif defined(LOWBIT_BITPLANE_AVX2)
using NativeKernels = bitplane_avx2::Kernels;
#elif defined(LOWBIT_BITPLANE_NEON)
using NativeKernels = bitplane_neon::Kernels;
#else
using NativeKernels = ScalarKernels;
#endif

}  // namespace detail::bitplane

// The instruction set bitplane_load / bitplane_multiply use in this build.
inline const char* bitplane_kernel_isa() {
#if defined(LOWBIT_BITPLANE_AVX512)
  return "avx512";
#elif defined(LOWBIT_BITPLANE_AVX2)
  return "avx2";
#elif defined(LOWBIT_BITPLANE_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

// Gathers `tokens` activation rows (x[t * ldx + j], j < cols) and builds their
// tables in ctx. Preconditions (checked by bitplane_gemm, not here):
// ctx.fits(w), 1 <= tokens <= ctx.max_tokens(), ldx >= w.cols(), x finite.
inline void bitplane_load(const PackedBitplanes& w, const float* x, Index tokens, Index ldx,
                          BitplaneContext& ctx) noexcept {
  detail::bitplane::load<detail::bitplane::NativeKernels>(w, x, tokens, ldx, ctx);
}
inline void bitplane_load_scalar(const PackedBitplanes& w, const float* x, Index tokens, Index ldx,
                                 BitplaneContext& ctx) noexcept {
  detail::bitplane::load<detail::bitplane::ScalarKernels>(w, x, tokens, ldx, ctx);
}

// y[t * ldy + r] = sum_j W[r, j] x_t[j] for the loaded tokens and rows
// row_begin <= r < row_end (0 <= row_begin <= row_end <= w.rows(), ldy >= w.rows()).
inline void bitplane_multiply(const PackedBitplanes& w, const BitplaneContext& ctx, Index row_begin,
                              Index row_end, float* y, Index ldy) noexcept {
  detail::bitplane::multiply<detail::bitplane::NativeKernels>(w, ctx, row_begin, row_end, y, ldy);
}
inline void bitplane_multiply_scalar(const PackedBitplanes& w, const BitplaneContext& ctx, Index row_begin,
                                     Index row_end, float* y, Index ldy) noexcept {
  detail::bitplane::multiply<detail::bitplane::ScalarKernels>(w, ctx, row_begin, row_end, y, ldy);
}

// All rows, split over OpenMP threads when available (whole blocks of 64
// rows per thread; the result does not depend on the thread count).
inline void bitplane_multiply_parallel(const PackedBitplanes& w, const BitplaneContext& ctx, float* y,
                                       Index ldy) noexcept {
  const Index blocks = w.layout().blocks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (blocks >= 8)
#endif
  for (Index b = 0; b < blocks; ++b)
    bitplane_multiply(w, ctx, b * detail::bitplane::kBlockRows,
                      std::min(w.rows(), (b + 1) * detail::bitplane::kBlockRows), y, ldy);
}

// y (tokens x rows) = x (tokens x cols) W^T, checked; tokens beyond
// ctx.max_tokens() are processed max_tokens at a time.
inline void bitplane_gemm(const PackedBitplanes& w, const MatrixFRef& x, Eigen::Ref<MatrixF> y,
                          BitplaneContext& ctx) {
  detail::require(x.cols() == w.cols(), "bitplane_gemm: x has ", x.cols(), " columns, the weights ",
                  w.cols(), " (in_features)");
  detail::require_shape(y, x.rows(), w.rows(), "bitplane_gemm: y");
  detail::require(ctx.fits(w), "bitplane_gemm: the context was made for weights of another shape");
  detail::require_finite(x, "bitplane_gemm: x");
  for (Index t0 = 0; t0 < x.rows(); t0 += ctx.max_tokens()) {
    const Index n = std::min(ctx.max_tokens(), x.rows() - t0);
    bitplane_load(w, x.data() + t0 * x.outerStride(), n, x.outerStride(), ctx);
    bitplane_multiply_parallel(w, ctx, y.data() + t0 * y.outerStride(), y.outerStride());
  }
}

inline MatrixF bitplane_gemm(const PackedBitplanes& w, const MatrixFRef& x,
                             TableType tables = TableType::int8) {
  BitplaneContext ctx(w, std::min<Index>(std::max<Index>(x.rows(), 1), 16), tables);
  MatrixF y(x.rows(), w.rows());
  bitplane_gemm(w, x, y, ctx);
  return y;
}

// Per row, a bound on |y - W x| for the loaded token (see the top of this
// file): int8 table rounding, f16 coefficient rounding, and float rounding
// of the sums to first order (n u sum|terms|, u = 2^-24, n the length of the
// longest chain of roundings).
inline VectorF bitplane_error_bound(const PackedBitplanes& w, const BitplaneContext& ctx, Index token) {
  using namespace detail::bitplane;
  using detail::bitplane_scalar::coefficient;
  detail::require(ctx.fits(w) && token >= 0 && token < ctx.tokens(), "bitplane_error_bound: token ",
                  token, " is not loaded in a context for these weights");
  const Layout l = w.layout();
  const Tables t = ctx.tables();
  const float* x = t.x + token * t.padded_cols;
  const Index padded_group = l.group_pairs * kPairCols;
  const double u = std::ldexp(1.0, -24);
  const bool f16 = l.coefficients == CoefficientStorage::f16;
  std::vector<double> abs_sum(static_cast<std::size_t>(l.groups), 0.0);
  double all_abs = 0.0;
  for (Index g = 0; g < l.groups; ++g) {
    for (Index j = 0; j < padded_group; ++j) abs_sum[static_cast<std::size_t>(g)] += std::fabs(x[g * padded_group + j]);
    all_abs += abs_sum[static_cast<std::size_t>(g)];
  }
  VectorF bound(w.rows());
  for (Index row = 0; row < w.rows(); ++row) {
    const Index block = row / kBlockRows, r = row % kBlockRows;
    double table = 0.0, magnitude = 0.0;
    for (Index g = 0; g < l.groups; ++g) {
      const std::uint8_t* group = l.data + static_cast<std::size_t>(block) * l.block_bytes +
                                  static_cast<std::size_t>(g) * l.group_bytes;
      double sum_c = 0.0;
      for (int p = 0; p < l.planes; ++p) sum_c += std::fabs(coefficient(l, group, p, r));
      if (t.type == TableType::int8)
        for (Index s = 0; s < l.segments_per_group; ++s)
          table += t.scale[token * l.segments() + g * l.segments_per_group + s] * (0.5 + 1e-4) *
                   static_cast<double>(2 * l.segment_pairs(s)) * sum_c;
      magnitude += (0.5 * sum_c + std::fabs(coefficient(l, group, l.planes, r))) * abs_sum[static_cast<std::size_t>(g)];
    }
    Index chain = l.groups * (l.segments_per_group * (l.planes + 1) + 1) + padded_group + 2 * kMaxSegmentChunks + 8;
    if (!w.outlier_rowptr().empty())
      for (std::int32_t i = w.outlier_rowptr()[static_cast<std::size_t>(row)];
           i < w.outlier_rowptr()[static_cast<std::size_t>(row) + 1]; ++i, ++chain)
        magnitude += std::fabs(w.outlier_correction()[static_cast<std::size_t>(i)] *
                               x[w.outlier_position()[static_cast<std::size_t>(i)]]);
    const double coeffs = f16 ? std::ldexp(1.001, -11) * magnitude + std::ldexp(1.0, -25) * (0.5 * l.planes + 1) * all_abs
                              : u * magnitude;
    bound(row) = static_cast<float>((table + coeffs + 1.01 * static_cast<double>(chain) * u * magnitude) * (1 + 1e-6));
  }
  return bound;
}

}  // namespace lowbit
