// The float32 arithmetic of the environment the golden files were made in:
// torch 1.13 on CPU (its AVX2 kernels) over the reference (netlib) BLAS and
// LAPACK. Each routine performs, for every output element, the same float
// operations in the same order as that code, so results are bit for bit the
// reference's: the damped inverse-Hessian factor of GPTQModel's
// hessian_inverse (spotrf, spotri, spotrf) matches the golden Hinv exactly.
//
// Loops are reordered, blocked and vectorized only where each element's
// sequence of operations stays the same: an element's chain of updates
// c = c + a * b (one rounding for the product, one for the sum, never a fused
// multiply-add) runs in the reference's order; independent chains run in SIMD
// lanes and in parallel. Zero terms the reference skips (netlib's
// `IF (B(K,J).NE.ZERO)`) are added here instead: adding a zero product leaves
// a value unchanged (at most the sign of an exact zero differs).
//
// Matrices are column-major views (Fortran order, as LAPACK sees them).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/types.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit::reference {

// A column-major float matrix view: element (i, j) at data[i + j * ld].
struct View {
  float* data;
  Index ld;
  float& operator()(Index i, Index j) const { return data[i + j * ld]; }
  View at(Index i, Index j) const { return {&(*this)(i, j), ld}; }
};

// torch.sum of n contiguous floats (CPU, AVX2 build, one thread): the
// cascade sum of 8-lane vectors over 4 interleaved rows, then the scalar tail
// and the lanes (ATen SumKernel.cpp, vectorized_inner_sum / multi_row_sum).
inline float torch_sum(const float* x, Index n) {
  constexpr Index lanes = 8, rows = 4, levels = 4;
  using Vec = std::array<float, lanes>;
  const Index vectors = n / lanes, steps = vectors / rows;
  const auto ceil_log2 = [](Index v) {
    Index bits = 0;
    while ((Index(1) << bits) < v) ++bits;
    return v <= 2 ? Index(1) : bits;
  };
  const Index level_power = std::max<Index>(4, ceil_log2(steps) / levels);
  const Index level_step = Index(1) << level_power, level_mask = level_step - 1;
  Vec acc[levels][rows] = {};
  const auto add_step = [&](Index i) {
    for (Index r = 0; r < rows; ++r)
      for (Index l = 0; l < lanes; ++l) acc[0][r][l] += x[(i * rows + r) * lanes + l];
  };
  Index i = 0;
  while (i + level_step <= steps) {
    for (Index j = 0; j < level_step; ++j, ++i) add_step(i);
    for (Index j = 1; j < levels; ++j) {
      for (Index r = 0; r < rows; ++r)
        for (Index l = 0; l < lanes; ++l) {
          acc[j][r][l] += acc[j - 1][r][l];
          acc[j - 1][r][l] = 0;
        }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < steps; ++i) add_step(i);
  for (Index j = 1; j < levels; ++j)
    for (Index r = 0; r < rows; ++r)
      for (Index l = 0; l < lanes; ++l) acc[0][r][l] += acc[j][r][l];
  Vec sum = acc[0][0];
  for (Index v = steps * rows; v < vectors; ++v)
    for (Index l = 0; l < lanes; ++l) sum[l] += x[v * lanes + l];
  for (Index r = 1; r < rows; ++r)
    for (Index l = 0; l < lanes; ++l) sum[l] += acc[0][r][l];
  float total = 0;
  for (Index k = vectors * lanes; k < n; ++k) total += x[k];
  for (Index l = 0; l < lanes; ++l) total += sum[l];
  return total;
}

namespace detail {

using Packet = Eigen::internal::packet_traits<float>::type;
constexpr Index packet = Eigen::internal::packet_traits<float>::size;
constexpr Index mr = 2 * packet;                                   // micro-tile rows (lanes)
constexpr Index nr = packet >= 16 ? 8 : packet >= 8 ? 6 : 4;      // micro-tile columns
constexpr Index kc = 256, mc = 16 * mr, nc = 64 * nr;             // cache blocks

// Worker threads for a job of `work` multiply-adds: all of Eigen's threads
// for big jobs, one for small ones (a parallel region costs more than it
// saves there, and far more on a loaded machine).
inline int threads(double work = 1e12) {
#ifdef _OPENMP
  constexpr double per_thread = 1 << 22;
  return static_cast<int>(std::clamp<double>(work / per_thread, 1, std::max(1, Eigen::nbThreads())));
#else
  (void)work;
  return 1;
#endif
}

// How a micro tile combines with c: accumulate onto it, or accumulate from
// zero and subtract the product (the reference's `c - a @ b`).
enum class Combine { accumulate, subtract };

// c(0:mr, 0:nr) (column-major, ld mr): acc(i, j) = acc(i, j) + a(i, l) * b(l, j)
// for l = 0..len-1 (a packed as a[l * mr + i], b as b[l * nr + j]), with acc
// starting from c (accumulate) or from 0 and then c = c - acc (subtract).
template <Combine combine>
void micro_chain(Index len, const float* a, const float* b, float* c) {
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif
  using namespace Eigen::internal;
  Packet acc[nr][2];
  for (Index j = 0; j < nr; ++j)
    for (Index h = 0; h < 2; ++h)
      acc[j][h] = combine == Combine::accumulate ? ploadu<Packet>(c + j * mr + h * packet) : pset1<Packet>(0.0f);
  for (Index l = 0; l < len; ++l) {
    const Packet a0 = ploadu<Packet>(a + l * mr), a1 = ploadu<Packet>(a + l * mr + packet);
    for (Index j = 0; j < nr; ++j) {
      const Packet bj = pset1<Packet>(b[l * nr + j]);
      acc[j][0] = padd(acc[j][0], pmul(a0, bj));
      acc[j][1] = padd(acc[j][1], pmul(a1, bj));
    }
  }
  for (Index j = 0; j < nr; ++j)
    for (Index h = 0; h < 2; ++h) {
      float* at = c + j * mr + h * packet;
      pstoreu(at, combine == Combine::accumulate ? acc[j][h] : psub(ploadu<Packet>(at), acc[j][h]));
    }
}

// The blocked product on rows [m0, m1) and columns [n0, n1) of c, on the
// calling thread (with `subtract`, k must fit one depth block).
template <Combine combine, class A, class B, class First>
void chain_block(Index m0, Index m1, Index n0, Index n1, Index k, A& a, B& b, View c, First& first) {
  std::vector<float> a_pack(static_cast<std::size_t>(kc * mc)), b_pack(static_cast<std::size_t>(kc * nc));
  alignas(64) float tile[mr * nr];
  for (Index jc = n0; jc < n1; jc += nc) {
    const Index nb = std::min(nc, n1 - jc);
    const Index slivers = (nb + nr - 1) / nr;
    for (Index lc = 0; lc < k; lc += kc) {
      const Index kb = std::min(kc, k - lc);
      for (Index s = 0; s < slivers; ++s)
        for (Index l = 0; l < kb; ++l)
          for (Index j = 0; j < nr; ++j) {
            const Index col = jc + s * nr + j;
            b_pack[static_cast<std::size_t>(s * kb * nr + l * nr + j)] = col < n1 ? b(lc + l, col) : 0.0f;
          }
      for (Index ic = m0; ic < m1; ic += mc) {
        const Index mb = std::min(mc, m1 - ic);
        const Index row_slivers = (mb + mr - 1) / mr;
        for (Index s = 0; s < row_slivers; ++s)
          for (Index l = 0; l < kb; ++l)
            for (Index i = 0; i < mr; ++i) {
              const Index row = ic + s * mr + i;
              a_pack[static_cast<std::size_t>(s * kb * mr + l * mr + i)] = row < m1 ? a(row, lc + l) : 0.0f;
            }
        for (Index s = 0; s < row_slivers; ++s) {
          const Index i0 = ic + s * mr, rows = std::min(mr, m1 - i0);
          const Index l0 = std::clamp<Index>(first(i0) - lc, 0, kb);
          if (l0 >= kb) continue;
          for (Index t = 0; t < slivers; ++t) {
            const Index j0 = jc + t * nr, cols = std::min(nr, n1 - j0);
            for (Index j = 0; j < nr; ++j)
              for (Index i = 0; i < mr; ++i) tile[j * mr + i] = (i < rows && j < cols) ? c(i0 + i, j0 + j) : 0.0f;
            micro_chain<combine>(kb - l0, a_pack.data() + s * kb * mr + l0 * mr,
                                 b_pack.data() + t * kb * nr + l0 * nr, tile);
            for (Index j = 0; j < cols; ++j)
              for (Index i = 0; i < rows; ++i) c(i0 + i, j0 + j) = tile[j * mr + i];
          }
        }
      }
    }
  }
}

// Runs chain_block over contiguous ranges of the longer side of c, one range
// per thread: one parallel region per product.
template <Combine combine, class A, class B, class First>
void blocked_product(Index m, Index n, Index k, A& a, B& b, View c, First& first) {
  if (m <= 0 || n <= 0 || k <= 0) return;
  const bool split_rows = m >= n;
  const Index unit = split_rows ? mr : nr, extent = split_rows ? m : n;
  const Index units = (extent + unit - 1) / unit;
  const int workers = static_cast<int>(std::min<Index>(
      threads(static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k)), units));
#ifdef _OPENMP
#pragma omp parallel num_threads(workers) if (workers > 1)
#endif
  {
#ifdef _OPENMP
    const Index id = omp_get_thread_num(), count = omp_get_num_threads();
#else
    const Index id = 0, count = 1;
#endif
    const Index begin = std::min(extent, units * id / count * unit);
    const Index end = std::min(extent, units * (id + 1) / count * unit);
    if (begin < end) {
      if (split_rows) chain_block<combine>(begin, end, 0, n, k, a, b, c, first);
      else chain_block<combine>(0, m, begin, end, k, a, b, c, first);
    }
  }
  (void)workers;
}

}  // namespace detail

