// llama.cpp's quantizer: how ggml picks each block's grid (ggml-quants.c at
// ggml d99724f2), reproduced operation for operation in float so that the
// bytes match ggml_quantize_chunk's:
//   * without an importance matrix, the reference quantizers
//     quantize_row_*_ref (IQ4_NL: quantize_iq4_nl, which searches 7 steps);
//   * with one (per input column, e.g. the sum of squared activations as
//     llama-imatrix computes it), quantize_row_*_impl, which weight every
//     error by importance * sqrt(sigma^2 + x^2).
// The searches (weighted least-squares scales over nearby candidate grids,
// make_qx_quants, make_q3_quants, make_qkx2/3_quants, make_qp_quants) pick a
// float scale per sub-block; K-quants then quantize those scales against an
// fp16 super-block d and requantize every weight on the grid as stored.
// Q8_0 and TQ2_0 ignore the importance matrix, as ggml does.
//
// Exactness needs float expressions evaluated as written: a fused
// multiply-add in the searches' sums moves ties and changes codes. So this
// header turns contraction off for its own functions (GCC in every mode;
// Clang unless the includer forces -ffp-contract=fast, which overrides it);
// elsewhere the result is still a valid, near-identical encoding. Integer
// conversions follow what ggml's C does on x86-64 (values wrap modulo 2^8,
// a float that does not fit an int converts to INT_MIN), so even degenerate
// blocks (denormal inputs, constant sub-blocks) give ggml's bytes.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lowbit/core/detail/parallel.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/ggml_types.hpp"
#include "lowbit/core/ggml_weights.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"

#if defined(__clang__)
#pragma float_control(push)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace lowbit {

struct GgmlConfig {
  GgmlType type = GgmlType::q4_k;
  VectorF importance;  // empty, or one finite weight >= 0 per input column (llama.cpp's imatrix)
};

struct GgmlReport {
  double seconds = 0;
};

struct GgmlResult {
  GgmlWeights weights;
  GgmlReport report;
};

