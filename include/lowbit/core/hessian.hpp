// The inverse-Hessian machinery GPTQ, BPDQ and TACQ share: dead input
// columns, damping with the escalation GPTQModel applies when the Cholesky
// factorization fails, the upper Cholesky factor U of the damped inverse
// (H + damp * mean(diag H) * I)^-1 = U^T U that drives the column-by-column
// error feedback, and the prologue that runs these steps before a sweep.
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "lowbit/core/column_order.hpp"
#include "lowbit/core/detail/parallel.hpp"
#include "lowbit/core/detail/symmetric.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

struct DampingConfig {
  double percdamp = 0.01;   // fraction of mean(diag H) added to the diagonal
  double increment = 0.01;  // after a failed factorization raise percdamp by this while < 1
                            // (GPTQModel's damp_auto_increment; 0 fails at once)
  int floor_attempts = 6;   // then floor the diagonal at 1e-6 * max|diag| * 10^k, k = 0..5
};

struct InverseHessian {
  MatrixD factor;             // U, upper triangular, U^T U = (H + damp * mean(diag) * I)^-1
  double percdamp = 0;        // the damping fraction that succeeded
  double diagonal_floor = 0;  // 0 unless the diagonal had to be floored
  int failed_factorizations = 0;
};

// What the Hessian prologue did: the part of the report GPTQ, BPDQ and TACQ share.
struct HessianReport {
  std::vector<Index> dead_columns;  // inputs with diag(H) == 0: their weights were zeroed
  Permutation column_order;         // processing position i holds original column column_order[i];
                                    // empty: the original order
  double percdamp = 0;              // the damping that factorized H
  double diagonal_floor = 0;        // > 0 when H's diagonal had to be floored
  int failed_factorizations = 0;    // damping escalations before success
};

namespace detail {

// In place: the lower triangle of `l` (a lower triangular matrix with a
// positive diagonal) becomes its inverse's; the strict upper triangle is
// neither read nor written. Recursively,
// [[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]: the work becomes
// triangular matrix products, n^3/3 flops instead of the n^3 of solving
// against the identity, run over fixed chunks of B in parallel.
inline void invert_lower_triangular(Eigen::Ref<MatrixD> l) {
  const Index n = l.rows();
  if (n <= 64) {
    MatrixD inverse = MatrixD::Identity(n, n);
    l.triangularView<Eigen::Lower>().solveInPlace(inverse);
    l.triangularView<Eigen::Lower>() = inverse;
    return;
  }
  const Index half = n / 2, rest = n - half;
  invert_lower_triangular(l.topLeftCorner(half, half));
  invert_lower_triangular(l.bottomRightCorner(rest, rest));
  constexpr Index chunk = 256;
  MatrixD b_times_a(rest, half);
  parallel_chunks(rest, chunk, [&](Index first, Index rows) {
    b_times_a.middleRows(first, rows).noalias() =
        l.block(half + first, 0, rows, half) *
        l.topLeftCorner(half, half).triangularView<Eigen::Lower>();
  });
  parallel_chunks(half, chunk, [&](Index first, Index cols) {
    l.block(half, first, rest, cols).noalias() =
        -(l.bottomRightCorner(rest, rest).triangularView<Eigen::Lower>() *
          b_times_a.middleCols(first, cols));
  });
}

// One factorization attempt on `m`, which holds J h J (J the reversal) in
// its strict upper triangle: its lower triangle becomes L^-1, from the
// Cholesky factor L of J d J = L L^T, d being h with its diagonal replaced
// by `diagonal`. Only the lower triangle is written, so a failed attempt is
// retried from the untouched upper one. Returns false when d is not
// numerically positive definite.
inline bool inverse_lower_factor_attempt(Eigen::Ref<MatrixD> m, const VectorD& diagonal) {
  mirror_triangle(m, false);
  m.diagonal() = diagonal.reverse();
  const Eigen::LLT<Eigen::Ref<MatrixD>> llt(m);  // in place: L in the lower triangle
  if (llt.info() != Eigen::Success) return false;
  invert_lower_triangular(m);
  for (Index i = 0; i < m.rows(); ++i)
    if (!m.row(i).head(i + 1).allFinite() || !(m(i, i) > 0)) return false;
  return true;
}

}  // namespace detail