// The chain product every netlib level-3 loop nest reduces to:
//   c(i, j) = c(i, j) + a(i, l) * b(l, j)   for l = 0, 1, ..., k-1 in order,
// for i < m, j < n. `a(i, l)` and `b(l, j)` are read once while packing, so
// they may transpose, negate (exact) or zero-pad. Rows i0.. of a micro tile
// have no term before l = first(i0) (zero terms are skipped there).
template <class A, class B, class First>
void chain_product(Index m, Index n, Index k, A a, B b, View c, First first) {
  detail::blocked_product<detail::Combine::accumulate>(m, n, k, a, b, c, first);
}

template <class A, class B>
void chain_product(Index m, Index n, Index k, A a, B b, View c) {
  chain_product(m, n, k, a, b, c, [](Index) { return Index(0); });
}

// c(i, j) = c(i, j) - t(i, j), t(i, j) = sum_l a(i, l) b(l, j) accumulated
// from 0 in l order: the reference's `C - A @ B` (a matmul, then the
// difference).
template <class A, class B>
void subtract_product(Index m, Index n, Index k, A a, B b, View c) {
  auto all = [](Index) { return Index(0); };
  if (k <= 0) return detail::blocked_product<detail::Combine::subtract>(m, n, k, a, b, c, all);
  std::vector<float> t(static_cast<std::size_t>(m * n), 0.0f);
  chain_product(m, n, k, a, b, View{t.data(), m});
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) c(i, j) = c(i, j) - t[static_cast<std::size_t>(i + j * m)];
}

