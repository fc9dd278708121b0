#include "demo.hpp"

#include <chrono>
#include <cstdio>
#include <random>

#include "methods.hpp"

namespace lowbit::cli {
namespace {

// A layer with the statistics that make LLM quantization hard: heavy-tailed
// (Student-t) weights, and activations with a few outlier channels 20x larger
// than the rest. Fixed seeds: every run prints the same errors.
LayerInputs synthetic_layer(Index out, Index in, Index tokens) {
  std::mt19937 rng(20261125);
  std::student_t_distribution<float> heavy(5.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  LayerInputs layer;
  layer.w.resize(out, in);
  for (Index i = 0; i < layer.w.size(); ++i) layer.w.data()[i] = 0.02f * heavy(rng);
  MatrixF w2(out, in);
  for (Index i = 0; i < w2.size(); ++i) w2.data()[i] = 0.02f * heavy(rng);
  layer.extra_weights.push_back(std::move(w2));
  layer.x.emplace(tokens, in);
  for (Index i = 0; i < layer.x->size(); ++i) layer.x->data()[i] = normal(rng);
  for (Index c = 7; c < in; c += in / 8) layer.x->col(c) *= 20.0f;
  layer.ln_weight = VectorF::Ones(in);
  layer.ln_bias = VectorF::Zero(in);
  return layer;
}

std::string join(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args) s += (s.empty() ? "" : " ") + a;
  return s;
}

int run_demo(const Options& options) {
  apply_threads(options);
  const bool large = options.text("size") == "large";  // or small: the table admits no other
  const Index out = large ? 4096 : 512, in = large ? 4096 : 1024, tokens = large ? 2048 : 1024;
  std::printf(
      "lowbit demo: one %ld x %ld layer, heavy-tailed weights, %ld calibration tokens with\n"
      "outlier channels; rel. error = ||(W - Q) X^T|| / ||W X^T|| on those tokens.\n\n",
      static_cast<long>(out), static_cast<long>(in), static_cast<long>(tokens));
  const LayerInputs layer = synthetic_layer(out, in, tokens);

  std::printf("%-12s %-40s %10s %12s %10s\n", "method", "options", "bits/w", "rel. error",
              "time ms");
  for (const Method& method : all_methods()) {
    for (const std::vector<std::string>& args : method.demo_runs) {
      const Options run_options(args, method.options, "demo " + method.name);
      const auto start = std::chrono::steady_clock::now();
      const MethodResult result = method.run(layer, run_options);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      const std::optional<RelativeError> err = relative_output_error(layer, result.q);
      std::printf("%-12s %-40s %10.3f %12.5f %10.1f\n", method.name.c_str(), join(args).c_str(),
                  result.bits_per_weight, err ? err->value : NAN, ms);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

Command demo_command() {
  return {"demo",
          "every method (its demo option sets) on one synthetic layer with the statistics that\n"
          "make LLM quantization hard: heavy-tailed weights, activations with outlier channels.\n"
          "Prints bits per weight, relative output error ||(W - Q) X^T|| / ||W X^T|| and time.",
          {option("size", "small"), option("threads")},
          run_demo};
}

}  // namespace lowbit::cli
