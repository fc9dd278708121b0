// BPDQ: bit-plane decomposition on a variable grid (Chen et al., arXiv
// 2602.04163), as the official code runs it (KingdalfGoodman/BPDQ bpdq.patch on
// GPTQModel v5.7.0, BPDQ.quantize). Each (row, group) becomes
//   w ~= c_k + sum_{p < k} c_p * b_p,   b_p in {0, 1},
// with free coefficients: every group gets its own 2^k levels.
//
// The pass, in the column order of group-aware reordering (GAR) when enabled:
//   * H (in float, as the reference holds it): dead columns (diag 0) get
//     H[d, d] = 1 and W[:, d] = 0; GAR permutes H before the damped inverse;
//     U is its upper factor (the Hessian prologue shared with GPTQ,
//     core/hessian.hpp).
//   * Blocks of max(block_size, group) columns (whole groups). Per group: the
//     8-bit asymmetric reference grid of the current (updated) weights; its k
//     most significant bits are the initial planes; coefficients by ridge least
//     squares whitened by the local factor U_loc = U[g, g]:
//       features x^T U_loc^-1 for x in {b_0 .. b_{k-1}, 1}, target y^T U_loc^-1,
//       (X^T X + ridge I) c = X^T y   (the ridge applies to the bias as well).
//   * `iters` rounds from the same snapshot of the group: per column, the
//     nearest of the 2^k levels (candidate order: plane 0 varies slowest; ties
//     to the first), error e = (y - q) / U[t, t] fed back to the later columns
//     (GPTQ's feedback, core/detail/error_feedback.hpp); then the refit with the planes
//     fixed and the delta correction dE U_loc = Q_old - Q_new, E = E_old + dE.
//     The round with the smallest ||E||_F^2 is kept (the earliest on ties); the
//     next round always starts from the latest refit, kept or not.
//   * The kept E updates the rest of the block, and at the block's end the
//     rest of W (GPTQ's lazy block update).
//
// Cost. The reference feeds every round's error to the end of the block and
// throws away all but one round; here a round touches only its group's
// columns and the kept E is fed past the group once, which gives the same
// result. dE needs no second solve: with Z_p = U_loc^-T b_p (the whitened
// features of the refit), dE^T = sum_p (c_old_p - c_new_p) Z_p + (c_old_k -
// c_new_k) U_loc^-T 1. Outputs are independent except for the choice of the
// kept round, and a round starts from the previous refit whatever is kept, so
// each fixed panel of outputs runs the whole sequence of rounds in one
// parallel region per group; the kept round is then chosen from the panels'
// scores summed in a fixed order (results independent of the thread count).
// The candidate search runs over the outputs in SIMD lanes.
//
// Numerics: weights, levels, whitening and feedback in float like the
// reference, with U computed in double and rounded (core/hessian.hpp); the
// (k+1)-square ridge systems in double; coefficients are stored rounded to
// float as the reference's payload holds them. Against the golden files this
// gives 0-4e-5 of the plane bits flipped and c within 1.2e-4 of max|c|: the
// residual is the reference's own float32 rounding (a fit in double agrees no
// better), so matching it further would mean emulating torch's float LAPACK
// operation by operation, which we do not do.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "lowbit/core/bitplane_weights.hpp"
#include "lowbit/core/calibration.hpp"
#include "lowbit/core/column_order.hpp"
#include "lowbit/core/detail/error_feedback.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/hessian.hpp"
#include "lowbit/core/progress.hpp"
#include "lowbit/core/types.hpp"
#include "lowbit/core/uniform_grid.hpp"

