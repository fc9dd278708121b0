// lowbit/io/awq_format.hpp: AutoAWQ's GEMM layout. A hand-made linear lands
// in the words the published layout spells (written out below by hand: field
// i of a word holds output 8c + {0, 2, 4, 6, 1, 3, 5, 7}[i]), zero points of
// 0 and 15 included; it reads back exactly through a safetensors file; and
// every inconsistent tensor is refused by name.
#include <gtest/gtest.h>

#include <lowbit/io/awq_format.hpp>

namespace lowbit::io {
namespace {

// 16 outputs x 4 inputs in 2 groups of 2: code(r, j) = (r + j) % 8; group 0
// has zero 15 - r % 8, group 1 zero r % 8; scale 0.5 (r + 1) + g.
UniformWeights hand_made() {
  UniformWeights w;
  w.bits = 4;
  w.group_size = 2;
  w.codes.resize(16, 4);
  w.scale.resize(2, 16);
  w.zero.resize(2, 16);
  for (Index r = 0; r < 16; ++r) {
    for (Index j = 0; j < 4; ++j) w.codes(r, j) = std::uint8_t((r + j) % 8);
    for (Index g = 0; g < 2; ++g) w.scale(g, r) = 0.5f * float(r + 1) + float(g);
    w.zero(0, r) = float(15 - r % 8);
    w.zero(1, r) = float(r % 8);
  }
  return w;
}

// The word of outputs 8c..8c+7 (the same for c = 0 and 1 here), per input j:
// fields 0..7 hold (j + {0, 2, 4, 6, 1, 3, 5, 7}) % 8, field 7 the top nibble.
const std::uint32_t kCodeWords[4] = {0x75316420u, 0x06427531u, 0x17530642u, 0x20641753u};
const std::uint32_t kZeroWords[2] = {0x8ACE9BDFu, 0x75316420u};  // 15 - value, value

TEST(AwqFormat, HandMadeLinearInTheGemmLayout) {
  const UniformWeights w = hand_made();
  const AwqTensors t = pack_awq(w);
  EXPECT_EQ(t.qweight_shape(), (std::vector<std::int64_t>{4, 2}));
  EXPECT_EQ(t.qzeros_shape(), (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(t.scales_shape(), (std::vector<std::int64_t>{2, 16}));
  for (std::size_t j = 0; j < 4; ++j)
    for (std::size_t c = 0; c < 2; ++c)
      EXPECT_EQ(std::uint32_t(t.qweight[j * 2 + c]), kCodeWords[j]) << "input " << j;
  for (std::size_t g = 0; g < 2; ++g)
    for (std::size_t c = 0; c < 2; ++c)
      EXPECT_EQ(std::uint32_t(t.qzeros[g * 2 + c]), kZeroWords[g]) << "group " << g;
  EXPECT_EQ(t.scales[17], 2.0f);  // group 1, output 1

  SafetensorsWriter out;
  add_awq_tensors(out, "model.layers.0.mlp.up_proj", t);
  const SafetensorsReader file = SafetensorsReader::from_bytes(out.bytes(), "awq.safetensors");
  EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.qweight").dtype, Dtype::I32);
  EXPECT_EQ(file.info("model.layers.0.mlp.up_proj.scales").dtype, Dtype::F16);
  const UniformWeights back = read_awq_linear(file, "model.layers.0.mlp.up_proj");
  EXPECT_EQ(back.codes, w.codes);
  EXPECT_EQ(back.zero, w.zero);
  EXPECT_EQ(back.scale, w.scale);
  EXPECT_EQ(back.group_size, 2);
  EXPECT_TRUE(back.g_idx.empty());
  // AutoAWQ's dequantization: (code - zero) * scale per (group, output).
  EXPECT_EQ(back.dequantize()(9, 3), (4.0f - 1.0f) * 6.0f);  // code 12 % 8, zero 9 % 8
}

TEST(AwqFormat, RefusesWhatTheLayoutCannotHold) {
  UniformWeights w = hand_made();
  w.bits = 3;
  EXPECT_THROW(pack_awq(w), Error);
  w = hand_made();
  w.g_idx = {1, 0, 1, 0};
  EXPECT_THROW(pack_awq(w), Error);
  w = hand_made();
  w.scale(0, 3) = 1e6f;
  EXPECT_THROW(pack_awq(w), Error);
  w = hand_made();
  w.codes.conservativeResize(12, 4);
  w.scale.conservativeResize(2, 12);
  w.zero.conservativeResize(2, 12);
  EXPECT_THROW(pack_awq(w), Error);

  auto message = [](const SafetensorsWriter& out) {
    const SafetensorsReader file = SafetensorsReader::from_bytes(out.bytes(), "bad.safetensors");
    try {
      read_awq_linear(file, "l");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const AwqTensors t = pack_awq(hand_made());
  const std::vector<std::int32_t> words(6, 0);
  SafetensorsWriter short_zeros;
  short_zeros.add_ints("l.qweight", t.qweight_shape(), t.qweight.data(), t.qweight.size(),
                       Dtype::I32);
  short_zeros.add_ints("l.qzeros", {2, 3}, words.data(), 6, Dtype::I32);
  short_zeros.add_floats("l.scales", t.scales_shape(), t.scales.data(), t.scales.size(),
                         Dtype::F16);
  EXPECT_NE(message(short_zeros).find("l.qzeros"), std::string::npos) << message(short_zeros);
  SafetensorsWriter no_scales;
  no_scales.add_ints("l.qweight", t.qweight_shape(), t.qweight.data(), t.qweight.size(),
                     Dtype::I32);
  no_scales.add_ints("l.qzeros", t.qzeros_shape(), t.qzeros.data(), t.qzeros.size(), Dtype::I32);
  EXPECT_NE(message(no_scales).find("l.scales"), std::string::npos) << message(no_scales);
  SafetensorsWriter three_groups;
  const std::vector<float> scales(48, 1.0f);
  const std::vector<std::int32_t> zeros(6, 0);
  three_groups.add_ints("l.qweight", t.qweight_shape(), t.qweight.data(), t.qweight.size(),
                        Dtype::I32);
  three_groups.add_ints("l.qzeros", {3, 2}, zeros.data(), zeros.size(), Dtype::I32);
  three_groups.add_floats("l.scales", {3, 16}, scales.data(), scales.size(), Dtype::F16);
  EXPECT_NE(message(three_groups).find("3 groups do not divide in_features = 4"), std::string::npos)
      << message(three_groups);
}

}  // namespace
}  // namespace lowbit::io