namespace detail {

template <class F, std::size_t... J>
void unrolled(F&& f, std::index_sequence<J...>) {
  (f(std::integral_constant<Index, static_cast<Index>(J)>{}), ...);
}

// lane_sweep for the lanes of one packet starting at lane i, columns in
// blocks of `width` held in registers.
template <class P, Index width, class Upper, class Step>
void sweep_packet(Index i, Index g, const Upper& u, const float* x, float* e, Index stride, Step& step) {
  using namespace Eigen::internal;
  const auto columns = std::make_index_sequence<static_cast<std::size_t>(width)>{};
  Index j0 = 0;
  for (; j0 + width <= g; j0 += width) {
    P acc[width];
    unrolled([&](auto j) { acc[j] = ploadu<P>(x + (j0 + j) * stride + i); }, columns);
    for (Index t = 0; t < j0; ++t) {  // the updates deferred from earlier blocks, in order
      const P et = ploadu<P>(e + t * stride + i);
      unrolled([&](auto j) { acc[j] = psub(acc[j], pmul(et, pset1<P>(u(t, j0 + j)))); }, columns);
    }
    unrolled([&](auto t) {
      const P et = step(j0 + t, i, acc[t]);
      pstoreu(e + (j0 + t) * stride + i, et);
      unrolled([&](auto j) {
        if constexpr (j > t) acc[j] = psub(acc[j], pmul(et, pset1<P>(u(j0 + t, j0 + j))));
      }, columns);
    }, columns);
  }
  for (Index j = j0; j < g; ++j) {  // a last, narrower block: one column at a time
    P acc = ploadu<P>(x + j * stride + i);
    for (Index t = 0; t < j; ++t) acc = psub(acc, pmul(ploadu<P>(e + t * stride + i), pset1<P>(u(t, j))));
    pstoreu(e + j * stride + i, step(j, i, acc));
  }
}

}  // namespace detail

