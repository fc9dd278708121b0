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
  // input_divisor: AWQ's per-channel scales s, when the weights act on x / s
  // (an engine folds 1/s into the preceding norm; a Linear cannot reach it).
  explicit BitPlaneLinear(PackedBitplanes packed, VectorF input_divisor = VectorF())
      : packed_(std::move(packed)), context_(packed_, kMaxTokens) {
    lowbit::detail::require(input_divisor.size() == 0 || input_divisor.size() == packed_.cols(),
                            "BitPlaneLinear: input_divisor has ", input_divisor.size(),
                            " entries, expected ", packed_.cols());
    if (input_divisor.size() != 0) input_scale_ = input_divisor.cwiseInverse();
  }
  const PackedBitplanes& packed() const { return packed_; }
  Index in_features() const override { return packed_.cols(); }
  Index out_features() const override { return packed_.rows(); }
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    if (input_scale_.size() == 0) return bitplane_gemm(packed_, x, y, context_);
    scaled_ = x * input_scale_.asDiagonal();
    bitplane_gemm(packed_, scaled_, y, context_);
  }

 private:
  static constexpr Index kMaxTokens = 16;  // tables built per call; longer inputs go in chunks
  PackedBitplanes packed_;
  VectorF input_scale_;
  mutable BitplaneContext context_;
  mutable MatrixF scaled_;
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
