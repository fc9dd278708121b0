// io/gptq_format.hpp: the AutoGPTQ/GPTQModel v1 layout. Packing against the
// packers' own word layout (written out below from their pack loops), the
// zero-point convention including zeros of 0, round trips of weights and of
// files, golden GPTQ/RTN results, and files whose tensors disagree.
#include <lowbit/io/gptq_format.hpp>

#include <limits>
#include <numeric>
#include <random>

#include "test_support.hpp"

namespace lowbit {
namespace {

using io::Dtype;
using io::SafetensorsReader;
using io::SafetensorsWriter;

// Random weights on a `bits` grid: every code and every zero in range occurs,
// including zeros of 0 and 2^bits - 1.
UniformWeights random_uniform(Index out, Index in, int bits, Index group_size, unsigned seed,
                              bool act_order = false) {
  std::mt19937 rng(seed);
  const int levels = 1 << bits;
  UniformWeights w;
  w.bits = bits;
  w.group_size = group_size;
  w.codes = CodeMatrix::NullaryExpr(out, in, [&] { return std::uint8_t(rng() % levels); });
  const Index groups = in / group_size;
  w.zero = MatrixF::NullaryExpr(groups, out, [&] { return float(rng() % levels); });
  w.zero(0, 0) = 0.0f;
  w.zero(groups - 1, out - 1) = float(levels - 1);
  std::uniform_real_distribution<float> scale(1e-4f, 0.1f);
  w.scale = MatrixF::NullaryExpr(groups, out, [&] { return scale(rng); });
  if (act_order) {
    std::vector<std::int32_t> perm(static_cast<std::size_t>(in));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    w.g_idx.resize(static_cast<std::size_t>(in));
    for (Index j = 0; j < in; ++j)  // GPTQ act-order: groups contiguous in permuted order
      w.g_idx[static_cast<std::size_t>(perm[static_cast<std::size_t>(j)])] =
          static_cast<std::int32_t>(j / group_size);
  }
  return w;
}

// 32 values of `bits` bits into `bits` words, spelled out the way AutoGPTQ's
// pack loop places them (3 bits: values 10 and 21 straddle words).
std::vector<std::uint32_t> autogptq_words(const std::vector<std::uint32_t>& v, int bits) {
  std::vector<std::uint32_t> words(static_cast<std::size_t>(bits), 0u);
  if (bits != 3) {
    for (int i = 0; i < 32; ++i)
      words[std::size_t(i * bits / 32)] |= v[std::size_t(i)] << (i * bits % 32);
    return words;
  }
  for (int i = 0; i < 10; ++i) words[0] |= v[std::size_t(i)] << (3 * i);
  words[0] |= v[10] << 30;
  words[1] |= (v[10] >> 2) & 1u;
  for (int i = 0; i < 10; ++i) words[1] |= v[std::size_t(11 + i)] << (3 * i + 1);
  words[1] |= v[21] << 31;
  words[2] |= (v[21] >> 1) & 3u;
  for (int i = 0; i < 10; ++i) words[2] |= v[std::size_t(22 + i)] << (3 * i + 2);
  return words;
}

TEST(GptqFormat, QweightMatchesThePackersWordLayout) {
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(testing::Message() << "bits " << bits);
    const UniformWeights w = random_uniform(32, 96, bits, 32, 100 + unsigned(bits));
    const io::GptqTensors t = io::pack_gptq(w);
    ASSERT_EQ(t.qweight.size(), std::size_t(96 * bits / 32 * 32));
    for (Index r = 0; r < 32; ++r)
      for (Index block = 0; block < 3; ++block) {  // 32 input columns per block of `bits` words
        std::vector<std::uint32_t> values(32);
        for (Index i = 0; i < 32; ++i) values[std::size_t(i)] = w.codes(r, 32 * block + i);
        const std::vector<std::uint32_t> expected = autogptq_words(values, bits);
        for (int k = 0; k < bits; ++k)
          EXPECT_EQ(std::uint32_t(t.qweight[std::size_t((block * bits + k) * 32 + r)]),
                    expected[std::size_t(k)])
              << "row " << r << " block " << block << " word " << k;
      }
    // Zeros without a zero of 0: the classic layout of zero - 1 along out.
    UniformWeights nonzero = w;
    nonzero.zero = nonzero.zero.cwiseMax(1.0f);
    const io::GptqTensors tz = io::pack_gptq(nonzero);
    for (Index g = 0; g < nonzero.groups(); ++g) {
      std::vector<std::uint32_t> values(32);
      for (Index r = 0; r < 32; ++r)
        values[std::size_t(r)] = std::uint32_t(nonzero.zero(g, r)) - 1u;
      const std::vector<std::uint32_t> expected = autogptq_words(values, bits);
      for (int k = 0; k < bits; ++k)
        EXPECT_EQ(std::uint32_t(tz.qzeros[std::size_t(g * bits + k)]), expected[std::size_t(k)]);
    }
  }
}

TEST(GptqFormat, ZeroOfZeroIsWrittenAsGptqModelDoes) {
  // 4 bits, zeros 0, 8, 8, ..., 8 along out: v2 word 0x88888880; GPTQModel
  // subtracts 0x11111111 from the int32 word, so field 0 becomes 15 and
  // borrows from field 1: 0x7777776F.
  UniformWeights w = random_uniform(32, 32, 4, 32, 7);
  w.zero.setConstant(8.0f);
  w.zero(0, 0) = 0.0f;
  const io::GptqTensors t = io::pack_gptq(w);
  EXPECT_EQ(std::uint32_t(t.qzeros[0]), 0x7777776Fu);
  for (int k = 1; k < 4; ++k) EXPECT_EQ(std::uint32_t(t.qzeros[std::size_t(k)]), 0x77777777u);
  // A classic per-field reader ((word >> shift) & 15) + 1 would see 16 and 7:
  // the v1 defect. GPTQModel's reader (and ours) undoes the borrow.
  EXPECT_EQ(((0x7777776Fu >> 0) & 15u) + 1u, 16u);
  EXPECT_EQ(((0x7777776Fu >> 4) & 15u) + 1u, 7u);
  const UniformWeights back = io::unpack_gptq(t);
  EXPECT_EQ(back.zero, w.zero);

  // 3 bits: fields straddle words, GPTQModel wraps each field modulo 8, so a
  // zero of 0 is stored as 7 and its neighbours are untouched.
  UniformWeights w3 = random_uniform(32, 32, 3, 32, 8);
  w3.zero.setConstant(4.0f);
  w3.zero(0, 10) = 0.0f;  // the value split across words 0 and 1
  const io::GptqTensors t3 = io::pack_gptq(w3);
  std::vector<std::uint32_t> stored(32, 3u);
  stored[10] = 7u;
  const std::vector<std::uint32_t> expected = autogptq_words(stored, 3);
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(std::uint32_t(t3.qzeros[std::size_t(k)]), expected[std::size_t(k)]);
  EXPECT_EQ(io::unpack_gptq(t3).zero, w3.zero);
}

// checkpoint_format "gptq_v2" stores zero points as they are: 0x88888880 is
// zeros 0, 8, 8, ..., 8; the same words as v1 would read 1, 9, ..., 9.
TEST(GptqFormat, V2ZeroPointsAreStoredAsTheyAre) {
  io::GptqTensors t = io::pack_gptq(random_uniform(32, 32, 4, 32, 9));
  for (std::int32_t& word : t.qzeros) word = std::int32_t(0x88888888u);
  t.qzeros[0] = std::int32_t(0x88888880u);
  t.v2 = true;
  const UniformWeights v2 = io::unpack_gptq(t);
  EXPECT_EQ(v2.zero(0, 0), 0.0f);
  EXPECT_EQ(v2.zero(0, 1), 8.0f);
  EXPECT_EQ(v2.zero(0, 31), 8.0f);
  t.v2 = false;
  const UniformWeights v1 = io::unpack_gptq(t);
  EXPECT_EQ(v1.zero(0, 0), 1.0f);
  EXPECT_EQ(v1.zero(0, 31), 9.0f);
}

TEST(GptqFormat, WeightsRoundTripExactlyExceptFp16Scales) {
  for (int bits : {2, 3, 4, 8})
    for (Index group : {32, 64, 128})
      for (bool act_order : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << "bits " << bits << " group " << group << " act " << act_order);
        const UniformWeights w =
            random_uniform(64, 128, bits, group, 200 + unsigned(bits * group), act_order);
        const UniformWeights back = io::unpack_gptq(io::pack_gptq(w));
        EXPECT_EQ(back.bits, bits);
        EXPECT_EQ(back.group_size, group);
        EXPECT_EQ(back.codes, w.codes);
        EXPECT_EQ(back.zero, w.zero);
        for (Index j = 0; j < w.cols(); ++j) ASSERT_EQ(back.group_of(j), w.group_of(j));
        if (group < 128) {  // with one group, g_idx is trivial and reads back empty
          EXPECT_EQ(back.g_idx, w.g_idx);
        }
        for (Index i = 0; i < w.scale.size(); ++i) {
          const float s = w.scale.data()[i];
          EXPECT_EQ(back.scale.data()[i], half_to_float(float_to_half(s)));
          EXPECT_LE(std::abs(back.scale.data()[i] - s), std::ldexp(std::abs(s), -11));
        }
      }
}