// The sweep behind a forward substitution with U^T (reference strsm: left,
// lower, no transpose) and behind GPTQ-style error feedback: for t = 0..g-1,
// column t of x, once every earlier column has been fed back into it, goes
// through step(t, lane, x_t) (a packet of lanes, or one lane as a float),
// which returns the fed-back column e_t (stored in e); every later column
// takes x_j = x_j - e_t * U(t, j). Each element sees exactly these operations
// in this order; the lanes of a packet sweep together with a block of columns
// in registers. Columns are x[t * stride + lane] (lanes contiguous); e has the
// same layout and may be x (then x becomes the result); x is otherwise only read.
template <class Upper, class Step>
void lane_sweep(Index lanes, Index g, const Upper& u, const float* x, float* e, Index stride, Step step) {
  using Packet = detail::Packet;
  constexpr Index width = detail::packet >= 16 ? 16 : 8;
  Index i = 0;
  for (; i + detail::packet <= lanes; i += detail::packet)
    detail::sweep_packet<Packet, width>(i, g, u, x, e, stride, step);
  for (; i < lanes; ++i) detail::sweep_packet<float, width>(i, g, u, x, e, stride, step);
}

// Forward substitution U^T z = x in place (reference strsm, left, lower, no
// transpose, with A = U^T): z_t = x_t / U(t, t), after the sweep's updates.
template <class Upper>
void forward_substitute(Index lanes, Index g, const Upper& u, float* x, Index stride) {
  lane_sweep(lanes, g, u, x, x, stride, [&](Index t, Index, auto xt) {
    return Eigen::internal::pdiv(xt, Eigen::internal::pset1<decltype(xt)>(u(t, t)));
  });
}

// c = alpha * t + c with t(i, j) = sum_l a(i, l) b(l, j) accumulated from 0:
// the reference's dot-product loops (sgemm/ssyrk with a transposed operand).
// `keep(i, j)` selects the elements written (the stored triangle of syrk).
template <class A, class B, class Keep>
void dot_update(Index m, Index n, Index k, float alpha, A a, B b, View c, Keep keep) {
  if (m <= 0 || n <= 0) return;
  std::vector<float> t(static_cast<std::size_t>(m * n), 0.0f);
  chain_product(m, n, k, a, b, View{t.data(), m});
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i)
      if (keep(i, j)) c(i, j) = alpha * t[static_cast<std::size_t>(i + j * m)] + c(i, j);
}

namespace detail {

constexpr Index nb = 64;  // ILAENV's block size for POTRF, TRTRI and LAUUM

// Rows of a column-major panel in SIMD lanes, `tile` rows at a time (in parallel).
template <class Body>
void for_row_tiles(Index m, Body body) {
  constexpr Index tile = 256;
  const Index tiles = (m + tile - 1) / tile;
  const int workers = threads(static_cast<double>(m) * nb * nb / 2);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1 && tiles > 1)
#endif
  for (Index t = 0; t < tiles; ++t) body(t * tile, std::min(tile, m - t * tile));
  (void)workers;
}