namespace detail::ggml {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's GROUP_MAX_EPS: a smaller max is an all-zero group

// Round half to even through the float magic number 1.5 * 2^23 (ggml's
// nearest_int): exact for |v| < 2^22 and, unlike a cast, defined for any float.
inline int nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  std::int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

// A float to int conversion as x86-64 performs it: truncation, INT_MIN when
// the value does not fit (where C++ leaves it undefined).
inline int truncate_to_int(float v) {
  return v > -2147483904.0f && v < 2147483648.0f ? static_cast<int>(v) : INT_MIN;
}

inline int clamp_int(int v, int lo, int hi) { return std::max(lo, std::min(hi, v)); }

// The signed value of the first largest |x|.
inline float signed_absmax(const float* x, Index n) {
  float amax = 0.0f, max = 0.0f;
  for (Index i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  return max;
}

inline float sum_of_squares(const float* x, Index n) {
  float sum = 0.0f;
  for (Index i = 0; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// Symmetric levels -nmax..nmax-1 weighted by w (x^2 when w is null): the
// least-squares scale at iscale = -nmax / max and at 18 nearby inverse scales,
// keeping the best (make_qx_quants, rmse_type 1). L gets level + nmax.
inline float search_symmetric(int n, int nmax, const float* x, const float* w, std::int8_t* L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    std::fill(L, L + n, std::int8_t{0});
    return 0.0f;
  }
  auto fit = [&](float iscale, float& sumlx, float& suml2, bool store) {
    sumlx = suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      if (store) L[i] = static_cast<std::int8_t>(l + nmax);
      const float weight = w ? w[i] : x[i] * x[i];
      sumlx += weight * x[i] * static_cast<float>(l);
      suml2 += weight * static_cast<float>(l) * static_cast<float>(l);
    }
  };
  float sumlx, suml2;
  fit(static_cast<float>(-nmax) / max, sumlx, suml2, true);
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    fit(iscale, sumlx, suml2, false);
    if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
      fit(iscale, sumlx, suml2, true);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's reference search: rounds at -nmax / max, then moves single levels
// while that raises sumlx^2 / suml2 (up to 5 passes), weights x^2
// (make_q3_quants with do_rmse). L gets level + nmax.
inline float search_q3(int n, int nmax, const float* x, std::int8_t* L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    std::fill(L, L + n, std::int8_t{0});
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<std::int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      if (!(slx > 0.0f)) continue;
      float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
      const int l = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (l == L[i]) continue;
      slx += w * x[i] * static_cast<float>(l);
      sl2 += w * static_cast<float>(l) * static_cast<float>(l);
      if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<std::int8_t>(l);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Affine levels 0..nmax with a min <= 0: rounds on [min(x, 0), max x], then
// for nstep + 1 inverse scales (rmin + rdelta * is + nmax) / range fits scale
// and min by weighted least squares and keeps the smallest weighted error,
// squared or absolute (make_qkx2_quants; make_qkx3_quants with weights).
// Returns the scale; *neg_min = -min >= 0.
inline float search_affine(int n, int nmax, const float* x, const float* w, std::uint8_t* L,
                           float* neg_min, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0.0f) min = 0.0f;
  if (max == min) {
    std::fill(L, L + n, std::uint8_t{0});
    *neg_min = -min;
    return 0.0f;
  }
  auto error = [&](float scale, float offset, const std::uint8_t* levels) {
    float e = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * static_cast<float>(levels[i]) + offset - x[i];
      e += w[i] * (use_mad ? std::fabs(diff) : diff * diff);
    }
    return e;
  };
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1.0f / iscale;
  for (int i = 0; i < n; ++i)
    L[i] = static_cast<std::uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
  float best = error(scale, min, L);
  std::uint8_t trial[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      trial[i] = static_cast<std::uint8_t>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (!(D > 0.0f)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0.0f) {
      this_min = 0.0f;
      this_scale = sum_xl / sum_l2;
    }
    const float e = error(this_scale, this_min, trial);
    if (e < best) {
      std::copy(trial, trial + n, L);
      best = e;
      scale = this_scale;
      min = this_min;
    }
  }
  *neg_min = -min;
  return scale;
}

// Levels 0..nmax for non-negative x (the sub-block scales or mins of a
// K-quant), weighted by w: the best of 9 inverse scales by weighted squared
// error, then single-level moves raising sumlx^2 / suml2 (make_qp_quants).
// L is uint8 and wraps as ggml's does.
inline float search_positive(int n, int nmax, const float* x, const float* w, std::uint8_t* L) {
  float max = 0.0f;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    std::fill(L, L + n, std::uint8_t{0});
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1.0f / iscale;
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best += w[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
    const float scale_is = 1.0f / iscale_is;
    float mse = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += w[i] * diff * diff;
    }
    if (mse < best) {
      best = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    sumlx += w[i] * x[i] * static_cast<float>(l);
    suml2 += w[i] * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - w[i] * x[i] * static_cast<float>(L[i]);
      float sl2 = suml2 - w[i] * static_cast<float>(L[i]) * static_cast<float>(L[i]);
      if (!(slx > 0.0f && sl2 > 0.0f)) continue;
      const int l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
      if (l == L[i]) continue;
      slx += w[i] * x[i] * static_cast<float>(l);
      sl2 += w[i] * static_cast<float>(l) * static_cast<float>(l);
      if (slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<std::uint8_t>(l);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Where one row of the result goes (row-major matrices of GgmlWeights), from
// block `first_block` of the row on (a caller may encode one block at a time).
struct RowOut {
  std::uint8_t* codes;
  std::uint16_t* d;
  std::uint16_t* dmin;  // null without
  std::int8_t* scales;  // null without
  std::uint8_t* mins;   // null without

  RowOut(GgmlWeights& w, Index r, Index first_block = 0)
      : codes(w.codes.row(r).data() + first_block * w.format().block),
        d(w.d.row(r).data() + first_block),
        dmin(w.dmin.size() ? w.dmin.row(r).data() + first_block : nullptr),
        scales(w.sub_scales.size()
                   ? w.sub_scales.row(r).data() + first_block * sub_blocks_per_block(w)
                   : nullptr),
        mins(w.sub_mins.size() ? w.sub_mins.row(r).data() + first_block * sub_blocks_per_block(w)
                               : nullptr) {}

 private:
  static Index sub_blocks_per_block(const GgmlWeights& w) {
    return w.format().block / w.format().sub_block;
  }
};

// importance * sqrt(sigma2 + x^2): the weights of the imatrix quantizers.
inline void importance_weights(const float* x, const float* qw, Index n, float sigma2, float* out) {
  for (Index i = 0; i < n; ++i) out[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
}

inline float sum(const float* x, Index n) {
  float total = 0.0f;
  for (Index i = 0; i < n; ++i) total += x[i];
  return total;
}

// Q4_0, Q5_0: d = max / -2^(bits-1) with codes truncated from x / d + 2^(bits-1) + 1/2
// (quantize_row_q4_0_ref); with importance, search_symmetric per block with
// sigma^2 the row's mean square (quantize_row_q4_0_impl).
inline void encode_legacy_symmetric(const float* x, const float* qw, Index cols, int bits,
                                    const RowOut& out) {
  const int half = 1 << (bits - 1), maxq = (1 << bits) - 1;
  const float sigma2 = qw ? sum_of_squares(x, cols) / static_cast<float>(cols) : 0.0f;
  for (Index b = 0; b < cols / 32; ++b) {
    const float* xb = x + 32 * b;
    std::uint8_t* codes = out.codes + 32 * b;
    if (qw) {
      float weight[32];
      std::int8_t L[32];
      importance_weights(xb, qw + 32 * b, 32, sigma2, weight);
      out.d[b] = float_to_half(search_symmetric(32, half, xb, weight, L));
      for (int j = 0; j < 32; ++j) codes[j] = static_cast<std::uint8_t>(L[j]);
      continue;
    }
    const float d = signed_absmax(xb, 32) / static_cast<float>(-half);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out.d[b] = float_to_half(d);
    for (int j = 0; j < 32; ++j) {
      const auto code =
          static_cast<std::int8_t>(truncate_to_int(xb[j] * id + (static_cast<float>(half) + 0.5f)));
      codes[j] = static_cast<std::uint8_t>(std::min<int>(maxq, code));
    }
  }
}

// Q4_1, Q5_1: d = (max - min) / maxq, m = min, codes truncated from
// (x - min) / d + 1/2 (quantize_row_q4_1_ref); with importance, search_affine
// per block (quantize_row_q4_1_impl).
inline void encode_legacy_affine(const float* x, const float* qw, Index cols, int bits,
                                 const RowOut& out) {
  const int maxq = (1 << bits) - 1;
  const float sigma2 = qw ? sum_of_squares(x, cols) / static_cast<float>(cols) : 0.0f;
  for (Index b = 0; b < cols / 32; ++b) {
    const float* xb = x + 32 * b;
    std::uint8_t* codes = out.codes + 32 * b;
    if (qw) {
      float weight[32], neg_min;
      importance_weights(xb, qw + 32 * b, 32, sigma2, weight);
      out.d[b] = float_to_half(
          search_affine(32, maxq, xb, weight, codes, &neg_min, -0.9f, 0.05f, 36, false));
      out.dmin[b] = float_to_half(-neg_min);
      continue;
    }
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < 32; ++j) {
      if (xb[j] < min) min = xb[j];
      if (xb[j] > max) max = xb[j];
    }
    const float d = (max - min) / static_cast<float>(maxq);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out.d[b] = float_to_half(d);
    out.dmin[b] = float_to_half(min);
    for (int j = 0; j < 32; ++j) {
      const auto code = static_cast<std::int8_t>(truncate_to_int((xb[j] - min) * id + 0.5f));
      codes[j] = static_cast<std::uint8_t>(std::min<int>(maxq, code));
    }
  }
}

// Q8_0: d = absmax / 127, codes round(x / d) half away from zero.
inline void encode_q8_0(const float* x, Index cols, const RowOut& out) {
  for (Index b = 0; b < cols / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = amax > std::fabs(xb[j]) ? amax : std::fabs(xb[j]);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out.d[b] = float_to_half(d);
    for (int j = 0; j < 32; ++j) {
      const auto q = static_cast<std::int8_t>(truncate_to_int(std::round(xb[j] * id)));
      out.codes[32 * b + j] = static_cast<std::uint8_t>(q + 128);
    }
  }
}

// TQ2_0: d = absmax of the 256, codes round(x / d) + 1 (ternary).
inline void encode_tq2_0(const float* x, Index cols, const RowOut& out) {
  for (Index b = 0; b < cols / 256; ++b) {
    const float* xb = x + 256 * b;
    float amax = 0.0f;
    for (int j = 0; j < 256; ++j) amax = amax > std::fabs(xb[j]) ? amax : std::fabs(xb[j]);
    const float id = amax != 0.0f ? 1.0f / amax : 0.0f;
    out.d[b] = float_to_half(amax);
    for (int j = 0; j < 256; ++j)
      out.codes[256 * b + j] =
          static_cast<std::uint8_t>((truncate_to_int(std::round(xb[j] * id)) + 1) & 3);
  }
}

// The index of the table level nearest to x, ties to the upper one unless
// strictly closer below (ggml's best_index_int8).
inline int nearest_iq4nl_level(float x) {
  const auto& v = kIq4nlValues;
  if (x <= static_cast<float>(v[0])) return 0;
  if (x >= static_cast<float>(v[15])) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < static_cast<float>(v[mid]))
      hi = mid;
    else
      lo = mid;
  }
  return x - static_cast<float>(v[hi - 1]) < static_cast<float>(v[hi]) - x ? hi - 1 : hi;
}

// The weighted fit of IQ4_NL levels at inverse scale id: sum w q x and sum w q^2.
inline void iq4nl_fit(const float* x, const float* w, float id, float& sumqx, float& sumq2) {
  sumqx = sumq2 = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float q = static_cast<float>(kIq4nlValues[nearest_iq4nl_level(id * x[j])]);
    sumqx += w[j] * q * x[j];
    sumq2 += w[j] * q * q;
  }
}

// IQ4_NL: per block, the weighted least-squares scale at -max / -127 and at 15
// nearby inverse scales, weights x^2 or the importance ones with sigma^2 twice
// the block's mean square (quantize_iq4_nl, 7 steps each way).
inline void encode_iq4_nl(const float* x, const float* qw, Index cols, const RowOut& out) {
  const float first = static_cast<float>(kIq4nlValues[0]);
  for (Index b = 0; b < cols / 32; ++b) {
    const float* xb = x + 32 * b;
    const float sigma2 = sum_of_squares(xb, 32) * (2.0f / 32.0f);
    float weight[32];
    if (qw)
      importance_weights(xb, qw + 32 * b, 32, sigma2, weight);
    else
      for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
    const float max = signed_absmax(xb, 32);
    float d = 0.0f;
    if (std::fabs(max) >= kGroupMaxEps) {
      float sumqx, sumq2;
      iq4nl_fit(xb, weight, 1.0f / (-max / first), sumqx, sumq2);
      d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
      float best = d * sumqx;
      for (int step = -7; step <= 7; ++step) {
        iq4nl_fit(xb, weight, static_cast<float>(step + kIq4nlValues[0]) / max, sumqx, sumq2);
        if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
      }
    }
    out.d[b] = float_to_half(d);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; ++j)
      out.codes[32 * b + j] = static_cast<std::uint8_t>(nearest_iq4nl_level(id * xb[j]));
  }
}

// The K-quants' last step: every weight of super-block sb rounded on its
// sub-block's grid as stored, S = d * scale and B = -dmin * min; a sub-block
// whose S is 0 keeps the search's levels L.
inline void requantize_super_block(const GgmlBlockFormat& f, const float* x, Index sb,
                                   std::uint8_t* L, const RowOut& out) {
  const Index subs = f.block / f.sub_block;
  const int lo = -f.code_offset, hi = (1 << f.code_bits) - 1 - f.code_offset;
  for (Index j = 0; j < subs; ++j) {
    const Index s = sb * subs + j;
    const float d = half_to_float(out.d[sb]) * static_cast<float>(out.scales[s]);
    if (d == 0.0f) continue;
    const float dm =
        f.sub_mins ? half_to_float(out.dmin[sb]) * static_cast<float>(out.mins[s]) : 0.0f;
    for (Index i = j * f.sub_block; i < (j + 1) * f.sub_block; ++i)
      L[i] = static_cast<std::uint8_t>(clamp_int(nearest_int((x[i] + dm) / d), lo, hi) +
                                       f.code_offset);
  }
  std::copy(L, L + f.block, out.codes + sb * f.block);
}

// Q2_K: per sub-block of 16, search_affine on levels 0..3 (mean absolute
// error weighted by |x|; with importance, squared error and wider steps), then
// the scales and mins to 4 bits against d = max / 15 and dmin = max / 15
// (quantize_row_q2_K_ref); with importance both by search_positive
// (quantize_row_q2_K_impl).
inline void encode_q2_k(const float* x, const float* qw, Index sb, const RowOut& out) {
  std::uint8_t L[256];
  float scales[16], mins[16], sw[16], weight[16];
  const float sigma2 = qw ? sum_of_squares(x, 256) / 256.0f : 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (qw)
      importance_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weight);
    else
      for (int l = 0; l < 16; ++l) weight[l] = std::fabs(x[16 * j + l]);
    sw[j] = sum(weight, 16);
    scales[j] =
        qw ? search_affine(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, false)
           : search_affine(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
  }
  std::uint8_t packed[16] = {};  // scale | min << 4 per sub-block, with ggml's wrap-around
  if (qw) {
    std::uint8_t ls[16], lm[16];
    out.d[sb] = float_to_half(search_positive(16, 15, scales, sw, ls));
    out.dmin[sb] = float_to_half(search_positive(16, 15, mins, sw, lm));
    for (int j = 0; j < 16; ++j) packed[j] = static_cast<std::uint8_t>(ls[j] | (lm[j] << 4));
  } else {
    const float max_scale = *std::max_element(scales, scales + 16),
                max_min = *std::max_element(mins, mins + 16);
    for (int j = 0; j < 16 && max_scale > 0.0f; ++j)
      packed[j] = static_cast<std::uint8_t>(nearest_int(15.0f / max_scale * scales[j]));
    for (int j = 0; j < 16 && max_min > 0.0f; ++j)
      packed[j] = static_cast<std::uint8_t>(
          packed[j] | (static_cast<unsigned>(nearest_int(15.0f / max_min * mins[j])) << 4));
    out.d[sb] = float_to_half(max_scale > 0.0f ? max_scale / 15.0f : 0.0f);
    out.dmin[sb] = float_to_half(max_min > 0.0f ? max_min / 15.0f : 0.0f);
  }
  for (int j = 0; j < 16; ++j) {
    out.scales[16 * sb + j] = static_cast<std::int8_t>(packed[j] & 0xFu);
    out.mins[16 * sb + j] = static_cast<std::uint8_t>(packed[j] >> 4);
  }
  requantize_super_block(ggml_block_format(GgmlType::q2_k), x, sb, L, out);
}

