// The scalar reference of the bit-plane lookup-table kernel: the oracle the
// SIMD paths are tested against, and the kernel of builds without them.
// Plain loops over the packed layout (bitplane_layout.hpp), performing the
// very operations, in the very order, that the SIMD kernels perform. Every
// multiply-add is fused (std::fma) as the SIMD kernels' are, whether or not
// the target has an FMA instruction, so the reference gives the same bits in
// every build.
#pragma once

#ifndef LOWBIT_KERNELS_BITPLANE_LUT_GEMM_HPP
#error "lowbit: include <lowbit/kernels/bitplane_lut_gemm.hpp>, not kernels/detail/"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lowbit/kernels/detail/bitplane_layout.hpp"
#include "lowbit/kernels/detail/isa.hpp"

namespace lowbit::detail {
inline namespace LOWBIT_ISA_TARGET {
namespace bitplane_scalar {

using namespace lowbit::detail::bitplane;

// Entry i of a chunk's centred table (bitplane_layout.hpp). Every ISA
// computes these exact operations in this order, so tables agree bit for bit.
inline float table_entry(const float* x, int i) {
  const float s0 = (i & 1) ? x[0] : -x[0];
  const float s1 = (i & 2) ? x[1] : -x[1];
  const float s2 = (i & 4) ? x[2] : -x[2];
  const float s3 = (i & 8) ? x[3] : -x[3];
  return 0.5f * (((s0 + s1) + s2) + s3);
}

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

// Round half to even, like cvtps2dq and vcvtnq.
inline void quantize_tables(const float* entries, Index chunks, float inverse_scale,
                            std::int8_t* out) noexcept {
  for (Index i = 0; i < kTableEntries * chunks; ++i)
    out[i] = static_cast<std::int8_t>(std::nearbyint(entries[i] * inverse_scale));
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

// One block, one token: acc[r] for every row of the block.
inline void block(const Layout& layout, const Tables& tables, Index block, Index t, float* acc) {
  const int k = layout.planes;
  std::fill(acc, acc + kBlockRows, 0.0f);
  for (Index g = 0; g < layout.groups; ++g) {
    const std::uint8_t* group = layout.group_data(block, g);
    const std::uint8_t* bytes = group + layout.coeff_bytes;
    Index pair = g * layout.group_pairs;
    for (Index s = 0; s < layout.segments_per_group; ++s) {
      const Index pairs = layout.segment_pairs(s);
      float part[kBlockRows] = {};
      for (int p = 0; p < k; ++p, bytes += pairs * kPairBytes) {
        float sums[kBlockRows];
        segment_sums(tables, t, pair, pairs, bytes, sums);
        for (Index r = 0; r < kBlockRows; ++r)
          part[r] = std::fma(sums[r], coefficient(layout, group, p, r), part[r]);
      }
      const float scale = tables.scale[t * layout.segments() + g * layout.segments_per_group + s];
      for (Index r = 0; r < kBlockRows; ++r) acc[r] = std::fma(part[r], scale, acc[r]);
      pair += pairs;
    }
    const float xsum = tables.xsum[t * layout.groups + g];
    for (Index r = 0; r < kBlockRows; ++r)
      acc[r] = std::fma(coefficient(layout, group, k, r), xsum, acc[r]);
  }
}

// Dense part of rows [row_begin, row_end) for every token: y[t * ldy + r].
// Whole blocks are computed and only the requested rows are stored; every
// row's value depends on nothing but its own data, so any split agrees.
inline void multiply_blocks(const Layout& layout, const Tables& tables, float* y, Index ldy,
                            Index row_begin, Index row_end) noexcept {
  for (Index b = row_begin / kBlockRows; b * kBlockRows < row_end; ++b)
    for (Index t = 0; t < tables.tokens; ++t) {
      float acc[kBlockRows];
      block(layout, tables, b, t, acc);
      const Index first = std::max(row_begin, b * kBlockRows);
      const Index last = std::min(row_end, (b + 1) * kBlockRows);
      for (Index r = first; r < last; ++r) y[t * ldy + r] = acc[r - b * kBlockRows];
    }
}

// The large-batch path's primitives (bitplane_layout.hpp, multiply_dense).
inline void dequantize_segment(const float* bias, const float* half_c, int planes,
                               const std::uint8_t* bytes, Index pairs, float* tile) noexcept {
  for (Index q = 0; q < pairs; ++q)
    for (Index b = 0; b < kPairCols; ++b)
      for (Index r = 0; r < kBlockRows; ++r) {
        float v = bias[r];
        for (int p = 0; p < planes; ++p) {
          const float h = half_c[p * kBlockRows + r];
          v += (bytes[(p * pairs + q) * kPairBytes + r] >> b) & 1 ? h : -h;
        }
        tile[(q * kPairCols + b) * kBlockRows + r] = v;
      }
}

inline void accumulate_segment(const float* tile, Index cols, const float* x, Index ldx,
                               Index tokens, bool assign, Index first, Index last, float* y,
                               Index ldy) noexcept {
  for (Index t = 0; t < tokens; ++t)
    for (Index r = first; r < last; ++r) {
      float s = 0.0f;
      for (Index k = 0; k < cols; ++k) s = std::fma(tile[k * kBlockRows + r], x[t * ldx + k], s);
      y[t * ldy + r] = assign ? s : y[t * ldy + r] + s;
    }
}

// The kernel set (see detail::bitplane::load and multiply).
struct Isa {
  static constexpr const char* name = "scalar";
  static float table_entries(const float* x, Index chunks, float* out) noexcept {
    return bitplane_scalar::table_entries(x, chunks, out);
  }
  static void quantize_tables(const float* e, Index chunks, float inv, std::int8_t* out) noexcept {
    bitplane_scalar::quantize_tables(e, chunks, inv, out);
  }
  static void multiply_blocks(const Layout& l, const Tables& t, float* y, Index ldy, Index r0,
                              Index r1) noexcept {
    bitplane_scalar::multiply_blocks(l, t, y, ldy, r0, r1);
  }
  static void dequantize_segment(const float* bias, const float* half_c, int planes,
                                 const std::uint8_t* bytes, Index pairs, float* tile) noexcept {
    bitplane_scalar::dequantize_segment(bias, half_c, planes, bytes, pairs, tile);
  }
  static void accumulate_segment(const float* tile, Index cols, const float* x, Index ldx,
                                 Index tokens, bool assign, Index first, Index last, float* y,
                                 Index ldy) noexcept {
    bitplane_scalar::accumulate_segment(tile, cols, x, ldx, tokens, assign, first, last, y, ldy);
  }
};

}  // namespace bitplane_scalar
}  // namespace LOWBIT_ISA_TARGET
}  // namespace lowbit::detail