namespace lowbit {

struct BpdqConfig {
  int planes = 2;       // k, 1..4 (the reference's msbits)
  int group_size = 64;  // a divisor of in_features, or -1 for one group per row
  int iters = 10;       // refinement rounds per group (n_iters), >= 1
  double ridge = 1e-4;  // absolute ridge of the whitened fit: the scale of H matters
                        // (the reference's H = 2/tokens X^T X)
  int init_bits = 8;    // the uniform grid whose `planes` top bits start each group, planes..8
  bool group_aware_reorder = true;       // GAR; the reference forces it on
  DampingConfig damping{0.05, 0.01, 6};  // GPTQModel's default damp_percent for BPDQ is 0.05
  int block_size = 128;  // lazy-update width: max(block_size, group), rounded down to whole groups
  Progress progress;     // after every block: (columns done, in_features)
};

struct BpdqReport {
  // Per group, in the original group order (group g holds columns g * group_size ...).
  std::vector<double> group_score;  // ||E||_F^2 of the kept round
  std::vector<int> best_iter;       // the kept round, 1..iters
  MatrixF init_scale;               // the initial uniform grid, [groups x out]
  MatrixF init_zero;
  MatrixD init_coeffs;      // the first fit, in the BitPlaneWeights::coeffs layout
  Permutation group_order;  // GAR: original group processed i-th (global_perm); else empty
  // Dead columns (zeroed in W; Q there need not be 0), GAR's column_order
  // (final_perm; empty without GAR), the damping used.
  HessianReport hessian;
  double loss = 0;                 // sum of E^2 / 2 over all weights
  std::optional<double> avg_loss;  // loss / calibration tokens, when they are known
  double seconds = 0;
};

struct BpdqResult {
  BitPlaneWeights weights;
  BpdqReport report;
};

namespace detail::bpdq {

constexpr int max_planes = 4;
constexpr int max_features = max_planes + 1;

// Candidate c (the reference's cartesian_prod row) holds plane p in bit k-1-p;
// codes hold plane p in bit p.
inline std::uint8_t code_of_candidate(int candidate, int k) {
  unsigned code = 0;
  for (int p = 0; p < k; ++p) code |= ((static_cast<unsigned>(candidate) >> (k - 1 - p)) & 1u) << p;
  return static_cast<std::uint8_t>(code);
}

// The least-squares solution of least norm of a x = b for a symmetric
// positive semidefinite a (n <= max_features), into b: a = V diag(l) V^T by
// cyclic Jacobi rotations, x = sum over l_i above the rank threshold of
// (v_i . b / l_i) v_i. The threshold, n eps max l, is LAPACK's default rcond
// for the reference's lstsq. (Written out rather than through an Eigen
// decomposition: every file including this header would compile one.)
inline void solve_least_norm(int n, const double (&a)[max_features][max_features],
                             double (&b)[max_features]) {
  double d[max_features][max_features], v[max_features][max_features] = {};
  std::copy(&a[0][0], &a[0][0] + max_features * max_features, &d[0][0]);
  for (int i = 0; i < n; ++i) v[i][i] = 1;
  for (int sweep = 0; sweep < 64; ++sweep) {
    double off = 0, diagonal = 0;
    for (int p = 0; p < n; ++p) {
      diagonal += d[p][p] * d[p][p];
      for (int q = p + 1; q < n; ++q) off += d[p][q] * d[p][q];
    }
    if (off <= 1e-34 * diagonal) break;  // off-diagonal below double rounding
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (d[p][q] == 0) continue;
        // The rotation (c, s) in the (p, q) plane that zeroes d[p][q].
        const double theta = (d[q][q] - d[p][p]) / (2 * d[p][q]);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::hypot(theta, 1.0));
        const double c = 1 / std::hypot(t, 1.0), s = t * c;
        for (int r = 0; r < n; ++r) {  // d J, then J^T (d J); V J
          const double rp = d[r][p], rq = d[r][q];
          d[r][p] = c * rp - s * rq;
          d[r][q] = s * rp + c * rq;
        }
        for (int r = 0; r < n; ++r) {
          const double pr = d[p][r], qr = d[q][r];
          d[p][r] = c * pr - s * qr;
          d[q][r] = s * pr + c * qr;
        }
        for (int r = 0; r < n; ++r) {
          const double rp = v[r][p], rq = v[r][q];
          v[r][p] = c * rp - s * rq;
          v[r][q] = s * rp + c * rq;
        }
      }
  }
  double largest = 0;
  for (int i = 0; i < n; ++i) largest = std::max(largest, std::abs(d[i][i]));
  const double threshold = n * std::numeric_limits<double>::epsilon() * largest;
  double x[max_features] = {};
  for (int i = 0; i < n; ++i) {
    if (d[i][i] <= threshold) continue;
    double along = 0;
    for (int r = 0; r < n; ++r) along += v[r][i] * b[r];
    for (int r = 0; r < n; ++r) x[r] += along / d[i][i] * v[r][i];
  }
  std::copy(x, x + n, b);
}

