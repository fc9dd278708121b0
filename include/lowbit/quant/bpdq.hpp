// BPDQ: bit-plane decomposition on a variable grid (Chen et al., arXiv
// 2602.04163), as the official code runs it (KingdalfGoodman/BPDQ bpdq.patch on
// GPTQModel v5.7.0, BPDQ.quantize). Each (row, group) becomes
//   w ~= c_k + sum_{p < k} c_p * b_p,   b_p in {0, 1},
// with free coefficients: every group gets its own 2^k levels.
//
// The pass, in the column order of group-aware reordering (GAR) when enabled:
//   * H: dead columns (diag 0) get H[d, d] = 1 and W[:, d] = 0; GAR permutes H
//     before the damped inverse; U is the upper factor, U^T U = (H + damp)^-1.
//   * Blocks of block_size columns (whole groups). Per group: the 8-bit
//     asymmetric reference grid of the current (updated) weights; its k most
//     significant bits are the initial planes; coefficients by ridge least
//     squares whitened by the local factor U_loc = U[g, g]:
//       features x^T U_loc^-1 for x in {b_0 .. b_{k-1}, 1}, target y^T U_loc^-1,
//       (X^T X + ridge I) c = X^T y  (the ridge applies to the bias as well).
//   * `iters` rounds from the same snapshot of the block: per column, the
//     nearest of the 2^k levels (candidate order: plane 0 varies slowest; ties
//     to the first), error e = (y - q) / U[t, t] fed back to the later columns;
//     then the refit with the planes fixed, and the delta correction
//     dE U_loc = Q_old - Q_new, E = E_old + dE. The round with the smallest
//     ||E||_F^2 is kept (the earliest on ties); the next round always starts
//     from the latest refit.
//   * The kept E updates the rest of the block, and at the block's end the
//     rest of W (lazy updates, as GPTQ).
//
// Speed. Only the group's own columns take part in the rounds: the error fed
// past the group is E_kept * U[g, after g], applied once with the kept round
// (the reference updates it in every round and discards all but one). The
// whitened features are one triangular product per round, and the delta
// correction is their combination with the coefficient change
// (dE = (Q_old - Q_new) U_loc^-1 = sum_p (c_old_p - c_new_p) x_p + ...), not a
// second solve. The plane choice runs over rows in SIMD lanes; row chunks run in
// parallel (OpenMP) with results independent of the thread count.
//
// Precision follows the reference where its rounding decides discrete choices:
// weights, levels and the feedback are float with the reference's operation
// order; Gram products and the small solves are double, and the coefficients
// are rounded to float after each fit as the reference stores them.
#pragma once

#include <Eigen/Core>
#include <Eigen/QR>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/calibration.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/reference_float.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lowbit {

struct BpdqConfig {
  int planes = 2;           // k, 1..4 (the reference's msbits)
  int group_size = 64;      // input columns per group, a divisor of in_features; -1: one group per
                            // row (the reference accepts 32, 64, 128, 256)
  int iters = 10;           // refinement rounds per group (n_iters)
  double ridge = 1e-4;      // absolute ridge of the whitened fit; H's scale matters (H = 2/tokens X^T X)
  int init_bits = 8;        // the uniform grid whose `planes` top bits start each group, planes..8
  bool group_aware_reorder = true;  // GAR; the reference forces it on
  DampingConfig damping{0.05, 0.01, 6};
  int block_size = 128;     // lazy-update width, rounded down to whole groups (at least one)
  std::function<void(double)> progress;  // fraction of columns done, after every block
};

struct BpdqReport {
  // Per group, in the original group order (group g holds columns g * group_size ...).
  std::vector<double> group_score;  // ||E||_F^2 of the kept round
  std::vector<int> best_iter;       // the kept round, 1..iters
  MatrixF init_scale;               // the initial uniform grid, [groups x out]
  MatrixF init_zero;
  MatrixD init_coeffs;              // the first fit, in the BitPlaneWeights::coeffs layout
  Permutation group_order;          // GAR: the original group processed i-th (global_perm); empty without GAR
  Permutation column_order;         // GAR: the original column processed i-th (final_perm); empty without GAR
  std::vector<Index> dead_columns;  // diag(H) == 0: zeroed in W (Q there need not be 0)
  double loss = 0;                  // sum of E^2 / 2 over all weights
  std::optional<double> avg_loss;   // loss / calibration tokens, when they are known
  double percdamp = 0;              // damping that factorized (see InverseHessian)
  double diagonal_floor = 0;
  int failed_factorizations = 0;
  double seconds = 0;
};

