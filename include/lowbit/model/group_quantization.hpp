// The methods as a whole-model quantizer applies them: one group of linears
// that read the same input (linear_groups()), quantized by a method named in
// a QuantSpec on the group's calibration activations, becomes Linears the
// forward pass runs on the kernels (quantized_linear.hpp), with their storage
// cost and the representation a checkpoint stores.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/calibration.hpp"
#include "lowbit/core/channel_scaling.hpp"
#include "lowbit/core/ggml_grid.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/model/linear.hpp"
#include "lowbit/model/quantized_linear.hpp"
#include "lowbit/quant/absmax.hpp"
#include "lowbit/quant/awq.hpp"
#include "lowbit/quant/awq_ggml.hpp"
#include "lowbit/quant/bpdq.hpp"
#include "lowbit/quant/gptq.hpp"
#include "lowbit/quant/gptq_ggml.hpp"
#include "lowbit/quant/rtn.hpp"
#include "lowbit/quant/smoothquant.hpp"
#include "lowbit/quant/tacq.hpp"

namespace lowbit::model {

// What to quantize with: a method of method_names(), its bits (planes for
// BPDQ; ignored by the W8A8 methods, always 8) and group size (not used by
// the ggml methods, whose type is ggml_type, else the K-quant of `bits`).
struct QuantSpec {
  std::string method;
  int bits = 4;
  int group_size = 32;
  bool act_order = false;  // GPTQ: desc_act (groups then need a g_idx)
  std::optional<GgmlType> ggml_type = std::nullopt;
  GridConfig grid = {};  // RTN, GPTQ, TACQ: the uniform grid's options (sym, positive_zero...)
  // TACQ (its GPTQ part from the fields above): the fraction kept in 16 bits,
  // their storage, and Q(W) in the saliency.
  double tacq_fraction = TacqConfig{}.fraction;
  OutlierPrecision outlier_precision = OutlierPrecision::f16;
  SaliencyReference saliency_reference = SaliencyReference::gptq;
};

// A quantized linear: the layer the forward pass runs, its storage cost, and
// the representation a checkpoint stores (uniform codes for the GPTQ format,
// bit planes for the BPDQ format, ggml blocks for GGUF; all absent for W8A8,
// and for llama.cpp's F16 fallback, whose linear is a FloatLinear of fp16
// values). TACQ: uniform codes plus the kept weights in `outliers`, which no
// engine's format holds (only the dequantized one, effective_weight).
struct QuantizedLinear {
  std::shared_ptr<const Linear> linear;
  double bits_per_weight = 0;
  std::optional<UniformWeights> uniform;
  std::optional<BitPlaneWeights> planes;
  std::optional<GgmlWeights> ggml;
  std::optional<SparseOutliers> outliers = std::nullopt;
};

// The dense weights (out x in) the linear multiplies by: scale x (q - zero)
// of the uniform grid with TACQ's kept weights written in, else the bit
// planes', else the ggml blocks' dequantization. W8A8 has none that stand
// alone (its activations are quantized too).
inline MatrixF effective_weight(const QuantizedLinear& q) {
  if (q.uniform) {
    MatrixF w = q.uniform->dequantize();
    if (q.outliers) q.outliers->overwrite(w);
    return w;
  }
  if (q.planes) return q.planes->dequantize();
  if (q.ggml) return q.ggml->dequantize();
  lowbit::detail::fail("effective_weight: the linear holds no uniform, bit-plane or ggml weights");
}

// Per-channel input scales s folded upstream, so that the group reads x / s.
using InputScaleFold = std::function<void(const VectorF& s)>;

// What a method reads of a group's calibration activations: nothing (RTN,
// absmax), their statistics (H, max|x|: GPTQ and the others), or the tokens
// themselves as well (AWQ searches on them).
enum class ActivationUse { nothing, statistics, tokens };

// The calibration activations a group of linears reads, accumulated as the
// tokens stream by. Statistics take in x in memory whatever the number of
// tokens; the tokens are kept only for ActivationUse::tokens.
class GroupActivations {
 public:
  // `tokens`: how many will be added (the room kept for them).
  GroupActivations(Index in_features, ActivationUse use, Index tokens)
      : in_features_(in_features), tokens_(use == ActivationUse::tokens ? tokens : 0, in_features) {
    if (use != ActivationUse::nothing) statistics_.emplace(in_features);
  }
  // All of x, statistics and tokens.
  explicit GroupActivations(const MatrixF& x)
      : GroupActivations(x.cols(), ActivationUse::tokens, x.rows()) {
    add(x);
  }