// Q3_K: per sub-block of 16, search_q3 on levels -4..3, then the scales to
// signed 6 bits against d = -max / 32 (quantize_row_q3_K_ref); with importance
// search_symmetric for both (quantize_row_q3_K_impl).
inline void encode_q3_k(const float* x, const float* qw, Index sb, const RowOut& out) {
  std::int8_t L[256];
  float scales[16], sw[16], weight[16];
  const float sigma2 = qw ? 2.0f * sum_of_squares(x, 256) / 256.0f : 0.0f;
  float max_scale = 0.0f, amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    if (qw) {
      importance_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weight);
      sw[j] = sum(weight, 16);
      scales[j] = search_symmetric(16, 4, x + 16 * j, weight, L + 16 * j);
    } else {
      scales[j] = search_q3(16, 4, x + 16 * j, L + 16 * j);
    }
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  if (qw) {
    std::int8_t ls[16];
    out.d[sb] = float_to_half(search_symmetric(16, 32, scales, sw, ls));
    for (int j = 0; j < 16; ++j) out.scales[16 * sb + j] = static_cast<std::int8_t>(ls[j] - 32);
  } else {
    const float iscale = max_scale != 0.0f ? -32.0f / max_scale : 0.0f;
    for (int j = 0; j < 16; ++j) {
      const auto l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
      out.scales[16 * sb + j] =
          static_cast<std::int8_t>(max_scale != 0.0f ? clamp_int(l, -32, 31) : -32);
    }
    out.d[sb] = float_to_half(max_scale != 0.0f ? 1.0f / iscale : 0.0f);
  }
  std::uint8_t codes[256];
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<std::uint8_t>(L[i]);
  requantize_super_block(ggml_block_format(GgmlType::q3_k), x, sb, codes, out);
}