struct BpdqResult {
  BitPlaneWeights weights;
  BpdqReport report;
};

namespace detail::bpdq {

constexpr int max_planes = 4;
constexpr int max_features = max_planes + 1;

// Group-sized state is kept column-major: column t of a chunk of rows is a
// contiguous run of SIMD lanes.
using MatrixFc = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
using CodeMatrixC = Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

// Candidate c (the reference's cartesian_prod row) holds plane p in bit k-1-p;
// codes hold plane p in bit p.
inline std::uint8_t code_of_candidate(int candidate, int k) {
  unsigned code = 0;
  for (int p = 0; p < k; ++p) code |= ((static_cast<unsigned>(candidate) >> (k - 1 - p)) & 1u) << p;
  return static_cast<std::uint8_t>(code);
}

// out[l] = sum_t x[t * sx + l] * y[t * sy + l * ly], accumulated in float in t
// order as the reference's batched products of these sizes are (ly = 0
// broadcasts one y per t).
inline void lane_dots(Index g, const float* x, Index sx, const float* y, Index sy, Index ly, Index lanes,
                      float* out) {
  std::fill(out, out + lanes, 0.0f);
  for (Index t = 0; t < g; ++t) {
    const float* xt = x + t * sx;
    const float* yt = y + t * sy;
    if (ly == 0) {
      const float yv = *yt;
      for (Index l = 0; l < lanes; ++l) out[l] += xt[l] * yv;
    } else {
      for (Index l = 0; l < lanes; ++l) out[l] += xt[l] * yt[l];
    }
  }
}

// The (k+1)-square ridge system in float as torch.linalg.solve_ex runs it
// with LAPACK: sgetrf (partial pivoting on the first largest |a|, the column
// scaled by the pivot's reciprocal) of the matrix as stored, then sgetrs with
// the transpose (torch factors A^T of a contiguous A and solves with the
// adjoint; the Gram matrix is symmetric, so this solves A x = b). When a pivot
// is exactly zero (only possible with ridge 0) the system is singular and,
// like the reference's lstsq fallback, the least-squares solution is taken.
inline void solve_ridge_system(int n, const float (&a_in)[max_features][max_features],
                               const float (&b_in)[max_features], float (&x)[max_features]) {
  float a[max_features][max_features];
  int pivot[max_features];
  for (int i = 0; i < n; ++i) {
    x[i] = b_in[i];
    for (int j = 0; j < n; ++j) a[i][j] = a_in[i][j];
  }
  bool singular = false;
  for (int c = 0; c < n && !singular; ++c) {
    int p = c;
    for (int r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[p][c])) p = r;
    singular = a[p][c] == 0;
    pivot[c] = p;
    if (p != c)
      for (int j = 0; j < n; ++j) std::swap(a[p][j], a[c][j]);
    const float inverse = 1.0f / a[c][c];
    for (int r = c + 1; r < n; ++r) a[r][c] = a[r][c] * inverse;
    for (int j = c + 1; j < n; ++j)
      for (int r = c + 1; r < n; ++r) a[r][j] = a[r][j] - a[c][j] * a[r][c];
  }
  if (!singular) {
    for (int i = 0; i < n; ++i) {  // U^T z = b
      float t = x[i];
      for (int k = 0; k < i; ++k) t = t - a[k][i] * x[k];
      x[i] = t / a[i][i];
    }
    for (int i = n - 1; i >= 0; --i) {  // L^T y = z (unit diagonal)
      float t = x[i];
      for (int k = i + 1; k < n; ++k) t = t - a[k][i] * x[k];
      x[i] = t;
    }
    for (int i = n - 1; i >= 0; --i)  // the row interchanges, in reverse
      if (pivot[i] != i) std::swap(x[i], x[pivot[i]]);
    return;
  }
  Eigen::MatrixXd m(n, n);
  Eigen::VectorXd v(n);
  for (int i = 0; i < n; ++i) {
    v(i) = b_in[i];
    for (int j = 0; j < n; ++j) m(i, j) = a_in[i][j];
  }
  const Eigen::VectorXd solution = m.completeOrthogonalDecomposition().solve(v);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(solution(i));
}