TEST(GptqFormat, FilesRoundTripBitExactly) {
  test::TempDir dir;
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE(testing::Message() << "bits " << bits);
    const UniformWeights w = random_uniform(96, 64, bits, 32, 300 + unsigned(bits), bits == 3);
    const VectorF bias = VectorF::LinSpaced(96, -1.0f, 1.0f);
    SafetensorsWriter first;
    io::add_gptq_linear(first, "model.layers.0.mlp.up_proj", w);
    io::add_linear_bias(first, "model.layers.0.mlp.up_proj", bias);
    const std::string path = dir.file("gptq.safetensors");
    first.write(path);

    const SafetensorsReader file(path);
    EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.qweight").shape,
              (std::vector<std::int64_t>{64 * bits / 32, 96}));
    EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.qzeros").shape,
              (std::vector<std::int64_t>{2, 96 * bits / 32}));
    EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.scales").dtype, Dtype::F16);
    EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.g_idx").shape, (std::vector<std::int64_t>{64}));
    const UniformWeights back = io::read_gptq_linear(file, "model.layers.0.mlp.up_proj", bits);
    const std::optional<VectorF> back_bias =
        io::read_linear_bias(file, "model.layers.0.mlp.up_proj", 96);
    ASSERT_TRUE(back_bias.has_value());

    SafetensorsWriter second;
    io::add_gptq_linear(second, "model.layers.0.mlp.up_proj", back);
    io::add_linear_bias(second, "model.layers.0.mlp.up_proj", *back_bias);
    EXPECT_EQ(second.bytes(), first.bytes());
    EXPECT_EQ(back.codes, w.codes);
    EXPECT_EQ(back.zero, w.zero);
  }
}

