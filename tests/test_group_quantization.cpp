// lowbit/model/group_quantization.hpp: every method, applied to a group of
// linears sharing an input, gives Linears that compute what the library's
// quantizer called directly gives, with its storage cost and (for the
// checkpoint methods) the representation; SmoothQuant moves its scales into
// the norm.
#include <lowbit/model/group_quantization.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

class GroupQuantization : public test::SingleThreaded {
 protected:
  const MatrixF w1 = test::random_weights(24, 64, 1), w2 = test::random_weights(40, 64, 2);
  const MatrixF x = test::random_activations(96, 64, 3);
  const MatrixD h = [this] {
    Calibration c(64);
    c.add(x);
    return c.hessian();
  }();

  // y = input Q^T through the quantized linear, against the float product
  // with `expected` (int8 tables: well inside 1e-2).
  static void expect_computes(const QuantizedLinear& q, const MatrixF& input,
                              const MatrixF& expected, const std::string& what) {
    MatrixF y(input.rows(), q.linear->out_features());
    q.linear->apply(input, y);
    const MatrixF reference = input * expected.transpose();
    EXPECT_LT((y - reference).norm() / reference.norm(), 1e-2) << what;
  }
};

TEST_F(GroupQuantization, UniformAndBitPlaneMethodsAreTheQuantizers) {
  for (const std::string method : {"rtn", "gptq", "bpdq", "tacq-gradient-free", "awq"}) {
    SCOPED_TRACE(method);
    const QuantSpec spec{method, 3, 32, method == "gptq"};
    VectorF norm = VectorF::Ones(64);
    const std::vector<QuantizedLinear> out = test::quantize_group_on({&w1, &w2}, x, &norm, spec);
    ASSERT_EQ(out.size(), 2u);
    GptqConfig gptq;
    gptq.bits = 3;
    gptq.group_size = 32;
    gptq.act_order = spec.act_order;
    AwqConfig awq;
    awq.bits = 3;
    awq.group_size = 32;
    const std::vector<MatrixFRef> linears{w1, w2};
    const AwqResult<float> awq_result = quantize_awq(linears, x, awq);
    // AWQ's linears read x / s, which the norm now produces.
    const VectorF s = method == "awq" ? awq_result.scales : VectorF::Ones(64);
    EXPECT_EQ(norm, s.cwiseInverse());
    for (std::size_t i = 0; i < 2; ++i) {
      const MatrixF& w = i == 0 ? w1 : w2;
      MatrixF expected;
      if (method == "rtn") {
        RtnConfig rtn;
        rtn.bits = 3;
        rtn.group_size = 32;
        expected = quantize_rtn(w, rtn).weights.dequantize();
      } else if (method == "gptq") {
        expected = quantize_gptq(w, h, gptq).dequantize();
      } else if (method == "bpdq") {
        BpdqConfig bpdq;
        bpdq.planes = 3;
        bpdq.group_size = 32;
        expected = quantize_bpdq(w, h, bpdq).weights.dequantize();
      } else if (method == "tacq-gradient-free") {
        TacqConfig tacq;
        tacq.gptq = gptq;
        const TacqResult r = quantize_tacq_without_gradients(w, h, tacq);
        expected = r.dequantize();
        EXPECT_EQ(out[i].bits_per_weight, r.report.bits_per_weight);
      } else {
        expected = awq_result.weights[i].dequantize();
      }
      expect_computes(out[i], x * s.cwiseInverse().asDiagonal(), expected,
                      "linear " + std::to_string(i));
      EXPECT_EQ(out[i].planes.has_value(), method != "tacq-gradient-free");
      EXPECT_EQ(out[i].uniform.has_value(), method != "bpdq");
      EXPECT_EQ(out[i].outliers.has_value(), method == "tacq-gradient-free");
      EXPECT_EQ(effective_weight(out[i]), expected);
      if (out[i].planes) {
        EXPECT_EQ(out[i].planes->dequantize(), expected);
      }
      if (out[i].outliers) {  // TACQ: the grid's codes under the kept weights
        EXPECT_EQ(out[i].outliers->nnz(), tacq_outlier_count(w.rows(), w.cols(), 0.0035));
      } else if (out[i].uniform) {
        EXPECT_EQ(out[i].uniform->dequantize(), expected);
        EXPECT_EQ(out[i].bits_per_weight, bits_per_weight(*out[i].uniform));
      } else if (out[i].planes) {
        EXPECT_EQ(out[i].bits_per_weight, bits_per_weight(*out[i].planes));
      }
    }
  }
}