// Per-thread scratch for a chunk of R rows; arrays are [t][lane].
struct Workspace {
  std::vector<float> wp;              // G x R: the group columns with the in-group feedback
  std::vector<float> levels;          // 2^k x R candidate levels
  std::vector<float> choice;          // G x R chosen candidate (a small integer)
  std::vector<float> err;             // G x R: e = (y - q) / U[t, t]
  std::vector<float> q_old;           // G x R: the chosen levels
  std::vector<float> delta;           // G x R: Q_old - Q_new, whitened into dE
  std::vector<float> features;        // G x kR: the planes, whitened
  std::vector<float> gram;            // lanes of R: Gram products and right-hand sides
};

// Everything one group's rounds share, prepared once per group.
struct GroupProblem {
  int k = 0;
  Index g = 0;
  float ridge = 0;
  MatrixF u_loc;            // G x G: U[g, g], upper
  std::vector<float> ones;  // the bias feature, whitened (the same for every row)
  float ones_gram = 0;      // ones . ones + ridge
  MatrixFc target;          // out x G: the group's weights when the group starts
  MatrixFc white_target;    // out x G: whitened
  VectorF white_bias;       // out: white_target . ones
};

// One round's (or the initial fit's) results over all rows.
struct GroupState {
  CodeMatrixC codes;  // out x G
  MatrixF coeffs;     // out x (k + 1), bias last, float as the reference stores them
  MatrixFc err;       // out x G: the feedback errors E_old of the plane choice
  MatrixFc delta;     // out x G: the delta correction dE (E = E_old + dE)
  void resize(Index rows, Index g, int k) {
    codes.resize(rows, g);
    coeffs.resize(rows, k + 1);
    err.resize(rows, g);
    delta.resize(rows, g);
  }
};

// The ridge fit of R rows' coefficients (rows r0.. of `coeffs`) to their
// planes: whitened features, their Gram products, the float solve.
inline void fit_rows(const GroupProblem& pb, Index r0, Index rows, const CodeMatrixC& codes, MatrixF& coeffs,
                     Workspace& ws) {
  const int k = pb.k, n = k + 1;
  const Index g = pb.g, lanes = k * rows, all_rows = codes.rows();
  ws.features.resize(static_cast<std::size_t>(g * lanes));
  for (Index t = 0; t < g; ++t)
    for (int p = 0; p < k; ++p)
      for (Index i = 0; i < rows; ++i)
        ws.features[static_cast<std::size_t>(t * lanes + p * rows + i)] =
            static_cast<float>((codes(r0 + i, t) >> p) & 1u);
  reference::forward_substitute(lanes, g, pb.u_loc, ws.features.data(), lanes);

  // Lane arrays of R: [p * n + q] the Gram entries (q >= p), [n * n + p] the right-hand sides.
  ws.gram.resize(static_cast<std::size_t>((n * n + n) * rows));
  const auto lane = [&](int index) { return ws.gram.data() + index * rows; };
  const float* x = ws.features.data();
  const float* y = pb.white_target.data() + r0;
  for (int p = 0; p < k; ++p) {
    for (int q = p; q < k; ++q) lane_dots(g, x + p * rows, lanes, x + q * rows, lanes, 1, rows, lane(p * n + q));
    lane_dots(g, x + p * rows, lanes, pb.ones.data(), 1, 0, rows, lane(p * n + k));
    lane_dots(g, x + p * rows, lanes, y, all_rows, 1, rows, lane(n * n + p));
  }
  for (Index i = 0; i < rows; ++i) {
    float a[max_features][max_features];
    float b[max_features];
    float c[max_features];
    for (int p = 0; p < k; ++p) {
      for (int q = p; q < k; ++q) a[p][q] = a[q][p] = lane(p * n + q)[i];
      a[p][p] += pb.ridge;
      a[p][k] = a[k][p] = lane(p * n + k)[i];
      b[p] = lane(n * n + p)[i];
    }
    a[k][k] = pb.ones_gram;
    b[k] = pb.white_bias(r0 + i);
    solve_ridge_system(n, a, b, c);
    for (int p = 0; p < n; ++p) {
      require(std::isfinite(c[p]), "quantize_bpdq: non-finite coefficient in row ", r0 + i,
              " (weights or hessian out of float range)");
      coeffs(r0 + i, p) = c[p];
    }
  }
}