// Golden GPTQ (act-order g_idx, sym/asym) and the bundled RTN results as
// checkpoints: codes, zeros and g_idx come back exactly.
CodeMatrix golden_codes(const SafetensorsReader& f) {
  const io::TensorInfo& t = f.require_rank("qint", 2);
  const std::vector<std::int32_t> qint = f.ints("qint");
  return Eigen::Map<
             const Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
             qint.data(), t.shape[0], t.shape[1])
      .cast<std::uint8_t>();
}

void check_golden_uniform(const SafetensorsReader& f, const UniformWeights& w) {
  SafetensorsWriter writer;
  io::add_gptq_linear(writer, "fc", w);
  const UniformWeights back =
      io::read_gptq_linear(SafetensorsReader::from_bytes(writer.bytes()), "fc", w.bits);
  EXPECT_EQ(back.codes, w.codes) << f.source();
  EXPECT_TRUE((back.zero.array() == w.zero.array()).all()) << f.source();  // -0.0 == 0.0
  EXPECT_EQ(back.group_size, w.group_size);
  for (Index j = 0; j < w.cols(); ++j) EXPECT_EQ(back.group_of(j), w.group_of(j));
  EXPECT_LE(test::max_rel_diff(back.dequantize(), w.dequantize()), 1e-3);
}