// Q4_K, Q5_K: per sub-block of 32, search_affine weighted by rms + |x|, then
// scales and mins to 6 bits against max / 63 (quantize_row_q4_K_ref); with
// importance, search_positive for both (quantize_row_q4_K_impl). Q5_K clamps
// those to 63 first, Q4_K packs them as they come.
inline void encode_k4(const GgmlBlockFormat& f, const float* x, const float* qw, Index sb,
                      const RowOut& out) {
  std::uint8_t L[256], ls[8], lm[8];
  float scales[8], mins[8], sw[8], weight[32];
  const int nmax = (1 << f.code_bits) - 1;
  const bool q4 = f.type == GgmlType::q4_k;
  const float sigma2 = qw ? 2.0f * sum_of_squares(x, 256) / 256.0f : 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    if (qw)
      importance_weights(xs, qw + 32 * j, 32, sigma2, weight);
    else {
      const float rms = std::sqrt(sum_of_squares(xs, 32) / 32.0f);
      for (int l = 0; l < 32; ++l) weight[l] = rms + std::fabs(xs[l]);
    }
    sw[j] = sum(weight, 32);
    scales[j] =
        qw ? search_affine(32, nmax, xs, weight, L + 32 * j, &mins[j], -0.9f, 0.05f, 36, false)
           : search_affine(32, nmax, xs, weight, L + 32 * j, &mins[j], q4 ? -1.0f : -0.5f, 0.1f,
                           q4 ? 20 : 15, false);
  }
  if (qw) {
    out.d[sb] = float_to_half(search_positive(8, 63, scales, sw, ls));
    out.dmin[sb] = float_to_half(search_positive(8, 63, mins, sw, lm));
    for (int j = 0; j < 8 && !q4; ++j) {
      ls[j] = std::min<std::uint8_t>(63, ls[j]);
      lm[j] = std::min<std::uint8_t>(63, lm[j]);
    }
  } else {
    const float max_scale = std::max(0.0f, *std::max_element(scales, scales + 8));
    const float max_min = std::max(0.0f, *std::max_element(mins, mins + 8));
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; ++j) {
      ls[j] =
          std::min<std::uint8_t>(63, static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j])));
      lm[j] = std::min<std::uint8_t>(63, static_cast<std::uint8_t>(nearest_int(inv_min * mins[j])));
    }
    out.d[sb] = float_to_half(max_scale / 63.0f);
    out.dmin[sb] = float_to_half(max_min / 63.0f);
  }
  std::uint8_t bytes[12], sc[8];
  pack_k4_scales(ls, lm, bytes);  // ggml's stores, then what they read back as
  unpack_k4_scales(bytes, sc, out.mins + 8 * sb);
  for (int j = 0; j < 8; ++j) out.scales[8 * sb + j] = static_cast<std::int8_t>(sc[j]);
  requantize_super_block(f, x, sb, L, out);
}

