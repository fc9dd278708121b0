// The packed layout of the bit-plane lookup-table kernel, shared by every ISA.
//
// Columns. The input columns are put in an order where every group is
// contiguous (the identity without g_idx), and each group is padded with
// zero columns to a multiple of 8. One call gathers x into that order once
// ("packed columns"). A chunk is 4 consecutive packed columns; its lookup
// table holds the 16 partial sums of those 4 activations. Two chunks (8
// columns) make a pair: one byte of a plane holds the pair's two 4-bit
// indices for one row, the first chunk in the low nibble. Bit b of a nibble
// is the plane bit of the chunk's column b.
//
// Centred tables. Entry i of a chunk's table is
//   e[i] = 0.5 * (±x0 ± x1 ± x2 ± x3),  sign + where bit b of i is set,
// i.e. the planes are read as b - 1/2 in {-1/2, +1/2}. The range is half that
// of the plain 0/1 sums (so int8 tables lose half as much), the table is
// antisymmetric (e[15 - i] = -e[i]), and the 1/2 moves into the bias at
// packing: bias' = bias + 1/2 sum_p c_p. Then for row r and group g
//   sum_j w[r, j] x_j = sum_p c_p * (sum_chunks e[index_p]) + bias' * sum_{j in g} x_j.
//
// Rows come in blocks of 64: one 64-byte unit of plane bytes covers the
// block (byte i is row i), so one zmm vpshufb looks up 64 rows with a table
// broadcast by a plain load; AVX2 takes it in two 32-byte halves, NEON in
// four 16-byte quarters. Rows of the last block beyond `rows` are zero.
//
// Memory, one block after another (each block_bytes long); inside a block,
// one group after another (group_bytes each):
//   coefficients  (planes + 1) slots of 64 values (f16 or f32), bias' last;
//                 in each slot the 8-row chunks are stored in the order
//                 0, 2, 1, 3, 4, 6, 5, 7: the order in which the AVX-512
//                 kernel widens its int16 sums (others load 8 rows or fewer
//                 at a time, so any chunk order costs them nothing)
//   segments      for each segment of the group (column runs of at most 128:
//                 its int8 tables share one scale and its int16 sums cannot
//                 overflow): for each plane: for each pair: 64 plane bytes.
// Every piece is a multiple of 64 bytes and the buffer is 64-byte aligned,
// so all packed loads are aligned. The stream is read strictly in order.
#pragma once

#ifndef LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP
#error "lowbit: include <lowbit/kernels/bitplane_lut_gemm.hpp>, not kernels/detail/"
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

#include "lowbit/core/half.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit::detail::bitplane {

constexpr Index kBlockRows = 64;
constexpr Index kChunkCols = 4;
constexpr Index kPairCols = 8;
constexpr Index kTableEntries = 16;
constexpr Index kPairBytes = kBlockRows;  // plane bytes of one pair for one block
constexpr Index kMaxSegmentPairs =
    16;  // 128 columns: one int8 table scale, |int16 sum| <= 16 * 254
constexpr Index kMaxSegmentChunks = 2 * kMaxSegmentPairs;
constexpr std::size_t kAlignment = 64;

// Kernels prefetch each group's bytes this far ahead: from memory, the
// hardware prefetchers alone do not keep the stream at full bandwidth.
constexpr std::size_t kPrefetchDistance = 4096;

inline void prefetch_ahead(const std::uint8_t* group, std::size_t bytes) {
#if defined(__GNUC__)
  for (std::size_t i = 0; i < bytes; i += 64) __builtin_prefetch(group + kPrefetchDistance + i);
#else
  (void)group;
  (void)bytes;
#endif
}

