// Quantized implementations of Linear: how an engine plugs lowbit's kernels
// into a model. Weights are packed once, in the constructor; apply() reuses
// scratch space owned by the layer (the forward pass calls it from one thread).
//
//   BitPlaneLinear: every 1..8-bit result (RTN, GPTQ, AWQ, BPDQ, TACQ with its
//                   sparse part) through the bit-plane lookup-table kernel.
//   Int8Linear:     W8A8 (absmax, SmoothQuant): int8 weights per row, int8
//                   activations per token, integer products.
#pragma once

#include <utility>

#include "lowbit/core/int8_weights.hpp"
#include "lowbit/kernels/bitplane_lut_gemm.hpp"
#include "lowbit/kernels/int8_gemm.hpp"
#include "lowbit/model/linear.hpp"

namespace lowbit::model {

class BitPlaneLinear final : public Linear {
 public:
  explicit BitPlaneLinear(PackedBitplanes packed)
      : packed_(std::move(packed)), context_(packed_, kMaxTokens) {}
  const PackedBitplanes& packed() const { return packed_; }
  Index in_features() const override { return packed_.cols(); }
  Index out_features() const override { return packed_.rows(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    bitplane_gemm(packed_, x, y, context_);
  }

 private:
  static constexpr Index kMaxTokens = 16;  // tables built per call; longer inputs go in chunks
  PackedBitplanes packed_;
  mutable BitplaneContext context_;
};

class Int8Linear final : public Linear {
 public:
  explicit Int8Linear(Int8Weights weights) : weights_(std::move(weights)) { weights_.validate(); }
  Index in_features() const override { return weights_.cols(); }
  Index out_features() const override { return weights_.rows(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    quantize_activations(x, activations_);
    int8_gemm(weights_, activations_, y, 0, weights_.rows());
  }

 private:
  Int8Weights weights_;
  mutable Int8Activations activations_;
};

}  // namespace lowbit::model
