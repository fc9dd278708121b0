// The seam between a model and its weights: every linear layer of a model runs
// through `Linear`. FloatLinear (Eigen) is the reference; the quantized layers
// of quantized_linear.hpp, or an engine's own, implement the same three
// functions and plug into the same forward pass.
#pragma once

#include <Eigen/Core>
#include <utility>

#include "lowbit/core/types.hpp"

namespace lowbit::model {

// y = x W^T for a batch of tokens: x is tokens x in_features, y (already sized)
// tokens x out_features, one token per row. The forward pass calls apply from
// one thread at a time, so an implementation may keep mutable scratch space
// (the lookup tables of the bit-plane kernel) and parallelize inside apply.
// A bias, where a model has one (Qwen2's q/k/v), belongs to the implementation:
// y = x W^T + b keeps the forward pass unchanged.
class Linear {
 public:
  virtual ~Linear() = default;
  virtual Index in_features() const = 0;
  virtual Index out_features() const = 0;
  virtual void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const = 0;
};

// Eigen's product; run Eigen single-threaded (Eigen::setNbThreads(1)) for
// decoding: its OpenMP GEMM costs more than it saves on products this small.
class FloatLinear final : public Linear {
 public:
  explicit FloatLinear(MatrixF weight) : weight_(std::move(weight)) {}
  const MatrixF& weight() const { return weight_; }  // out x in, what quantizers take
  Index in_features() const override { return weight_.cols(); }
  Index out_features() const override { return weight_.rows(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    y.noalias() = x * weight_.transpose();
  }

 private:
  MatrixF weight_;
};

}  // namespace lowbit::model
