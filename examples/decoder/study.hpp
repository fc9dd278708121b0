// The end-to-end quantization study: every linear of a model quantized by one
// method, sequentially (GPTQ's llama.py: each layer is calibrated on the
// outputs of the already-quantized layers before it), then compared with the
// float model on held-out sequences.
//
//   Model padded = pad_hidden(load_llama2c(path), 64);
//   QuantizedModel q = quantize_model(padded, calibration, {"gptq", 4, 32});
//   Metrics m = compare(sequence_logits(padded, heldout),
//                       sequence_logits(q.model, heldout), heldout);
#pragma once

#include <chrono>
#include <optional>
#include <lowbit/core/calibration.hpp>
#include <lowbit/core/channel_scaling.hpp>
#include <lowbit/quant/absmax.hpp>
#include <lowbit/quant/awq.hpp>
#include <lowbit/quant/bpdq.hpp>
#include <lowbit/quant/gptq.hpp>
#include <lowbit/quant/rtn.hpp>
#include <lowbit/quant/smoothquant.hpp>
#include <lowbit/quant/tacq.hpp>
#include <string>
#include <vector>

#include "evaluation.hpp"
#include "quantized_linear.hpp"

namespace decoder {

// Groups of linears that read the same input, and the RMSNorm before them
// (AWQ and SmoothQuant search one channel scale per group; SmoothQuant folds
// it into that norm). wo and w2 have no norm of their own before them.
struct LinearGroup {
  std::vector<LinearKind> kinds;
  VectorF Layer::*norm;  // nullptr: none
};
inline const std::vector<LinearGroup>& linear_groups() {
  static const std::vector<LinearGroup> groups{
      {{LinearKind::wq, LinearKind::wk, LinearKind::wv}, &Layer::attention_norm},
      {{LinearKind::wo}, nullptr},
      {{LinearKind::w1, LinearKind::w3}, &Layer::ffn_norm},
      {{LinearKind::w2}, nullptr}};
  return groups;
}

// What to quantize with: a method of method_names(), its bits (planes for
// BPDQ; ignored by the W8A8 methods, always 8) and group size.
struct QuantSpec {
  std::string method;
  int bits = 4;
  int group_size = 32;
  bool act_order = false;  // GPTQ: desc_act (groups then need a g_idx)
};

struct QuantizedModel {
  Model model;
  double bits_per_weight = 0;  // storage per weight over all linears, metadata included
};

// A quantized linear: the layer the decoder runs, its storage cost, and the
// representation a checkpoint stores (uniform codes for the GPTQ format, bit
// planes for the BPDQ format; either may be absent, e.g. for W8A8).
struct QuantizedLinear {
  std::shared_ptr<const Linear> linear;
  double bits_per_weight = 0;
  std::optional<lowbit::UniformWeights> uniform;
  std::optional<lowbit::BitPlaneWeights> planes;
};

// The inputs of one group of linears during calibration.
struct GroupInputs {
  std::vector<const MatrixF*> weights;  // float, out x in
  const MatrixF& x;                     // calibration tokens x in
  VectorF* norm;                        // the preceding RMSNorm weight, or nullptr
  const QuantSpec& spec;
};

namespace study_detail {

// AWQ's results act on x / s: not a plain checkpoint linear (no representation).
inline QuantizedLinear bitplane_linear(const lowbit::UniformWeights& w, VectorF input_divisor = {}) {
  const bool plain = input_divisor.size() == 0;
  QuantizedLinear q{std::make_shared<BitPlaneLinear>(lowbit::pack_bitplanes(w), std::move(input_divisor)),
                    lowbit::bits_per_weight(w), {}, {}};
  if (plain) {
    q.uniform = w;
    q.planes = lowbit::to_bitplanes(w);
  }
  return q;
}

// W8A8 storage: int8 codes and a float scale per row.
inline QuantizedLinear int8_linear(lowbit::Int8Weights w) {
  const double bits = 8.0 + 32.0 / static_cast<double>(w.cols());
  return {std::make_shared<Int8Linear>(std::move(w)), bits, {}, {}};
}

inline std::vector<QuantizedLinear> rtn(const GroupInputs& in) {
  std::vector<QuantizedLinear> out;
  lowbit::RtnConfig config;
  config.bits = in.spec.bits;
  config.group_size = in.spec.group_size;
  for (const MatrixF* w : in.weights)
    out.push_back(bitplane_linear(lowbit::quantize_rtn(*w, config).weights));
  return out;
}

inline lowbit::MatrixD hessian(const MatrixF& x) {
  lowbit::Calibration calibration(x.cols());
  calibration.add(x);
  return calibration.hessian();
}

inline lowbit::GptqConfig gptq_config(const QuantSpec& spec) {
  lowbit::GptqConfig config;
  config.bits = spec.bits;
  config.group_size = spec.group_size;
  config.act_order = spec.act_order;
  return config;
}

// One Hessian for the linears sharing an input, each quantized on it.
inline std::vector<QuantizedLinear> gptq(const GroupInputs& in) {
  const lowbit::MatrixD h = hessian(in.x);
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights)
    out.push_back(bitplane_linear(lowbit::quantize_gptq(*w, h, gptq_config(in.spec)).weights));
  return out;
}

// BPDQ with `bits` planes (the reference's defaults otherwise: GAR, 10
// refinement rounds, damping 0.05).
inline std::vector<QuantizedLinear> bpdq(const GroupInputs& in) {
  const lowbit::MatrixD h = hessian(in.x);
  lowbit::BpdqConfig config;
  config.planes = in.spec.bits;
  config.group_size = in.spec.group_size;
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) {
    lowbit::BitPlaneWeights planes = lowbit::quantize_bpdq(*w, h, config).weights;
    const double bits = lowbit::bits_per_weight(planes);
    auto linear = std::make_shared<BitPlaneLinear>(lowbit::pack_bitplanes(planes));
    out.push_back({std::move(linear), bits, {}, std::move(planes)});
  }
  return out;
}

