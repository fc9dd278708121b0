// io/ggml_blocks.hpp: ggml's block bytes. Blocks built by hand from the
// block_* structs of ggml-common.h, the K-quant layouts decoded here the way
// ggml's dequantize_row_* loops read them (on random bytes, so every bit
// pattern), lossless round trips, and hostile bytes.
#include <lowbit/io/ggml_blocks.hpp>

#include <random>

#include "ggml_golden.hpp"

namespace lowbit {
namespace {

using Bytes = std::vector<std::uint8_t>;

GgmlWeights unpack(GgmlType type, const Bytes& bytes, Index rows = 1) {
  const Index cols = static_cast<Index>(bytes.size() / static_cast<std::size_t>(rows)) /
                     static_cast<Index>(ggml_type_traits(type).type_size) *
                     ggml_block_format(type).block;
  return io::unpack_ggml_blocks(type, rows, cols, bytes.data(), bytes.size(), "test");
}

Bytes random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (std::uint8_t& v : b) v = static_cast<std::uint8_t>(rng());
  return b;
}

// Random blocks with finite fp16 fields: clears an exponent bit of every d / dmin.
Bytes random_blocks(GgmlType type, Index blocks, unsigned seed) {
  const std::size_t size = ggml_type_traits(type).type_size;
  Bytes b = random_bytes(size * static_cast<std::size_t>(blocks), seed);
  for (Index k = 0; k < blocks; ++k)  // every type keeps d and dmin at one of these offsets
    for (std::size_t at : {std::size_t{0}, std::size_t{2}, size - 4, size - 2})
      b[static_cast<std::size_t>(k) * size + at + 1] &= 0xBF;  // Inf and NaN need bit 14
  return b;
}

TEST(GgmlBlocks, LegacyBlocksAsTheStructsDefineThem) {
  // block_q4_0 {fp16 d; qs[16]}: element j in the low nibble of qs[j], j + 16 in the high one.
  Bytes q4_0{0x00, 0x38};  // d = 0.5
  for (int j = 0; j < 16; ++j) q4_0.push_back(static_cast<std::uint8_t>(j | (15 - j) << 4));
  const GgmlWeights a = unpack(GgmlType::q4_0, q4_0);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(a.codes(0, j), j);
    EXPECT_EQ(a.codes(0, j + 16), 15 - j);
    EXPECT_EQ(a.dequantize()(0, j), 0.5f * static_cast<float>(j - 8));
  }
  // block_q5_1 {fp16 d, m; qh[4]; qs[16]}: bit 4 of element j is bit j of qh (little-endian).
  Bytes q5_1{0x00, 0x3C, 0x00, 0xBC, 0x01, 0x00, 0x00, 0x80};  // d = 1, m = -1, qh = bits 0 and 31
  for (int j = 0; j < 16; ++j) q5_1.push_back(0x21);
  const GgmlWeights b = unpack(GgmlType::q5_1, q5_1);
  const MatrixF bd = b.dequantize();
  EXPECT_EQ(b.codes(0, 0), 17);
  EXPECT_EQ(b.codes(0, 15), 1);
  EXPECT_EQ(b.codes(0, 16), 2);
  EXPECT_EQ(b.codes(0, 31), 18);
  EXPECT_EQ(bd(0, 0), 16.0f);
  EXPECT_EQ(bd(0, 31), 17.0f);
  // block_q8_0 {fp16 d; int8 qs[32]}: codes are the int8 + 128.
  Bytes q8_0{0x00, 0x40};  // d = 2
  for (int j = 0; j < 32; ++j)
    q8_0.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j * 8 - 128)));
  const GgmlWeights c = unpack(GgmlType::q8_0, q8_0);
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(c.codes(0, j), j * 8);
    EXPECT_EQ(c.dequantize()(0, j), 2.0f * static_cast<float>(j * 8 - 128));
  }
  // block_iq4_nl {fp16 d; qs[16]}: codes index kvalues_iq4nl.
  Bytes iq4{0x00, 0x3C};
  for (int j = 0; j < 16; ++j) iq4.push_back(static_cast<std::uint8_t>(j | (j << 4)));
  const MatrixF e = unpack(GgmlType::iq4_nl, iq4).dequantize();
  const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                            1,    13,   25,  38,  53,  69,  89,  113};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(e(0, j), levels[j]);
}

