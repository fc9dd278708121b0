// The scalar reference of the bit-plane lookup-table kernel: the oracle the
// SIMD paths are tested against, and the kernel of builds without them.
// Plain loops over the packed layout (bitplane_layout.hpp), performing the
// very operations, in the very order, that the SIMD kernels perform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lowbit/core/half.hpp"
#include "lowbit/kernels/detail/bitplane_layout.hpp"

namespace lowbit::detail::bitplane_scalar {

using namespace lowbit::detail::bitplane;

// The 16 centred entries of each chunk of 4 activations; returns the largest |entry|.
inline float table_entries(const float* x, Index chunks, float* out) noexcept {
  float largest = 0.0f;
  for (Index c = 0; c < chunks; ++c)
    for (int i = 0; i < kTableEntries; ++i) {
      const float e = table_entry(x + kChunkCols * c, i);
      out[kTableEntries * c + i] = e;
      largest = std::max(largest, std::fabs(e));
    }
  return largest;
}

inline void quantize_tables(const float* entries, Index chunks, float inverse_scale,
                            std::int8_t* out) noexcept {
  for (Index i = 0; i < kTableEntries * chunks; ++i) out[i] = quantize_entry(entries[i], inverse_scale);
}

// Coefficient `slot` (plane, or the bias at slot = planes) of row r of a block.
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

// Plane sums of one segment for every row of a block:
//   int8: the integer sum of the looked-up entries (exact in any order);
//   f32:  the float sum, entry by entry in column order.
inline void segment_sums(const Tables& tables, Index token, Index first_pair, Index pairs,
                         const std::uint8_t* bytes, float* sums) {
  if (tables.type == TableType::int8) {
    const std::int8_t* table = tables.q + (token * tables.chunks + 2 * first_pair) * kTableEntries;
    std::int32_t total[kBlockRows] = {};
    for (Index q = 0; q < pairs; ++q, bytes += kPairBytes, table += 2 * kTableEntries)
      for (Index r = 0; r < kBlockRows; ++r)
        total[r] += table[bytes[r] & 15] + table[kTableEntries + (bytes[r] >> 4)];
    for (Index r = 0; r < kBlockRows; ++r) sums[r] = static_cast<float>(total[r]);
  } else {
    const float* table = tables.f + (token * tables.chunks + 2 * first_pair) * kTableEntries;
    std::fill(sums, sums + kBlockRows, 0.0f);
    for (Index q = 0; q < pairs; ++q, bytes += kPairBytes, table += 2 * kTableEntries)
      for (Index r = 0; r < kBlockRows; ++r) {
        sums[r] += table[bytes[r] & 15];
        sums[r] += table[kTableEntries + (bytes[r] >> 4)];
      }
  }
}

// Dense part of rows [row_begin, row_end) for every token: y[t * ldy + r].
// Whole blocks are computed and only the requested rows are stored; every
// row's value depends on nothing but its own data, so any split agrees.
inline void multiply_blocks(const Layout& layout, const Tables& tables, Index row_begin,
                            Index row_end, float* y, Index ldy) noexcept {
  const int k = layout.planes;
  for (Index block = row_begin / kBlockRows; block * kBlockRows < row_end; ++block) {
    const std::uint8_t* block_data = layout.data + static_cast<std::size_t>(block) * layout.block_bytes;
    for (Index t = 0; t < tables.tokens; ++t) {
      float acc[kBlockRows] = {};
      for (Index g = 0; g < layout.groups; ++g) {
        const std::uint8_t* group = block_data + static_cast<std::size_t>(g) * layout.group_bytes;
        const std::uint8_t* bytes = group + layout.coeff_bytes;
        Index pair = g * layout.group_pairs;
        for (Index s = 0; s < layout.segments_per_group; ++s) {
          const Index pairs = layout.segment_pairs(s);
          float part[kBlockRows] = {};
          for (int p = 0; p < k; ++p, bytes += pairs * kPairBytes) {
            float sums[kBlockRows];
            segment_sums(tables, t, pair, pairs, bytes, sums);
            for (Index r = 0; r < kBlockRows; ++r)
              part[r] = fmadd(sums[r], coefficient(layout, group, p, r), part[r]);
          }
          const float scale = tables.scale[t * layout.segments() + g * layout.segments_per_group + s];
          for (Index r = 0; r < kBlockRows; ++r) acc[r] = fmadd(part[r], scale, acc[r]);
          pair += pairs;
        }
        const float xsum = tables.xsum[t * layout.groups + g];
        for (Index r = 0; r < kBlockRows; ++r) acc[r] = fmadd(coefficient(layout, group, k, r), xsum, acc[r]);
      }
      const Index first = std::max(row_begin, block * kBlockRows);
      const Index last = std::min(row_end, (block + 1) * kBlockRows);
      for (Index r = first; r < last; ++r) y[t * ldy + r] = acc[r - block * kBlockRows];
    }
  }
}

}  // namespace lowbit::detail::bitplane_scalar
