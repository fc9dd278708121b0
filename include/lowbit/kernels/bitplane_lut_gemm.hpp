// The bit-plane lookup-table matmul: y = W x for W in bit-plane form
// (BitPlaneWeights, hence every uniform grid through to_bitplanes), plus an
// optional sparse full-precision part (SparseOutliers, TACQ).
//
// How an engine uses it:
//
//   // once, at load time (allocates, validates, throws lowbit::Error):
//   lowbit::PackedBitplanes w = lowbit::pack_bitplanes(planes);  // or (planes, outliers)
//   lowbit::BitplaneContext ctx(w, /*max_tokens=*/16);           // table scratch, reusable
//   // every forward pass (noexcept, no allocation):
//   lowbit::bitplane_load(w, x, tokens, ldx, ctx);  // gathers x, builds the tables (one thread)
//   lowbit::bitplane_multiply(w, ctx, y, ldy, row_begin, row_end);  // any rows, any thread
//
// bitplane_multiply may run concurrently on disjoint row ranges with the same
// context. Each row's result depends only on that row, so the output is bit
// for bit the same for every split and thread count. bitplane_gemm() is the
// checked, Eigen-typed convenience (OpenMP over rows when available).
//
// For every chunk of 4 activations a table holds the 16 centred partial sums
// (detail/bitplane_layout.hpp); every packed plane nibble selects an entry,
// entries are summed per segment (at most 128 columns of one group) and
// scaled by the plane coefficient. TableType::int8 quantizes each segment's
// tables to int8 with one scale and sums them in int16 (vpshufb / vqtbl1q),
// within bitplane_error_bound() of the exact product; TableType::f32 sums
// the float entries. For large batches with float tables the call instead
// dequantizes tiles of weights to float and multiplies every token with them
// (BitplanePath, detail::bitplane::use_dense: chosen by the number of tokens
// loaded, as measured faster).
//
// Instruction sets (detail/isa.hpp): the unqualified entry points use the
// widest kernels the translation unit is compiled for; lowbit::scalar,
// lowbit::avx2, lowbit::avx512 and lowbit::neon name each compiled variant's
// BitplaneKernels (lowbit::scalar::bitplane_kernels is the reference).
#pragma once
#define LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/detail/grouping.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/sparse_outliers.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_weights.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit {

// How the kernel turns activations into lookup tables.
//   int8: each table quantized to int8 with one scale per segment (fast path);
//   f32:  exact float tables (the reference path).
enum class TableType { int8, f32 };

// Which path a call takes: by_batch picks the faster one for the number of
// tokens loaded (detail::bitplane::use_dense); tables and dense force one
// (for measuring and testing both).
enum class BitplanePath { by_batch, tables, dense };

// How packed coefficients are stored: f16 halves the bytes streamed per
// group (checkpoints store them in 16 bits too); f32 keeps them exactly.
enum class CoefficientStorage { f16, f32 };

struct BitplanePackConfig {
  CoefficientStorage coefficients = CoefficientStorage::f16;
};

}  // namespace lowbit

#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/bitplane_scalar.hpp"
#include "lowbit/kernels/detail/isa.hpp"
#if defined(LOWBIT_ISA_AVX2)
#include "lowbit/kernels/detail/bitplane_avx2.hpp"
#endif
#if defined(LOWBIT_ISA_AVX512)
#include "lowbit/kernels/detail/bitplane_avx512.hpp"
#endif
#if defined(LOWBIT_ISA_NEON)
#include "lowbit/kernels/detail/bitplane_neon.hpp"
#endif

namespace lowbit {

// A weight matrix in the kernel's own layout. Built by pack_bitplanes(); the
// same type in every translation unit, whatever instruction set it targets.
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
  // packed column -> column, or -1 for padding
  const std::vector<std::int32_t>& gather() const { return gather_; }
  bool identity_gather() const { return identity_gather_; }
  const std::vector<std::int32_t>& outlier_rowptr() const { return outlier_rowptr_; }
  // packed column of each outlier
  const std::vector<std::int32_t>& outlier_position() const { return outlier_position_; }
  const std::vector<float>& outlier_correction() const { return outlier_corr_; }