// Where row r of a block sits in a coefficient slot (chunk order above; the
// permutation is its own inverse).
constexpr Index coefficient_position(Index r) {
  constexpr Index order[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  return 8 * order[r / 8] + r % 8;
}

// What every kernel needs to walk a packed matrix. Plain data, no ownership.
struct Layout {
  Index rows = 0;
  Index blocks = 0;
  int planes = 0;
  Index groups = 0;
  Index group_pairs = 0;  // pairs per (padded) group
  Index segments_per_group = 0;
  CoefficientStorage coefficients = CoefficientStorage::f16;
  std::size_t coeff_bytes = 0;  // per group and block
  std::size_t group_bytes = 0;
  std::size_t block_bytes = 0;
  const std::uint8_t* data = nullptr;

  Index padded_cols() const { return groups * group_pairs * kPairCols; }
  Index chunks() const { return padded_cols() / kChunkCols; }
  Index segments() const { return groups * segments_per_group; }
  // Pairs in segment s (0-based within its group): full segments, then the rest.
  Index segment_pairs(Index s) const {
    return s + 1 < segments_per_group ? kMaxSegmentPairs
                                      : group_pairs - kMaxSegmentPairs * (segments_per_group - 1);
  }
  std::size_t group_offset(Index block, Index g) const {
    return static_cast<std::size_t>(block) * block_bytes +
           static_cast<std::size_t>(g) * group_bytes;
  }
  const std::uint8_t* group_data(Index block, Index g) const {
    return data + group_offset(block, g);
  }
  // Offset, from the start of a group, of the byte that holds plane p's bit
  // for column i of the (padded) group and row r of the block: bit i % 8.
  std::size_t plane_byte(Index i, int p, Index r) const {
    const Index pair = i / kPairCols, segment = pair / kMaxSegmentPairs;
    const Index segment_start = segment * kMaxSegmentPairs * planes;
    return coeff_bytes +
           static_cast<std::size_t>(
               (segment_start + p * segment_pairs(segment) + pair % kMaxSegmentPairs) * kPairBytes +
               r);
  }
};

// Coefficient `slot` (plane, or the bias at slot = planes) of row r of a block,
// from the group's data.
inline float coefficient(const Layout& layout, const std::uint8_t* group, int slot, Index r) {
  const Index i = slot * kBlockRows + coefficient_position(r);
  if (layout.coefficients == CoefficientStorage::f32) {
    float v;
    std::memcpy(&v, group + sizeof(float) * static_cast<std::size_t>(i), sizeof v);
    return v;
  }
  std::uint16_t h;
  std::memcpy(&h, group + sizeof(std::uint16_t) * static_cast<std::size_t>(i), sizeof h);
  return half_to_float(h);
}

// The tables of one call (read-only for the kernels). Token t's tables start
// at t * chunks entries; scales and activation sums are per token too.
struct Tables {
  TableType type = TableType::int8;
  Index tokens = 0;
  Index chunks = 0;                // per token
  const std::int8_t* q = nullptr;  // int8: [token][chunk][16]
  const float* f = nullptr;        // f32:  [token][chunk][16]
  const float* scale = nullptr;    // [token][segment]: int8 table scale (1 for f32)
  const float* xsum = nullptr;     // [token][group]: sum of the group's activations
  const float* x = nullptr;        // [token][packed column]: the gathered activations
  Index padded_cols = 0;
  bool dense = false;  // the large-batch path: x only, no tables (multiply_dense)
};

// The block loop the SIMD kernels share: for each block of kBlockRows rows,
// tokens in tiles of up to 4 (one pass over the block's plane bytes per tile),
// then the requested rows copied out. Isa provides the coefficient readers
// Isa::F16 and Isa::F32 and two block kernels that compute at least rows
// [first, last) of a block (they may compute all of it):
//   Isa::block_f32<Coeff>(l, tb, group, first, last, token, out[kBlockRows])
//   Isa::block_int8<Coeff, T>(l, tb, group, first, last, t0, out[T][kBlockRows])
template <class Isa, class Coeff>
void multiply_blocks_with(const Layout& l, const Tables& tb, float* y, Index ldy, Index row_begin,
                          Index row_end) noexcept {
  constexpr int kTile = 4;
  alignas(64) float out[kTile][kBlockRows];
  for (Index block = row_begin / kBlockRows; block * kBlockRows < row_end; ++block) {
    const std::uint8_t* group = l.group_data(block, 0);
    const Index first = std::max(row_begin, block * kBlockRows) - block * kBlockRows;
    const Index last = std::min(row_end, (block + 1) * kBlockRows) - block * kBlockRows;
    for (Index t0 = 0; t0 < tb.tokens; t0 += kTile) {
      const Index n = std::min<Index>(kTile, tb.tokens - t0);
      if (tb.type == TableType::f32) {
        for (Index t = 0; t < n; ++t)
          Isa::template block_f32<Coeff>(l, tb, group, first, last, t0 + t, out[t]);
      } else {
        switch (n) {
          case 1:
            Isa::template block_int8<Coeff, 1>(l, tb, group, first, last, t0, out);
            break;
          case 2:
            Isa::template block_int8<Coeff, 2>(l, tb, group, first, last, t0, out);
            break;
          case 3:
            Isa::template block_int8<Coeff, 3>(l, tb, group, first, last, t0, out);
            break;
          default:
            Isa::template block_int8<Coeff, 4>(l, tb, group, first, last, t0, out);
            break;
        }
      }
      for (Index t = 0; t < n; ++t)
        std::copy(out[t] + first, out[t] + last, y + (t0 + t) * ldy + block * kBlockRows + first);
    }
  }
}

template <class Isa>
void multiply_blocks(const Layout& l, const Tables& tb, float* y, Index ldy, Index row_begin,
                     Index row_end) noexcept {
  if (l.coefficients == CoefficientStorage::f16)
    multiply_blocks_with<Isa, typename Isa::F16>(l, tb, y, ldy, row_begin, row_end);
  else
    multiply_blocks_with<Isa, typename Isa::F32>(l, tb, y, ldy, row_begin, row_end);
}

// The large-batch path. Dequantizing a tile of weights to float once serves
// any number of tokens, each at one FMA per weight; the table path costs a
// lookup per plane, pair, row and token. Measured on AVX2 (README's kernel
// section), int8 tables stay faster at every batch up to 512 for 2 and 4
// planes (and at 32 and 128 tokens for 6 and 8), so by_batch keeps them;
// float tables (the exact path) lose to the tiles from 16 tokens at 2 planes
// and 8 at 4 (their cost grows with the planes: 3 and more planes take 4's
// threshold, 1 plane, half of 2's cost, keeps its tables). Then bitplane_load
// only gathers x and bitplane_multiply dequantizes one segment of one block
// (64 rows x at most 128 columns, 32 KB on the stack: rows run concurrently
// with one shared context, so the tile is per call) and multiplies every
// token with it. Each weight is the stored bias' plus +-c_p / 2 per plane
// (dense_value's sum, in float, planes in order); each output is a fused
// multiply-add chain over the segment's columns in order, added to the sums
// of the previous segments: the same bits in every ISA and for every split.
// The smallest batch that by_batch sends to the large-batch path (none: the maximum Index).
inline Index dense_from(TableType tables, int planes) {
  if (tables == TableType::int8 || planes < 2) return std::numeric_limits<Index>::max();
  return planes == 2 ? 16 : 8;
}
inline bool use_dense(TableType tables, int planes, Index tokens) {
  return tokens >= dense_from(tables, planes);
}

// Tokens whose tables a context must hold to take up to max_tokens tokens of weights with
// `planes` planes: the large-batch path needs none, so neither a forced one nor by_batch above
// its switch allocates tables.
inline Index table_tokens(TableType tables, BitplanePath path, int planes, Index max_tokens) {
  if (path == BitplanePath::dense) return 0;
  if (path == BitplanePath::tables) return max_tokens;
  return std::min(max_tokens, dense_from(tables, planes) - 1);
}

constexpr Index kDenseTileCols = kMaxSegmentPairs * kPairCols;

// Isa provides, noexcept:
//   dequantize_segment(bias, half_c, planes, bytes, pairs, tile)
//       tile[k * kBlockRows + r] = bias[r] + sum_p (bit ? half_c : -half_c)[p * kBlockRows + r]
//       for the 8 * pairs columns k of the segment whose plane bytes start at bytes;
//   accumulate_segment(tile, cols, x, ldx, tokens, assign, first, last, y, ldy)
//       for r in [first, last): s = fma chain over k of tile[k][r] * x[t * ldx + k];
//       y[t * ldy + r] = assign ? s : y[t * ldy + r] + s.
template <class Isa>
void multiply_dense(const Layout& l, const Tables& tb, float* y, Index ldy, Index row_begin,
                    Index row_end) noexcept {
  alignas(64) float tile[kDenseTileCols * kBlockRows];
  alignas(64) float bias[kBlockRows];
  alignas(64) float half_c[8 * kBlockRows];  // at most 8 planes
  for (Index block = row_begin / kBlockRows; block * kBlockRows < row_end; ++block) {
    const Index first = std::max(row_begin, block * kBlockRows) - block * kBlockRows;
    const Index last = std::min(row_end, (block + 1) * kBlockRows) - block * kBlockRows;
    Index col = 0;
    for (Index g = 0; g < l.groups; ++g) {
      const std::uint8_t* group = l.group_data(block, g);
      for (Index r = 0; r < kBlockRows; ++r) {
        bias[r] = coefficient(l, group, l.planes, r);
        for (int p = 0; p < l.planes; ++p)
          half_c[p * kBlockRows + r] = 0.5f * coefficient(l, group, p, r);
      }
      const std::uint8_t* bytes = group + l.coeff_bytes;
      for (Index s = 0; s < l.segments_per_group; ++s) {
        const Index pairs = l.segment_pairs(s);
        Isa::dequantize_segment(bias, half_c, l.planes, bytes, pairs, tile);
        Isa::accumulate_segment(tile, kPairCols * pairs, tb.x + col, tb.padded_cols, tb.tokens,
                                col == 0, first, last, y + block * kBlockRows, ldy);
        bytes += pairs * l.planes * kPairBytes;
        col += kPairCols * pairs;
      }
    }
  }
}

// A 64-byte aligned array of trivially copyable values (no value-initialization
// cost beyond the explicit zero fill).
template <class T>
class AlignedArray {
 public:
  AlignedArray() = default;
  explicit AlignedArray(std::size_t n) : size_(n) {
    if (n == 0) return;
    data_ = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kAlignment)));
    std::memset(static_cast<void*>(data_), 0, n * sizeof(T));
  }
  AlignedArray(const AlignedArray& other) : AlignedArray(other.size_) {
    if (size_) std::memcpy(static_cast<void*>(data_), other.data_, size_ * sizeof(T));
  }
  AlignedArray(AlignedArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedArray& operator=(AlignedArray other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~AlignedArray() {
    if (data_) ::operator delete(data_, std::align_val_t(kAlignment));
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace lowbit::detail::bitplane