namespace detail {

// GPTQModel's damping schedule: percdamp, then `increment` added again and
// again (in double, as Python does) while the damping stays below 1.
inline double damping_step(const DampingConfig& config, Index step) {
  double damp = config.percdamp;
  for (Index i = 0; i < step; ++i) damp += config.increment;
  return damp;
}

inline Index damping_steps(const DampingConfig& config) {
  Index steps = 1;
  if (config.increment > 0)
    for (double damp = config.percdamp + config.increment; damp < 1; damp += config.increment)
      ++steps;
  return steps;
}

// Damps H and makes h the upper factor of its inverse, in h's own storage
// (inverse_hessian_factor below: the result's factor stays empty). The damping
// that succeeds is the first of GPTQModel's schedule (percdamp, raised by
// `increment` while below 1) that factorizes H, but it is found by bisection:
// damping only adds to the diagonal, so once a step succeeds every later one
// does. The first step is tried, then the last, then the boundary between
// them: at most 2 + log2(steps) factorizations instead of one per step. If
// even the last step fails, the diagonal is floored (GPTQModel's recovery,
// 1e-6 * max|diag| * 10^k) and the search repeats; when nothing recovers a
// factorization, lowbit::Error says how many were tried. Every attempt starts
// from h's upper triangle and its saved diagonal, so H need not be symmetric
// to the last bit: its upper triangle is the one read.
inline InverseHessian inverse_hessian_factor_in_place(MatrixD& h, const DampingConfig& config) {
  require(h.rows() > 0 && h.rows() == h.cols(),
          "inverse_hessian_factor: H must be square and non-empty, got ", h.rows(), " x ",
          h.cols());
  require_finite(h, "inverse_hessian_factor: H");
  require(config.percdamp > 0 && config.percdamp < 1,
          "DampingConfig::percdamp: expected a fraction in (0, 1), got ", config.percdamp);
  require(config.increment == 0 || (config.increment >= 1e-6 && config.increment < 1),
          "DampingConfig::increment: expected 0 or a step in [1e-6, 1), got ", config.increment);
  require(config.floor_attempts >= 0 && config.floor_attempts <= 12,
          "DampingConfig::floor_attempts: expected 0..12, got ", config.floor_attempts);

  const VectorD original_diag = h.diagonal();
  double floor_base = original_diag.cwiseAbs().maxCoeff();
  if (!(floor_base > 0)) floor_base = 1;
  floor_base *= 1e-6;
  const Index steps = damping_steps(config);
  // J h J (J the reversal), whose upper triangle now keeps H's upper one for
  // every attempt (see inverse_lower_factor_attempt).
  h.reverseInPlace();
  mirror_triangle(h, true);

  InverseHessian result;
  int tried = 0;
  for (int attempt = 0; attempt <= config.floor_attempts; ++attempt) {
    const double floor = attempt == 0 ? 0.0 : floor_base * std::pow(10.0, attempt - 1);
    const VectorD diag =
        attempt == 0 ? original_diag : (original_diag.array() + floor).max(floor).matrix().eval();
    const double mean = diag.mean();
    Index last = -1;  // the step h's lower triangle was last computed for
    const auto factorizes = [&](Index step) {
      ++tried;
      last = step;
      const VectorD damped = diag.array() + damping_step(config, step) * mean;
      if (inverse_lower_factor_attempt(h, damped)) return true;
      ++result.failed_factorizations;
      return false;
    };
    // Invariant: step `bad` fails (or is before the schedule), step `good` succeeds.
    Index bad = -1, good = 0;
    if (!factorizes(0)) {
      bad = 0;
      good = steps - 1;
      if (good == 0 || !factorizes(good)) continue;
    }
    while (good - bad > 1) {
      const Index mid = bad + (good - bad) / 2;
      if (factorizes(mid))
        good = mid;
      else
        bad = mid;
    }
    if (last != good) factorizes(good);  // L^-1 of the winning step
    // U = J L^-1 J: upper triangular with a positive diagonal, U^T U = d^-1.
    for (Index i = 0; i + 1 < h.rows(); ++i) h.row(i).tail(h.rows() - 1 - i).setZero();
    h.reverseInPlace();
    result.percdamp = damping_step(config, good);
    result.diagonal_floor = floor;
    return result;
  }
  fail("inverse_hessian_factor: H (", h.rows(), " x ", h.cols(),
       ") is not positive definite even with damping ", damping_step(config, steps - 1),
       " of its mean diagonal and diagonal floors up to ",
       floor_base * std::pow(10.0, config.floor_attempts - 1), " (", tried,
       " factorizations tried)");
}

}  // namespace detail