// Solves a x = b in place (x into b) for n <= max_features, as solve_ex's LU
// with partial pivoting; a singular system (possible only with ridge 0)
// takes the least-squares solution of least norm, as the reference's lstsq
// fallback.
inline void solve_small(int n, double (&a)[max_features][max_features], double (&b)[max_features]) {
  double lu[max_features][max_features], x[max_features];
  std::copy(&a[0][0], &a[0][0] + max_features * max_features, &lu[0][0]);
  std::copy(b, b + max_features, x);
  bool singular = false;
  for (int c = 0; c < n && !singular; ++c) {
    int p = c;
    for (int r = c + 1; r < n; ++r)
      if (std::abs(lu[r][c]) > std::abs(lu[p][c])) p = r;
    singular = lu[p][c] == 0;
    std::swap(lu[p], lu[c]);
    std::swap(x[p], x[c]);
    for (int r = c + 1; r < n && !singular; ++r) {
      const double f = lu[r][c] / lu[c][c];
      for (int j = c; j < n; ++j) lu[r][j] -= f * lu[c][j];
      x[r] -= f * x[c];
    }
  }
  if (singular) return solve_least_norm(n, a, b);
  for (int i = n - 1; i >= 0; --i) {
    double t = x[i];
    for (int j = i + 1; j < n; ++j) t -= lu[i][j] * x[j];
    x[i] = t / lu[i][i];
  }
  std::copy(x, x + n, b);
}

// One group's data over all outputs, transposed like the working matrix:
// row t is the group's column t, one entry per output.
struct GroupState {
  CodeMatrix codes;  // g x out
  MatrixF coeffs;    // (k + 1) x out, bias last, float as the reference stores them
  MatrixF error;     // g x out: E = E_old + dE
  std::vector<double> panel_score;
  void resize(Index g, int k, Index out) {
    codes.resize(g, out);
    coeffs.resize(k + 1, out);
    error.resize(g, out);
    panel_score.assign(static_cast<std::size_t>(panel_count(out)), 0.0);
  }
  double score() const {  // summed in a fixed order
    double s = 0;
    for (double v : panel_score) s += v;
    return s;
  }
};

// What every fit and round of one group shares.
struct GroupProblem {
  int k;
  Index g;
  double ridge;
  MatrixF u_loc;         // g x g: U[group, group], upper
  VectorF white_ones;    // U_loc^-T 1: the bias feature, whitened
  MatrixF target;        // g x out: the group's weights when the group starts
  MatrixF white_target;  // g x out: U_loc^-T target

  // z = U_loc^-T z in place (z is g x n): the whitening of the reference's
  // solve_triangular(U^T, ., lower).
  template <class Z>
  void whiten(Z&& z) const {
    u_loc.transpose().triangularView<Eigen::Lower>().solveInPlace(z);
  }
};

