// Rotary position embeddings in the two conventions checkpoints use:
//
// - interleaved (llama2.c, Meta's LLaMA code): within each head, the
//   consecutive pair (2i, 2i+1) rotates by the angle p * f_i;
// - half (Hugging Face's rotate_half): the pair (i, i + head_size/2) rotates
//   by the same angle. transformers' Meta converter permutes the rows of wq
//   and wk within each head so that both give the same model.
//
// f_i = theta^(-2i / head_size), optionally rescaled as transformers'
// modeling_rope_utils does for rope_type "linear" (every f_i / factor) and
// "llama3" (low frequencies / factor, high ones kept, a smooth blend between).
#pragma once

#include <cmath>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit::model {

enum class RopeStyle { interleaved, half };

struct RopeScaling {
  enum class Type { none, linear, llama3 };
  Type type = Type::none;
  float factor = 1.0f;
  // llama3 only: the wavelength band, in units of the original context.
  float low_freq_factor = 1.0f, high_freq_factor = 4.0f;
  int original_max_positions = 8192;
};

struct RopeTables {
  MatrixF cos, sin;  // positions x head_size/2
  RopeStyle style = RopeStyle::interleaved;
  int head_size() const { return static_cast<int>(2 * cos.cols()); }
};

namespace detail {

// The llama3 rescaling of one inverse frequency (_compute_llama3_parameters).
inline float llama3_frequency(float freq, const RopeScaling& s) {
  const float pi = 3.14159265358979323846f;
  const float wavelen = 2.0f * pi / freq;
  const float old_context = static_cast<float>(s.original_max_positions);
  if (wavelen < old_context / s.high_freq_factor) return freq;
  if (wavelen > old_context / s.low_freq_factor) return freq / s.factor;
  const float smooth =
      (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return (1.0f - smooth) * freq / s.factor + smooth * freq;
}

}  // namespace detail

// Computed in float as llama2.c's run.c and transformers do.
inline RopeTables rope_tables(int positions, int head_size, float theta,
                              RopeStyle style = RopeStyle::interleaved,
                              const RopeScaling& scaling = {}) {
  lowbit::detail::require(
      positions >= 0 && head_size > 0 && head_size % 2 == 0 && theta > 0,
      "rope_tables: expected positions >= 0, an even head_size > 0 and theta > 0, got ", positions,
      ", ", head_size, ", ", theta);
  lowbit::detail::require(
      scaling.type == RopeScaling::Type::none ||
          (scaling.factor > 0 && scaling.high_freq_factor > scaling.low_freq_factor &&
           scaling.low_freq_factor > 0 && scaling.original_max_positions > 0),
      "rope_tables: rope scaling needs factor > 0, high_freq_factor > low_freq_factor > 0 and "
      "original_max_position_embeddings > 0");
  const int half = head_size / 2;
  RopeTables rope{MatrixF(positions, half), MatrixF(positions, half), style};
  for (int i = 0; i < half; ++i) {
    float freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(2 * half));
    if (scaling.type == RopeScaling::Type::linear) freq /= scaling.factor;
    if (scaling.type == RopeScaling::Type::llama3) freq = detail::llama3_frequency(freq, scaling);
    for (int pos = 0; pos < positions; ++pos) {
      const float angle = static_cast<float>(pos) * freq;
      rope.cos(pos, i) = std::cos(angle);
      rope.sin(pos, i) = std::sin(angle);
    }
  }
  return rope;
}

namespace detail {

// Rotates every pair of every head of token t by `direction` (+1 or -1) times
// the angle of position start + t.
template <class Scalar>
void rotate_pairs(const RopeTables& rope, MatrixT<Scalar>& x, int start, int direction) {
  const int head_size = rope.head_size(), half = head_size / 2;
  const bool interleaved = rope.style == RopeStyle::interleaved;
  for (Index t = 0; t < x.rows(); ++t)
    for (Index head = 0; head < x.cols(); head += head_size)
      for (int i = 0; i < half; ++i) {
        const Index j0 = head + (interleaved ? 2 * i : i);
        const Index j1 = j0 + (interleaved ? 1 : half);
        const Scalar c = rope.cos(start + t, i), s = Scalar(direction) * rope.sin(start + t, i);
        const Scalar x0 = x(t, j0), x1 = x(t, j1);
        x(t, j0) = x0 * c - x1 * s;
        x(t, j1) = x0 * s + x1 * c;
      }
}

}  // namespace detail

// Rotates every pair of every head of token t (a row of x) by position
// start + t, pairs as rope.style says. The caller keeps positions within the tables.
template <class Scalar>
void apply_rope(const RopeTables& rope, MatrixT<Scalar>& x, int start) {
  detail::rotate_pairs(rope, x, start, 1);
}

// The transpose (= inverse) of apply_rope: what a backward pass applies to
// the gradient of the rotated rows.
template <class Scalar>
void apply_rope_transposed(const RopeTables& rope, MatrixT<Scalar>& x, int start) {
  detail::rotate_pairs(rope, x, start, -1);
}

}  // namespace lowbit::model