// Q6_K: per sub-block of 16, search_symmetric on levels -32..31 (weights x^2,
// or the importance as it is), then the scales to int8 against d = -max / 128.
inline void encode_q6_k(const float* x, const float* qw, Index sb, const RowOut& out) {
  std::int8_t L[256];
  float scales[16], max_scale = 0.0f, amax = 0.0f;
  for (int j = 0; j < 16; ++j) {
    scales[j] = search_symmetric(16, 32, x + 16 * j, qw ? qw + 16 * j : nullptr, L + 16 * j);
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  if (amax < kGroupMaxEps) {  // ggml zeroes the whole block
    std::fill(out.codes + 256 * sb, out.codes + 256 * (sb + 1), std::uint8_t{0});
    std::fill(out.scales + 16 * sb, out.scales + 16 * (sb + 1), std::int8_t{0});
    out.d[sb] = float_to_half(0.0f);
    return;
  }
  const float iscale = -128.0f / max_scale;
  out.d[sb] = float_to_half(1.0f / iscale);
  for (int j = 0; j < 16; ++j)
    out.scales[16 * sb + j] =
        static_cast<std::int8_t>(std::min(127, nearest_int(iscale * scales[j])));
  std::uint8_t codes[256];
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<std::uint8_t>(L[i]);
  requantize_super_block(ggml_block_format(GgmlType::q6_k), x, sb, codes, out);
}

// ggml stores d and dmin in fp16 and writes Inf when they overflow (its own
// validation then rejects the tensor); we say which block could not be stored.
inline void require_fp16_range(const GgmlWeights& w, const MatrixFRef& weights) {
  for (Index r = 0; r < w.rows(); ++r)
    for (Index b = 0; b < w.blocks(); ++b) {
      const bool d_ok = (w.d(r, b) & 0x7c00u) != 0x7c00u;
      const bool dmin_ok = w.dmin.size() == 0 || (w.dmin(r, b) & 0x7c00u) != 0x7c00u;
      const Index block = w.format().block;
      require(d_ok && dmin_ok, "quantize_ggml: ", ggml_type_name(w.type), " cannot store row ", r,
              ", columns ", b * block, "..", (b + 1) * block - 1, ": its ", d_ok ? "dmin" : "d",
              " overflows fp16 (max |w| there is ",
              weights.row(r).segment(b * block, block).cwiseAbs().maxCoeff(), ")");
    }
}

inline void encode_row(const GgmlBlockFormat& f, const float* x, const float* qw, Index cols,
                       const RowOut& out) {
  switch (f.type) {
    case GgmlType::q4_0:
    case GgmlType::q5_0:
      return encode_legacy_symmetric(x, qw, cols, f.code_bits, out);
    case GgmlType::q4_1:
    case GgmlType::q5_1:
      return encode_legacy_affine(x, qw, cols, f.code_bits, out);
    case GgmlType::q8_0:
      return encode_q8_0(x, cols, out);
    case GgmlType::tq2_0:
      return encode_tq2_0(x, cols, out);
    case GgmlType::iq4_nl:
      return encode_iq4_nl(x, qw, cols, out);
    default:
      break;
  }
  for (Index sb = 0; sb < cols / 256; ++sb) {
    const float* xs = x + 256 * sb;
    const float* qs = qw ? qw + 256 * sb : nullptr;
    if (f.type == GgmlType::q2_k)
      encode_q2_k(xs, qs, sb, out);
    else if (f.type == GgmlType::q3_k)
      encode_q3_k(xs, qs, sb, out);
    else if (f.type == GgmlType::q6_k)
      encode_q6_k(xs, qs, sb, out);
    else
      encode_k4(f, xs, qs, sb, out);
  }
}

}  // namespace detail::ggml