// The ridge fit of the outputs [first, first + count) to their planes in
// `codes`; coefficients into `coeffs`. Leaves the whitened planes in `planes`
// (k blocks of g rows). Returns false if a coefficient is not finite.
inline bool fit(const GroupProblem& pb, Index first, Index count, const CodeMatrix& codes,
                MatrixF& coeffs, MatrixF& planes) {
  const int k = pb.k, n = k + 1;
  const Index g = pb.g;
  planes.resize(k * g, count);
  for (int p = 0; p < k; ++p) {
    auto z = planes.middleRows(p * g, g);
    for (Index t = 0; t < g; ++t)
      for (Index r = 0; r < count; ++r)
        z(t, r) = static_cast<float>((codes(t, first + r) >> p) & 1u);
    pb.whiten(z);
  }
  // Gram entries and right-hand sides, one row vector over the outputs each.
  const auto y = pb.white_target.middleCols(first, count);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> gram(n * n + n, count);
  const double ones_gram = pb.white_ones.cast<double>().squaredNorm();
  // Column sums accumulated row by row (the outputs are contiguous).
  const auto column_dots = [&](const auto& a, const auto& b) -> Eigen::RowVectorXd {
    Eigen::RowVectorXf sum = Eigen::RowVectorXf::Zero(count);
    for (Index t = 0; t < g; ++t) sum.array() += a.row(t).array() * b.row(t).array();
    return sum.cast<double>();
  };
  for (int p = 0; p < k; ++p) {
    const auto zp = planes.middleRows(p * g, g);
    for (int q = p; q < k; ++q) gram.row(p * n + q) = column_dots(zp, planes.middleRows(q * g, g));
    gram.row(p * n + k) = (pb.white_ones.transpose() * zp).cast<double>();
    gram.row(n * n + p) = column_dots(zp, y);
  }
  gram.row(n * n + k) = (pb.white_ones.transpose() * y).cast<double>();
  bool finite = true;
  double a[max_features][max_features], b[max_features];
  for (Index r = 0; r < count; ++r) {
    for (int p = 0; p < n; ++p) {
      for (int q = p; q < n; ++q) a[p][q] = a[q][p] = p == k ? ones_gram : gram(p * n + q, r);
      a[p][p] += pb.ridge;
      b[p] = gram(n * n + p, r);
    }
    solve_small(n, a, b);
    for (int p = 0; p < n; ++p) {
      const float v = static_cast<float>(b[p]);
      finite &= std::isfinite(v);
      coeffs(p, first + r) = v;
    }
  }
  return finite;
}

// One round for the outputs [first, first + count): the plane choice with
// in-group error feedback from the coefficients in `from`, the refit, and the
// delta correction. Results go to `to`; returns false on a non-finite fit.
inline bool run_round(const GroupProblem& pb, Index first, Index count, const GroupState& from,
                      GroupState& to) {
  const int k = pb.k, candidates = 1 << k;
  const Index g = pb.g;
  std::array<std::uint8_t, 1 << max_planes> code_of{};
  for (int c = 0; c < candidates; ++c)
    code_of[static_cast<std::size_t>(c)] = code_of_candidate(c, k);

  // Candidate levels C b + c_k, one row per candidate.
  MatrixF levels(candidates, count);
  for (int c = 0; c < candidates; ++c) {
    levels.row(c) = from.coeffs.row(k).segment(first, count);
    for (int p = 0; p < k; ++p)
      if ((c >> (k - 1 - p)) & 1) levels.row(c) += from.coeffs.row(p).segment(first, count);
  }
  MatrixF w = pb.target.middleCols(first, count);
  auto err = to.error.middleCols(first, count);  // E_old for now
  std::vector<float> best_q(static_cast<std::size_t>(count)), best_d(best_q.size());
  std::vector<std::int32_t> best(best_q.size());
  for (Index t = 0; t < g; ++t) {
    // The nearest level, the first on ties: plain loops over the outputs,
    // which the compiler vectorizes (if-converted selects).
    const float* y = &w(t, 0);
    for (Index r = 0; r < count; ++r) {
      const float d = y[r] - levels(0, r);
      best_d[static_cast<std::size_t>(r)] = d * d;
      best_q[static_cast<std::size_t>(r)] = levels(0, r);
      best[static_cast<std::size_t>(r)] = 0;
    }
    for (int c = 1; c < candidates; ++c) {
      const float* level = &levels(c, 0);
      for (Index r = 0; r < count; ++r) {
        const std::size_t i = static_cast<std::size_t>(r);
        const float d = (y[r] - level[r]) * (y[r] - level[r]);
        const bool closer = d < best_d[i];
        best_d[i] = closer ? d : best_d[i];
        best_q[i] = closer ? level[r] : best_q[i];
        best[i] = closer ? c : best[i];
      }
    }
    const float diagonal = pb.u_loc(t, t);
    for (Index r = 0; r < count; ++r) {
      const std::size_t i = static_cast<std::size_t>(r);
      to.codes(t, first + r) = code_of[static_cast<std::size_t>(best[i])];
      err(t, r) = (y[r] - best_q[i]) / diagonal;
    }
    feed_back_in_block(w, t, pb.u_loc.row(t).transpose(), err.row(t));
  }
  MatrixF planes;
  if (!fit(pb, first, count, to.codes, to.coeffs, planes)) return false;
  // E = E_old + dE with dE^T = sum_p dc_p Z_p + dc_k U_loc^-T 1, dc = c_old - c_new.
  Eigen::RowVectorXf dc =
      from.coeffs.row(k).segment(first, count) - to.coeffs.row(k).segment(first, count);
  err.noalias() += pb.white_ones * dc;
  for (int p = 0; p < k; ++p) {
    dc = from.coeffs.row(p).segment(first, count) - to.coeffs.row(p).segment(first, count);
    err.array() += planes.middleRows(p * g, g).array().rowwise() * dc.array();
  }
  to.panel_score[static_cast<std::size_t>(first / error_feedback_panel)] =
      err.cast<double>().squaredNorm();
  return true;
}

