// lowbit/model/sequential_quantization.hpp: every linear of a model replaced in
// order, each layer calibrated on the outputs of the quantized layers before
// it (checked against GPTQ run by hand on those outputs), one layer at a time
// as a loader would supply them, and more bits bringing the model closer to
// the float one.
#include <lowbit/model/sequential_quantization.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class SequentialQuantization : public test::SingleThreaded {};

// ||candidate - reference|| / ||reference|| over the logits of all sequences.
double quantized_logits_error(const Model& reference, const Model& candidate,
                              const std::vector<Sequence>& sequences) {
  const std::vector<MatrixF> a = sequence_logits(reference, sequences);
  const std::vector<MatrixF> b = sequence_logits(candidate, sequences);
  double diff = 0, norm = 0;
  for (std::size_t s = 0; s < a.size(); ++s) {
    diff += (b[s] - a[s]).squaredNorm();
    norm += a[s].squaredNorm();
  }
  return std::sqrt(diff / norm);
}

TEST_F(SequentialQuantization, ReplacesEveryLinearInOrder) {
  const Model m = pad_hidden(test::tiny_model(5), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 4, 12, 1.0f, 1);
  const std::vector<Sequence> heldout = sample_sequences(m, 4, 12, 1.0f, 2);
  auto error = [&](const std::string& method, int bits) {
    std::vector<std::pair<int, LinearKind>> order;
    std::vector<std::string> groups;
    const QuantizedModel q = quantize_model(
        m, calibration, {method, bits, 8},
        [&](int l, const std::string& names) { groups.push_back(std::to_string(l) + names); },
        [&](int l, LinearKind k, const QuantizedLinear&) { order.emplace_back(l, k); });
    const bool ggml = is_ggml(method);
    for (std::size_t l = 0; l < q.model.layers.size(); ++l)
      for (int k = 0; k < kLinearsPerLayer; ++k) {
        const auto& linear = q.model.layers[l].linears[static_cast<std::size_t>(k)];
        EXPECT_NE(linear, m.layers[l].linears[static_cast<std::size_t>(k)]) << method;
        // The ggml methods' 16-wide rows take llama.cpp's last fallback, F16 (a float linear).
        if (!ggml) {
          EXPECT_EQ(dynamic_cast<const FloatLinear*>(linear.get()), nullptr) << method;
        }
      }
    EXPECT_EQ(order.size(), 14u);
    EXPECT_EQ(order[3], std::make_pair(0, LinearKind::wo));
    EXPECT_EQ(order[13], std::make_pair(1, LinearKind::w2));
    EXPECT_EQ(groups, (std::vector<std::string>{"0wq/wk/wv", "0wo", "0w1/w3", "0w2", "1wq/wk/wv",
                                                "1wo", "1w1/w3", "1w2"}));
    if (method == "rtn" || method == "gptq" || method == "awq") {
      EXPECT_NEAR(q.bits_per_weight, bits + (16.0 + bits) / 8, 1e-12) << method;
    }
    if (ggml) {  // Q5_0 / Q8_0 (32-wide rows) and F16 (16-wide) mixed
      EXPECT_GT(q.bits_per_weight, 5.5) << method;
      EXPECT_LT(q.bits_per_weight, 16.0) << method;
    }
    const double e = quantized_logits_error(m, q.model, heldout);
    std::cout << method << " " << bits << " bits: logits error " << e << "\n";
    return e;
  };
  for (const std::string& method : method_names()) {
    if (is_w8a8(method)) {
      EXPECT_LT(error(method, 8), 0.05) << method;
      continue;
    }
    if (is_ggml(method)) {  // 2 and 3 bits: no block-32 type
      const double e4 = error(method, 4), e8 = error(method, 8);
      EXPECT_LT(e8, e4) << method;
      EXPECT_LT(e8, 0.05) << method;
      continue;
    }
    const double e2 = error(method, 2), e4 = error(method, 4);
    EXPECT_LT(e4, e2) << method;
    if (method == "bpdq") continue;  // at most 4 planes
    const double e8 = error(method, 8);
    EXPECT_LT(e8, e4) << method;
    // The kernels' int8 lookup tables set a floor near 2% (W8A8 lands there too).
    EXPECT_LT(e8, 0.05) << method;
  }
}