TEST(GgmlBlocks, TernaryBlocksKeepTheReservedCode) {
  // block_tq2_0 {qs[64]; fp16 d}: four 32-element quarters share each byte of a 128-half.
  Bytes tq(66, 0);
  tq[64] = 0x00;
  tq[65] = 0x3C;       // d = 1
  tq[0] = 0b11100100;  // elements 0, 32, 64, 96: codes 0, 1, 2, 3
  tq[32] = 0x02;       // element 128: code 2
  const GgmlWeights w = unpack(GgmlType::tq2_0, tq);
  const MatrixF d = w.dequantize();
  EXPECT_EQ(d(0, 0), -1.0f);
  EXPECT_EQ(d(0, 32), 0.0f);
  EXPECT_EQ(d(0, 64), 1.0f);
  EXPECT_EQ(d(0, 96), 2.0f);  // code 3 is never written, but ggml decodes it as 2 d
  EXPECT_EQ(d(0, 128), 1.0f);
}

// Codes and sub-block scales of one K-quant block read the way ggml's
// dequantize_row_* loops read them.
struct KBlock {
  int codes[256];
  int scales[16];
  int mins[16];
};

KBlock q2_k_reference(const std::uint8_t* b) {  // scales[16], qs[64], d, dmin
  KBlock k{};
  for (int j = 0; j < 16; ++j) {
    k.scales[j] = b[j] & 0xF;
    k.mins[j] = b[j] >> 4;
  }
  for (int n = 0, y = 0; n < 2; ++n)
    for (int shift = 0; shift < 8; shift += 2)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 16; ++l) k.codes[y++] = (b[16 + 32 * n + 16 * half + l] >> shift) & 3;
  return k;
}

KBlock q3_k_reference(const std::uint8_t* b) {  // hmask[32], qs[64], scales[12], d
  KBlock k{};
  std::uint32_t aux[4];
  std::memcpy(aux, b + 96, 12);
  const std::uint32_t tmp = aux[2], m1 = 0x03030303, m2 = 0x0f0f0f0f;
  aux[2] = ((aux[0] >> 4) & m2) | (((tmp >> 4) & m1) << 4);
  aux[3] = ((aux[1] >> 4) & m2) | (((tmp >> 6) & m1) << 4);
  aux[0] = (aux[0] & m2) | (((tmp >> 0) & m1) << 4);
  aux[1] = (aux[1] & m2) | (((tmp >> 2) & m1) << 4);
  for (int j = 0; j < 16; ++j) k.scales[j] = reinterpret_cast<const std::int8_t*>(aux)[j] - 32;
  int y = 0, m = 1;
  for (int n = 0; n < 2; ++n)
    for (int shift = 0; shift < 8; shift += 2, m <<= 1)
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * half + l;
          k.codes[y++] = ((b[32 + 32 * n + i] >> shift) & 3) + ((b[i] & m) ? 4 : 0);
        }
  return k;
}