// Runs work(first, count) over the output panels; throws if any returned false.
template <class Work>
void for_panels(Index out, Work&& work) {
  std::vector<char> ok(static_cast<std::size_t>(panel_count(out)), 1);
  for_each_panel(out, [&](Index first, Index count) {
    ok[static_cast<std::size_t>(first / error_feedback_panel)] = work(first, count) ? 1 : 0;
  });
  for (char v : ok)
    require(v != 0,
            "quantize_bpdq: a coefficient fit gave a non-finite value (weights or H out of float "
            "range)");
}

// Validates the arguments; returns the resolved group size.
inline Index validate(const MatrixFRef& w, const MatrixDRef& h, const BpdqConfig& config) {
  require_nonempty(w, "quantize_bpdq: weights");
  require_finite(w, "quantize_bpdq: weights");
  validate_hessian(h, w.cols(), "quantize_bpdq");
  require_bits(config.planes, 1, max_planes, "BpdqConfig::planes");
  require_bits(config.init_bits, config.planes, 8, "BpdqConfig::init_bits (at least planes)");
  require(config.iters >= 1, "BpdqConfig::iters: expected >= 1, got ", config.iters);
  require(config.ridge >= 0 && std::isfinite(config.ridge),
          "BpdqConfig::ridge: expected a finite value >= 0, got ", config.ridge);
  require(config.block_size >= 1, "BpdqConfig::block_size: expected >= 1, got ", config.block_size);
  return resolve_group_size(config.group_size, w.cols(), "BpdqConfig::group_size");
}

// What the pass keeps of each group, in processing order.
struct SweepResults {
  CodeMatrix codes_t;  // in x out
  std::vector<MatrixF> coeffs, init_coeffs;
  std::vector<GridParams> init_grid;
  std::vector<double> score;  // ||E||_F^2 of the kept round
  std::vector<int> best_iter;
};

// The pass over the groups in processing order: per group the initial planes
// and fit, the rounds and the choice of the kept one, whose error feeds the
// rest of the block; at each block's end, the block's errors feed the rest of
// W. Results stay in processing order (see bpdq_result).
class Sweep {
 public:
  Sweep(const BpdqConfig& config, Index group_size, MatrixF factor, const MatrixF& w)
      : config_(config),
        pb_{config.planes, group_size, config.ridge, {}, {}, {}, {}},
        u_(std::move(factor)) {
    transpose_tiled(wt_, w);
    const Index in = w.cols(), out = w.rows();
    block_ = std::max<Index>(1, std::max<Index>(config.block_size, group_size) / group_size) *
             group_size;
    const std::size_t n = static_cast<std::size_t>(in / group_size);
    results_.codes_t.resize(in, out);
    results_.coeffs.resize(n);
    results_.init_coeffs.resize(n);
    results_.init_grid.resize(n);
    results_.score.resize(n);
    results_.best_iter.resize(n);
    // The initial state, then one per round.
    states_.resize(static_cast<std::size_t>(config.iters) + 1);
    for (GroupState& state : states_) state.resize(group_size, config.planes, out);
    errors_.resize(block_, out);
  }