// STRSM('Right', 'Lower', 'Transpose', 'Non-unit'), alpha 1: B = B inv(A^T).
inline void trsm_right_lower_trans(Index m, Index n, View a, View b) {
  for_row_tiles(m, [&](Index r0, Index rows) {
    for (Index k = 0; k < n; ++k) {
      const float inverse = 1.0f / a(k, k);
      float* bk = &b(r0, k);
      for (Index i = 0; i < rows; ++i) bk[i] = inverse * bk[i];
      for (Index j = k + 1; j < n; ++j) {
        const float ajk = a(j, k);
        float* bj = &b(r0, j);
        for (Index i = 0; i < rows; ++i) bj[i] = bj[i] - ajk * bk[i];
      }
    }
  });
}

// STRSM('Right', 'Lower', 'No transpose', 'Non-unit'), alpha -1: B = -B inv(A).
inline void trsm_right_lower_negated(Index m, Index n, View a, View b) {
  for_row_tiles(m, [&](Index r0, Index rows) {
    for (Index j = n - 1; j >= 0; --j) {
      float* bj = &b(r0, j);
      for (Index i = 0; i < rows; ++i) bj[i] = -1.0f * bj[i];
      for (Index k = j + 1; k < n; ++k) {
        const float akj = a(k, j);
        const float* bk = &b(r0, k);
        for (Index i = 0; i < rows; ++i) bj[i] = bj[i] - akj * bk[i];
      }
      const float inverse = 1.0f / a(j, j);
      for (Index i = 0; i < rows; ++i) bj[i] = inverse * bj[i];
    }
  });
}

// Columns of B in SIMD lanes through a row-major copy of a block of columns.
template <class Body>
void for_column_tiles(Index m, Index n, View b, Body body) {
  constexpr Index tile = 256;
  const Index tiles = (n + tile - 1) / tile;
  const int workers = threads(static_cast<double>(n) * m * m / 2);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1 && tiles > 1)
#endif
  for (Index t = 0; t < tiles; ++t) {
    const Index j0 = t * tile, cols = std::min(tile, n - j0);
    std::vector<float> rows(static_cast<std::size_t>(m * cols));  // rows[i * cols + j] = b(i, j0 + j)
    for (Index j = 0; j < cols; ++j)
      for (Index i = 0; i < m; ++i) rows[static_cast<std::size_t>(i * cols + j)] = b(i, j0 + j);
    body(rows.data(), cols);
    for (Index j = 0; j < cols; ++j)
      for (Index i = 0; i < m; ++i) b(i, j0 + j) = rows[static_cast<std::size_t>(i * cols + j)];
  }
  (void)workers;
}

// STRSM('Left', 'Upper', 'Transpose', 'Non-unit'), alpha 1: B = inv(A^T) B.
inline void trsm_left_upper_trans(Index m, Index n, View a, View b) {
  for_column_tiles(m, n, b, [&](float* x, Index cols) {
    for (Index i = 0; i < m; ++i) {
      float* xi = x + i * cols;
      for (Index k = 0; k < i; ++k) {
        const float aki = a(k, i);
        const float* xk = x + k * cols;
        for (Index j = 0; j < cols; ++j) xi[j] = xi[j] - aki * xk[j];
      }
      const float aii = a(i, i);
      for (Index j = 0; j < cols; ++j) xi[j] = xi[j] / aii;
    }
  });
}

// STRMM('Left', 'Lower', 'Transpose', 'Non-unit'), alpha 1: B = A^T B.
inline void trmm_left_lower_trans(Index m, Index n, View a, View b) {
  for_column_tiles(m, n, b, [&](float* x, Index cols) {
    for (Index i = 0; i < m; ++i) {
      float* xi = x + i * cols;
      const float aii = a(i, i);
      for (Index j = 0; j < cols; ++j) xi[j] = xi[j] * aii;
      for (Index k = i + 1; k < m; ++k) {
        const float aki = a(k, i);
        const float* xk = x + k * cols;
        for (Index j = 0; j < cols; ++j) xi[j] = xi[j] + aki * xk[j];
      }
    }
  });
}

