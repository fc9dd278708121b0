// Rotary position embeddings as llama2.c (and Meta's LLaMA code) apply them:
// within each head, the consecutive pair (2i, 2i+1) of position p is rotated
// by the angle p * theta^(-2i / head_size).
//
// Hugging Face checkpoints rotate the halves (i, i + head_size/2) instead; a
// loader converts them by permuting the rows of wq and wk within each head
// (the inverse of the permutation llama2.c's exporter applies), so one forward
// pass serves both.
#pragma once

#include <cmath>

#include "lowbit/core/error.hpp"
#include "lowbit/core/types.hpp"

namespace lowbit::model {

struct RopeTables {
  MatrixF cos, sin;  // positions x head_size/2
  int head_size() const { return static_cast<int>(2 * cos.cols()); }
};

// Computed in float as llama2.c's run.c does.
inline RopeTables rope_tables(int positions, int head_size, float theta) {
  lowbit::detail::require(
      positions >= 0 && head_size > 0 && head_size % 2 == 0 && theta > 0,
      "rope_tables: expected positions >= 0, an even head_size > 0 and theta > 0, got ", positions,
      ", ", head_size, ", ", theta);
  const int half = head_size / 2;
  RopeTables rope{MatrixF(positions, half), MatrixF(positions, half)};
  for (int pos = 0; pos < positions; ++pos)
    for (int i = 0; i < half; ++i) {
      const float freq =
          1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(2 * half));
      const float angle = static_cast<float>(pos) * freq;
      rope.cos(pos, i) = std::cos(angle);
      rope.sin(pos, i) = std::sin(angle);
    }
  return rope;
}

// Rotates every pair (2i, 2i+1) of every head of token t (a row of x) by
// position start + t. The caller keeps positions within the tables.
inline void apply_rope(const RopeTables& rope, MatrixF& x, int start) {
  const int head_size = rope.head_size();
  for (Index t = 0; t < x.rows(); ++t)
    for (Index j = 0; j < x.cols(); j += 2) {
      const Index i = (j % head_size) / 2;
      const float c = rope.cos(start + t, i), s = rope.sin(start + t, i);
      const float x0 = x(t, j), x1 = x(t, j + 1);
      x(t, j) = x0 * c - x1 * s;
      x(t, j + 1) = x0 * s + x1 * c;
    }
}

}  // namespace lowbit::model