// Damps H and returns the upper factor U of its inverse,
// U^T U = (H + damp * mean(diag H) * I)^-1, with the damping found as
// detail::inverse_hessian_factor_in_place describes (on a copy of H).
inline InverseHessian inverse_hessian_factor(const MatrixDRef& h,
                                             const DampingConfig& config = {}) {
  MatrixD factor = h;
  InverseHessian result = detail::inverse_hessian_factor_in_place(factor, config);
  result.factor = std::move(factor);
  return result;
}

namespace detail {

// Checks the Hessian proxy of a layer with `in` inputs: square, finite and
// symmetric (compared tile by tile: a column walk over a large row-major
// matrix is slow). `who` names the caller in the messages.
inline void validate_hessian(const MatrixDRef& h, Index in, const char* who) {
  require_shape(h, in, in, concat(who, ": H (in_features x in_features)").c_str());
  require_finite(h, concat(who, ": H").c_str());
  constexpr Index tile = 32;
  const double tolerance = 1e-5 * std::max(h.diagonal().cwiseAbs().maxCoeff(), 1e-300);
  for (Index i = 0; i < h.rows(); i += tile)
    for (Index j = i; j < h.cols(); j += tile) {
      const Index rows = std::min(tile, h.rows() - i), cols = std::min(tile, h.cols() - j);
      const MatrixD difference = h.block(i, j, rows, cols) - h.block(j, i, cols, rows).transpose();
      Index r = 0, c = 0;
      if (difference.cwiseAbs().maxCoeff(&r, &c) > tolerance)
        fail(who, ": H must be symmetric, but H(", i + r, ", ", j + c, ") = ", h(i + r, j + c),
             " and H(", j + c, ", ", i + r, ") = ", h(j + c, i + r));
    }
}

// The inverse-Hessian factor in processing order, in float (the precision of
// the column sweeps), and what it took.
struct HessianPrologue {
  MatrixF factor;
  HessianReport report;
};

// What GPTQ and BPDQ do before their column sweep, in the references' order:
//   1. dead inputs (diag H == 0): H[d, d] = 1, and W[:, d] = 0 in `w`, which
//      stays in the original column order;
//   2. the processing order: order(H) on that H, a Permutation (empty: keep
//      the original order);
//   3. U, the upper factor of the damped inverse of H in that order, computed
//      in double and rounded to float.
// All three in h's own storage: pass H by std::move when it is not needed
// afterwards, and the only other in x in matrix is U in float.
template <class Order>
HessianPrologue hessian_prologue(MatrixD h, MatrixF& w, const DampingConfig& damping,
                                 Order&& order) {
  HessianPrologue prologue;
  HessianReport& report = prologue.report;
  for (Index i = 0; i < h.rows(); ++i)
    if (h(i, i) == 0) report.dead_columns.push_back(i);
  for (Index d : report.dead_columns) {
    h(d, d) = 1;
    w.col(d).setZero();
  }
  report.column_order = order(std::as_const(h));
  if (!report.column_order.empty()) permute_symmetric_in_place(h, report.column_order);
  const InverseHessian inverse = inverse_hessian_factor_in_place(h, damping);  // h becomes U
  prologue.factor = h.cast<float>();
  report.percdamp = inverse.percdamp;
  report.diagonal_floor = inverse.diagonal_floor;
  report.failed_factorizations = inverse.failed_factorizations;
  return prologue;
}

}  // namespace detail
}  // namespace lowbit
