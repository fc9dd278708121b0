// Sequential whole-model quantization (GPTQ's llama.py): each decoder layer is
// calibrated on the calibration sequences as transformed by the
// already-quantized layers before it, and every group of linears that share an
// input is quantized on those activations (group_quantization.hpp).
//
//   Model padded = pad_hidden(load_llama2c(path), 64);
//   QuantizedModel q = quantize_model(padded, sample_sequences(padded, 32, 64, 1.0f, 1),
//                                     {"gptq", 4, 32});
//
// SequentialQuantizer holds the residual stream of the calibration sequences
// (in memory or in a scratch file: residual_stream.hpp) and, while a layer is
// quantized, each group's statistics (H: in x in, whatever the number of
// tokens; the tokens themselves only for AWQ, which searches on them). A
// layer's float weights are needed only while it is quantized, so a loader
// supplies the model one layer at a time (ModelSource). With
// Propagation::float_model the states advance through the float layers
// instead: every layer is calibrated on the float model's activations.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/model/forward.hpp"
#include "lowbit/model/group_quantization.hpp"
#include "lowbit/model/llama.hpp"
#include "lowbit/model/residual_stream.hpp"
#include "lowbit/model/sequences.hpp"
#include "lowbit/model/task_gradients.hpp"

namespace lowbit::model {

// progress(layer, names) runs before each group of linears (names like
// "wq/wk/wv"), done(layer, kind, result) for each linear once its layer is
// quantized (AWQ's later groups change earlier linears).
using QuantProgress = std::function<void(int layer, const std::string& names)>;
using QuantDone = std::function<void(int layer, LinearKind kind, const QuantizedLinear& result)>;

// What the calibration states pass through after a layer is quantized.
enum class Propagation { quantized, float_model };

class SequentialQuantizer {
 public:
  // `states`: the residual stream of the calibration sequences entering
  // layer 0 (embed_stream). A method that reads no activations (rtn) takes
  // none and drops any given, so no layer runs on them. Throws for an
  // unknown method, or no sequences for a method that reads them.
  SequentialQuantizer(const Config& config, ResidualStream states, QuantSpec spec,
                      Propagation propagation = Propagation::quantized)
      : config_(config),
        rope_(rope_tables(config)),
        states_(std::move(states)),
        spec_(std::move(spec)),
        propagation_(propagation) {
    if (activation_use(spec_.method) == ActivationUse::nothing) {
      states_ = ResidualStream(std::vector<Index>{}, config_.dim);
      return;
    }
    lowbit::detail::require(states_.sequences() > 0,
                            "SequentialQuantizer: no calibration sequences");
    lowbit::detail::require(states_.dim() == config_.dim, "SequentialQuantizer: states of width ",
                            states_.dim(), " for a model of dim ", config_.dim);
  }
  // The same with a copy of `states` (embed_sequences) in memory.
  SequentialQuantizer(const Config& config, const std::vector<MatrixF>& states, QuantSpec spec,
                      Propagation propagation = Propagation::quantized)
      : SequentialQuantizer(config, ResidualStream(states), std::move(spec), propagation) {}

  // Quantizes `layer`, the float weights of layer next_layer(), on the inputs
  // its linears see, then advances the states through the quantized layer,
  // which it returns (SmoothQuant also changes its norms).
  Layer quantize_next(const Layer& layer, const QuantProgress& progress = {},
                      const QuantDone& done = {}) {
    const int l = layer_;
    lowbit::detail::require(l < config_.n_layers, "SequentialQuantizer: all ", config_.n_layers,
                            " layers are quantized already");
    validate_layer(config_, layer, "SequentialQuantizer: layer " + std::to_string(l));
    std::vector<GroupActivations> activations = calibrate(layer, l);
    Layer quantized = layer;
    std::array<QuantizedLinear, kLinearsPerLayer> results;
    for (std::size_t g = 0; g < linear_groups().size(); ++g) {
      const LinearGroup& group = linear_groups()[g];
      if (progress) progress(l, group_names(group));
      GroupInputs in{{}, activations[g], group.norm ? &(quantized.*group.norm) : nullptr, spec_};
      for (LinearKind k : group.kinds) in.weights.push_back(&float_weight(layer, k));
      if (gradients_ != nullptr)
        for (LinearKind k : group.kinds) in.gradients.push_back(&gradients_->sum(l, k));
      if (const std::optional<LinearKind> producer = producer_of(group))
        in.fold_into_producer = [&, p = index(*producer)](const VectorF& s) {
          divide_output_rows(results[p], s);
          if (quantized.biases[p].size() != 0)
            quantized.biases[p] = quantized.biases[p].cwiseQuotient(s);
          quantized.linears[p] = results[p].linear;
        };
      std::vector<QuantizedLinear> out = [&] {
        try {
          return quantize_group(in);
        } catch (const Error& e) {  // the quantizers' messages cannot say which layer
          throw Error("layer " + std::to_string(l) + " (" + group_names(group) + "): " + e.what());
        }
      }();
      for (std::size_t i = 0; i < out.size(); ++i) {
        const int k = index(group.kinds[i]);
        quantized.linears[k] = out[i].linear;
        const double n = static_cast<double>(in.weights[i]->size());
        bits_ += out[i].bits_per_weight * n;
        weights_ += n;
        results[k] = std::move(out[i]);
      }
      activations[g].clear();  // its H (in x in doubles) before the next group works
    }
    // After the whole layer: a later group may fold its scales into an earlier linear.
    if (done)
      for (const LinearGroup& group : linear_groups())
        for (LinearKind k : group.kinds) done(l, k, results[index(k)]);
    if (propagation_ == Propagation::quantized) advance(quantized, l);
    ++layer_;
    return quantized;
  }