  // Every block in turn; progress after each.
  void run() {
    const Index in = wt_.rows(), out = wt_.cols();
    for (Index i1 = 0; i1 < in; i1 += block_) {
      const Index i2 = std::min(i1 + block_, in);
      for (Index a0 = i1; a0 < i2; a0 += pb_.g) quantize_group(a0, i1, i2);
      if (i2 < in)
        for_each_panel(out, [&](Index first, Index count) {
          propagate_block_errors(wt_.block(i2, first, in - i2, count),
                                 u_.block(i1, i2, i2 - i1, in - i2),
                                 errors_.block(0, first, i2 - i1, count));
        });
      if (config_.progress) config_.progress(i2, in);
    }
  }

  const SweepResults& results() const { return results_; }

 private:
  // The group starting at processing position a0, inside block [i1, i2).
  void quantize_group(Index a0, Index i1, Index i2) {
    const Index g = pb_.g, out = wt_.cols();
    const std::size_t gi = static_cast<std::size_t>(a0 / g);
    pb_.u_loc = u_.block(a0, a0, g, g);
    pb_.white_ones = VectorF::Ones(g);
    pb_.whiten(pb_.white_ones);
    pb_.target = wt_.middleRows(a0, g);
    pb_.white_target.resize(g, out);
    results_.init_grid[gi].scale.resize(out);
    results_.init_grid[gi].zero.resize(out);
    for_panels(out, [&](Index first, Index count) { return run_rounds(gi, first, count); });
    results_.init_coeffs[gi] = states_[0].coeffs;
    const std::size_t kept = kept_round();
    const GroupState& best = states_[kept];
    results_.best_iter[gi] = static_cast<int>(kept);
    results_.score[gi] = best.score();
    results_.codes_t.middleRows(a0, g) = best.codes;
    results_.coeffs[gi] = best.coeffs;
    errors_.middleRows(a0 - i1, g) = best.error;
    // The kept error, fed to the rest of the block.
    const Index rest = i2 - a0 - g;
    if (rest > 0)
      for_each_panel(out, [&](Index first, Index count) {
        propagate_block_errors(wt_.block(a0 + g, first, rest, count), u_.block(a0, a0 + g, g, rest),
                               best.error.middleCols(first, count));
      });
  }

  // The whole sequence for the outputs [first, first + count) of group gi:
  // the initial planes (the top bits of the reference grid on the current
  // weights) and their fit, then every round (a round starts from the
  // previous refit whatever is kept, so a panel runs them all on its own).
  bool run_rounds(std::size_t gi, Index first, Index count) {
    const float maxq = grid_maxq(config_.init_bits);
    const int drop = config_.init_bits - pb_.k;
    GroupState& initial = states_[0];
    pb_.white_target.middleCols(first, count) = pb_.target.middleCols(first, count);
    pb_.whiten(pb_.white_target.middleCols(first, count));
    const GridParams panel = find_grid_params(pb_.target.middleCols(first, count).transpose(),
                                              config_.init_bits, GridConfig{});
    results_.init_grid[gi].scale.segment(first, count) = panel.scale;
    results_.init_grid[gi].zero.segment(first, count) = panel.zero;
    for (Index t = 0; t < pb_.g; ++t)
      for (Index r = 0; r < count; ++r)
        initial.codes(t, first + r) = static_cast<std::uint8_t>(
            static_cast<unsigned>(
                grid_code(pb_.target(t, first + r), panel.scale(r), panel.zero(r), maxq)) >>
            drop);
    MatrixF planes;
    if (!fit(pb_, first, count, initial.codes, initial.coeffs, planes)) return false;
    for (std::size_t it = 1; it < states_.size(); ++it)
      if (!run_round(pb_, first, count, states_[it - 1], states_[it])) return false;
    return true;
  }

