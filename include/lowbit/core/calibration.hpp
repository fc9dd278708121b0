// Streaming calibration statistics of one linear layer, in memory
// independent of the amount of calibration data:
//   * Calibration: the activations' Hessian proxy H = 2/N * sum X^T X,
//     per-channel max|x| and mean|x|, and the token count N (O(in^2));
//   * GradientMagnitudes: G = sum over samples of |dL/dW| (TACQ's saliency;
//     out x in, float like the weights).
#pragma once

#define LOWBIT_PUBLIC_HEADER

#include <cstdint>
#include <utility>

#include "lowbit/core/detail/symmetric.hpp"
#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit {

class Calibration {
 public:
  explicit Calibration(Index in_features) : in_features_(in_features) {
    detail::require(in_features > 0, "Calibration: in_features must be positive, got ",
                    in_features);
    xtx_.setZero(in_features, in_features);
    max_abs_.setZero(in_features);
    sum_abs_.setZero(in_features);
  }

  // Adds a batch of activations (tokens x in_features). Accumulates in double.
  template <class Derived>
  void add(const Eigen::MatrixBase<Derived>& batch) {
    require_hessian_kept("add");
    detail::require(batch.cols() == in_features_, "Calibration::add: batch has ", batch.cols(),
                    " columns, expected in_features = ", in_features_);
    detail::require_finite(batch, "Calibration::add: batch");
    if (batch.rows() == 0) return;
    const MatrixD x = batch.template cast<double>();
    xtx_.template selfadjointView<Eigen::Lower>().rankUpdate(x.transpose());
    max_abs_ = max_abs_.cwiseMax(x.cwiseAbs().colwise().maxCoeff().transpose());
    sum_abs_ += x.cwiseAbs().colwise().sum().transpose();
    tokens_ += static_cast<std::int64_t>(batch.rows());
  }

  Index in_features() const { return in_features_; }
  std::int64_t tokens() const { return tokens_; }

  // 2/N * sum X^T X (in_features x in_features, symmetric).
  MatrixD hessian() const {
    require_tokens("hessian");
    require_hessian_kept("hessian");
    MatrixD h = xtx_.selfadjointView<Eigen::Lower>();
    return h * (2.0 / static_cast<double>(tokens_));
  }

  // H's diagonal alone (no in x in matrix), equal to hessian().diagonal().
  VectorD hessian_diagonal() const {
    require_tokens("hessian_diagonal");
    require_hessian_kept("hessian_diagonal");
    return xtx_.diagonal() * (2.0 / static_cast<double>(tokens_));
  }

  // The same H, made in the accumulator's own storage and moved out: no
  // second in x in matrix (for the widest layers of a large model). H can be
  // taken once; max_abs, mean_abs and tokens stay.
  MatrixD take_hessian() {
    require_tokens("take_hessian");
    require_hessian_kept("take_hessian");
    detail::mirror_triangle(xtx_, true);
    xtx_ *= 2.0 / static_cast<double>(tokens_);
    return std::move(xtx_);
  }

  VectorD max_abs() const {
    require_tokens("max_abs");
    return max_abs_;
  }

  VectorD mean_abs() const {
    require_tokens("mean_abs");
    return sum_abs_ / static_cast<double>(tokens_);
  }

 private:
  void require_tokens(const char* what) const {
    detail::require(tokens_ > 0, "Calibration::", what, ": no activations were added yet");
  }
  void require_hessian_kept(const char* what) const {
    detail::require(xtx_.size() != 0, "Calibration::", what, ": H was taken (take_hessian)");
  }

  Index in_features_;
  std::int64_t tokens_ = 0;
  MatrixD xtx_;  // lower triangle holds sum X^T X
  VectorD max_abs_;
  VectorD sum_abs_;
};

// Streaming G = sum_samples |dL/dW| for one weight matrix (out x in): one call
// per calibration sample (a sequence, in the official TACQ pipeline), whatever
// the number of samples. Accumulates in float like the reference (a whole
// model's accumulators are alive at once during backpropagation; float halves
// that).
class GradientMagnitudes {
 public:
  GradientMagnitudes(Index out_features, Index in_features) {
    detail::require(out_features > 0 && in_features > 0,
                    "GradientMagnitudes: expected a positive shape, got ", out_features, " x ",
                    in_features);
    sum_.setZero(out_features, in_features);
  }

  // Adds |gradient| of one sample (out x in).
  void add(const MatrixFRef& gradient) {
    detail::require_shape(gradient, sum_.rows(), sum_.cols(), "GradientMagnitudes::add: gradient");
    detail::require_finite(gradient, "GradientMagnitudes::add: gradient");
    sum_ += gradient.cwiseAbs();
    ++samples_;
  }

  // Adds the sample's gradient of a linear layer y = W x from what backward
  // sees: dL/dY (tokens x out) and the input X (tokens x in); the weight
  // gradient is dL/dY^T X, and its absolute value is accumulated.
  void add_linear(const MatrixFRef& output_gradient, const MatrixFRef& input) {
    const char* who = "GradientMagnitudes::add_linear";
    detail::require(output_gradient.rows() == input.rows(), who, ": output_gradient has ",
                    output_gradient.rows(), " tokens, input has ", input.rows());
    detail::require(output_gradient.cols() == sum_.rows(), who, ": output_gradient has ",
                    output_gradient.cols(), " columns, expected out_features = ", sum_.rows());
    detail::require(input.cols() == sum_.cols(), who, ": input has ", input.cols(),
                    " columns, expected in_features = ", sum_.cols());
    detail::require_finite(output_gradient, "GradientMagnitudes::add_linear: output_gradient");
    detail::require_finite(input, "GradientMagnitudes::add_linear: input");
    const MatrixF gradient = output_gradient.transpose() * input;
    detail::require_finite(gradient,
                           "GradientMagnitudes::add_linear: the gradient (float overflow)");
    sum_ += gradient.cwiseAbs();
    ++samples_;
  }

  Index rows() const { return sum_.rows(); }
  Index cols() const { return sum_.cols(); }
  std::int64_t samples() const { return samples_; }

  // G: the accumulated magnitudes.
  const MatrixF& sum() const {
    detail::require(samples_ > 0, "GradientMagnitudes::sum: no gradients were added yet");
    return sum_;
  }

 private:
  MatrixF sum_;
  std::int64_t samples_ = 0;
};

}  // namespace lowbit