// The candidate levels of R rows (rows r0.. of coeffs) as the reference's
// `C b + c_k` (a matmul): the chosen planes in order, then the bias.
inline void candidate_levels(int k, const MatrixF& coeffs, Index r0, Index rows, float* levels) {
  for (int c = 0; c < (1 << k); ++c)
    for (Index i = 0; i < rows; ++i) {
      float v = 0;
      for (int p = 0; p < k; ++p)
        if ((c >> (k - 1 - p)) & 1) v += coeffs(r0 + i, p);
      levels[c * rows + i] = v + coeffs(r0 + i, k);
    }
}

// The nearest of the 2^K candidate levels for the lanes of y at lane i: the
// first minimum of (y - v)^2 as the reference's argmin. Writes the candidate
// (as a float) and the level; returns the fed-back error (y - q) / d.
template <int K, class P>
P nearest_level(Index i, P y, const float* levels, Index rows, float d, float* choice, float* q_old) {
  using namespace Eigen::internal;
  P best_q = ploadu<P>(levels + i);
  P best_d = pmul(psub(y, best_q), psub(y, best_q));
  P best = pset1<P>(0.0f);
  for (int c = 1; c < (1 << K); ++c) {
    const P q = ploadu<P>(levels + c * rows + i);
    const P dist = pmul(psub(y, q), psub(y, q));
    const P closer = pcmp_lt(dist, best_d);
    best_d = pselect(closer, dist, best_d);
    best_q = pselect(closer, q, best_q);
    best = pselect(closer, pset1<P>(static_cast<float>(c)), best);
  }
  pstoreu(choice + i, best);
  pstoreu(q_old + i, best_q);
  return pdiv(psub(y, best_q), pset1<P>(d));
}

// The column-by-column plane choice with error feedback inside the group, R
// rows in SIMD lanes, in float with the reference's operations: (y - v)^2,
// the first minimum, e = (y - q) / U[t, t], then w_j -= e * U[t, j].
template <int K>
void choose_planes(Index rows, const MatrixF& u_loc, Workspace& ws) {
  reference::lane_sweep(rows, u_loc.rows(), u_loc, ws.wp.data(), ws.err.data(), rows, [&](Index t, Index i, auto y) {
    return nearest_level<K>(i, y, ws.levels.data(), rows, u_loc(t, t), ws.choice.data() + t * rows,
                            ws.q_old.data() + t * rows);
  });
}

inline void choose_planes(int k, Index rows, const MatrixF& u_loc, Workspace& ws) {
  switch (k) {
    case 1: return choose_planes<1>(rows, u_loc, ws);
    case 2: return choose_planes<2>(rows, u_loc, ws);
    case 3: return choose_planes<3>(rows, u_loc, ws);
    default: return choose_planes<4>(rows, u_loc, ws);
  }
}

// delta[i] = q_old[i] - levels[choice[i]][i] for R lanes.
template <int K, class P>
void level_difference(Index i, const float* choice, const float* levels, Index rows, const float* q_old,
                      float* delta) {
  using namespace Eigen::internal;
  const P c = ploadu<P>(choice + i);
  P q = ploadu<P>(levels + i);
  for (int cand = 1; cand < (1 << K); ++cand)
    q = pselect(pcmp_eq(c, pset1<P>(static_cast<float>(cand))), ploadu<P>(levels + cand * rows + i), q);
  pstoreu(delta + i, psub(ploadu<P>(q_old + i), q));
}