// TACQ without gradients (a decoder cannot backpropagate here): the
// activation-energy proxy G = diag(H) stands in for |gradient|, so this is
// not the paper's method. 0.35% of each matrix stays in fp16.
inline std::vector<QuantizedLinear> tacq_gradient_free(const GroupInputs& in) {
  const lowbit::MatrixD h = hessian(in.x);
  lowbit::TacqConfig config;
  config.gptq = gptq_config(in.spec);
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) {
    const lowbit::TacqResult r = lowbit::quantize_tacq_without_gradients(*w, h, config);
    out.push_back({std::make_shared<BitPlaneLinear>(lowbit::pack_bitplanes(r.weights, r.outliers)),
                   r.report.bits_per_weight, {}, {}});
  }
  return out;
}

// llm-awq's recipe: one scale search per group, no clipping search for q and
// k (their product inside attention makes either's output error misleading).
inline std::vector<QuantizedLinear> awq(const GroupInputs& in) {
  lowbit::AwqConfig config;
  config.bits = in.spec.bits;
  config.group_size = in.spec.group_size;
  if (in.weights.size() == 3) config.skip_clip = {0, 1};
  std::vector<lowbit::MatrixFRef> linears;
  for (const MatrixF* w : in.weights) linears.emplace_back(*w);
  const lowbit::AwqResult<float> r = lowbit::quantize_awq(linears, in.x, config);
  std::vector<QuantizedLinear> out;
  for (const lowbit::UniformWeights& w : r.weights) out.push_back(bitplane_linear(w, r.scales));
  return out;
}

inline lowbit::Int8Weights absmax_int8(const MatrixF& w) {
  lowbit::AbsmaxConfig config;
  config.bits = 8;
  config.granularity = lowbit::AbsmaxGranularity::per_row;
  return lowbit::to_int8_weights(lowbit::quantize_absmax(w, config).weights);
}

inline std::vector<QuantizedLinear> absmax_w8a8(const GroupInputs& in) {
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) out.push_back(int8_linear(absmax_int8(*w)));
  return out;
}

// smooth_ln_fcs on the groups behind a norm (alpha 0.5, the paper's default
// for LLaMA-like models), the norm absorbing 1/s; wo and w2 are plain W8A8.
inline std::vector<QuantizedLinear> smoothquant_w8a8(const GroupInputs& in) {
  if (in.norm == nullptr) return absmax_w8a8(in);
  std::vector<lowbit::MatrixFRef> linears;
  for (const MatrixF* w : in.weights) linears.emplace_back(*w);
  const lowbit::VectorD act_max =
      in.x.cwiseAbs().colwise().maxCoeff().transpose().cast<double>();
  const lowbit::SmoothQuantResult<float> r = lowbit::quantize_smoothquant(linears, act_max);
  *in.norm = in.norm->cwiseQuotient(r.scales);
  std::vector<QuantizedLinear> out;
  for (const lowbit::Int8Weights& w : r.weights) out.push_back(int8_linear(w));
  return out;
}

struct MethodEntry {
  const char* name;
  std::vector<QuantizedLinear> (*quantize)(const GroupInputs&);
  bool w8a8;  // bits fixed at 8
};
inline const std::vector<MethodEntry>& methods() {
  static const std::vector<MethodEntry> table{
      {"rtn", rtn, false},
      {"gptq", gptq, false},
      {"bpdq", bpdq, false},
      {"tacq-gradient-free", tacq_gradient_free, false},
      {"awq", awq, false},
      {"absmax-w8a8", absmax_w8a8, true},
      {"smoothquant-w8a8", smoothquant_w8a8, true},
  };
  return table;
}

inline const MethodEntry& method(const std::string& name) {
  for (const MethodEntry& m : methods())
    if (name == m.name) return m;
  std::string known;
  for (const MethodEntry& m : methods()) known += std::string(known.empty() ? "" : ", ") + m.name;
  lowbit::detail::fail("quantize_model: unknown method '", name, "' (known: ", known, ")");
}

inline const MatrixF& float_weight(const Layer& layer, LinearKind kind) {
  const auto* f = dynamic_cast<const FloatLinear*>(layer.linears[index(kind)].get());
  require(f != nullptr, "quantize_model: linear ", name(kind), " is not a float layer");
  return f->weight();
}