KBlock q5_k_reference(const std::uint8_t* b) {  // d, dmin, scales[12], qh[32], qs[128]
  KBlock k{};
  const std::uint8_t* q = b + 4;
  for (int j = 0; j < 8; ++j) {
    k.scales[j] = j < 4 ? q[j] & 63 : (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    k.mins[j] = j < 4 ? q[j + 4] & 63 : (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
  int y = 0;
  for (int n = 0, u1 = 1, u2 = 2; n < 4; ++n, u1 <<= 2, u2 <<= 2) {
    for (int l = 0; l < 32; ++l)
      k.codes[y++] = (b[48 + 32 * n + l] & 0xF) + ((b[16 + l] & u1) ? 16 : 0);
    for (int l = 0; l < 32; ++l)
      k.codes[y++] = (b[48 + 32 * n + l] >> 4) + ((b[16 + l] & u2) ? 16 : 0);
  }
  return k;
}

KBlock q6_k_reference(const std::uint8_t* b) {  // ql[128], qh[64], int8 scales[16], d
  KBlock k{};
  for (int j = 0; j < 16; ++j) k.scales[j] = static_cast<std::int8_t>(b[192 + j]);
  for (int n = 0; n < 2; ++n)
    for (int l = 0; l < 32; ++l) {
      const std::uint8_t *ql = b + 64 * n, *qh = b + 128 + 32 * n;
      k.codes[128 * n + l] = (ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4);
      k.codes[128 * n + l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
      k.codes[128 * n + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
      k.codes[128 * n + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
    }
  return k;
}

TEST(GgmlBlocks, KQuantLayoutsAsGgmlDequantizationReadsThem) {
  const std::pair<GgmlType, KBlock (*)(const std::uint8_t*)> cases[] = {
      {GgmlType::q2_k, q2_k_reference},
      {GgmlType::q3_k, q3_k_reference},
      {GgmlType::q5_k, q5_k_reference},
      {GgmlType::q6_k, q6_k_reference}};
  for (const auto& [type, reference] : cases) {
    SCOPED_TRACE(ggml_type_name(type));
    const Bytes bytes = random_blocks(type, 8, 11);
    const GgmlWeights w = unpack(type, bytes);
    const GgmlBlockFormat& f = ggml_block_format(type);
    for (Index blk = 0; blk < 8; ++blk) {
      const KBlock k =
          reference(bytes.data() + blk * static_cast<Index>(ggml_type_traits(type).type_size));
      for (Index i = 0; i < 256; ++i)
        ASSERT_EQ(w.codes(0, 256 * blk + i), k.codes[i]) << "block " << blk << " weight " << i;
      const Index subs = 256 / f.sub_block;
      for (Index s = 0; s < subs; ++s) {
        ASSERT_EQ(w.sub_scales(0, subs * blk + s), k.scales[s])
            << "block " << blk << " sub-block " << s;
        if (f.sub_mins) {
          ASSERT_EQ(w.sub_mins(0, subs * blk + s), k.mins[s]);
        }
      }
    }
  }
}

TEST(GgmlBlocks, EveryBitPatternRoundTrips) {
  for (const GgmlBlockFormat& f : detail::kGgmlBlockFormats) {
    SCOPED_TRACE(ggml_type_name(f.type));
    const Bytes bytes = random_blocks(f.type, 3 * 256 / f.block * 2, 5);
    const GgmlWeights w = unpack(f.type, bytes, 3);
    EXPECT_EQ(w.rows(), 3);
    EXPECT_EQ(io::pack_ggml_blocks(w), bytes);
  }
}

TEST(GgmlBlocks, GoldenBytesRoundTrip) {
  test::for_each_gguf_golden(false, [](const io::GgufReader& golden) {
    for (const io::GgufTensorInfo& t : golden.tensors()) {
      if (!find_ggml_block_format(t.type)) continue;
      const unsigned char* p = golden.data(t.name);
      EXPECT_EQ(io::pack_ggml_blocks(golden.blocks(t.name)), Bytes(p, p + t.bytes)) << t.name;
    }
  });
}

TEST(GgmlBlocks, HostileBytesAreRejected) {
  Bytes q4(18, 0);
  auto message = [](auto&& action) {
    try {
      action();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              io::unpack_ggml_blocks(GgmlType::q4_0, 1, 32, q4.data(), 17, "w.gguf");
            }).find("w.gguf: 1 x 32 q4_0 weights take 18 bytes, got 17"),
            std::string::npos);
  EXPECT_NE(message([&] {
              io::unpack_ggml_blocks(GgmlType::q4_0, 1, 48, q4.data(), 18, "w");
            }).find("multiple of 32"),
            std::string::npos);
  EXPECT_NE(message([&] {
              io::unpack_ggml_blocks(GgmlType::iq2_xxs, 1, 256, q4.data(), 66, "w");
            }).find("not a block type lowbit encodes"),
            std::string::npos);
  q4[1] = 0x7C;  // d = +Inf
  EXPECT_NE(message([&] {
              io::unpack_ggml_blocks(GgmlType::q4_0, 1, 32, q4.data(), 18, "w.gguf");
            }).find("w.gguf: row 0 block 0 of q4_0 has a non-finite d or dmin"),
            std::string::npos);
  Bytes q2(84, 0);
  q2[83] = 0xFE;  // dmin = NaN
  EXPECT_THROW(io::unpack_ggml_blocks(GgmlType::q2_k, 1, 256, q2.data(), 84, "w"), Error);
}

}  // namespace
}  // namespace lowbit