// STRMM('Left', 'Lower', 'No transpose', 'Non-unit'), alpha 1: B = A B. Each
// element is scaled by its diagonal entry, then takes the terms k = i-1 .. 0.
inline void trmm_left_lower(Index m, Index n, View a, View b) {
  if (m <= 0 || n <= 0) return;
  std::vector<float> t(static_cast<std::size_t>(m * n));
  const View tv{t.data(), m};
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) tv(i, j) = b(i, j) * a(i, i);
  chain_product(
      m, n, m, [&](Index i, Index l) { const Index k = m - 1 - l; return k < i ? a(i, k) : 0.0f; },
      [&](Index l, Index j) { return b(m - 1 - l, j); }, tv,
      [&](Index i0) { return std::max<Index>(0, m - i0 - mr + 1); });
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < m; ++i) b(i, j) = tv(i, j);
}

// STRMV('Lower', 'No transpose', 'Non-unit') on x.
inline void trmv_lower(Index n, View a, float* x) {
  for (Index j = n - 1; j >= 0; --j) {
    if (x[j] == 0) continue;
    const float t = x[j];
    for (Index i = n - 1; i > j; --i) x[i] = x[i] + t * a(i, j);
    x[j] = x[j] * a(j, j);
  }
}

// SPOTRF2, lower (recursive). False when a pivot is not positive.
inline bool potrf2_lower(Index n, View a) {
  if (n == 1) {
    if (!(a(0, 0) > 0)) return false;
    a(0, 0) = std::sqrt(a(0, 0));
    return true;
  }
  const Index n1 = n / 2, n2 = n - n1;
  if (!potrf2_lower(n1, a)) return false;
  trsm_right_lower_trans(n2, n1, a, a.at(n1, 0));
  // SSYRK('Lower', 'No transpose', alpha -1): c(i, j) += (-a(j, l)) a(i, l), i >= j.
  const View s = a.at(n1, 0), c = a.at(n1, n1);
  for (Index j = 0; j < n2; ++j)
    for (Index l = 0; l < n1; ++l) {
      const float t = -1.0f * s(j, l);
      for (Index i = j; i < n2; ++i) c(i, j) = c(i, j) + t * s(i, l);
    }
  return potrf2_lower(n2, c);
}

// SPOTRF2, upper (recursive).
inline bool potrf2_upper(Index n, View a) {
  if (n == 1) {
    if (!(a(0, 0) > 0)) return false;
    a(0, 0) = std::sqrt(a(0, 0));
    return true;
  }
  const Index n1 = n / 2, n2 = n - n1;
  if (!potrf2_upper(n1, a)) return false;
  trsm_left_upper_trans(n1, n2, a, a.at(0, n1));
  // SSYRK('Upper', 'Transpose', alpha -1): c(i, j) = -(sum_l s(l, i) s(l, j)) + c(i, j), i <= j.
  const View s = a.at(0, n1), c = a.at(n1, n1);
  for (Index j = 0; j < n2; ++j)
    for (Index i = 0; i <= j; ++i) {
      float t = 0;
      for (Index l = 0; l < n1; ++l) t = t + s(l, i) * s(l, j);
      c(i, j) = -1.0f * t + c(i, j);
    }
  return potrf2_upper(n2, c);
}

// STRTI2, lower, non-unit.
inline void trti2_lower(Index n, View a) {
  std::vector<float> x(static_cast<std::size_t>(n));
  for (Index j = n - 1; j >= 0; --j) {
    a(j, j) = 1.0f / a(j, j);
    const float ajj = -a(j, j);
    if (j == n - 1) continue;
    const Index len = n - j - 1;
    for (Index i = 0; i < len; ++i) x[static_cast<std::size_t>(i)] = a(j + 1 + i, j);
    trmv_lower(len, a.at(j + 1, j + 1), x.data());
    for (Index i = 0; i < len; ++i) a(j + 1 + i, j) = ajj * x[static_cast<std::size_t>(i)];
  }
}

