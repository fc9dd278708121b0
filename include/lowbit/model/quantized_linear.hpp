// Quantized implementations of Linear: how an engine plugs lowbit's kernels
// into a model. Weights are packed once, in the constructor; apply() reuses
// scratch space owned by the layer (the forward pass calls it from one thread).
//
//   BitPlaneLinear: every 1..8-bit result (RTN, GPTQ, AWQ, BPDQ, TACQ with its
//                   sparse part) through the bit-plane lookup-table kernel.
//   Int8Linear:     W8A8 (absmax, SmoothQuant): int8 weights per row, int8
//                   activations per token, integer products.
#pragma once

#include <algorithm>
#include <utility>

#include "lowbit/core/int8_weights.hpp"
#include "lowbit/kernels/bitplane_lut_gemm.hpp"
#include "lowbit/kernels/int8_gemm.hpp"
#include "lowbit/model/linear.hpp"

namespace lowbit::model {

// The kernel's context (activations and int8 tables, about 8 bytes per input
// feature and token) is sized to the longest call so far, up to max_tokens;
// longer inputs go through the kernel max_tokens tokens at a time, with the
// same result bits for any max_tokens. With int8 tables the cost per token is
// flat from 4 tokens on, so the default chunk of 16 costs a 512-token
// prefill nothing measurable (README, "An engine-shaped benchmark"), and a
// 7B model's 224 contexts, 9 MB per token, hold 0.15 GB (at 512 tokens they
// would hold 4.7 GB); a model that only decodes holds one token's.
class BitPlaneLinear final : public Linear {
 public:
  static constexpr Index kDefaultMaxTokens = 16;
  explicit BitPlaneLinear(PackedBitplanes packed, Index max_tokens = kDefaultMaxTokens)
      : packed_(std::move(packed)), max_tokens_(max_tokens) {
    lowbit::detail::require(max_tokens >= 1, "BitPlaneLinear: max_tokens must be >= 1, got ",
                            max_tokens);
  }
  const PackedBitplanes& packed() const { return packed_; }
  Index in_features() const override { return packed_.cols(); }
  Index out_features() const override { return packed_.rows(); }
  Index max_tokens() const { return max_tokens_; }
  Index context_tokens() const { return context_.max_tokens(); }  // 0 before the first call
  void apply(MatrixFRef x, Eigen::Ref<MatrixF> y) const override {
    const Index tokens = std::min(std::max<Index>(x.rows(), 1), max_tokens_);
    if (context_.max_tokens() < tokens) context_ = BitplaneContext(packed_, tokens);
    bitplane_gemm(packed_, x, y, context_);
  }

 private:
  PackedBitplanes packed_;
  Index max_tokens_;
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