// Layer 1 is calibrated on what quantized layer 0 outputs: GPTQ run here by
// hand on those activations gives layer 1's codes.
TEST_F(SequentialQuantization, CalibratesEachLayerOnTheQuantizedLayersBefore) {
  const Model m = pad_hidden(test::tiny_model(6), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 3, 12, 1.0f, 3);
  const QuantSpec spec{"gptq", 3, 8};
  SequentialQuantizer quantizer(m.config, embed_sequences(m, calibration), spec);
  const Layer layer0 = quantizer.quantize_next(m.layers[0]);
  EXPECT_EQ(quantizer.next_layer(), 1);
  std::vector<UniformWeights> layer1(kLinearsPerLayer);
  const Layer standalone = m.layers[1];  // a layer outside any model, as a loader supplies it
  quantizer.quantize_next(standalone, {}, [&](int l, LinearKind kind, const QuantizedLinear& q) {
    EXPECT_EQ(l, 1);
    layer1[std::size_t(index(kind))] = *q.uniform;
  });

  std::vector<MatrixF> states = embed_sequences(m, calibration);
  run_layer_on_sequences(m.config, m.rope, layer0, 0, states);
  MatrixF x(0, m.config.dim);  // every token of every sequence, as one batch
  for (const MatrixF& s : states) {
    x.conservativeResize(x.rows() + s.rows(), Eigen::NoChange);
    x.bottomRows(s.rows()) = rms_norm(s, m.layers[1].attention_norm, m.config.norm_eps);
  }
  Calibration attention_input(m.config.dim);
  attention_input.add(x);
  GptqConfig config;
  config.bits = 3;
  config.group_size = 8;
  for (LinearKind kind : {LinearKind::wq, LinearKind::wk, LinearKind::wv}) {
    const GptqResult expected =
        quantize_gptq(test::weight(m, 1, kind), attention_input.hessian(), config);
    EXPECT_EQ(layer1[std::size_t(index(kind))].codes, expected.weights.codes) << name(kind);
  }

  // One layer at a time gives the model quantize_model gives.
  const QuantizedModel whole = quantize_model(m, calibration, spec);
  Model stepwise = m;
  stepwise.layers = {layer0, whole.model.layers[1]};
  EXPECT_EQ(sequence_logits(stepwise, calibration), sequence_logits(whole.model, calibration));
  EXPECT_NEAR(quantizer.bits_per_weight(), whole.bits_per_weight, 1e-12);
}

// Propagation::float_model: every layer is calibrated on the float model's
// activations, which the forward pass's observer sees: GPTQ on those gives
// each layer's codes, whatever the layers before became.
TEST_F(SequentialQuantization, FloatPropagationCalibratesOnTheFloatModel) {
  const Model m = pad_hidden(test::tiny_model(7), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 3, 12, 1.0f, 4);
  std::vector<Calibration> inputs(std::size_t(m.config.n_layers), Calibration(m.config.dim));
  for (const Sequence& s : calibration) {
    KvCache cache(m.config);
    forward(m, cache, s, [&](int l, LinearKind kind, const MatrixF& x) {
      if (kind == LinearKind::w1) inputs[std::size_t(l)].add(x);
    });
  }
  const QuantSpec spec{"gptq", 3, 8};
  SequentialQuantizer quantizer(m.config, embed_sequences(m, calibration), spec,
                                Propagation::float_model);
  GptqConfig config;
  config.bits = 3;
  config.group_size = 8;
  for (int l = 0; l < m.config.n_layers; ++l)
    quantizer.quantize_next(
        m.layers[std::size_t(l)], {}, [&](int layer, LinearKind kind, const QuantizedLinear& q) {
          if (kind != LinearKind::w3) return;
          const GptqResult expected = quantize_gptq(test::weight(m, layer, kind),
                                                    inputs[std::size_t(layer)].hessian(), config);
          EXPECT_EQ(q.uniform->codes, expected.weights.codes) << layer;
        });
  // Sequential calibration gives layer 1 other codes (its inputs differ).
  SequentialQuantizer sequential(m.config, embed_sequences(m, calibration), spec);
  sequential.quantize_next(m.layers[0]);
  sequential.quantize_next(m.layers[1], {}, [&](int, LinearKind kind, const QuantizedLinear& q) {
    if (kind != LinearKind::w3) return;
    const GptqResult floated = quantize_gptq(test::weight(m, 1, kind), inputs[1].hessian(), config);
    EXPECT_NE(q.uniform->codes, floated.weights.codes);
  });
}

// skip_next runs a float layer without quantizing it: the layer after it is
// then quantized as a run through every layer quantizes it (a slice of the
// layers, quantize-model --layers). Sequential calibration cannot skip.
TEST_F(SequentialQuantization, SkippedLayersGiveTheNextLayerItsFloatInputs) {
  const Model m = pad_hidden(test::tiny_model(8), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 3, 12, 1.0f, 4);
  const QuantSpec spec{"gptq", 3, 8};
  std::vector<MatrixF> whole, sliced;
  const auto keep = [](std::vector<MatrixF>& codes) {
    return [&codes](int, LinearKind, const QuantizedLinear& q) {
      codes.push_back(q.uniform->codes.cast<float>());
    };
  };
  SequentialQuantizer all(m.config, embed_sequences(m, calibration), spec,
                          Propagation::float_model);
  all.quantize_next(m.layers[0]);
  all.quantize_next(m.layers[1], {}, keep(whole));
  SequentialQuantizer slice(m.config, embed_sequences(m, calibration), spec,
                            Propagation::float_model);
  slice.skip_next(m.layers[0]);
  EXPECT_EQ(slice.next_layer(), 1);
  slice.quantize_next(m.layers[1], {}, keep(sliced));
  ASSERT_EQ(sliced.size(), whole.size());
  for (std::size_t i = 0; i < whole.size(); ++i) EXPECT_EQ(sliced[i], whole[i]) << i;
  SequentialQuantizer sequential(m.config, embed_sequences(m, calibration), spec);
  test::expect_error_containing([&] { sequential.skip_next(m.layers[0]); },
                                "needs float propagation");
  EXPECT_THROW(slice.skip_next(m.layers[0]), Error);  // every layer is done
}