// SLAUU2, lower: the lower triangle of L^T L.
inline void lauu2_lower(Index n, View a) {
  for (Index i = 0; i < n; ++i) {
    const float aii = a(i, i);
    if (i < n - 1) {
      float dot = 0;
      for (Index r = i; r < n; ++r) dot = dot + a(r, i) * a(r, i);
      a(i, i) = dot;
      // SGEMV('Transpose', beta = aii): y = beta y, then y(j) += sum_r a(r, j) x(r).
      if (aii != 1.0f)
        for (Index j = 0; j < i; ++j) a(i, j) = aii * a(i, j);
      for (Index j = 0; j < i; ++j) {
        float t = 0;
        for (Index r = i + 1; r < n; ++r) t = t + a(r, j) * a(r, i);
        a(i, j) = a(i, j) + 1.0f * t;
      }
    } else {
      for (Index j = 0; j <= i; ++j) a(i, j) = aii * a(i, j);
    }
  }
}

}  // namespace detail

// SPOTRF('Lower'): A = L L^T in place (the lower triangle). False when A is
// not positive definite (torch.linalg.cholesky raises then).
inline bool potrf_lower(Index n, View a) {
  using namespace detail;
  if (nb >= n) return potrf2_lower(n, a);
  for (Index j = 0; j < n; j += nb) {
    const Index jb = std::min(nb, n - j);
    // SSYRK('Lower', 'No transpose', jb, j, -1): the diagonal block, lower triangle.
    std::vector<float> d(static_cast<std::size_t>(jb * jb));
    const View dv{d.data(), jb};
    for (Index c = 0; c < jb; ++c)
      for (Index r = 0; r < jb; ++r) dv(r, c) = a(j + r, j + c);
    chain_product(jb, jb, j, [&](Index i, Index l) { return a(j + i, l); },
                  [&](Index l, Index c) { return -1.0f * a(j + c, l); }, dv);
    for (Index c = 0; c < jb; ++c)
      for (Index r = c; r < jb; ++r) a(j + r, j + c) = dv(r, c);
    if (!potrf2_lower(jb, a.at(j, j))) return false;
    if (j + jb < n) {
      const Index rest = n - j - jb;
      // SGEMM('No transpose', 'Transpose', alpha -1): c(i, c) += (-a(j + c, l)) a(j + jb + i, l).
      chain_product(rest, jb, j, [&](Index i, Index l) { return a(j + jb + i, l); },
                    [&](Index l, Index c) { return -1.0f * a(j + c, l); }, a.at(j + jb, j));
      trsm_right_lower_trans(rest, jb, a.at(j, j), a.at(j + jb, j));
    }
  }
  return true;
}

// SPOTRF('Upper'): A = U^T U in place (the upper triangle).
inline bool potrf_upper(Index n, View a) {
  using namespace detail;
  if (nb >= n) return potrf2_upper(n, a);
  for (Index j = 0; j < n; j += nb) {
    const Index jb = std::min(nb, n - j);
    // SSYRK('Upper', 'Transpose', jb, j, -1).
    dot_update(jb, jb, j, -1.0f, [&](Index i, Index l) { return a(l, j + i); },
               [&](Index l, Index c) { return a(l, j + c); }, a.at(j, j), [](Index i, Index c) { return i <= c; });
    if (!potrf2_upper(jb, a.at(j, j))) return false;
    if (j + jb < n) {
      const Index rest = n - j - jb;
      // SGEMM('Transpose', 'No transpose', alpha -1).
      dot_update(jb, rest, j, -1.0f, [&](Index i, Index l) { return a(l, j + i); },
                 [&](Index l, Index c) { return a(l, j + jb + c); }, a.at(j, j + jb), [](Index, Index) { return true; });
      detail::trsm_left_upper_trans(jb, rest, a.at(j, j), a.at(j, j + jb));
    }
  }
  return true;
}

// STRTRI('Lower', 'Non-unit'): L = inv(L) in place.
inline void trtri_lower(Index n, View a) {
  using namespace detail;
  if (nb >= n) return trti2_lower(n, a);
  for (Index j = ((n - 1) / nb) * nb; j >= 0; j -= nb) {
    const Index jb = std::min(nb, n - j);
    if (j + jb < n) {
      trmm_left_lower(n - j - jb, jb, a.at(j + jb, j + jb), a.at(j + jb, j));
      trsm_right_lower_negated(n - j - jb, jb, a.at(j, j), a.at(j + jb, j));
    }
    trti2_lower(jb, a.at(j, j));
  }
}