// Without a norm AWQ hands its scales to the linear that produces the
// input (fold_into_producer), or, with neither, searches no scales: only the
// clipping, as AutoAWQ does for o_proj under grouped-query attention.
TEST_F(GroupQuantization, AwqFoldsIntoTheProducerOrKeepsNoScales) {
  const QuantSpec spec{"awq", 4, 32};
  AwqConfig config;
  config.group_size = 32;
  const AwqResult<float> searched = quantize_awq(w1, x, config);
  ASSERT_NE(searched.scales, VectorF::Ones(64));
  VectorF folded;
  GroupActivations activations(x);
  GroupInputs in{{&w1}, activations, nullptr, spec};
  in.fold_into_producer = [&](const VectorF& s) { folded = s; };
  const std::vector<QuantizedLinear> out = quantize_group(in);
  EXPECT_EQ(folded, searched.scales);
  EXPECT_EQ(out[0].uniform->dequantize(), searched.weights[0].dequantize());

  config.scale_grid = 1;
  const AwqResult<float> clip_only = quantize_awq(w1, x, config);
  EXPECT_EQ(clip_only.scales, VectorF::Ones(64));
  const std::vector<QuantizedLinear> plain = test::quantize_group_on({&w1}, x, nullptr, spec);
  EXPECT_EQ(plain[0].uniform->dequantize(), clip_only.weights[0].dequantize());
  expect_computes(plain[0], x, clip_only.weights[0].dequantize(), "no scales");

  // The producer takes 1/s on its output rows through its scales alone.
  QuantizedLinear producer = test::quantize_group_on({&w2}, x, nullptr, {"rtn", 4, 32})[0];
  const UniformWeights before = *producer.uniform;
  const VectorF s = VectorF::LinSpaced(40, 0.5f, 2.0f);
  divide_output_rows(producer, s);
  EXPECT_EQ(producer.uniform->codes, before.codes);
  EXPECT_EQ(producer.uniform->zero, before.zero);
  expect_computes(producer, x, s.cwiseInverse().asDiagonal() * before.dequantize(), "folded");
}

TEST_F(GroupQuantization, W8A8MethodsAndSmoothQuantsNorm) {
  for (const std::string method : {"absmax-w8a8", "smoothquant-w8a8"}) {
    SCOPED_TRACE(method);
    EXPECT_TRUE(is_w8a8(method));
    VectorF norm = VectorF::LinSpaced(64, 0.5f, 1.5f);
    const std::vector<QuantizedLinear> out =
        test::quantize_group_on({&w1, &w2}, x, &norm, {method, 8, 32});
    ASSERT_EQ(out.size(), 2u);
    // SmoothQuant's linears read x / s, which the norm now produces.
    VectorF s = VectorF::Ones(64);
    if (method == "smoothquant-w8a8") {
      const std::vector<MatrixFRef> linears{w1, w2};
      s = quantize_smoothquant(linears,
                               x.cwiseAbs().colwise().maxCoeff().transpose().cast<double>())
              .scales;
      EXPECT_LT((norm - VectorF::LinSpaced(64, 0.5f, 1.5f).cwiseQuotient(s)).norm(), 1e-6f);
    } else {
      EXPECT_EQ(norm, VectorF::LinSpaced(64, 0.5f, 1.5f));
    }
    const MatrixF input = x * s.cwiseInverse().asDiagonal();
    for (std::size_t i = 0; i < 2; ++i) {
      const MatrixF& w = i == 0 ? w1 : w2;
      MatrixF y(x.rows(), w.rows());
      out[i].linear->apply(input, y);
      const MatrixF reference = x * w.transpose();
      EXPECT_LT((y - reference).norm() / reference.norm(), 2e-2);
      EXPECT_EQ(out[i].bits_per_weight, 8.0 + 32.0 / 64);
      EXPECT_FALSE(out[i].planes || out[i].uniform);
    }
  }
  // Without a norm before the group SmoothQuant is plain W8A8.
  const std::vector<QuantizedLinear> plain =
      test::quantize_group_on({&w1}, x, nullptr, {"smoothquant-w8a8", 8, 32});
  MatrixF y(x.rows(), 24);
  plain[0].linear->apply(x, y);
  EXPECT_LT((y - x * w1.transpose()).norm() / (x * w1.transpose()).norm(), 2e-2);
}