template <int K>
void level_differences(Index rows, const float* choice, const float* levels, const float* q_old, float* delta) {
  using Packet = Eigen::internal::packet_traits<float>::type;
  constexpr Index width = Eigen::internal::packet_traits<float>::size;
  Index i = 0;
  for (; i + width <= rows; i += width) level_difference<K, Packet>(i, choice, levels, rows, q_old, delta);
  for (; i < rows; ++i) level_difference<K, float>(i, choice, levels, rows, q_old, delta);
}

inline void level_differences(int k, Index rows, const float* choice, const float* levels, const float* q_old,
                              float* delta) {
  switch (k) {
    case 1: return level_differences<1>(rows, choice, levels, q_old, delta);
    case 2: return level_differences<2>(rows, choice, levels, q_old, delta);
    case 3: return level_differences<3>(rows, choice, levels, q_old, delta);
    default: return level_differences<4>(rows, choice, levels, q_old, delta);
  }
}

// One round for R rows (r0..): plane choice from the coefficients in `from`,
// refit, delta correction dE U_loc = Q_old - Q_new. Writes codes, coefficients,
// E_old and dE into `to` and E^2 (E = E_old + dE) into squares (out x G,
// row-major, the order the reference sums them in).
inline void round_rows(const GroupProblem& pb, Index r0, Index rows, const GroupState& from, GroupState& to,
                       float* squares, Workspace& ws) {
  const int k = pb.k, candidates = 1 << k;
  const Index g = pb.g, all_rows = pb.target.rows();
  const std::size_t cells = static_cast<std::size_t>(g * rows);
  ws.wp.resize(cells);
  ws.choice.resize(cells);
  ws.err.resize(cells);
  ws.q_old.resize(cells);
  ws.delta.resize(cells);
  ws.levels.resize(static_cast<std::size_t>(candidates * rows));
  for (Index t = 0; t < g; ++t)
    std::copy_n(pb.target.data() + t * all_rows + r0, rows, ws.wp.data() + t * rows);
  candidate_levels(k, from.coeffs, r0, rows, ws.levels.data());
  choose_planes(k, rows, pb.u_loc, ws);

  std::array<std::uint8_t, 1 << max_planes> code_of{};
  for (int c = 0; c < candidates; ++c) code_of[static_cast<std::size_t>(c)] = code_of_candidate(c, k);
  for (Index t = 0; t < g; ++t)
    for (Index i = 0; i < rows; ++i)
      to.codes(r0 + i, t) = code_of[static_cast<std::size_t>(ws.choice[static_cast<std::size_t>(t * rows + i)])];
  fit_rows(pb, r0, rows, to.codes, to.coeffs, ws);

  // Q_new = [B, 1] c (the reference's batched product sums the features in
  // order, as the candidate levels do), then D = Q_old - Q_new whitened into dE.
  candidate_levels(k, to.coeffs, r0, rows, ws.levels.data());
  for (Index t = 0; t < g; ++t)
    level_differences(k, rows, ws.choice.data() + t * rows, ws.levels.data(), ws.q_old.data() + t * rows,
                      ws.delta.data() + t * rows);
  reference::forward_substitute(rows, g, pb.u_loc, ws.delta.data(), rows);
  for (Index t = 0; t < g; ++t) {
    std::copy_n(ws.err.data() + t * rows, rows, &to.err(r0, t));
    std::copy_n(ws.delta.data() + t * rows, rows, &to.delta(r0, t));
  }
  for (Index i = 0; i < rows; ++i)
    for (Index t = 0; t < g; ++t) {
      const std::size_t at = static_cast<std::size_t>(t * rows + i);
      const float e = ws.err[at] + ws.delta[at];
      squares[(r0 + i) * g + t] = e * e;
    }
}

// Runs body(chunk, r0, rows, workspace) over chunks of rows, in parallel when
// OpenMP is available. Chunks depend on the sizes alone, so results do not
// depend on the thread count.
template <class Body>
void for_row_chunks(Index rows, Index chunk, double work, std::vector<Workspace>& spaces, Body body) {
  const Index chunks = (rows + chunk - 1) / chunk;
  const int workers = std::min(static_cast<int>(spaces.size()), reference::detail::threads(work));
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(chunks));
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(workers) if (workers > 1)
#endif
  for (Index c = 0; c < chunks; ++c) {
#ifdef _OPENMP
    Workspace& ws = spaces[static_cast<std::size_t>(omp_get_thread_num())];
#else
    Workspace& ws = spaces[0];
#endif
    const Index r0 = c * chunk;
    try {
      body(c, r0, std::min(chunk, rows - r0), ws);
    } catch (...) {  // exceptions must not leave an OpenMP region
      failures[static_cast<std::size_t>(c)] = std::current_exception();
    }
  }
  (void)workers;
  for (const std::exception_ptr& failure : failures)
    if (failure) std::rethrow_exception(failure);
}