// SLAUUM('Lower'): the lower triangle of L^T L in place.
inline void lauum_lower(Index n, View a) {
  using namespace detail;
  if (nb >= n) return lauu2_lower(n, a);
  for (Index i = 0; i < n; i += nb) {
    const Index ib = std::min(nb, n - i);
    trmm_left_lower_trans(ib, i, a.at(i, i), a.at(i, 0));
    lauu2_lower(ib, a.at(i, i));
    if (i + ib < n) {
      const Index rest = n - i - ib;
      // SGEMM('Transpose', 'No transpose', alpha 1), then SSYRK('Lower', 'Transpose', alpha 1).
      dot_update(ib, i, rest, 1.0f, [&](Index r, Index l) { return a(i + ib + l, i + r); },
                 [&](Index l, Index c) { return a(i + ib + l, c); }, a.at(i, 0), [](Index, Index) { return true; });
      dot_update(ib, ib, rest, 1.0f, [&](Index r, Index l) { return a(i + ib + l, i + r); },
                 [&](Index l, Index c) { return a(i + ib + l, i + c); }, a.at(i, i),
                 [](Index r, Index c) { return r >= c; });
    }
  }
}

// torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True):
// the upper factor U of h^-1 = U^T U (row-major result, lower triangle zero).
// False when a factorization fails.
inline bool cholesky_inverse_upper(const MatrixF& h, MatrixF& u) {
  const Index n = h.rows();
  // f(i, j) over an n x n matrix tile by tile, so that row- and column-major
  // sides of a copy both stay in cache.
  const auto tiled = [n](auto f) {
    constexpr Index tile = 64;
    for (Index j0 = 0; j0 < n; j0 += tile)
      for (Index i0 = 0; i0 < n; i0 += tile)
        for (Index j = j0; j < std::min(n, j0 + tile); ++j)
          for (Index i = i0; i < std::min(n, i0 + tile); ++i) f(i, j);
  };
  std::vector<float> a(static_cast<std::size_t>(n * n));
  const View v{a.data(), n};
  tiled([&](Index i, Index j) { v(i, j) = h(i, j); });
  if (!potrf_lower(n, v)) return false;
  trtri_lower(n, v);  // SPOTRI = STRTRI + SLAUUM
  lauum_lower(n, v);
  tiled([&](Index i, Index j) {  // torch fills the upper triangle from the lower one
    if (i < j) v(i, j) = v(j, i);
  });
  if (!potrf_upper(n, v)) return false;
  u.resize(n, n);
  tiled([&](Index i, Index j) { u(i, j) = i <= j ? v(i, j) : 0.0f; });
  return true;
}

struct InverseHessianF {
  MatrixF factor;  // U, upper, U^T U = (H + damp)^-1, as the reference computes it in float
  double percdamp = 0;
  double diagonal_floor = 0;
  int failed_factorizations = 0;
};

// GPTQModel's hessian_inverse on a float H, bit for bit: damp * mean(diag)
// added in float (the mean as torch computes it), the Cholesky pipeline above,
// and the same recovery as inverse_hessian_factor when it fails.
inline InverseHessianF inverse_hessian_factor(const MatrixF& h, const DampingConfig& config = {}) {
  lowbit::detail::require(h.rows() > 0 && h.rows() == h.cols(),
                          "reference::inverse_hessian_factor: H must be square and non-empty, got ", h.rows(), " x ",
                          h.cols());
  lowbit::detail::require_finite(h, "reference::inverse_hessian_factor: H");
  const Index n = h.rows();
  std::vector<float> diag(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) diag[static_cast<std::size_t>(i)] = h(i, i);
  InverseHessianF result;
  MatrixF damped = h;
  const DampingOutcome outcome = escalate_damping<float>(
      diag, config, [&](const std::vector<float>& d) { return torch_sum(d.data(), n) / static_cast<float>(n); },
      [&](const std::vector<float>& d) {
        for (Index i = 0; i < n; ++i) damped(i, i) = d[static_cast<std::size_t>(i)];
        return cholesky_inverse_upper(damped, result.factor);
      });
  result.percdamp = outcome.percdamp;
  result.diagonal_floor = outcome.diagonal_floor;
  result.failed_factorizations = outcome.failed_factorizations;
  return result;
}

}  // namespace lowbit::reference