  // Adds a batch of tokens (tokens x in).
  void add(const MatrixF& x) {
    if (statistics_) statistics_->add(x);
    if (tokens_.rows() == 0) return;
    lowbit::detail::require(kept_ + x.rows() <= tokens_.rows(), "GroupActivations: room for ",
                            tokens_.rows(), " tokens, got more");
    tokens_.middleRows(kept_, x.rows()) = x;
    kept_ += x.rows();
  }

  // Frees what was accumulated (the group is quantized).
  void clear() {
    statistics_.reset();
    tokens_ = MatrixF();
    kept_ = 0;
  }

  Index in_features() const { return in_features_; }
  const Calibration& statistics() const {
    lowbit::detail::require(statistics_.has_value(), "GroupActivations: no statistics were kept");
    return *statistics_;
  }
  // H made in the statistics' own storage and moved out (Calibration::
  // take_hessian): the method quantizing the group is its last reader, and a
  // copy of a wide layer's H is what peak memory would be made of.
  MatrixD take_hessian() {
    lowbit::detail::require(statistics_.has_value(), "GroupActivations: no statistics were kept");
    return statistics_->take_hessian();
  }
  // Every token added (tokens x in).
  const MatrixF& tokens() const {
    lowbit::detail::require(tokens_.rows() > 0 && kept_ == tokens_.rows(),
                            "GroupActivations: the tokens were not kept");
    return tokens_;
  }