inline MatrixF stack_rows(const std::vector<MatrixF>& parts) {
  Index rows = 0;
  for (const MatrixF& p : parts) rows += p.rows();
  MatrixF out(rows, parts.empty() ? 0 : parts[0].cols());
  Index at = 0;
  for (const MatrixF& p : parts) {
    out.middleRows(at, p.rows()) = p;
    at += p.rows();
  }
  return out;
}

}  // namespace study_detail

inline std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : study_detail::methods()) names.emplace_back(m.name);
  return names;
}
inline bool is_w8a8(const std::string& method) { return study_detail::method(method).w8a8; }
// The methods whose results are plain uniform / bit-plane linears (no input
// scales, no sparse part): the ones a GPTQ or BPDQ checkpoint can hold.
inline const std::vector<std::string>& checkpoint_methods() {
  static const std::vector<std::string> names{"rtn", "gptq", "bpdq"};
  return names;
}

// Pads the MLP's hidden dimension with zero units up to a multiple of
// `multiple`, so that groups of 32 or 64 divide w2's input (stories260K's is
// 172). Exact: a zero row of w1 and w3 gives silu(0) * 0 = 0, which a zero
// column of w2 ignores.
inline Model pad_hidden(Model m, int multiple) {
  require(multiple >= 1, "pad_hidden: multiple must be >= 1, got ", multiple);
  const int hidden = m.config.hidden_dim;
  const int padded = (hidden + multiple - 1) / multiple * multiple;
  for (Layer& layer : m.layers) {
    for (LinearKind kind : {LinearKind::w1, LinearKind::w3}) {
      MatrixF w = MatrixF::Zero(padded, m.config.dim);
      w.topRows(hidden) = study_detail::float_weight(layer, kind);
      layer.linears[index(kind)] = std::make_shared<FloatLinear>(std::move(w));
    }
    MatrixF w2 = MatrixF::Zero(m.config.dim, padded);
    w2.leftCols(hidden) = study_detail::float_weight(layer, LinearKind::w2);
    layer.linears[index(LinearKind::w2)] = std::make_shared<FloatLinear>(std::move(w2));
  }
  m.config.hidden_dim = padded;
  return m;
}

// Quantizes every linear of the float model `m`, layer by layer, calibrating
// each layer on `calibration` as transformed by the quantized layers before
// it. `progress(layer, names)` is called before each group of linears (names
// like "wq/wk/wv"), `done(layer, kind, result)` after each linear.
using QuantProgress = std::function<void(int layer, const std::string& names)>;
using QuantDone = std::function<void(int layer, LinearKind kind, const QuantizedLinear& result)>;
inline QuantizedModel quantize_model(const Model& m, const std::vector<Sequence>& calibration,
                                     const QuantSpec& spec, const QuantProgress& progress = {},
                                     const QuantDone& done = {}) {
  using namespace study_detail;
  const MethodEntry& entry = method(spec.method);
  require(!calibration.empty(), "quantize_model: no calibration sequences");
  QuantizedModel q{m, 0.0};
  double bits = 0, weights = 0;
  std::vector<MatrixF> states = embed_sequences(q.model, calibration);
  for (int l = 0; l < m.config.n_layers; ++l) {
    Layer& layer = q.model.layers[static_cast<std::size_t>(l)];
    std::array<std::vector<MatrixF>, kLinearsPerLayer> inputs;
    std::vector<MatrixF> probe = states;
    run_layer_on_sequences(q.model, l, probe,
                           [&](int, LinearKind kind, const MatrixF& x) { inputs[index(kind)].push_back(x); });
    Layer quantized = layer;
    for (const LinearGroup& group : linear_groups()) {
      if (progress) {
        std::string names;
        for (LinearKind k : group.kinds) names += std::string(names.empty() ? "" : "/") + name(k);
        progress(l, names);
      }
      const MatrixF x = stack_rows(inputs[index(group.kinds[0])]);
      GroupInputs in{{}, x, group.norm ? &(quantized.*group.norm) : nullptr, spec};
      for (LinearKind k : group.kinds) in.weights.push_back(&float_weight(layer, k));
      const std::vector<QuantizedLinear> out = entry.quantize(in);
      for (std::size_t i = 0; i < out.size(); ++i) {
        quantized.linears[index(group.kinds[i])] = out[i].linear;
        if (done) done(l, group.kinds[i], out[i]);
        const double n = static_cast<double>(in.weights[i]->size());
        bits += out[i].bits_per_weight * n;
        weights += n;
      }
    }
    layer = quantized;
    run_layer_on_sequences(q.model, l, states);
  }
  q.bits_per_weight = bits / weights;
  return q;
}

// Greedy decoding speed of a model, one token per step through the KV cache.
inline double tokens_per_second(const Model& m, int tokens) {
  Rng rng(1);
  const auto start = std::chrono::steady_clock::now();
  const Sequence s = generate(m, tokens, 0.0f, rng);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(s.size() - 1) / seconds;
}

}  // namespace decoder
