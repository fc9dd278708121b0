// lowbit/io/layer_file.hpp: the single-layer layout. Inputs written by
// add_layer_inputs read back exactly (float and double copies); every result
// writer produces the documented names, dtypes and shapes; uniform, bit-plane
// and sparse parts read back as written; missing tensors throw MissingTensor
// and inconsistent ones lowbit::Error naming the file and the tensor.
#include <functional>
#include <lowbit/io/layer_file.hpp>
#include <lowbit/quant/rtn.hpp>

#include "fuzz/fuzz_targets.hpp"
#include "test_support.hpp"

namespace lowbit::io {
namespace {

SafetensorsReader reread(const SafetensorsWriter& w) {
  return SafetensorsReader::from_bytes(w.bytes(), "layer.safetensors");
}

void expect_tensor(const SafetensorsReader& f, const std::string& name, Dtype dtype,
                   const std::vector<std::int64_t>& shape) {
  ASSERT_TRUE(f.contains(name)) << name;
  EXPECT_EQ(f.info(name).dtype, dtype) << name;
  EXPECT_EQ(f.info(name).shape, shape) << name;
}

LayerInputs full_inputs() {
  LayerInputs in;
  in.w = test::random_weights(8, 32, 1);
  in.extra_weights = {test::random_weights(5, 32, 2), test::random_weights(3, 32, 3)};
  in.x = test::random_activations(40, 32, 4);
  Calibration c(32);
  c.add(*in.x);
  in.h = c.hessian();
  in.g = test::random_weights(8, 32, 5).cwiseAbs();
  in.ln_weight = VectorF::LinSpaced(32, 0.5f, 1.5f);
  in.ln_bias = VectorF::LinSpaced(32, -0.1f, 0.1f);
  return in;
}

TEST(LayerFile, InputsReadBackAsWritten) {
  const LayerInputs in = full_inputs();
  SafetensorsWriter w;
  add_layer_inputs(w, in);
  const SafetensorsReader f = reread(w);
  const LayerInputs back = read_layer_inputs(f);
  EXPECT_EQ(back.w, in.w);
  ASSERT_EQ(back.extra_weights.size(), 2u);
  EXPECT_EQ(back.extra_weights[1], in.extra_weights[1]);
  EXPECT_EQ(*back.x, *in.x);
  EXPECT_EQ(*back.h, *in.h);
  EXPECT_EQ(*back.g, *in.g);
  EXPECT_EQ(*back.ln_weight, *in.ln_weight);
  EXPECT_EQ(*back.ln_bias, *in.ln_bias);
  EXPECT_FALSE(back.f64);
  EXPECT_EQ(back.hessian(), *in.h);
  expect_tensor(f, "W3", Dtype::F32, {3, 32});
  expect_tensor(f, "H", Dtype::F64, {32, 32});

  // X alone gives 2/N X^T X; W alone has no calibration data.
  LayerInputs only_x;
  only_x.w = in.w;
  only_x.x = in.x;
  EXPECT_EQ(only_x.hessian(), *in.h);
  only_x.x.reset();
  test::expect_error_containing<MissingTensor>([&] { only_x.hessian(); },
                                               "tensor 'H' (in x in) or 'X'");
}

// F64 inputs keep double copies (AWQ and SmoothQuant run in double on them).
TEST(LayerFile, DoubleInputsKeepTheirPrecision) {
  LayerInputs in;
  LayerInputs::Double d;
  d.w = MatrixD::Constant(4, 16, 1.0 / 3.0);
  d.extra_weights = {MatrixD::Constant(2, 16, 2.0 / 3.0)};
  d.x = MatrixD::Constant(6, 16, 0.1);
  d.ln_weight = VectorD::Constant(16, 1.0 / 7.0);
  in.w = d.w.cast<float>();
  in.extra_weights = {d.extra_weights[0].cast<float>()};
  in.x = d.x->cast<float>();
  in.ln_weight = d.ln_weight->cast<float>();
  in.f64 = d;
  SafetensorsWriter w;
  add_layer_inputs(w, in);
  const SafetensorsReader f = reread(w);
  expect_tensor(f, "W", Dtype::F64, {4, 16});
  expect_tensor(f, "ln_weight", Dtype::F64, {16});
  const LayerInputs back = read_layer_inputs(f);
  ASSERT_TRUE(back.f64);
  EXPECT_EQ(back.f64->w, d.w);
  EXPECT_EQ(back.f64->extra_weights[0], d.extra_weights[0]);
  EXPECT_EQ(*back.f64->x, *d.x);
  EXPECT_EQ(*back.f64->ln_weight, *d.ln_weight);
  EXPECT_FALSE(back.f64->ln_bias);
  EXPECT_EQ(back.w, in.w);
  EXPECT_EQ(*back.ln_weight, *in.ln_weight);
}

TEST(LayerFile, InconsistentInputsAreRejected) {
  auto file = [](const std::function<void(SafetensorsWriter&)>& add) {
    SafetensorsWriter w;
    add(w);
    return reread(w);
  };
  const MatrixF w = test::random_weights(8, 32, 1);
  test::expect_error_containing<MissingTensor>(
      [&] {
        read_layer_inputs(
            file([](SafetensorsWriter& o) { o.add_matrix("X", MatrixF::Ones(2, 2)); }));
      },
      "layer.safetensors: required tensor 'W' (out x in) is missing");
  test::expect_error_containing(
      [&] {
        read_layer_inputs(file([&](SafetensorsWriter& o) {
          o.add_matrix("W", w);
          o.add_matrix("W2", MatrixF::Ones(3, 31));
        }));
      },
      "tensor 'W2' has 31 columns, expected in_features = 32 (from W)");
  test::expect_error_containing(
      [&] {
        read_layer_inputs(file([&](SafetensorsWriter& o) {
          o.add_matrix("W", w);
          o.add_matrix("H", MatrixD::Identity(16, 16));
        }));
      },
      "tensor 'H' must be 32 x 32 (in x in), is 16 x 16");
  test::expect_error_containing(
      [&] {
        read_layer_inputs(file([&](SafetensorsWriter& o) {
          o.add_matrix("W", w);
          o.add_matrix("G", MatrixF::Ones(32, 8));
        }));
      },
      "tensor 'G' must have W's shape 8 x 32");
  test::expect_error_containing(
      [&] {
        read_layer_inputs(file([&](SafetensorsWriter& o) {
          o.add_matrix("W", w);
          o.add_vector("ln_bias", std::vector<float>(30, 0.0f), Dtype::F32);
        }));
      },
      "tensor 'ln_bias' has 30 entries, expected in_features = 32");
}

UniformWeights act_order_uniform() {
  RtnConfig config;
  config.bits = 3;
  config.group_size = 16;
  UniformWeights u = quantize_rtn(test::random_weights(6, 48, 7), config).weights;
  u.g_idx.resize(48);
  for (int j = 0; j < 48; ++j) u.g_idx[std::size_t(j)] = (j * 7 % 48) / 16;
  return u;
}

TEST(LayerFile, UniformTensorsReadBack) {
  const UniformWeights u = act_order_uniform();
  SafetensorsWriter w;
  add_uniform(w, u);
  add_column_order(w, Permutation{2, 0, 1});
  const SafetensorsReader f = reread(w);
  expect_tensor(f, "qint", Dtype::I32, {6, 48});
  expect_tensor(f, "scale", Dtype::F32, {3, 6});
  expect_tensor(f, "zero", Dtype::F32, {3, 6});
  expect_tensor(f, "g_idx", Dtype::I32, {48});
  EXPECT_EQ(f.ints("perm"), (std::vector<std::int32_t>{2, 0, 1}));
  const UniformWeights back = read_uniform(f, 48);
  EXPECT_EQ(back.codes, u.codes);
  EXPECT_EQ(back.g_idx, u.g_idx);
  EXPECT_EQ(back.dequantize(), u.dequantize());
  EXPECT_EQ(back.bits, 3);  // 3-bit codes of random weights reach 7

  // Contiguous groups are written out as g_idx and read back as none.
  UniformWeights plain = u;
  plain.g_idx.clear();
  SafetensorsWriter p;
  add_uniform(p, plain);
  const SafetensorsReader pf = reread(p);
  EXPECT_EQ(pf.ints("g_idx")[47], 2);
  EXPECT_TRUE(read_uniform(pf, 48).g_idx.empty());
  test::expect_error_containing([&] { read_uniform(pf, 40); },
                                "tensor 'qint' has 48 columns, x has 40");
}

TEST(LayerFile, BitPlaneTensorsReadBack) {
  const BitPlaneWeights planes = to_bitplanes(act_order_uniform());
  SafetensorsWriter w;
  add_bitplanes(w, planes);
  const SafetensorsReader f = reread(w);
  expect_tensor(f, "B", Dtype::U8, {3, 6, 48});
  expect_tensor(f, "c", Dtype::F32, {3, 4, 6});
  expect_tensor(f, "B_packed", Dtype::I32, {2, 3, 6});
  const std::vector<std::int32_t> b = f.ints("B");
  for (int p = 0; p < 3; ++p)
    for (Index r = 0; r < 6; ++r)
      for (Index j = 0; j < 48; ++j)
        ASSERT_EQ(b[std::size_t((p * 6 + r) * 48 + j)], (planes.codes(r, j) >> p) & 1);
  // The file has no g_idx: the same codes, contiguous groups, c rounded to float.
  const BitPlaneWeights back = read_bitplanes(f, 48);
  EXPECT_EQ(back.codes, planes.codes);
  EXPECT_TRUE(back.g_idx.empty());
  EXPECT_EQ(back.coeffs, planes.coeffs.cast<float>().cast<double>());
}

TEST(LayerFile, SparseOutliersReadBack) {
  const MatrixF dense = test::random_weights(5, 12, 9);
  CodeMatrix mask = CodeMatrix::Zero(5, 12);
  mask(0, 3) = mask(2, 0) = mask(2, 11) = mask(4, 7) = 1;
  for (const OutlierPrecision precision : {OutlierPrecision::f16, OutlierPrecision::f32}) {
    const SparseOutliers s = sparse_outliers_from_mask(dense, mask, precision);
    SafetensorsWriter w;
    add_outliers(w, s);
    const SafetensorsReader f = reread(w);
    expect_tensor(f, "mask", Dtype::U8, {5, 12});
    expect_tensor(f, "outlier_rowptr", Dtype::I32, {6});
    expect_tensor(f, "outlier_val", precision == OutlierPrecision::f16 ? Dtype::F16 : Dtype::F32,
                  {4});
    const std::optional<SparseOutliers> back = read_outliers(f, 5, 12);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->precision, precision);
    EXPECT_EQ(back->row_ptr, s.row_ptr);
    EXPECT_EQ(back->col, s.col);
    EXPECT_EQ(back->values, s.values);
    test::expect_error_containing(
        [&] { read_outliers(f, 4, 12); },
        "tensor 'outlier_rowptr' has 6 entries, expected out_features + 1 = 5");
  }
  SafetensorsWriter none;
  none.add_matrix("qint", CodeMatrix::Zero(2, 2), Dtype::I32);
  EXPECT_FALSE(read_outliers(reread(none), 2, 2));
  SafetensorsWriter half;
  half.add_vector("outlier_rowptr", std::vector<std::int32_t>{0, 0, 0}, Dtype::I32);
  test::expect_error_containing<MissingTensor>(
      [&] { read_outliers(reread(half), 2, 2); },
      "the sparse outlier part needs tensor 'outlier_col'");
}

// What a kernel multiplies, as the file's metadata 'method' says: bit planes
// or uniform codes, AWQ's input scales on an awq file, SmoothQuant's W8 and
// scales; a file without 'method' by its tensors, and never with 'scales'.
TEST(LayerFile, QuantizedLayerOfEachKind) {
  const UniformWeights u = act_order_uniform();
  SafetensorsWriter uniform;
  add_uniform(uniform, u);
  uniform.add_vector("scales", std::vector<float>(48, 2.0f), Dtype::F32);
  uniform.set_metadata("method", "awq");
  const QuantizedLayer a = read_quantized_layer(reread(uniform), 48);
  EXPECT_EQ(a.encoding, ResultEncoding::uniform);
  EXPECT_EQ(a.planes.dequantize(), u.dequantize());
  EXPECT_EQ(a.input_scales, VectorD::Constant(48, 2.0));
  EXPECT_FALSE(a.outliers);
  uniform.set_metadata("method", "gptq");  // the same tensors: a gptq file has no input scales
  EXPECT_EQ(read_quantized_layer(reread(uniform), 48).input_scales.size(), 0);
  uniform.set_metadata("method", "hqq");
  test::expect_error_containing([&] { read_quantized_layer(reread(uniform), 48); },
                                "metadata method = 'hqq' is not a method lowbit quantize writes");

  SafetensorsWriter planes;
  add_bitplanes(planes, to_bitplanes(u));
  planes.set_metadata("method", "bpdq");
  const QuantizedLayer b = read_quantized_layer(reread(planes), 48);
  EXPECT_EQ(b.encoding, ResultEncoding::bitplanes);
  EXPECT_EQ(b.planes.codes, u.codes);
  planes.add_vector("scales", std::vector<float>(48, 2.0f), Dtype::F32);
  EXPECT_EQ(read_quantized_layer(reread(planes), 48).input_scales.size(), 0);
  planes.set_metadata("method", "smoothquant");  // says W8A8: W8 must be there
  test::expect_error_containing<MissingTensor>([&] { read_quantized_layer(reread(planes), 48); },
                                               "a W8A8 file needs tensor 'W8'");

  SafetensorsWriter unlabelled;  // no 'method': read by its tensors, scales refused
  add_uniform(unlabelled, u);
  EXPECT_EQ(read_quantized_layer(reread(unlabelled), 48).planes.dequantize(), u.dequantize());
  unlabelled.add_vector("scales", std::vector<float>(48, 2.0f), Dtype::F32);
  test::expect_error_containing([&] { read_quantized_layer(reread(unlabelled), 48); },
                                "tensor 'scales' in a file without metadata 'method'");

  // B_packed is I32 as read_bpdq_linear requires, whatever its values would fit.
  const BitPlaneWeights bits = to_bitplanes(u);
  const io::PackedPlanes packed = io::pack_bpdq_planes(bits);
  SafetensorsWriter narrow;
  narrow.add_ints("B_packed", packed.shape, packed.words.data(), packed.words.size(), Dtype::I64);
  narrow.add_floats("c", {bits.groups(), bits.planes + 1, bits.rows()}, bits.coeffs.data(),
                    static_cast<std::size_t>(bits.coeffs.size()));
  test::expect_error_containing([&] { read_quantized_layer(reread(narrow), 48); },
                                "tensor 'B_packed' must be I32, is I64");

  test::expect_error_containing<MissingTensor>(
      [&] { read_quantized_layer(reread(SafetensorsWriter()), 48); },
      "holds neither bit-plane tensors (B_packed, c), uniform tensors");
  SafetensorsWriter partial;
  partial.add_matrix("qint", u.codes, Dtype::I32);
  partial.add_matrix("scale", u.scale);
  test::expect_error_containing<MissingTensor>(
      [&] { read_quantized_layer(reread(partial), 48); },
      "a uniform file needs tensor 'zero', which is missing");
  SafetensorsWriter bad_scales;
  add_uniform(bad_scales, u);
  std::vector<float> s(48, 1.0f);
  s[5] = 0.0f;
  bad_scales.add_vector("scales", s, Dtype::F32);
  bad_scales.set_metadata("method", "awq");
  test::expect_error_containing([&] { read_quantized_layer(reread(bad_scales), 48); },
                                "tensor 'scales' element 5 = 0 is not a positive finite scale");
}

// SmoothQuant's W8 and w8_scale come back as the Int8Weights that were written.
TEST(LayerFile, SmoothQuantResultReadsAsInt8Weights) {
  const MatrixF w = test::random_weights(6, 32, 7);
  const MatrixF x = test::random_activations(40, 32, 8);
  const std::vector<MatrixFRef> linears{w};
  const VectorD act = x.cwiseAbs().colwise().maxCoeff().transpose().cast<double>();
  const SmoothQuantResult<float> smooth = quantize_smoothquant(linears, act, {});
  SafetensorsWriter file;
  add_smoothquant(file, smooth, linears);
  file.set_metadata("method", "smoothquant");
  const QuantizedLayer layer = read_quantized_layer(reread(file), 32);
  EXPECT_EQ(layer.encoding, ResultEncoding::int8);
  ASSERT_TRUE(layer.int8);
  EXPECT_EQ(layer.int8->values, smooth.weights[0].values);
  EXPECT_EQ(layer.int8->scale, smooth.weights[0].scale);
  EXPECT_EQ(layer.input_scales, smooth.scales.cast<double>());
}

// Inputs: non-finite values, a ln_weight of rank 2 and a further linear after
// a gap are refused by name; tensors outside the layout are listed as unread.
TEST(LayerFile, InputsAreCheckedAlike) {
  const MatrixF w = test::random_weights(3, 32, 9);
  MatrixF x = test::random_activations(5, 32, 10);
  SafetensorsWriter gap;
  gap.add_matrix("W", w);
  gap.add_matrix("W3", w);
  test::expect_error_containing([&] { read_layer_inputs(reread(gap)); },
                                "tensor 'W3' is not read: further linears are W2, W3, ... without "
                                "gaps, and W2 is missing");
  SafetensorsWriter rank2;
  rank2.add_matrix("W", w);
  rank2.add_matrix("ln_weight", MatrixF::Ones(1, 32));
  test::expect_error_containing([&] { read_layer_inputs(reread(rank2)); },
                                "tensor 'ln_weight' must have rank 1, has shape [1, 32]");
  x(2, 7) = std::numeric_limits<float>::quiet_NaN();
  SafetensorsWriter nan;
  nan.add_matrix("W", w);
  nan.add_matrix("X", x);
  nan.add_matrix("H_extra", MatrixF::Ones(2, 2));
  test::expect_error_containing([&] { read_layer_inputs(reread(nan)); },
                                "tensor 'X': expected finite values, found nan at (2, 7)");
  EXPECT_EQ(unread_layer_tensors(reread(nan)), std::vector<std::string>{"H_extra"});
}

// The per-method writers: names, dtypes and shapes of the documented layout
// for two linears sharing an input (their values are checked against the
// references through the tool's golden tests).
TEST(LayerFile, MethodWritersFollowTheLayout) {
  const MatrixF w1 = test::random_weights(8, 64, 1), w2 = test::random_weights(4, 64, 2);
  const MatrixF x = test::random_activations(64, 64, 3);
  const std::vector<MatrixFRef> linears{w1, w2};
  AwqConfig awq_config;
  awq_config.group_size = 32;
  awq_config.scale_grid = 4;
  SafetensorsWriter awq;
  add_awq(awq, quantize_awq(linears, x, awq_config));
  const SafetensorsReader a = reread(awq);
  expect_tensor(a, "qint", Dtype::I32, {8, 64});
  for (const std::string suffix : {"", "_2"}) {
    const std::int64_t out = suffix.empty() ? 8 : 4;
    expect_tensor(a, "Wq" + suffix, Dtype::F32, {out, 64});
    expect_tensor(a, "q_scales" + suffix, Dtype::F32, {out, 2});
    expect_tensor(a, "q_zeros" + suffix, Dtype::F32, {out, 2});
    expect_tensor(a, "clip_max_val" + suffix, Dtype::F32, {out, 2});
  }
  expect_tensor(a, "scales", Dtype::F32, {64});
  expect_tensor(a, "search_loss_history", Dtype::F64, {4});

  const SmoothQuantResult<float> smooth =
      quantize_smoothquant(linears, x.cwiseAbs().colwise().maxCoeff().transpose().cast<double>());
  SafetensorsWriter sq;
  add_smoothquant(sq, smooth, linears);
  add_norm(sq, NormParams<float>{VectorF::Ones(64), VectorF::Zero(64)}, "_smoothed");
  add_dequantized(sq, smooth.weights[1].dequantize(), 1);
  const SafetensorsReader s = reread(sq);
  expect_tensor(s, "W_smoothed", Dtype::F32, {8, 64});
  expect_tensor(s, "W2_smoothed", Dtype::F32, {4, 64});
  expect_tensor(s, "W8", Dtype::I8, {8, 64});
  expect_tensor(s, "W8_2", Dtype::I8, {4, 64});
  expect_tensor(s, "w8_scale_2", Dtype::F32, {4});
  expect_tensor(s, "ln_weight_smoothed", Dtype::F32, {64});
  expect_tensor(s, "ln_bias_smoothed", Dtype::F32, {64});
  expect_tensor(s, "Q_2", Dtype::F32, {4, 64});
  EXPECT_THROW(add_smoothquant(sq, smooth, {linears[0]}), Error);

  BpdqReport report;
  report.init_scale = report.init_zero = MatrixF::Ones(2, 8);
  report.hessian.column_order = {1, 0, 2};
  report.group_order = {1, 0};
  SafetensorsWriter bpdq;
  add_bpdq_report(bpdq, report);
  const SafetensorsReader b = reread(bpdq);
  expect_tensor(b, "init_scale8", Dtype::F32, {2, 8});
  EXPECT_EQ(b.ints("final_perm"), (std::vector<std::int32_t>{1, 0, 2}));
  EXPECT_EQ(b.ints("global_perm"), (std::vector<std::int32_t>{1, 0}));
}

// tests/data/layer_file_hostile (make_corpus.py there), fuzz_layer_file's
// seeds and findings: every reader of every described file gives a value or
// lowbit::Error, and each valid_* seed reaches the reader it was made for.
TEST(LayerFile, FuzzCorpusReadsOrIsRefused) {
  const std::vector<std::string> files = test::fuzz_corpus("layer_file");
  ASSERT_GE(files.size(), 12u);
  for (const std::string& file : files) {
    SCOPED_TRACE(file);
    const std::vector<std::uint8_t> bytes = test::file_bytes(file);
    try {
      fuzz::read_layer_file(bytes.data(), bytes.size());
    } catch (const Error&) {
    }
  }
  auto described = [](const std::string& name) {
    const std::vector<std::uint8_t> bytes =
        test::file_bytes(test::test_data_dir() + "/layer_file_hostile/" + name + ".bin");
    return fuzz::layer_file_from_description(bytes.data(), bytes.size());
  };
  EXPECT_EQ(read_layer_inputs(described("valid_layer_inputs")).extra_weights.size(), 1u);
  for (const char* result : {"rtn", "tacq", "bpdq", "smoothquant", "awq", "gguf_q8_0"}) {
    SCOPED_TRACE(result);
    const QuantizedLayer layer =
        read_quantized_layer(described(std::string("valid_") + result + "_result"), 64);
    EXPECT_EQ(layer.int8 ? layer.int8->rows() : layer.planes.rows(), 8);
  }
  EXPECT_EQ(read_gptq_linear(described("valid_gptq_linear"), "l", 4).rows(), 32);
  EXPECT_TRUE(read_linear_bias(described("valid_gptq_linear"), "l", 32));
  EXPECT_EQ(read_awq_linear(described("valid_awq_linear"), "l").rows(), 32);
  EXPECT_EQ(read_bpdq_linear(described("valid_bpdq_linear"), "l").rows(), 8);
  EXPECT_EQ(read_gptq_linear(described("large_gptq_linear"), "l", 3).cols(), 1024);
}

}  // namespace
}  // namespace lowbit::io