// Prepares a group: the local factor, the whitened bias feature and target.
inline void prepare_group(const MatrixF& u, Index a0, const MatrixF& w, std::vector<Workspace>& spaces,
                          Index chunk, GroupProblem& pb) {
  const Index g = pb.g, rows = w.rows();
  pb.u_loc = u.block(a0, a0, g, g);
  pb.ones.assign(static_cast<std::size_t>(g), 1.0f);
  reference::forward_substitute(1, g, pb.u_loc, pb.ones.data(), 1);
  lane_dots(g, pb.ones.data(), 1, pb.ones.data(), 1, 1, 1, &pb.ones_gram);
  pb.ones_gram += pb.ridge;
  pb.target = w.middleCols(a0, g);
  pb.white_target = pb.target;
  pb.white_bias.resize(rows);
  for_row_chunks(rows, chunk, 0.5 * rows * g * g, spaces, [&](Index, Index r0, Index n, Workspace&) {
    reference::forward_substitute(n, g, pb.u_loc, pb.white_target.data() + r0, rows);
    lane_dots(g, pb.white_target.data() + r0, rows, pb.ones.data(), 1, 0, n, pb.white_bias.data() + r0);
  });
}

// W(r, first + c) -= sum_l e(r, l) u(l, c) as the reference's `W - E @ U`:
// the product accumulated from 0 in l order, then the difference. W is
// row-major; its columns are the SIMD lanes.
inline void subtract_product(MatrixF& w, Index first, Index width, const MatrixFc& e, Index e_col, Index len,
                             const MatrixF& u, Index u_row, Index u_col) {
  reference::subtract_product(
      width, w.rows(), len, [&](Index c, Index l) { return u(u_row + l, u_col + c); },
      [&](Index l, Index r) { return e(r, e_col + l); }, reference::View{w.data() + first, w.cols()});
}

// The kept round's error, fed past the group to the rest of the block as the
// reference does: one column at a time during the plane choice (each a
// rounded product and difference), then the delta correction as `- dE @ U`.
inline void feed_rest_of_block(const GroupState& kept, const MatrixF& u, Index a0, Index g, Index end, MatrixF& w) {
  const Index first = a0 + g, width = end - first, rows = w.rows();
  if (width <= 0) return;
  reference::chain_product(
      width, rows, g, [&](Index c, Index t) { return u(a0 + t, first + c); },
      [&](Index t, Index r) { return -kept.err(r, t); }, reference::View{w.data() + first, w.cols()});
  subtract_product(w, first, width, kept.delta, 0, g, u, a0, first);
}

inline void validate(const MatrixFRef& w, const MatrixDRef& h, const BpdqConfig& config) {
  require_nonempty(w, "quantize_bpdq: weights");
  require_finite(w, "quantize_bpdq: weights");
  require(h.rows() == w.cols() && h.cols() == w.cols(), "quantize_bpdq: hessian must be in x in = ",
          w.cols(), " x ", w.cols(), ", got ", h.rows(), " x ", h.cols());
  require_finite(h, "quantize_bpdq: hessian");
  require_bits(config.planes, 1, max_planes, "BpdqConfig::planes");
  require_bits(config.init_bits, config.planes, 8, "BpdqConfig::init_bits (at least planes)");
  resolve_group_size(config.group_size, w.cols(), "BpdqConfig::group_size");
  require(config.iters >= 1, "BpdqConfig::iters: expected >= 1, got ", config.iters);
  require(config.ridge >= 0 && std::isfinite(config.ridge), "BpdqConfig::ridge: expected a finite value >= 0, got ",
          config.ridge);
  require(config.block_size >= 1, "BpdqConfig::block_size: expected >= 1, got ", config.block_size);
}