  // The round with the smallest score, the earliest on ties (1..iters).
  std::size_t kept_round() const {
    std::size_t kept = 1;
    double best_score = states_[1].score();
    for (std::size_t it = 2; it < states_.size(); ++it) {
      const double total = states_[it].score();
      if (total < best_score) {
        best_score = total;
        kept = it;
      }
    }
    return kept;
  }

  const BpdqConfig& config_;
  GroupProblem pb_;
  MatrixF u_;   // the inverse-Hessian factor
  MatrixF wt_;  // working weights, in x out
  Index block_ = 0;
  std::vector<GroupState> states_;
  MatrixF errors_;  // block width x out: the kept errors of the block's groups
  SweepResults results_;
};

// The result in the original order (GAR moves columns only inside their
// group): codes, coefficients and the per-group report entries.
inline void bpdq_result(const SweepResults& sweep, const BpdqConfig& config, Index group_size,
                        BpdqResult& result) {
  const int k = config.planes;
  const Index out = sweep.codes_t.cols(), groups = sweep.codes_t.rows() / group_size;
  BpdqReport& report = result.report;
  BitPlaneWeights& q = result.weights;
  q.planes = k;
  q.group_size = group_size;
  transpose_tiled(q.codes, sweep.codes_t);
  const Permutation& column_order = report.hessian.column_order;
  if (!column_order.empty()) q.codes = permute_columns(q.codes, inverse_permutation(column_order));
  q.coeffs.resize(groups * (k + 1), out);
  report.init_coeffs.resize(groups * (k + 1), out);
  report.init_scale.resize(groups, out);
  report.init_zero.resize(groups, out);
  report.group_score.resize(static_cast<std::size_t>(groups));
  report.best_iter.resize(static_cast<std::size_t>(groups));
  for (Index i = 0; i < groups; ++i) {
    const std::size_t pi = static_cast<std::size_t>(i);
    const Index og = report.group_order.empty() ? i : report.group_order[pi];
    q.coeffs.middleRows(og * (k + 1), k + 1) = sweep.coeffs[pi].cast<double>();
    report.init_coeffs.middleRows(og * (k + 1), k + 1) = sweep.init_coeffs[pi].cast<double>();
    report.init_scale.row(og) = sweep.init_grid[pi].scale.transpose();
    report.init_zero.row(og) = sweep.init_grid[pi].zero.transpose();
    report.group_score[static_cast<std::size_t>(og)] = sweep.score[pi];
    report.best_iter[static_cast<std::size_t>(og)] = sweep.best_iter[pi];
    report.loss += sweep.score[pi] / 2;
  }
}

}  // namespace detail::bpdq

// Quantizes `weights` (out x in) with the Hessian proxy `hessian` (in x in,
// the reference normalizes it by tokens: H = 2/N X^T X; the ridge is absolute,
// so the scale of H matters). avg_loss stays empty: the token count is unknown.
inline BpdqResult quantize_bpdq(const MatrixFRef& weights, const MatrixDRef& hessian,
                                const BpdqConfig& config = {}) {
  namespace bp = detail::bpdq;
  const detail::Stopwatch stopwatch;
  const Index group_size = bp::validate(weights, hessian, config);
  BpdqResult result;
  MatrixF w = weights;
  detail::HessianPrologue prologue = detail::hessian_prologue(
      hessian.cast<float>().cast<double>(), w, config.damping, [&](const MatrixD& h) {
        if (!config.group_aware_reorder) return Permutation();
        GroupAwareOrder order = group_aware_order(h, group_size);
        result.report.group_order = std::move(order.groups);
        return std::move(order.columns);
      });
  result.report.hessian = std::move(prologue.report);
  const Permutation& column_order = result.report.hessian.column_order;
  if (!column_order.empty()) w = permute_columns(w, column_order);

  bp::Sweep sweep(config, group_size, std::move(prologue.factor), w);
  w.resize(0, 0);
  sweep.run();
  bp::bpdq_result(sweep.results(), config, group_size, result);
  result.report.seconds = stopwatch.seconds();
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