  // Advances the states through `layer`, the float layer next_layer(),
  // without calibrating or quantizing it: a slice of the layers that starts
  // later (quantize-model --layers). Only under float propagation, where
  // the states never depend on quantized layers.
  void skip_next(const Layer& layer) {
    lowbit::detail::require(propagation_ == Propagation::float_model,
                            "SequentialQuantizer: skipping a layer needs float propagation (the "
                            "next layers are calibrated on this one's quantized outputs)");
    lowbit::detail::require(layer_ < config_.n_layers, "SequentialQuantizer: all ",
                            config_.n_layers, " layers are done already");
    validate_layer(config_, layer, "SequentialQuantizer: layer " + std::to_string(layer_));
    advance(layer, layer_);
    ++layer_;
  }

  // TACQ's task gradients of the float model (alive while the quantizer is).
  void use_task_gradients(const TaskGradients* gradients) { gradients_ = gradients; }

  int next_layer() const { return layer_; }
  // Storage per weight over the linears quantized so far, metadata included.
  double bits_per_weight() const { return bits_ / weights_; }

 private:
  static std::string group_names(const LinearGroup& group) {
    std::string names;
    for (LinearKind k : group.kinds) names += std::string(names.empty() ? "" : "/") + name(k);
    return names;
  }

  // The linear whose output rows are the input channels of a group without
  // a norm: w3 for w2 (silu(w1 x) * w3 x); wv for wo when each query head has
  // its own value head (with fewer value heads, heads share v's rows).
  std::optional<LinearKind> producer_of(const LinearGroup& group) const {
    if (group.norm != nullptr) return std::nullopt;
    if (group.kinds[0] == LinearKind::w2) return LinearKind::w3;
    if (group.kinds[0] == LinearKind::wo && config_.n_kv_heads == config_.n_heads)
      return LinearKind::wv;
    return std::nullopt;
  }

  // Runs `layer`, layer l, over the states in place, one sequence at a time.
  void advance(const Layer& layer, int l, const LinearObserver& observe = {}) {
    for (std::size_t s = 0; s < states_.sequences(); ++s) {
      MatrixF x = states_.read(s);
      run_layer_on_sequence(config_, rope_, layer, l, x, observe);
      states_.write(s, x);
    }
  }

  // What each group of linear_groups() reads in `layer`, the float layer l:
  // the states run through it one sequence at a time, so only one
  // sequence's copy and each group's statistics (in x in) are alive, not
  // every linear's inputs. Under float propagation the states advance in
  // place (the next layer's inputs). Errors name the layer and the group.
  std::vector<GroupActivations> calibrate(const Layer& layer, int l) {
    const ActivationUse use = activation_use(spec_.method);
    const Index tokens = states_.tokens();
    std::vector<GroupActivations> groups;
    std::array<int, kLinearsPerLayer> group_of;
    group_of.fill(-1);
    for (const LinearGroup& group : linear_groups()) {
      group_of[index(group.kinds[0])] = static_cast<int>(groups.size());
      groups.emplace_back(float_weight(layer, group.kinds[0]).cols(), use, tokens);
    }
    const LinearObserver observe = [&](int, LinearKind kind, const MatrixF& x) {
      const int g = group_of[index(kind)];
      if (g < 0) return;  // the group's first linear reported it
      try {
        groups[std::size_t(g)].add(x);
      } catch (const Error& e) {
        throw Error("layer " + std::to_string(l) + " (" +
                    group_names(linear_groups()[std::size_t(g)]) + "): " + e.what());
      }
    };
    if (propagation_ == Propagation::float_model) {
      advance(layer, l, observe);
    } else if (use != ActivationUse::nothing) {
      for (std::size_t s = 0; s < states_.sequences(); ++s) {
        MatrixF probe = states_.read(s);
        run_layer_on_sequence(config_, rope_, layer, l, probe, observe);
      }
    }
    return groups;
  }

  Config config_;
  RopeTables rope_;
  ResidualStream states_;
  QuantSpec spec_;
  Propagation propagation_;
  int layer_ = 0;
  double bits_ = 0, weights_ = 0;
  const TaskGradients* gradients_ = nullptr;
};

struct QuantizedModel {
  Model model;
  double bits_per_weight = 0;  // storage per weight over all linears, metadata included
};

// Every linear of the float model `m`, quantized sequentially on the
// calibration sequences; TACQ's task gradients from `task` (all of the float
// model's linears' G are held while the layers are quantized).
inline QuantizedModel quantize_model_for_task(const Model& m,
                                              const std::vector<Sequence>& calibration,
                                              const QuantSpec& spec,
                                              const std::vector<TaskSample>& task,
                                              const QuantProgress& progress = {},
                                              const QuantDone& done = {}) {
  SequentialQuantizer quantizer(m.config, embed_stream(m, calibration), spec);
  std::optional<TaskGradients> gradients;
  if (spec.method == "tacq") gradients = task_gradients(m, task);
  if (gradients) quantizer.use_task_gradients(&*gradients);
  QuantizedModel q{m, 0.0};
  for (Layer& layer : q.model.layers) layer = quantizer.quantize_next(layer, progress, done);
  q.bits_per_weight = quantizer.bits_per_weight();
  return q;
}

// The same with the calibration sequences as TACQ's task (next-token loss on
// every position).
inline QuantizedModel quantize_model(const Model& m, const std::vector<Sequence>& calibration,
                                     const QuantSpec& spec, const QuantProgress& progress = {},
                                     const QuantDone& done = {}) {
  return quantize_model_for_task(m, calibration, spec, next_token_task(calibration), progress,
                                 done);
}

}  // namespace lowbit::model