// The states kept in a scratch file (quantize-model's --scratch-dir) give
// every layer the bits they give in memory, under both propagations.
TEST_F(SequentialQuantization, AStreamInAScratchFileGivesTheSameResults) {
  const Model m = pad_hidden(test::tiny_model(8), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 3, 12, 1.0f, 4);
  const test::TempDir dir;
  for (const Propagation propagation : {Propagation::quantized, Propagation::float_model})
    for (const std::string method : {"gptq", "awq"}) {
      SCOPED_TRACE(method);
      const auto run = [&](const StreamStorage& storage) {
        SequentialQuantizer quantizer(m.config, embed_stream(m, calibration, storage),
                                      {method, 3, 8}, propagation);
        std::vector<MatrixF> weights;
        for (const Layer& layer : m.layers)
          quantizer.quantize_next(layer, {}, [&](int, LinearKind, const QuantizedLinear& q) {
            weights.push_back(q.uniform->dequantize());
          });
        return weights;
      };
      const std::vector<MatrixF> in_memory = run({}), in_file = run({dir.file("")});
      ASSERT_EQ(in_file.size(), in_memory.size());
      for (std::size_t i = 0; i < in_memory.size(); ++i) EXPECT_EQ(in_file[i], in_memory[i]) << i;
    }
}

TEST_F(SequentialQuantization, RejectsMisuse) {
  const Model m = pad_hidden(test::tiny_model(5), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 2, 8, 1.0f, 1);
  EXPECT_THROW(quantize_model(m, calibration, {"no-such-method", 4, 8}), Error);
  EXPECT_THROW(quantize_model(m, {}, {"gptq", 4, 8}), Error);
  SequentialQuantizer quantizer(m.config, embed_sequences(m, calibration), {"rtn", 4, 8});
  EXPECT_THROW(quantizer.quantize_next(test::tiny_model(5).layers[0]), Error);  // unpadded w1
  quantizer.quantize_next(m.layers[0]);
  const Layer quantized = quantizer.quantize_next(m.layers[1]);
  EXPECT_THROW(quantizer.quantize_next(m.layers[1]), Error);  // both layers done
  Layer twice = quantized;  // a quantized layer has no float weights to quantize
  SequentialQuantizer again(m.config, embed_sequences(m, calibration), {"rtn", 4, 8});
  EXPECT_THROW(again.quantize_next(twice), Error);
}

// RTN reads no activations, so it needs no calibration sequences and runs
// none through the layers: each linear is quantize_rtn of its float weights,
// with or without sequences.
TEST_F(SequentialQuantization, RtnNeedsNoCalibration) {
  const Model m = pad_hidden(test::tiny_model(5), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 2, 8, 1.0f, 1);
  RtnConfig config;
  config.bits = 3;
  config.group_size = 8;
  for (const std::vector<Sequence>& sequences : {calibration, std::vector<Sequence>{}}) {
    int linears = 0;
    quantize_model(m, sequences, {"rtn", 3, 8}, {},
                   [&](int l, LinearKind k, const QuantizedLinear& r) {
                     const MatrixF& w = float_weight(m.layers[std::size_t(l)], k);
                     EXPECT_EQ(effective_weight(r), quantize_rtn(w, config).weights.dequantize())
                         << l << " " << name(k);
                     ++linears;
                   });
    EXPECT_EQ(linears, 2 * kLinearsPerLayer);
  }
}

// A norm weight of 1e30 keeps w1/w3's inputs finite, but their products
// (1e60 in silu(w1 x) * w3 x) overflow float: the calibration of w2 refuses
// its non-finite inputs, and the message names the layer and the linear (the
// quantizers' own messages cannot).
TEST_F(SequentialQuantization, NonFiniteActivationsNameTheLayer) {
  Model m = pad_hidden(test::tiny_model(5), 16);
  const std::vector<Sequence> calibration = sample_sequences(m, 2, 8, 1.0f, 1);
  m.layers[0].ffn_norm.setConstant(1e30f);
  try {
    quantize_model(m, calibration, {"gptq", 4, 8});
    ADD_FAILURE() << "overflowing activations were accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("layer 0 (w2): Calibration::add: batch: expected finite values", 0), 0u)
        << message;
  }
}

}  // namespace
}  // namespace lowbit::model