// The ggml methods: llama.cpp's quantizer (diag(H) as its importance matrix)
// and GPTQ into the same type, which bits and the row width pick as llama.cpp
// does; 64-wide rows take its block-32 fallbacks.
TEST_F(GroupQuantization, GgmlMethodsAreLlamaCppsTypes) {
  auto type_for = [](int bits, Index in) { return ggml_type_for(ggml_k_quant(bits), in); };
  EXPECT_EQ(type_for(4, 4096), GgmlType::q4_k);
  EXPECT_EQ(type_for(2, 512), GgmlType::q2_k);
  EXPECT_EQ(type_for(8, 4096), GgmlType::q8_0);
  EXPECT_EQ(type_for(2, 64), GgmlType::q4_0);
  EXPECT_EQ(type_for(3, 64), GgmlType::q4_0);
  EXPECT_EQ(type_for(4, 64), GgmlType::q5_0);
  EXPECT_EQ(type_for(5, 64), GgmlType::q5_1);
  EXPECT_EQ(type_for(6, 64), GgmlType::q8_0);
  EXPECT_EQ(type_for(4, 48), GgmlType::f16);
  EXPECT_EQ(type_for(8, 16), GgmlType::f16);
  EXPECT_EQ(ggml_type_for(GgmlType::tq2_0, 96), GgmlType::q4_0);
  EXPECT_EQ(ggml_type_for(GgmlType::iq4_nl, 4096), GgmlType::iq4_nl);
  EXPECT_EQ(ggml_type_for(GgmlType::q4_0, 48), GgmlType::f16);
  QuantSpec spec{"gptq-gguf", 4, 32, false, GgmlType::q8_0};
  EXPECT_EQ(ggml_type_for(spec, 256), GgmlType::q8_0);
  test::expect_error_containing([] { ggml_k_quant(7); }, "bits must be 2..6 or 8, got 7");
  const VectorF importance = h.diagonal().cast<float>();
  for (int bits : {2, 4}) {
    SCOPED_TRACE(bits);
    const GgmlType type = type_for(bits, 64);
    const std::vector<QuantizedLinear> llama =
        test::quantize_group_on({&w1, &w2}, x, nullptr, {"llama.cpp", bits, 32});
    const std::vector<QuantizedLinear> ours =
        test::quantize_group_on({&w1, &w2}, x, nullptr, {"gptq-gguf", bits, 32});
    ASSERT_EQ(llama.size(), 2u);
    ASSERT_EQ(ours.size(), 2u);
    for (std::size_t i = 0; i < 2; ++i) {
      const MatrixF& w = i == 0 ? w1 : w2;
      const MatrixF expected_llama = quantize_ggml(w, {type, importance}).weights.dequantize();
      GptqGgmlConfig config;
      config.type = type;
      const MatrixF expected_ours = quantize_gptq_ggml(w, h, config).dequantize();
      expect_computes(llama[i], x, expected_llama, "llama.cpp");
      expect_computes(ours[i], x, expected_ours, "gptq-gguf");
      EXPECT_EQ(llama[i].bits_per_weight, bits == 2 ? 4.5 : 5.5);  // Q4_0, Q5_0
      ASSERT_TRUE(ours[i].ggml.has_value());
      EXPECT_EQ(ours[i].ggml->type, type);
      EXPECT_EQ(ours[i].bits_per_weight, llama[i].bits_per_weight);
      const double error_llama = ((w - expected_llama) * x.transpose()).norm();
      const double error_ours = ((w - expected_ours) * x.transpose()).norm();
      EXPECT_LT(error_ours, error_llama);
    }
  }
}

TEST_F(GroupQuantization, MethodNamesAndUnknownMethods) {
  const std::vector<std::string> names = method_names();
  EXPECT_EQ(names.size(), 11u);
  for (const std::string& m : checkpoint_methods())
    EXPECT_NE(std::find(names.begin(), names.end(), m), names.end()) << m;
  EXPECT_FALSE(is_w8a8("gptq"));
  try {
    test::quantize_group_on({&w1}, x, nullptr, {"no-such-method", 4, 32});
    ADD_FAILURE() << "an unknown method quantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown quantization method 'no-such-method' (known: "
                                         "rtn, gptq, bpdq"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lowbit::model