TEST(GptqFormat, GoldenRtnResultsRoundTrip) {
  test::for_each_golden("rtn_", false, [](const SafetensorsReader& f, const std::string&) {
    UniformWeights w;
    w.bits = test::meta_int(f, "bits");
    w.codes = golden_codes(f);
    w.group_size = w.cols();
    w.scale = f.matrix("scale").transpose();  // the reference stores [out, 1]
    w.zero = f.matrix("zero").transpose();
    check_golden_uniform(f, w);
  });
}

TEST(GptqFormat, GoldenGptqResultsRoundTrip) {
  test::for_each_golden("gptq_", true, [](const SafetensorsReader& f, const std::string&) {
    if (f.info("W").shape[0] % 32 != 0) return;  // out_features the format cannot hold
    UniformWeights w;
    w.bits = test::meta_int(f, "bits");
    w.codes = golden_codes(f);
    w.scale = f.matrix("scale");
    w.zero = f.matrix("zero");
    w.group_size = w.cols() / w.scale.rows();
    w.g_idx = f.ints("g_idx");
    check_golden_uniform(f, w);
  });
}

TEST(GptqFormat, RejectsWeightsTheFormatCannotHold) {
  UniformWeights w = random_uniform(32, 64, 4, 32, 9);
  auto expect_error = [](const UniformWeights& bad, const std::string& fragment) {
    try {
      io::pack_gptq(bad);
      ADD_FAILURE() << "expected an error containing '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  UniformWeights bad = w;
  bad.zero(1, 3) = 2.5f;
  expect_error(bad, "zero(1, 3) = 2.5 is not an integer in [0, 15]");
  bad = w;
  bad.zero(0, 0) = 16.0f;
  expect_error(bad, "zero(0, 0) = 16");
  bad = w;
  bad.zero(0, 0) = -1.0f;
  expect_error(bad, "zero(0, 0) = -1");
  bad = w;
  bad.scale(0, 2) = 1e6f;
  expect_error(bad, "scale(0, 2) = 1e+06 overflows fp16");
  expect_error(random_uniform(32, 64, 5, 32, 10), "2, 3, 4 or 8 bits, got 5");
  expect_error(random_uniform(32, 48, 4, 16, 11), "in_features must be a multiple of 32");
  expect_error(random_uniform(40, 64, 4, 32, 12), "out_features must be a multiple of 32");
}

// A valid file with one tensor replaced or dropped.
std::vector<unsigned char> tampered(const UniformWeights& w, const std::string& part, Dtype dtype,
                                    std::vector<std::int64_t> shape) {
  const io::GptqTensors t = io::pack_gptq(w);
  SafetensorsWriter writer;
  auto add = [&](const std::string& name, const std::vector<std::int64_t>& s,
                 const std::vector<double>& v, Dtype d) {
    if (name == part) {
      if (!shape.empty()) {
        std::int64_t n = 1;
        for (auto x : shape) n *= x;
        std::vector<double> filler(std::size_t(n), 1.0);
        writer.add_floats("l." + name, shape, filler.data(), filler.size(),
                          io::is_float_dtype(dtype) ? dtype : Dtype::F32);
      }
      return;  // dropped when no shape is given
    }
    if (io::is_float_dtype(d))
      writer.add_floats("l." + name, s, v.data(), v.size(), d);
    else
      writer.add_ints("l." + name, s, v.data(), v.size(), d);
  };
  add("qweight", t.qweight_shape(), std::vector<double>(t.qweight.begin(), t.qweight.end()),
      Dtype::I32);
  add("qzeros", t.qzeros_shape(), std::vector<double>(t.qzeros.begin(), t.qzeros.end()),
      Dtype::I32);
  add("scales", t.scales_shape(), std::vector<double>(t.scales.begin(), t.scales.end()),
      Dtype::F16);
  add("g_idx", {t.in_features}, std::vector<double>(t.g_idx.begin(), t.g_idx.end()), Dtype::I32);
  return writer.bytes();
}

void expect_read_error(const std::vector<unsigned char>& bytes, int bits,
                       const std::string& fragment) {
  try {
    io::read_gptq_linear(SafetensorsReader::from_bytes(bytes, "bad.safetensors"), "l", bits);
    ADD_FAILURE() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
  }
}

TEST(GptqFormat, ReaderNamesTheTensorAndTheMismatch) {
  const UniformWeights w = random_uniform(64, 128, 4, 32, 13);  // qweight [16, 64], 4 groups
  expect_read_error(tampered(w, "qzeros", Dtype::I32, {}), 4, "tensor 'l.qzeros' is missing");
  expect_read_error(tampered(w, "scales", Dtype::F16, {}), 4, "tensor 'l.scales' is missing");
  expect_read_error(tampered(w, "qzeros", Dtype::F32, {4, 8}), 4, "'l.qzeros' must be I32");
  expect_read_error(
      tampered(w, "scales", Dtype::F16, {4, 32}), 4,
      "'l.scales' has shape [4, 32], expected dim 1 = 64 (out_features from l.qweight)");
  expect_read_error(tampered(w, "scales", Dtype::F16, {3, 64}), 4,
                    "'l.qzeros' has shape [4, 8], expected dim 0 = 3 (groups from l.scales)");
  expect_read_error(tampered(w, "scales", Dtype::F16, {4, 64, 1}), 4,
                    "'l.scales' must have rank 2");
  expect_read_error(tampered(w, "g_idx", Dtype::F16, {100}), 4,
                    "'l.g_idx' has shape [100], expected dim 0 = 128");
  expect_read_error(tampered(w, "scales", Dtype::F16, {0, 64}), 4, "'l.qzeros'");
  // The bits a config claims must agree with the tensors.
  const std::vector<unsigned char> good = tampered(w, "none", Dtype::F32, {});
  expect_read_error(good, 3, "'l.qweight' has shape [16, 64]");
  expect_read_error(good, 2, "'l.qzeros' has shape [4, 8], expected dim 1 = 4");
  expect_read_error(good, 5, "2, 3, 4 or 8 bits, got 5");
  EXPECT_NO_THROW(io::read_gptq_linear(SafetensorsReader::from_bytes(good), "l", 4));

  // g_idx values are checked against the groups.
  io::GptqTensors t = io::pack_gptq(w);
  t.g_idx[5] = 4;
  EXPECT_THROW(io::unpack_gptq(t), Error);
  t.g_idx[5] = 1;  // now group 1 has 33 columns and group 0 has 31
  try {
    io::unpack_gptq(t, "x.safetensors: linear 'l'");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear 'l': UniformWeights: g_idx puts"),
              std::string::npos)
        << e.what();
  }
  t = io::pack_gptq(w);
  t.scales[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(io::unpack_gptq(t), Error);
  t = io::pack_gptq(w);
  t.qzeros.pop_back();
  EXPECT_THROW(io::unpack_gptq(t), Error);
}

TEST(GptqFormat, AnyWordsDecodeToValidWeights) {
  // Hostile but well-shaped files: every word pattern decodes to codes and
  // zeros in range, never out-of-bounds reads.
  std::mt19937 rng(14);
  for (int bits : {2, 3, 4, 8}) {
    io::GptqTensors t;
    t.bits = bits;
    t.in_features = 64;
    t.out_features = 32;
    t.groups = 2;
    t.qweight.resize(std::size_t(64 * bits / 32 * 32));
    t.qzeros.resize(std::size_t(2 * 32 * bits / 32));
    for (auto& v : t.qweight) v = std::int32_t(rng());
    for (auto& v : t.qzeros) v = std::int32_t(rng());
    t.scales.assign(64, 0.5f);
    const UniformWeights w = io::unpack_gptq(t);
    EXPECT_LT(w.zero.maxCoeff(), float(1 << bits));
    EXPECT_GE(w.zero.minCoeff(), 0.0f);
    // ... and pack back to the same words.
    const io::GptqTensors again = io::pack_gptq(w);
    EXPECT_EQ(again.qweight, t.qweight);
    EXPECT_EQ(again.qzeros, t.qzeros);
  }
}

}  // namespace
}  // namespace lowbit
