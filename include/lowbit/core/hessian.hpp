// The inverse-Hessian machinery GPTQ, BPDQ and TACQ share: dead input
// columns, damping with the escalation GPTQModel applies when the Cholesky
// factorization fails, and the upper Cholesky factor U of the damped inverse
// (H + damp * mean(diag H) * I)^-1 = U^T U that drives the column-by-column
// error feedback.
#pragma once

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <vector>

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
  MatrixD factor;               // U, upper triangular, U^T U = (H + damp * mean(diag) * I)^-1
  double percdamp = 0;          // the damping fraction that succeeded
  double diagonal_floor = 0;    // 0 unless the diagonal had to be floored
  int failed_factorizations = 0;
};

// Input columns that never saw a non-zero activation: diag(H) == 0.
inline std::vector<Index> dead_columns(const MatrixDRef& h) {
  std::vector<Index> dead;
  for (Index i = 0; i < h.rows(); ++i)
    if (h(i, i) == 0) dead.push_back(i);
  return dead;
}

// The references set H[d, d] = 1 for dead columns (their weights are zeroed
// by the caller), which keeps H positive definite without touching the rest.
inline void set_dead_diagonal(MatrixD& h, const std::vector<Index>& dead) {
  for (Index d : dead) h(d, d) = 1;
}

namespace detail {

// Upper Cholesky factor of h^-1 from one Cholesky of the reversed matrix:
// with J the reversal, J h J = L L^T gives h^-1 = (J L^-T J)(J L^-1 J), and
// J L^-1 J is upper triangular with a positive diagonal, hence the factor.
// Returns false when h is not numerically positive definite.
inline bool inverse_upper_factor(const MatrixD& h, MatrixD& factor) {
  const Index n = h.rows();
  const MatrixD reversed = h.reverse();
  const Eigen::LLT<MatrixD> llt(reversed);
  if (llt.info() != Eigen::Success) return false;
  MatrixD inverse_lower = MatrixD::Identity(n, n);
  llt.matrixL().solveInPlace(inverse_lower);
  factor = inverse_lower.reverse();
  return factor.allFinite() && (factor.diagonal().array() > 0).all();
}

}  // namespace detail

struct DampingOutcome {
  double percdamp = 0;        // the damping fraction that succeeded
  double diagonal_floor = 0;  // 0 unless the diagonal had to be floored
  int failed_factorizations = 0;
};

// GPTQModel's recovery around a factorization attempt, in the Hessian's own
// precision: the diagonal gets damp * mean(diag) added (damp = percdamp, then
// + increment while < 1); if no damping works, the diagonal is floored at
// max(d + f, f), f = 1e-6 * max|diag| * 10^k, and the damping starts over.
// try_factor(damped diagonal) returns whether the factorization succeeded.
// Throws lowbit::Error when nothing recovers one.
template <class Scalar, class Mean, class TryFactor>
DampingOutcome escalate_damping(const std::vector<Scalar>& diag, const DampingConfig& config, Mean mean,
                                TryFactor try_factor) {
  detail::require(config.percdamp > 0 && config.percdamp < 1,
                  "DampingConfig::percdamp: expected a fraction in (0, 1), got ", config.percdamp);
  detail::require(config.increment >= 0, "DampingConfig::increment: expected >= 0, got ", config.increment);
  detail::require(config.floor_attempts >= 0, "DampingConfig::floor_attempts: expected >= 0, got ",
                  config.floor_attempts);
  double floor_base = 0;
  for (Scalar d : diag) floor_base = std::max(floor_base, std::abs(static_cast<double>(d)));
  if (!(floor_base > 0)) floor_base = 1;
  floor_base *= 1e-6;

  DampingOutcome outcome;
  std::vector<Scalar> current(diag.size()), damped(diag.size());
  for (int attempt = 0; attempt <= config.floor_attempts; ++attempt) {
    const double floor = attempt == 0 ? 0.0 : floor_base * std::pow(10.0, attempt - 1);
    const Scalar f = static_cast<Scalar>(floor);
    for (std::size_t i = 0; i < diag.size(); ++i)
      current[i] = attempt == 0 ? diag[i] : std::max(static_cast<Scalar>(diag[i] + f), f);
    const Scalar m = mean(current);
    for (double damp = config.percdamp; damp > 0 && damp < 1; damp += config.increment) {
      const Scalar add = static_cast<Scalar>(damp) * m;
      for (std::size_t i = 0; i < diag.size(); ++i) damped[i] = current[i] + add;
      if (try_factor(damped)) {
        outcome.percdamp = damp;
        outcome.diagonal_floor = floor;
        return outcome;
      }
      ++outcome.failed_factorizations;
      if (config.increment == 0) break;
    }
  }
  detail::fail("inverse_hessian_factor: H is not positive definite even with damping up to 1 and "
               "diagonal floors up to ", floor_base * std::pow(10.0, config.floor_attempts - 1),
               " (", outcome.failed_factorizations, " failed factorizations)");
}

// Damps H and returns the upper factor of its inverse (in double), with the
// reference's recovery when the factorization fails (escalate_damping).
inline InverseHessian inverse_hessian_factor(const MatrixDRef& h, const DampingConfig& config = {}) {
  detail::require(h.rows() > 0 && h.rows() == h.cols(), "inverse_hessian_factor: H must be square and non-empty, got ",
                  h.rows(), " x ", h.cols());
  detail::require_finite(h, "inverse_hessian_factor: H");
  const std::size_t n = static_cast<std::size_t>(h.rows());
  std::vector<double> diag(n);
  for (std::size_t i = 0; i < n; ++i) diag[i] = h(static_cast<Index>(i), static_cast<Index>(i));
  InverseHessian result;
  MatrixD damped = h;
  const DampingOutcome outcome = escalate_damping<double>(
      diag, config,
      [n](const std::vector<double>& d) {
        double sum = 0;
        for (double v : d) sum += v;
        return sum / static_cast<double>(n);
      },
      [&](const std::vector<double>& d) {
        for (std::size_t i = 0; i < n; ++i) damped(static_cast<Index>(i), static_cast<Index>(i)) = d[i];
        return detail::inverse_upper_factor(damped, result.factor);
      });
  result.percdamp = outcome.percdamp;
  result.diagonal_floor = outcome.diagonal_floor;
  result.failed_factorizations = outcome.failed_factorizations;
  return result;
}

}  // namespace lowbit
