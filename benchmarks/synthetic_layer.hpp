// The synthetic layer the GPTQ and BPDQ benchmarks share: 4096 x 4096
// heavy-tailed weights and H from 2048 tokens whose channels correlate.
#pragma once

#include <chrono>
#include <cmath>
#include <lowbit/core/calibration.hpp>
#include <lowbit/core/types.hpp>
#include <random>

namespace {

using lowbit::Index;
using lowbit::MatrixD;
using lowbit::MatrixF;

constexpr Index kSize = 4096;
constexpr Index kTokens = 2048;

struct Layer {
  MatrixF w;
  MatrixF x;  // calibration activations, tokens x in
  MatrixD h;
  MatrixF h_float;
};

// Heavy-tailed weights; activations with a shared low-rank component (so
// channels correlate, as in real layers) and a few outlier channels.
Layer make_layer(Index out, Index in, Index tokens, unsigned seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> heavy(5.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Layer layer;
  layer.w.resize(out, in);
  for (Index i = 0; i < layer.w.size(); ++i) layer.w.data()[i] = 0.02f * heavy(rng);
  constexpr Index rank = 32;
  MatrixF factors(tokens, rank), loadings(rank, in), x(tokens, in);
  for (Index i = 0; i < factors.size(); ++i) factors.data()[i] = normal(rng);
  for (Index i = 0; i < loadings.size(); ++i) loadings.data()[i] = 0.5f * normal(rng);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  x += factors * loadings;
  for (Index c = 7; c < in; c += 509) x.col(c) *= 20.0f;
  lowbit::Calibration calibration(in);
  calibration.add(x);
  layer.h = calibration.hessian();
  layer.h_float = layer.h.cast<float>();
  layer.x = std::move(x);
  return layer;
}

const Layer& layer() {
  static const Layer l = make_layer(kSize, kSize, kTokens, 4096);
  return l;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Through H, in float: sqrt(tr(dW H dW^T) / tr(W H W^T)).
double relative_output_error(const Layer& l, const MatrixF& q) {
  const double reference = (l.w * l.h_float).cwiseProduct(l.w).cast<double>().sum();
  const MatrixF dw = l.w - q;
  return std::sqrt((dw * l.h_float).cwiseProduct(dw).cast<double>().sum() / reference);
}

}  // namespace