 private:
  Index in_features_;
  std::optional<Calibration> statistics_;
  MatrixF tokens_;
  Index kept_ = 0;
};

// The inputs of one group of linears during calibration.
struct GroupInputs {
  std::vector<const MatrixF*> weights;  // float, out x in
  GroupActivations& activations;        // what the linears read; the method may take H
  VectorF* norm;                        // the preceding RMSNorm weight, or nullptr
  const QuantSpec& spec;
  // Without a norm: divides the output rows of the already quantized linear
  // that produces x (wv for wo when every head has its own values, w3 for w2),
  // as AutoAWQ's scale_fc_fc; empty when no such linear can take it.
  InputScaleFold fold_into_producer = {};
  // TACQ: the task gradients' magnitudes G of each linear (out x in), in the
  // order of `weights`; empty when none were computed.
  std::vector<const MatrixF*> gradients = {};
};

// The K-quant of `bits` (8: Q8_0).
inline GgmlType ggml_k_quant(int bits) {
  static const GgmlType k_quants[] = {GgmlType::q2_k, GgmlType::q3_k, GgmlType::q4_k,
                                      GgmlType::q5_k, GgmlType::q6_k};
  if (bits == 8) return GgmlType::q8_0;
  lowbit::detail::require(bits >= 2 && bits <= 6, "ggml methods: bits must be 2..6 or 8, got ",
                          bits);
  return k_quants[bits - 2];
}

// The type llama.cpp stores a `wanted` tensor in when its rows hold
// `in_features` weights: `wanted` when whole blocks fit, else llama.cpp's
// fallback (llama-quant.cpp tensor_type_fallback, 2026-08: Q2_K, Q3_K, TQ2_0
// -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0), and F16 when that does
// not fit either (llama.cpp refuses a block-32 type there; F16 is its own
// last resort).
inline GgmlType ggml_type_for(GgmlType wanted, Index in_features) {
  const Index block = ggml_type_traits(wanted).block_size;
  if (in_features % block == 0) return wanted;
  GgmlType fallback = GgmlType::f16;
  if (wanted == GgmlType::q2_k || wanted == GgmlType::q3_k || wanted == GgmlType::tq2_0)
    fallback = GgmlType::q4_0;
  if (wanted == GgmlType::q4_k) fallback = GgmlType::q5_0;
  if (wanted == GgmlType::q5_k) fallback = GgmlType::q5_1;
  if (wanted == GgmlType::q6_k) fallback = GgmlType::q8_0;
  return in_features % ggml_type_traits(fallback).block_size == 0 ? fallback : GgmlType::f16;
}

// The ggml methods' type for a spec on rows of `in_features`.
inline GgmlType ggml_type_for(const QuantSpec& spec, Index in_features) {
  return ggml_type_for(spec.ggml_type ? *spec.ggml_type : ggml_k_quant(spec.bits), in_features);
}

namespace detail {

inline QuantizedLinear bitplane_linear(const UniformWeights& w) {
  return {std::make_shared<BitPlaneLinear>(pack_bitplanes(w)),
          bits_per_weight(w),
          w,
          to_bitplanes(w),
          {}};
}

// A ggml block type on the kernels; IQ4_NL (a 16-level table, no bit-plane
// form) as a float linear of its exact dequantization.
inline QuantizedLinear ggml_linear(GgmlWeights w) {
  std::shared_ptr<const Linear> linear;
  if (w.format().table())
    linear = std::make_shared<FloatLinear>(w.dequantize());
  else
    linear = std::make_shared<BitPlaneLinear>(pack_bitplanes(to_bitplanes(w)));
  const double bits = bits_per_weight(w);
  return {std::move(linear), bits, {}, {}, std::move(w)};
}

// F16, llama.cpp's last fallback: the weights rounded to half precision.
inline QuantizedLinear f16_linear(const MatrixF& w) {
  const MatrixF rounded = w.unaryExpr([](float v) { return half_to_float(float_to_half(v)); });
  return {std::make_shared<FloatLinear>(rounded), 16.0, {}, {}, {}};
}

// W8A8 storage: int8 codes and a float scale per row.
inline QuantizedLinear int8_linear(Int8Weights w) {
  const double bits = 8.0 + 32.0 / static_cast<double>(w.cols());
  return {std::make_shared<Int8Linear>(std::move(w)), bits, {}, {}, {}};
}

inline std::vector<QuantizedLinear> rtn(const GroupInputs& in) {
  std::vector<QuantizedLinear> out;
  RtnConfig config;
  config.bits = in.spec.bits;
  config.group_size = in.spec.group_size;
  config.grid = in.spec.grid;
  for (const MatrixF* w : in.weights)
    out.push_back(bitplane_linear(quantize_rtn(*w, config).weights));
  return out;
}

inline GptqConfig gptq_config(const QuantSpec& spec) {
  GptqConfig config;
  config.bits = spec.bits;
  config.group_size = spec.group_size;
  config.act_order = spec.act_order;
  config.grid = spec.grid;
  return config;
}

// One Hessian for the linears sharing an input, each quantized on it; the
// last one takes H itself (down_proj's, the widest, is never copied).
inline std::vector<QuantizedLinear> gptq(const GroupInputs& in) {
  MatrixD h = in.activations.take_hessian();
  std::vector<QuantizedLinear> out;
  for (std::size_t i = 0; i < in.weights.size(); ++i) {
    const MatrixF& w = *in.weights[i];
    out.push_back(bitplane_linear(
        (i + 1 < in.weights.size()
             ? quantize_gptq(w, h, gptq_config(in.spec))
             : quantize_gptq_consuming_hessian(w, std::move(h), gptq_config(in.spec)))
            .weights));
  }
  return out;
}

// llama.cpp's quantizer with diag(H) as its importance matrix (llama-imatrix's
// statistic up to scale), into the spec's type (ggml_type_for).
inline std::vector<QuantizedLinear> llama_cpp(const GroupInputs& in) {
  const VectorF importance = in.activations.statistics().hessian_diagonal().cast<float>();
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) {
    const GgmlType type = ggml_type_for(in.spec, w->cols());
    out.push_back(type == GgmlType::f16
                      ? f16_linear(*w)
                      : ggml_linear(quantize_ggml(*w, {type, importance}).weights));
  }
  return out;
}

// GPTQ into the same type (quant/gptq_ggml.hpp).
inline std::vector<QuantizedLinear> gptq_ggml(const GroupInputs& in) {
  const MatrixD h = in.activations.take_hessian();
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) {
    GptqGgmlConfig config;
    config.type = ggml_type_for(in.spec, w->cols());
    config.act_order = in.spec.act_order;
    out.push_back(config.type == GgmlType::f16
                      ? f16_linear(*w)
                      : ggml_linear(quantize_gptq_ggml(*w, h, config).weights));
  }
  return out;
}