 private:
  friend PackedBitplanes pack_bitplanes(const BitPlaneWeights&, const SparseOutliers*,
                                        const BitplanePackConfig&);
  std::vector<std::int32_t> gather_columns(const std::vector<std::int32_t>& order);
  void pack_outliers(const SparseOutliers& outliers, const std::vector<std::int32_t>& position);
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

// The layout of packed weights of w's shape (without data).
inline Layout plan_layout(const BitPlaneWeights& w, CoefficientStorage coefficients) {
  Layout l;
  l.rows = w.rows();
  l.blocks = (l.rows + kBlockRows - 1) / kBlockRows;
  l.planes = w.planes;
  l.groups = w.groups();
  l.group_pairs = (w.group_size + kPairCols - 1) / kPairCols;
  l.segments_per_group = (l.group_pairs + kMaxSegmentPairs - 1) / kMaxSegmentPairs;
  l.coefficients = coefficients;
  l.coeff_bytes =
      static_cast<std::size_t>((l.planes + 1) * kBlockRows) * coefficient_size(coefficients);
  l.group_bytes = l.coeff_bytes + static_cast<std::size_t>(l.group_pairs * l.planes * kPairBytes);
  l.block_bytes = static_cast<std::size_t>(l.groups) * l.group_bytes;
  return l;
}

// Stores c rounded to the storage type at slot `slot` of row `row`;
// refuses values that overflow fp16.
inline void store_coefficient(const Layout& l, std::uint8_t* group, int slot, Index row, double c,
                              const char* what, Index g) {
  const std::size_t at =
      static_cast<std::size_t>(slot * kBlockRows + coefficient_position(row % kBlockRows));
  const float f = static_cast<float>(c);
  if (l.coefficients == CoefficientStorage::f32) {
    std::memcpy(group + sizeof(float) * at, &f, sizeof f);
    return;
  }
  const std::uint16_t h = float_to_half(f);
  require(std::isfinite(half_to_float(h)), "pack_bitplanes: ", what, " of group ", g, ", row ", row,
          " = ", c,
          " overflows fp16; pack with BitplanePackConfig::coefficients = CoefficientStorage::f32");
  std::memcpy(group + sizeof(std::uint16_t) * at, &h, sizeof h);
}

// One row's coefficients in group g, and the bias moved by the centred
// tables: bias' = bias + 1/2 sum_p c_p (bitplane_layout.hpp).
inline void pack_coefficients(const BitPlaneWeights& w, const Layout& l, Index row, Index g,
                              std::uint8_t* group) {
  double bias = w.bias(g, row);
  for (int p = 0; p < l.planes; ++p) {
    bias += 0.5 * w.coeff(g, p, row);
    store_coefficient(l, group, p, row, w.coeff(g, p, row), "coefficient", g);
  }
  store_coefficient(l, group, l.planes, row, bias, "bias", g);
}

// One row's plane bits in a group whose columns, in packed order, are columns[0, group_size).
inline void pack_plane_bits(const BitPlaneWeights& w, const Layout& l, const std::int32_t* columns,
                            Index row, std::uint8_t* group) {
  for (Index i = 0; i < w.group_size; ++i) {
    const std::uint8_t code = w.codes(row, columns[i]);
    for (int p = 0; p < l.planes; ++p)
      group[l.plane_byte(i, p, row % kBlockRows)] |=
          static_cast<std::uint8_t>(((code >> p) & 1u) << (i % kPairCols));
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
  packed.layout_ = plan_layout(w, config.coefficients);
  packed.cols_ = w.cols();
  packed.group_size_ = w.group_size;
  const Layout& l = packed.layout_;
  packed.data_ = AlignedArray<std::uint8_t>(static_cast<std::size_t>(l.blocks) * l.block_bytes);
  const std::vector<std::int32_t> order =
      detail::group_contiguous_order(w.g_idx, w.group_size, w.cols());
  const std::vector<std::int32_t> position = packed.gather_columns(order);
  for (Index row = 0; row < w.rows(); ++row)
    for (Index g = 0; g < l.groups; ++g) {
      std::uint8_t* group = packed.data_.data() + l.group_offset(row / kBlockRows, g);
      pack_coefficients(w, l, row, g, group);
      pack_plane_bits(w, l, order.data() + g * w.group_size, row, group);
    }
  if (outliers) packed.pack_outliers(*outliers, position);
  return packed;
}

inline PackedBitplanes pack_bitplanes(const BitPlaneWeights& w,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(w, nullptr, config);
}
inline PackedBitplanes pack_bitplanes(const BitPlaneWeights& w, const SparseOutliers& outliers,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(w, &outliers, config);
}
// Any uniform result (absmax, RTN, GPTQ, AWQ; act-order included), losslessly via to_bitplanes.
inline PackedBitplanes pack_bitplanes(const UniformWeights& w,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(to_bitplanes(w), nullptr, config);
}
inline PackedBitplanes pack_bitplanes(const UniformWeights& w, const SparseOutliers& outliers,
                                      const BitplanePackConfig& config = {}) {
  return pack_bitplanes(to_bitplanes(w), &outliers, config);
}

// Packed column g * padded_group + i holds column order[g * group_size + i];
// returns each column's packed column.
inline std::vector<std::int32_t> PackedBitplanes::gather_columns(
    const std::vector<std::int32_t>& order) {
  const Index padded_group = layout_.group_pairs * detail::bitplane::kPairCols;
  gather_.assign(static_cast<std::size_t>(layout_.groups * padded_group), -1);
  std::vector<std::int32_t> position(static_cast<std::size_t>(cols_));
  for (Index g = 0; g < layout_.groups; ++g)
    for (Index i = 0; i < group_size_; ++i) {
      const std::int32_t col = order[static_cast<std::size_t>(g * group_size_ + i)];
      gather_[static_cast<std::size_t>(g * padded_group + i)] = col;
      position[static_cast<std::size_t>(col)] = static_cast<std::int32_t>(g * padded_group + i);
    }
  identity_gather_ = padded_group == group_size_;
  for (Index j = 0; j < cols_ && identity_gather_; ++j)
    identity_gather_ = position[static_cast<std::size_t>(j)] == j;
  return position;
}

// Each outlier is stored as its packed column and the correction
// value - dense value, which the kernel adds times x after the dense part.
inline void PackedBitplanes::pack_outliers(const SparseOutliers& outliers,
                                           const std::vector<std::int32_t>& position) {
  outliers.validate();
  detail::require(outliers.rows == rows() && outliers.cols == cols_,
                  "pack_bitplanes: outliers are ", outliers.rows, " x ", outliers.cols,
                  ", the weights ", rows(), " x ", cols_);
  outlier_rowptr_ = outliers.row_ptr;
  for (Index r = 0; r < rows(); ++r)
    for (std::int32_t i = outliers.row_ptr[static_cast<std::size_t>(r)];
         i < outliers.row_ptr[static_cast<std::size_t>(r) + 1]; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const std::int32_t at = position[static_cast<std::size_t>(outliers.col[k])];
      outlier_position_.push_back(at);
      outlier_corr_.push_back(
          static_cast<float>(static_cast<double>(outliers.values[k]) - dense_value(r, at)));
    }
}

inline double PackedBitplanes::dense_value(Index row, Index packed_col) const {
  using namespace detail::bitplane;
  const Layout l = layout();
  const Index padded_group = l.group_pairs * kPairCols;
  const Index g = packed_col / padded_group, i = packed_col % padded_group, r = row % kBlockRows;
  const std::uint8_t* group = l.group_data(row / kBlockRows, g);
  double value = coefficient(l, group, l.planes, r);
  for (int p = 0; p < l.planes; ++p) {
    const int bit = (group[l.plane_byte(i, p, r)] >> (i % kPairCols)) & 1;
    value += (bit - 0.5) * coefficient(l, group, p, r);
  }
  return value;
}

inline MatrixF PackedBitplanes::dequantize() const {
  MatrixF w(rows(), cols());
  for (std::size_t j = 0; j < gather_.size(); ++j) {
    if (gather_[j] < 0) continue;
    for (Index row = 0; row < rows(); ++row)
      w(row, gather_[j]) = static_cast<float>(dense_value(row, static_cast<Index>(j)));
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

// Scratch for one call: the gathered activations for up to max_tokens
// tokens; the tables, their scales and the group sums for the batches that
// take the table path (table_tokens(): none when the path is forced dense,
// below the switch under by_batch with float tables). Made once per weight
// shape (it fits every PackedBitplanes with the same column layout whose
// planes need no more tables); the same type in every translation unit.
class BitplaneContext {
 public:
  BitplaneContext() = default;
  BitplaneContext(const PackedBitplanes& w, Index max_tokens = 1,
                  TableType tables = TableType::int8, BitplanePath path = BitplanePath::by_batch)
      : type_(tables), path_(path), max_tokens_(max_tokens) {
    using namespace detail::bitplane;
    detail::require(max_tokens >= 1, "BitplaneContext: max_tokens must be >= 1, got ", max_tokens);
    const Layout l = w.layout();
    padded_cols_ = l.padded_cols();
    chunks_ = l.chunks();
    segments_ = l.segments();
    groups_ = l.groups;
    x_ = AlignedArray<float>(static_cast<std::size_t>(max_tokens * padded_cols_));
    table_tokens_ = detail::bitplane::table_tokens(tables, path, l.planes, max_tokens);
    if (table_tokens_ == 0) return;
    const auto n = static_cast<std::size_t>(table_tokens_);
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
  BitplanePath path() const { return path_; }
  Index max_tokens() const { return max_tokens_; }
  Index table_tokens() const { return table_tokens_; }  // tokens whose tables it holds
  Index tokens() const { return tokens_; }              // loaded by the last bitplane_load
  bool fits(const PackedBitplanes& w) const {
    const detail::bitplane::Layout l = w.layout();
    return max_tokens_ > 0 && l.padded_cols() == padded_cols_ && l.segments() == segments_ &&
           l.groups == groups_ &&
           detail::bitplane::table_tokens(type_, path_, l.planes, max_tokens_) <= table_tokens_;
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
    t.dense = dense_;
    return t;
  }

  // For the shared loading code.
  float* x() { return x_.data(); }
  std::int8_t* q() { return q_.data(); }
  float* f() { return f_.data(); }
  float* entries() { return entries_.data(); }
  float* scale() { return scale_.data(); }
  float* xsum() { return xsum_.data(); }
  void set_tokens(Index tokens, bool dense) {
    tokens_ = tokens;
    dense_ = dense;
  }

 private:
  TableType type_ = TableType::int8;
  BitplanePath path_ = BitplanePath::by_batch;
  Index max_tokens_ = 0;
  Index table_tokens_ = 0;
  Index tokens_ = 0;
  bool dense_ = false;
  Index padded_cols_ = 0, chunks_ = 0, segments_ = 0, groups_ = 0;
  detail::bitplane::AlignedArray<float> x_;
  detail::bitplane::AlignedArray<std::int8_t> q_;
  detail::bitplane::AlignedArray<float> f_;
  detail::bitplane::AlignedArray<float> entries_;
  detail::bitplane::AlignedArray<float> scale_;
  detail::bitplane::AlignedArray<float> xsum_;
};

// One instruction set's kernels, for choosing at run time: a translation
// unit compiled for AVX2 hands out its lowbit::bitplane_kernels, the
// engine's baseline code calls it after checking the CPU. Preconditions are
// those of bitplane_load and bitplane_multiply below.
struct BitplaneKernels {
  const char* isa;  // "scalar", "avx2", "avx512" or "neon"
  void (*load)(const PackedBitplanes& w, const float* x, Index tokens, Index ldx,
               BitplaneContext& ctx) noexcept;
  void (*multiply)(const PackedBitplanes& w, const BitplaneContext& ctx, float* y, Index ldy,
                   Index row_begin, Index row_end) noexcept;
};

namespace detail::bitplane {

// The factor that maps a segment's table entries onto -127..127. 127 / largest
// overflows float when the entries are subnormal (largest < 127 / FLT_MAX):
// such entries are first multiplied by 2^100, which is exact for them, so the
// codes are round(e * 127 / largest) at every magnitude.
inline float int8_inverse_scale(float* entries, Index chunks, float largest) noexcept {
  if (largest == 0.0f) return 0.0f;
  const float tiny = std::ldexp(1.0f, -100);
  if (largest >= tiny) return 127.0f / largest;
  const float lift = 1.0f / tiny;
  for (Index i = 0; i < kTableEntries * chunks; ++i) entries[i] *= lift;
  return 127.0f / (largest * lift);
}

// The generic driver of every kernel set. Isa (detail/bitplane_<family>.hpp)
// provides `name`, and, noexcept:
//   float table_entries(x, chunks, out)   the 16 centred entries per chunk; returns max |entry|
//   void quantize_tables(entries, chunks, inverse_scale, out)   round half to even to int8
//   void multiply_blocks(layout, tables, y, ldy, row_begin, row_end)   the dense part
//   the large-batch path's primitives (bitplane_layout.hpp, multiply_dense)
// (SIMD kernel sets implement multiply_blocks with the shared block loop,
// detail::bitplane::multiply_blocks in bitplane_layout.hpp).
//
// load gathers x, builds each segment's tables with the ISA's primitives, and
// the group sums (in one fixed order, shared by every ISA); the large-batch
// path needs x alone.
template <class Isa>
void load(const PackedBitplanes& w, const float* x, Index tokens, Index ldx,
          BitplaneContext& ctx) noexcept {
  const Layout l = w.layout();
  // The same choice in every ISA, so every build gives the same bits.
  const bool dense =
      ctx.path() == BitplanePath::dense ||
      (ctx.path() == BitplanePath::by_batch && use_dense(ctx.table_type(), w.planes(), tokens));
  for (Index t = 0; t < tokens; ++t) {
    float* xg = ctx.x() + t * l.padded_cols();  // x in packed column order, zero padding
    if (w.identity_gather())
      std::memcpy(xg, x + t * ldx, sizeof(float) * static_cast<std::size_t>(w.cols()));
    else
      for (std::size_t j = 0; j < w.gather().size(); ++j)
        xg[j] = w.gather()[j] < 0 ? 0.0f : x[t * ldx + w.gather()[j]];
    if (dense) continue;
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
        const auto at = static_cast<std::size_t>((t * l.chunks() + chunk) * kTableEntries);
        if (ctx.table_type() == TableType::f32) {
          Isa::table_entries(xs, n, ctx.f() + at);
          scale = 1.0f;
        } else {
          const float largest = Isa::table_entries(xs, n, ctx.entries());
          scale = largest / 127.0f;
          Isa::quantize_tables(ctx.entries(), n, int8_inverse_scale(ctx.entries(), n, largest),
                               ctx.q() + at);
        }
        chunk += n;
      }
    }
  }
  ctx.set_tokens(tokens, dense);
}

// The dense part by the ISA's block kernels (or the large-batch path), then
// the sparse outliers.
template <class Isa>
void multiply(const PackedBitplanes& w, const BitplaneContext& ctx, float* y, Index ldy,
              Index row_begin, Index row_end) noexcept {
  const Tables tables = ctx.tables();
  if (tables.dense)
    multiply_dense<Isa>(w.layout(), tables, y, ldy, row_begin, row_end);
  else
    Isa::multiply_blocks(w.layout(), tables, y, ldy, row_begin, row_end);
  const std::vector<std::int32_t>& rowptr = w.outlier_rowptr();
  if (rowptr.empty()) return;
  for (Index t = 0; t < tables.tokens; ++t) {
    const float* xg = tables.x + t * tables.padded_cols;
    for (Index r = row_begin; r < row_end; ++r) {
      float acc = y[t * ldy + r];
      for (auto i = static_cast<std::size_t>(rowptr[static_cast<std::size_t>(r)]);
           i < static_cast<std::size_t>(rowptr[static_cast<std::size_t>(r) + 1]); ++i)
        acc = std::fma(w.outlier_correction()[i], xg[w.outlier_position()[i]], acc);
      y[t * ldy + r] = acc;
    }
  }
}

template <class Isa>
constexpr BitplaneKernels kernels() {
  return {Isa::name, &load<Isa>, &multiply<Isa>};
}

// All rows, split over OpenMP threads when available (whole blocks of 64
// rows per thread; the result does not depend on the thread count).
inline void multiply_parallel(const BitplaneKernels& kernels, const PackedBitplanes& w,
                              const BitplaneContext& ctx, float* y, Index ldy) noexcept {
  const Index blocks = w.layout().blocks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (blocks >= 8)
#endif
  for (Index b = 0; b < blocks; ++b)
    kernels.multiply(w, ctx, y, ldy, b * kBlockRows, std::min(w.rows(), (b + 1) * kBlockRows));
}

}  // namespace detail::bitplane

// y (tokens x rows) = x (tokens x cols) W^T with the given kernels, checked;
// tokens beyond ctx.max_tokens() are processed max_tokens at a time.
inline void bitplane_gemm(const BitplaneKernels& kernels, const PackedBitplanes& w,
                          const MatrixFRef& x, Eigen::Ref<MatrixF> y, BitplaneContext& ctx) {
  detail::require(x.cols() == w.cols(), "bitplane_gemm: x has ", x.cols(), " columns, the weights ",
                  w.cols(), " (in_features)");
  detail::require_shape(y, x.rows(), w.rows(), "bitplane_gemm: y");
  detail::require(ctx.fits(w), "bitplane_gemm: the context was made for weights of another shape");
  detail::require_finite(x, "bitplane_gemm: x");
  const float largest = x.size() ? x.cwiseAbs().maxCoeff() : 0.0f;
  detail::require(largest < std::ldexp(1.0f, 126), "bitplane_gemm: x has an activation of ",
                  largest, "; its tables (half sums of 4 activations) need |x| < 2^126");
  for (Index t0 = 0; t0 < x.rows(); t0 += ctx.max_tokens()) {
    const Index n = std::min(ctx.max_tokens(), x.rows() - t0);
    kernels.load(w, x.data() + t0 * x.outerStride(), n, x.outerStride(), ctx);
    detail::bitplane::multiply_parallel(kernels, w, ctx, y.data() + t0 * y.outerStride(),
                                        y.outerStride());
  }
}

inline MatrixF bitplane_gemm(const BitplaneKernels& kernels, const PackedBitplanes& w,
                             const MatrixFRef& x, TableType tables = TableType::int8) {
  BitplaneContext ctx(w, std::min<Index>(std::max<Index>(x.rows(), 1), 16), tables);
  MatrixF y(x.rows(), w.rows());
  bitplane_gemm(kernels, w, x, y, ctx);
  return y;
}

// Everything below depends on the instruction set (detail/isa.hpp).
inline namespace LOWBIT_ISA_TARGET {

namespace scalar {
inline constexpr BitplaneKernels bitplane_kernels =
    detail::bitplane::kernels<detail::bitplane_scalar::Isa>();
}
#if defined(LOWBIT_ISA_AVX2)
namespace avx2 {
inline constexpr BitplaneKernels bitplane_kernels =
    detail::bitplane::kernels<detail::bitplane_avx2::Isa>();
}
#endif
#if defined(LOWBIT_ISA_AVX512)
namespace avx512 {
inline constexpr BitplaneKernels bitplane_kernels =
    detail::bitplane::kernels<detail::bitplane_avx512::Isa>();
}
#endif
#if defined(LOWBIT_ISA_NEON)
namespace neon {
inline constexpr BitplaneKernels bitplane_kernels =
    detail::bitplane::kernels<detail::bitplane_neon::Isa>();
}
#endif

// The widest kernels this translation unit compiles; the calls below use them.
using LOWBIT_ISA_BITPLANE::bitplane_kernels;

// Gathers `tokens` activation rows (x[t * ldx + j], j < cols) and builds their
// tables in ctx. Preconditions (checked by bitplane_gemm, not here):
// ctx.fits(w), 1 <= tokens <= ctx.max_tokens(), ldx >= w.cols(), x finite.
inline void bitplane_load(const PackedBitplanes& w, const float* x, Index tokens, Index ldx,
                          BitplaneContext& ctx) noexcept {
  bitplane_kernels.load(w, x, tokens, ldx, ctx);
}

// y[t * ldy + r] = sum_j W[r, j] x_t[j] for the loaded tokens and rows
// row_begin <= r < row_end (0 <= row_begin <= row_end <= w.rows(), ldy >= w.rows()).
inline void bitplane_multiply(const PackedBitplanes& w, const BitplaneContext& ctx, float* y,
                              Index ldy, Index row_begin, Index row_end) noexcept {
  bitplane_kernels.multiply(w, ctx, y, ldy, row_begin, row_end);
}

inline void bitplane_gemm(const PackedBitplanes& w, const MatrixFRef& x, Eigen::Ref<MatrixF> y,
                          BitplaneContext& ctx) {
  lowbit::bitplane_gemm(bitplane_kernels, w, x, y, ctx);
}

inline MatrixF bitplane_gemm(const PackedBitplanes& w, const MatrixFRef& x,
                             TableType tables = TableType::int8) {
  return lowbit::bitplane_gemm(bitplane_kernels, w, x, tables);
}

}  // namespace LOWBIT_ISA_TARGET

// Per row, a bound on |y - W x| for the loaded token: int8 table rounding,
// f16 coefficient rounding, and float rounding of the sums to first order
// (n u sum|terms|, u = 2^-24, n the length of the longest chain of roundings):
//   |y_r - (W x)_r| <= sum_seg s_seg (1/2 + 1e-4) (L_seg / 4) sum_p |c_p[g, r]|   (int8 tables)
//                    + 2^-11 sum_g (sum_p |c_p| 1/2 sum_{j in g} |x_j| + |bias'| |sum_{j in g}
//                    x_j|)
//                                                                   (f16 coefficients)
//                    + the float rounding of the sums
//                    + 2^-149 (n + 128 sum_seg (L_seg / 4) sum_p |c_p[g, r]|)   (underflow),
// L_seg the segment's columns (padding included), s_seg = max|e| / 127 its
// table scale. The last term covers gradual underflow, which no relative
// bound does: a rounding whose result is subnormal may err by 2^-150 outright,
// so may each table entry, and s_seg itself when it is subnormal (times
// |code| <= 127 per looked-up entry). It holds for every x whose table
// entries are finite (|x_j| < 2^126, which bitplane_gemm checks). A stored entry is round(e / s),
// within 1/2 of e / s (plus the float rounding of the product, far below 1e-4 of a step); a row's
// plane sum over a segment adds L_seg / 4 entries and is multiplied by s and c_p. Since max|e| =
// 1/2 max_chunk sum|x| <= 2 max_{j in seg}|x_j|, the table term is at most sum_seg (L_seg / 508)
// max_{j in seg}|x_j| sum_p |c_p|; for a uniform grid sum_p |c_p| is the group's grid range R, so
// relative to sum_j R |x_j| it is (max|x| / mean|x| over the segment) / 508, the order of rounding
// x itself to int8 with one absmax scale per segment. The tests check the measured error against
// this bound and against the closed form.
inline VectorF bitplane_error_bound(const PackedBitplanes& w, const BitplaneContext& ctx,
                                    Index token) {
  using namespace detail::bitplane;
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
    for (Index j = 0; j < padded_group; ++j)
      abs_sum[static_cast<std::size_t>(g)] += std::fabs(x[g * padded_group + j]);
    all_abs += abs_sum[static_cast<std::size_t>(g)];
  }
  VectorF bound(w.rows());
  for (Index row = 0; row < w.rows(); ++row) {
    const Index r = row % kBlockRows;
    double table = 0.0, magnitude = 0.0, looked_up = 0.0;
    for (Index g = 0; g < l.groups; ++g) {
      const std::uint8_t* group = l.group_data(row / kBlockRows, g);
      double sum_c = 0.0;
      for (int p = 0; p < l.planes; ++p) sum_c += std::fabs(coefficient(l, group, p, r));
      looked_up += static_cast<double>(2 * l.group_pairs) * sum_c;
      if (t.type == TableType::int8 && !t.dense)
        for (Index s = 0; s < l.segments_per_group; ++s)
          table += t.scale[token * l.segments() + g * l.segments_per_group + s] * (0.5 + 1e-4) *
                   static_cast<double>(2 * l.segment_pairs(s)) * sum_c;
      magnitude += (0.5 * sum_c + std::fabs(coefficient(l, group, l.planes, r))) *
                   abs_sum[static_cast<std::size_t>(g)];
    }
    Index chain = l.groups * (l.segments_per_group * (l.planes + 1) + 1) + padded_group +
                  2 * kMaxSegmentChunks + 8;
    if (!w.outlier_rowptr().empty())
      for (std::int32_t i = w.outlier_rowptr()[static_cast<std::size_t>(row)];
           i < w.outlier_rowptr()[static_cast<std::size_t>(row) + 1]; ++i, ++chain)
        magnitude += std::fabs(w.outlier_correction()[static_cast<std::size_t>(i)] *
                               x[w.outlier_position()[static_cast<std::size_t>(i)]]);
    const double coeffs = f16 ? std::ldexp(1.001, -11) * magnitude +
                                    std::ldexp(1.0, -25) * (0.5 * l.planes + 1) * all_abs
                              : u * magnitude;
    const double underflow = std::ldexp(static_cast<double>(chain) + 128.0 * looked_up, -149);
    bound(row) = static_cast<float>(
        (table + coeffs + 1.01 * static_cast<double>(chain) * u * magnitude + underflow) *
        (1 + 1e-6));
  }
  return bound;
}

}  // namespace lowbit