// The pass over W in processing order (after dead columns and GAR) with the
// float inverse-Hessian factor U of that order. Fills result.weights and the
// per-group report in the original order given by report.group_order and
// report.column_order (identity when empty).
inline void run_pass(MatrixF& w, const MatrixF& u, const BpdqConfig& config, BpdqResult& result) {
  const int k = config.planes;
  const Index rows = w.rows(), cols = w.cols();
  const Index g = resolve_group_size(config.group_size, cols, "BpdqConfig::group_size");
  const Index groups = cols / g;
  const Index block = std::max<Index>(1, config.block_size / g) * g;
  BpdqReport& report = result.report;

  // Results in processing order; group i of that order is original group group_order[i].
  CodeMatrix codes(rows, cols);
  std::vector<MatrixF> coeffs(static_cast<std::size_t>(groups));
  std::vector<MatrixF> init_coeffs(static_cast<std::size_t>(groups));
  std::vector<GridParams> init_grid(static_cast<std::size_t>(groups));
  std::vector<float> score(static_cast<std::size_t>(groups));
  std::vector<int> best_iter(static_cast<std::size_t>(groups));

  std::vector<Workspace> spaces(static_cast<std::size_t>(reference::detail::threads()));
  const Index chunk = std::max<Index>(16, 4096 / g);
  std::vector<float> squares(static_cast<std::size_t>(rows * g));
  GridConfig grid;
  grid.bits = config.init_bits;
  const float maxq = grid_maxq(grid.bits);
  const int drop = config.init_bits - k;

  GroupProblem pb;
  pb.k = k;
  pb.g = g;
  pb.ridge = static_cast<float>(config.ridge);
  GroupState initial, current, next, best;
  for (GroupState* s : {&initial, &current, &next, &best}) s->resize(rows, g, k);
  MatrixFc block_error(rows, block);

  for (Index i1 = 0; i1 < cols; i1 += block) {
    const Index i2 = std::min(i1 + block, cols);
    for (Index a0 = i1; a0 < i2; a0 += g) {
      const std::size_t gi = static_cast<std::size_t>(a0 / g);
      prepare_group(u, a0, w, spaces, chunk, pb);

      // The initial planes: the top bits of the reference grid on the current weights.
      init_grid[gi] = find_grid_params(w.middleCols(a0, g), grid);
      const GridParams& gp = init_grid[gi];
      for (Index t = 0; t < g; ++t)
        for (Index r = 0; r < rows; ++r)
          initial.codes(r, t) = static_cast<std::uint8_t>(
              static_cast<unsigned>(grid_code(pb.target(r, t), gp.scale(r), gp.zero(r), maxq)) >> drop);
      const double round_work = (k + 2) * 0.5 * static_cast<double>(rows * g * g);
      for_row_chunks(rows, chunk, round_work, spaces, [&](Index, Index r0, Index n, Workspace& ws) {
        fit_rows(pb, r0, n, initial.codes, initial.coeffs, ws);
      });
      init_coeffs[gi] = initial.coeffs;

      // Rounds: each from the same block state, from the latest refit; keep the
      // smallest ||E||^2 (a float torch.sum, compared strictly, as the reference).
      float best_score = std::numeric_limits<float>::infinity();
      const GroupState* from = &initial;
      for (int it = 1; it <= config.iters; ++it) {
        for_row_chunks(rows, chunk, round_work, spaces, [&](Index, Index r0, Index n, Workspace& ws) {
          round_rows(pb, r0, n, *from, next, squares.data(), ws);
        });
        const float total = reference::torch_sum(squares.data(), rows * g);
        if (it == 1 || total < best_score) {
          best_score = total;
          best_iter[gi] = it;
          std::swap(best, next);
          from = &best;
        } else {
          std::swap(current, next);
          from = &current;
        }
      }
      score[gi] = best_score;
      codes.middleCols(a0, g) = best.codes;
      coeffs[gi] = best.coeffs;
      block_error.middleCols(a0 - i1, g) = best.err + best.delta;
      report.loss += 0.5 * block_error.middleCols(a0 - i1, g).cast<double>().squaredNorm();
      feed_rest_of_block(best, u, a0, g, i2, w);
    }
    subtract_product(w, i2, cols - i2, block_error, 0, i2 - i1, u, i1, i2);
    if (config.progress) config.progress(static_cast<double>(i2) / static_cast<double>(cols));
  }

  // Back to the original order: GAR only moves columns inside their group.
  BitPlaneWeights& out = result.weights;
  out.planes = k;
  out.group_size = g;
  out.codes.resize(rows, cols);
  out.coeffs.resize(groups * (k + 1), rows);
  report.init_coeffs.resize(groups * (k + 1), rows);
  report.init_scale.resize(groups, rows);
  report.init_zero.resize(groups, rows);
  report.group_score.resize(static_cast<std::size_t>(groups));
  report.best_iter.resize(static_cast<std::size_t>(groups));
  if (report.column_order.empty()) {
    out.codes = std::move(codes);
  } else {
    for (Index r = 0; r < rows; ++r)
      for (Index j = 0; j < cols; ++j) out.codes(r, report.column_order[static_cast<std::size_t>(j)]) = codes(r, j);
  }
  for (Index i = 0; i < groups; ++i) {
    const std::size_t pi = static_cast<std::size_t>(i);
    const Index og = report.group_order.empty() ? i : report.group_order[pi];
    out.coeffs.middleRows(og * (k + 1), k + 1) = coeffs[pi].transpose().cast<double>();
    report.init_coeffs.middleRows(og * (k + 1), k + 1) = init_coeffs[pi].transpose().cast<double>();
    report.init_scale.row(og) = init_grid[pi].scale.transpose();
    report.init_zero.row(og) = init_grid[pi].zero.transpose();
    report.group_score[static_cast<std::size_t>(og)] = score[pi];
    report.best_iter[static_cast<std::size_t>(og)] = best_iter[pi];
  }
}

}  // namespace detail::bpdq