// BPDQ with `bits` planes (the reference's defaults otherwise: GAR, 10
// refinement rounds, damping 0.05).
inline std::vector<QuantizedLinear> bpdq(const GroupInputs& in) {
  const MatrixD h = in.activations.take_hessian();
  BpdqConfig config;
  config.planes = in.spec.bits;
  config.group_size = in.spec.group_size;
  std::vector<QuantizedLinear> out;
  for (const MatrixF* w : in.weights) {
    BitPlaneWeights planes = quantize_bpdq(*w, h, config).weights;
    const double bits = bits_per_weight(planes);
    auto linear = std::make_shared<BitPlaneLinear>(pack_bitplanes(planes));
    out.push_back({std::move(linear), bits, {}, std::move(planes), {}});
  }
  return out;
}

// TACQ as published: G from the task gradients (task_gradients.hpp).
// 0.35% of each matrix stays in fp16 by default (QuantSpec).
inline std::vector<QuantizedLinear> tacq(const GroupInputs& in) {
  lowbit::detail::require(in.gradients.size() == in.weights.size(),
                          "tacq: needs the task gradients of every linear (task_gradients.hpp); "
                          "tacq-gradient-free runs on an activation-energy proxy instead");
  const MatrixD h = in.activations.take_hessian();
  TacqConfig config;
  config.gptq = gptq_config(in.spec);
  config.fraction = in.spec.tacq_fraction;
  config.precision = in.spec.outlier_precision;
  config.reference = in.spec.saliency_reference;
  std::vector<QuantizedLinear> out;
  for (std::size_t i = 0; i < in.weights.size(); ++i) {
    const TacqResult r = in.gradients[i] != nullptr
                             ? quantize_tacq(*in.weights[i], h, *in.gradients[i], config)
                             : quantize_tacq_without_gradients(*in.weights[i], h, config);
    out.push_back({std::make_shared<BitPlaneLinear>(pack_bitplanes(r.weights, r.outliers)),
                   r.report.bits_per_weight,
                   r.weights,
                   {},
                   {},
                   r.outliers});
  }
  return out;
}

// TACQ without gradients: the activation-energy proxy G = diag(H) stands in
// for |gradient|, so this is not the paper's method.
inline std::vector<QuantizedLinear> tacq_gradient_free(const GroupInputs& in) {
  GroupInputs proxy = in;
  proxy.gradients.assign(in.weights.size(), nullptr);
  return tacq(proxy);
}

// AutoAWQ's recipe for LLaMA-family layers: one scale search per group, 1/s
// folded into the norm or the producing linear before it (plain linears
// result, as AutoAWQ's checkpoints hold them); wo under grouped-query
// attention gets no scales (its input channels are not v's rows one to one),
// only the clipping search; q and k are not clipped (their product inside
// attention makes either's output error misleading).
inline std::vector<QuantizedLinear> awq(const GroupInputs& in) {
  AwqConfig config;
  config.bits = in.spec.bits;
  config.group_size = in.spec.group_size;
  config.sym = in.spec.grid.sym;
  if (in.weights.size() == 3) config.skip_clip = {0, 1};
  const bool scaled = in.norm != nullptr || in.fold_into_producer;
  if (!scaled) config.scale_grid = 1;  // the one ratio 0: s = 1
  std::vector<MatrixFRef> linears;
  for (const MatrixF* w : in.weights) linears.emplace_back(*w);
  const AwqResult<float> r = quantize_awq(linears, in.activations.tokens(), config);
  if (in.norm != nullptr)
    *in.norm = in.norm->cwiseQuotient(r.scales);
  else if (scaled)
    in.fold_into_producer(r.scales);
  std::vector<QuantizedLinear> out;
  for (const UniformWeights& w : r.weights) out.push_back(bitplane_linear(w));
  return out;
}

// AWQ into the spec's type (quant/awq_ggml.hpp) for a group behind a norm,
// the norm absorbing 1/s as a GGUF file stores it; wo and w2 take llama.cpp's
// quantizer (their scales would fold into v and up, quantized before them).
inline std::vector<QuantizedLinear> awq_ggml(const GroupInputs& in) {
  const GgmlType type = ggml_type_for(in.spec, in.activations.in_features());
  if (in.norm == nullptr || type == GgmlType::f16) return llama_cpp(in);
  AwqGgmlConfig config;
  config.type = type;
  std::vector<MatrixFRef> linears;
  for (const MatrixF* w : in.weights) linears.emplace_back(*w);
  AwqGgmlResult r = quantize_awq_ggml(linears, in.activations.tokens(), config);
  *in.norm = in.norm->cwiseQuotient(r.scales);
  std::vector<QuantizedLinear> out;
  for (GgmlWeights& w : r.weights) out.push_back(ggml_linear(std::move(w)));
  return out;
}