// llama.cpp's quantizer (ggml_quantize_chunk) into one of the block types of
// core/ggml_types.hpp, with or without an importance matrix; rows in parallel.
inline GgmlResult quantize_ggml(const MatrixFRef& weights, const GgmlConfig& config) {
  const detail::Stopwatch stopwatch;
  const GgmlBlockFormat& f = ggml_block_format(config.type);
  const char* name = ggml_type_name(config.type);
  detail::require_nonempty(weights, "quantize_ggml: weights");
  detail::require_finite(weights, "quantize_ggml: weights");
  detail::require(weights.cols() % f.block == 0, "quantize_ggml: ", name,
                  " needs in_features to be a multiple of ", f.block, ", got ", weights.cols());
  const bool weighted = config.importance.size() != 0;
  if (weighted) {
    detail::require(config.importance.size() == weights.cols(), "GgmlConfig::importance: expected ",
                    weights.cols(), " entries (one per input column), got ",
                    config.importance.size());
    detail::require_finite(config.importance, "GgmlConfig::importance");
    detail::require(config.importance.minCoeff() >= 0.0f,
                    "GgmlConfig::importance: expected values >= 0, got ",
                    config.importance.minCoeff());
  }
  GgmlResult result{GgmlWeights::zeros(config.type, weights.rows(), weights.cols()), {}};
  GgmlWeights& out = result.weights;
  const float* qw = weighted ? config.importance.data() : nullptr;
  detail::parallel_for(weights.rows(), [&](Index r) {
    detail::ggml::encode_row(f, weights.data() + r * weights.outerStride(), qw, weights.cols(),
                             detail::ggml::RowOut(out, r));
  });
  detail::ggml::require_fp16_range(out, weights);
  result.report.seconds = stopwatch.seconds();
  return result;
}

}  // namespace lowbit

#if defined(__clang__)
#pragma float_control(pop)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