// Quantizes `weights` (out x in) with the Hessian proxy `hessian` (in x in,
// the reference normalizes it by tokens: H = 2/N X^T X; ridge is absolute, so
// the scale of H matters). avg_loss is left empty: the token count is unknown.
inline BpdqResult quantize_bpdq(const MatrixFRef& weights, const MatrixDRef& hessian,
                                const BpdqConfig& config = {}) {
  const auto start = std::chrono::steady_clock::now();
  detail::bpdq::validate(weights, hessian, config);
  const Index g = detail::resolve_group_size(config.group_size, weights.cols(), "BpdqConfig::group_size");
  BpdqResult result;
  BpdqReport& report = result.report;
  report.dead_columns = dead_columns(hessian);
  // The reference holds H in float.
  MatrixD h = hessian.cast<float>().cast<double>();
  set_dead_diagonal(h, report.dead_columns);
  MatrixF w = weights;
  for (Index d : report.dead_columns) w.col(d).setZero();
  if (config.group_aware_reorder) {
    const GroupAwareOrder order = group_aware_order(h, g);
    report.group_order = order.groups;
    report.column_order = order.columns;
    w = permute_columns(w, order.columns);
    h = permute_symmetric(h, order.columns);
  }
  MatrixF u;
  {
    reference::InverseHessianF inverse = reference::inverse_hessian_factor(h.cast<float>(), config.damping);
    report.percdamp = inverse.percdamp;
    report.diagonal_floor = inverse.diagonal_floor;
    report.failed_factorizations = inverse.failed_factorizations;
    u = std::move(inverse.factor);
  }
  detail::bpdq::run_pass(w, u, config, result);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// The same with the Hessian and token count of a calibration run: avg_loss is
// loss / tokens as the reference reports it.
inline BpdqResult quantize_bpdq(const MatrixFRef& weights, const Calibration& calibration,
                                const BpdqConfig& config = {}) {
  detail::require(calibration.in_features() == weights.cols(), "quantize_bpdq: calibration has ",
                  calibration.in_features(), " input features, weights have ", weights.cols());
  BpdqResult result = quantize_bpdq(weights, calibration.hessian(), config);
  result.report.avg_loss = result.report.loss / static_cast<double>(calibration.tokens());
  return result;
}

}  // namespace lowbit