inline Int8Weights absmax_int8(const MatrixF& w) {
  AbsmaxConfig config;
  config.bits = 8;
  config.granularity = AbsmaxGranularity::per_row;
  return to_int8_weights(quantize_absmax(w, config).weights);
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
  std::vector<MatrixFRef> linears;
  for (const MatrixF* w : in.weights) linears.emplace_back(*w);
  const SmoothQuantResult<float> r =
      quantize_smoothquant(linears, in.activations.statistics().max_abs());
  *in.norm = in.norm->cwiseQuotient(r.scales);
  std::vector<QuantizedLinear> out;
  for (const Int8Weights& w : r.weights) out.push_back(int8_linear(w));
  return out;
}

struct MethodEntry {
  const char* name;
  std::vector<QuantizedLinear> (*quantize)(const GroupInputs&);
  bool w8a8;  // bits fixed at 8
  bool ggml;  // into a ggml type (QuantSpec::ggml_type, else the K-quant of bits)
  ActivationUse reads;
};
inline const std::vector<MethodEntry>& methods() {
  static const std::vector<MethodEntry> table{
      {"rtn", rtn, false, false, ActivationUse::nothing},
      {"gptq", gptq, false, false, ActivationUse::statistics},
      {"bpdq", bpdq, false, false, ActivationUse::statistics},
      {"tacq", tacq, false, false, ActivationUse::statistics},
      {"tacq-gradient-free", tacq_gradient_free, false, false, ActivationUse::statistics},
      {"awq", awq, false, false, ActivationUse::tokens},
      {"absmax-w8a8", absmax_w8a8, true, false, ActivationUse::nothing},
      {"smoothquant-w8a8", smoothquant_w8a8, true, false, ActivationUse::statistics},
      {"llama.cpp", llama_cpp, false, true, ActivationUse::statistics},
      {"gptq-gguf", gptq_ggml, false, true, ActivationUse::statistics},
      {"awq-gguf", awq_ggml, false, true, ActivationUse::tokens},
  };
  return table;
}

inline const MethodEntry& method(const std::string& name) {
  for (const MethodEntry& m : methods())
    if (name == m.name) return m;
  std::string known;
  for (const MethodEntry& m : methods()) known += std::string(known.empty() ? "" : ", ") + m.name;
  lowbit::detail::fail("unknown quantization method '", name, "' (known: ", known, ")");
}

}  // namespace detail

inline std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const detail::MethodEntry& m : detail::methods()) names.emplace_back(m.name);
  return names;
}

// True for the W8A8 methods (bits fixed at 8); throws for an unknown method.
inline bool is_w8a8(const std::string& method) { return detail::method(method).w8a8; }

// True for the methods into ggml's types; throws for an unknown method.
inline bool is_ggml(const std::string& method) { return detail::method(method).ggml; }

// What the method reads of the calibration activations; throws for an unknown method.
inline ActivationUse activation_use(const std::string& method) {
  return detail::method(method).reads;
}

// The methods whose results are plain uniform / bit-plane linears (no input
// scales, no sparse part): the ones a GPTQ, AWQ or BPDQ checkpoint can hold.
inline const std::vector<std::string>& checkpoint_methods() {
  static const std::vector<std::string> names{"rtn", "gptq", "awq", "bpdq"};
  return names;
}

// Divides output row r of a uniform linear by s(r) through its scales (the
// codes and zero points stay), as folding a consumer's input scales needs.
inline void divide_output_rows(QuantizedLinear& q, const VectorF& s) {
  lowbit::detail::require(q.uniform.has_value() && s.size() == q.uniform->rows(),
                          "divide_output_rows: needs a uniform linear of ", s.size(), " rows");
  UniformWeights w = *q.uniform;
  w.scale.array().rowwise() /= s.transpose().array();
  q = detail::bitplane_linear(w);
}

// Quantizes the group's linears with spec.method, in the order of
// in.weights; may update *in.norm (SmoothQuant folds its scales into it).
// Methods that factorize H take it out of in.activations (take_hessian), so
// one GroupActivations feeds one call.
inline std::vector<QuantizedLinear> quantize_group(const GroupInputs& in) {
  return detail::method(in.spec.method).quantize(in);
}

}  // namespace lowbit::model
