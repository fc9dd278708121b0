// io/bpdq_format.hpp at file level: named linears as in the published BPDQ
// checkpoints (<linear>.B int32, <linear>.c in bf16/fp16/F32), round trips,
// the golden B_packed/B/c of the official code, and files that disagree.
#include <lowbit/io/bpdq_format.hpp>

#include <random>

#include "test_support.hpp"

namespace lowbit {
namespace {

using io::Dtype;
using io::SafetensorsReader;
using io::SafetensorsWriter;

BitPlaneWeights random_planes(Index out, Index in, int k, Index group_size, unsigned seed) {
  std::mt19937 rng(seed);
  BitPlaneWeights w;
  w.planes = k;
  w.group_size = group_size;
  w.codes = CodeMatrix::NullaryExpr(out, in, [&] { return std::uint8_t(rng() % (1u << k)); });
  std::normal_distribution<double> coeff(0.0, 0.02);
  w.coeffs = MatrixD::NullaryExpr((in / group_size) * (k + 1), out, [&] { return coeff(rng); });
  return w;
}

// Each coefficient as `dtype` stores it.
MatrixD stored(const MatrixD& c, Dtype dtype) {
  return c.unaryExpr([dtype](double v) { return io::detail::stored_value(v, dtype, "test"); });
}

TEST(BpdqFormat, LinearsRoundTripInEveryCoefficientDtype) {
  test::TempDir dir;
  for (Dtype dtype : {Dtype::BF16, Dtype::F16, Dtype::F32})
    for (int k : {1, 2, 3, 4}) {
      SCOPED_TRACE(testing::Message() << io::dtype_name(dtype) << " k " << k);
      const BitPlaneWeights w = random_planes(48, 128, k, 64, 40 + unsigned(k));
      SafetensorsWriter first;
      io::add_bpdq_linear(first, "model.layers.3.self_attn.o_proj", w, dtype);
      io::add_linear_bias(first, "model.layers.3.self_attn.o_proj", VectorF::Constant(48, 0.25f));
      first.write(dir.file("bpdq.safetensors"));

      const SafetensorsReader file(dir.file("bpdq.safetensors"));
      const io::TensorInfo& b = file.info("model.layers.3.self_attn.o_proj.B");
      const io::TensorInfo& c = file.info("model.layers.3.self_attn.o_proj.c");
      EXPECT_EQ(b.dtype, Dtype::I32);
      EXPECT_EQ(b.shape, (std::vector<std::int64_t>{4, k, 48}));
      EXPECT_EQ(c.dtype, dtype);
      EXPECT_EQ(c.shape, (std::vector<std::int64_t>{2, k + 1, 48}));

      const BitPlaneWeights back = io::read_bpdq_linear(file, "model.layers.3.self_attn.o_proj");
      EXPECT_EQ(back.codes, w.codes);
      EXPECT_EQ(back.group_size, 64);
      EXPECT_EQ(back.coeffs, stored(w.coeffs, dtype));
      // Rounding bound of the dtype, per coefficient (2^-8, 2^-11, 2^-24 relative).
      const int precision = dtype == Dtype::BF16 ? 8 : dtype == Dtype::F16 ? 11 : 24;
      for (Index i = 0; i < w.coeffs.size(); ++i)
        EXPECT_LE(
            std::abs(back.coeffs.data()[i] - w.coeffs.data()[i]),
            std::ldexp(std::abs(w.coeffs.data()[i]), -precision) + 1e-7 /* fp16 subnormals */);
      EXPECT_EQ(io::read_linear_bias(file, "model.layers.3.self_attn.o_proj", 48)->maxCoeff(),
                0.25f);

      // Read, write again: the same bytes.
      SafetensorsWriter second;
      io::add_bpdq_linear(second, "model.layers.3.self_attn.o_proj", back, dtype);
      io::add_linear_bias(second, "model.layers.3.self_attn.o_proj", VectorF::Constant(48, 0.25f));
      EXPECT_EQ(second.bytes(), first.bytes());
    }
}

// The golden runs of the official BPDQ code: B_packed [in/32, k, out] int32,
// B [k, out, in] u8 (unpacked by the generator) and c [groups, k+1, out].
TEST(BpdqFormat, GoldenCheckpointTensors) {
  test::for_each_golden("bpdq_", true, [](const SafetensorsReader& f, const std::string&) {
    const io::TensorInfo& b_info = f.info("B");
    const int k = static_cast<int>(b_info.shape[0]);
    const Index out = b_info.shape[1], in = b_info.shape[2];
    const std::vector<std::int32_t> planes = f.ints("B");
    BitPlaneWeights golden;
    golden.planes = k;
    golden.codes.setZero(out, in);
    for (int p = 0; p < k; ++p)
      for (Index r = 0; r < out; ++r)
        for (Index j = 0; j < in; ++j)
          golden.codes(r, j) |= std::uint8_t(planes[std::size_t((p * out + r) * in + j)] << p);
    const io::TensorInfo& c_info = f.info("c");
    const std::vector<double> c = f.doubles("c");
    golden.coeffs = Eigen::Map<const MatrixD>(c.data(), c_info.shape[0] * (k + 1), out);
    golden.group_size = in / c_info.shape[0];

    // A checkpoint as the official code writes it: payload B and c under a linear's name.
    const std::vector<std::int32_t> b_packed = f.ints("B_packed");
    SafetensorsWriter official;
    official.add_ints("mlp.down_proj.B", f.info("B_packed").shape, b_packed.data(), b_packed.size(),
                      Dtype::I32);
    official.add_floats("mlp.down_proj.c", c_info.shape, c.data(), c.size(), Dtype::F32);
    const BitPlaneWeights read =
        io::read_bpdq_linear(SafetensorsReader::from_bytes(official.bytes()), "mlp.down_proj");
    EXPECT_EQ(read.codes, golden.codes);
    EXPECT_EQ(read.coeffs, golden.coeffs);
    EXPECT_EQ(read.group_size, golden.group_size);

    // Ours, written from the golden weights with F32 c, is that same file.
    SafetensorsWriter ours;
    io::add_bpdq_linear(ours, "mlp.down_proj", golden, Dtype::F32);
    EXPECT_EQ(ours.bytes(), official.bytes());

    // In bf16, as released models store c: exact planes, coefficients rounded.
    SafetensorsWriter bf16;
    io::add_bpdq_linear(bf16, "mlp.down_proj", golden, Dtype::BF16);
    const BitPlaneWeights back =
        io::read_bpdq_linear(SafetensorsReader::from_bytes(bf16.bytes()), "mlp.down_proj");
    EXPECT_EQ(back.codes, golden.codes);
    EXPECT_EQ(back.coeffs, stored(golden.coeffs, Dtype::BF16));
    // Each weight moves by at most 2^-8 of the sum of its coefficients' magnitudes.
    const MatrixF q = golden.dequantize(), q_bf16 = back.dequantize();
    for (Index r = 0; r < out; ++r)
      for (Index j = 0; j < in; ++j) {
        double bound = 0.0;
        for (int p = 0; p <= k; ++p) bound += std::abs(golden.coeff(j / golden.group_size, p, r));
        ASSERT_LE(std::abs(q_bf16(r, j) - q(r, j)), std::ldexp(bound, -8) + 1e-7) << r << ", " << j;
      }
  });
}

TEST(BpdqFormat, WriterRejectsWhatTheFormatCannotHold) {
  SafetensorsWriter writer;
  BitPlaneWeights w = random_planes(8, 64, 2, 32, 50);
  w.g_idx.assign(64, 0);
  for (int j = 0; j < 64; ++j) w.g_idx[std::size_t(j)] = (j % 2);
  test::expect_error_containing([&] { io::add_bpdq_linear(writer, "l", w); }, "'l' has a g_idx");
  test::expect_error_containing(
      [&] { io::add_bpdq_linear(writer, "l", random_planes(8, 40, 2, 20, 51)); },
      "in_features must be a multiple of 32");
  w = random_planes(8, 64, 2, 32, 52);
  w.coeffs(1, 3) = 1e5;
  test::expect_error_containing([&] { io::add_bpdq_linear(writer, "l", w, Dtype::F16); },
                                "'l.c': value 100000 is not finite when stored as F16");
  EXPECT_NO_THROW(io::add_bpdq_linear(writer, "l", w, Dtype::BF16));
  test::expect_error_containing([&] { io::add_bpdq_linear(writer, "m", w, Dtype::I8); },
                                "c is stored as BF16, F16 or F32, not I8");
}

TEST(BpdqFormat, ReaderNamesTheTensorAndTheMismatch) {
  const BitPlaneWeights w = random_planes(16, 64, 3, 32, 53);  // B [2, 3, 16], c [2, 4, 16]
  const io::PackedPlanes planes = io::pack_bpdq_planes(w);
  auto file = [&](std::vector<std::int64_t> b_shape, Dtype b_dtype,
                  std::vector<std::int64_t> c_shape, Dtype c_dtype, double fill = 0.01) {
    SafetensorsWriter writer;
    std::int64_t nb = 1, nc = 1;
    for (auto d : b_shape) nb *= d;
    for (auto d : c_shape) nc *= d;
    std::vector<std::int32_t> words(planes.words);
    words.resize(std::size_t(nb), 0);
    if (!b_shape.empty()) writer.add_ints("l.B", b_shape, words.data(), words.size(), b_dtype);
    std::vector<double> c(std::size_t(nc), fill);
    if (!c_shape.empty()) {
      if (io::is_float_dtype(c_dtype))
        writer.add_floats("l.c", c_shape, c.data(), c.size(), c_dtype);
      else
        writer.add_ints("l.c", c_shape, c.data(), c.size(), c_dtype);
    }
    return SafetensorsReader::from_bytes(writer.bytes(), "bad.safetensors");
  };
  EXPECT_NO_THROW(io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {2, 4, 16}, Dtype::BF16), "l"));
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {}, Dtype::F16), "l");
      },
      "bad.safetensors: tensor 'l.c' is missing");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({}, Dtype::I32, {2, 4, 16}, Dtype::F16), "l");
      },
      "tensor 'l.B' is missing");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I64, {2, 4, 16}, Dtype::F16), "l");
      },
      "'l.B' must be I32, is I64");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {2, 4, 16}, Dtype::I32), "l");
      },
      "'l.c' must have a float dtype");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {2, 3, 16}, Dtype::F16), "l");
      },
      "linear 'l': BPDQ tensor c: dim 1 is 3, expected k+1 = 4");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {2, 4, 8}, Dtype::F16), "l");
      },
      "linear 'l': BPDQ tensor c: dim 2 is 8, expected out = 16");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {3, 4, 16}, Dtype::F16), "l");
      },
      "3 groups do not divide in_features = 64");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16, 1}, Dtype::I32, {2, 4, 16}, Dtype::F16), "l");
      },
      "'l.B' must have rank 3");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 9, 16}, Dtype::I32, {2, 10, 16}, Dtype::F16), "l");
      },
      "planes (dim 1) must be 1..8, got 9");
  test::expect_error_containing(
      [&] {
        io::read_bpdq_linear(file({2, 3, 16}, Dtype::I32, {2, 4, 16}, Dtype::F32, std::nan("")),
                             "l");
      },
      "expected finite values");
}

}  // namespace
}  // namespace lowbit
