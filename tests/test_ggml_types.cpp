// core/ggml_types.hpp: ggml's type ids, names and block sizes.
#include <lowbit/core/ggml_types.hpp>

#include "test_support.hpp"

namespace lowbit {
namespace {

TEST(GgmlTypes, BlockSizesFollowTheBlockStructs) {
  // sizeof(block_*) from the fields of ggml-common.h (fp16 = 2 bytes, QK_K = 256).
  const std::pair<GgmlType, std::size_t> sizes[] = {{GgmlType::q4_0, 2 + 16},
                                                    {GgmlType::q4_1, 4 + 16},
                                                    {GgmlType::q5_0, 2 + 4 + 16},
                                                    {GgmlType::q5_1, 4 + 4 + 16},
                                                    {GgmlType::q8_0, 2 + 32},
                                                    {GgmlType::q2_k, 16 + 64 + 4},
                                                    {GgmlType::q3_k, 32 + 64 + 12 + 2},
                                                    {GgmlType::q4_k, 4 + 12 + 128},
                                                    {GgmlType::q5_k, 4 + 12 + 32 + 128},
                                                    {GgmlType::q6_k, 128 + 64 + 16 + 2},
                                                    {GgmlType::tq2_0, 64 + 2},
                                                    {GgmlType::iq4_nl, 2 + 16},
                                                    {GgmlType::q8_k, 4 + 256 + 32},
                                                    {GgmlType::iq4_xs, 2 + 2 + 4 + 128},
                                                    {GgmlType::f16, 2},
                                                    {GgmlType::bf16, 2},
                                                    {GgmlType::f64, 8}};
  for (const auto& [type, bytes] : sizes)
    EXPECT_EQ(ggml_type_traits(type).type_size, bytes) << ggml_type_name(type);
  for (const GgmlBlockFormat& f : detail::kGgmlBlockFormats) {
    EXPECT_EQ(ggml_type_traits(f.type).block_size, f.block) << ggml_type_name(f.type);
    EXPECT_EQ(f.block % f.sub_block, 0) << ggml_type_name(f.type);
  }
  EXPECT_EQ(ggml_row_bytes(GgmlType::q4_k, 4096), 16u * 144u);
  EXPECT_THROW(ggml_row_bytes(GgmlType::q4_k, 100), Error);
}

TEST(GgmlTypes, IdsAndNamesAreGgmls) {
  EXPECT_EQ(static_cast<int>(GgmlType::q4_k), 12);
  EXPECT_EQ(static_cast<int>(GgmlType::tq2_0), 35);
  EXPECT_EQ(static_cast<int>(GgmlType::iq4_nl), 20);
  EXPECT_STREQ(ggml_type_name(GgmlType::q6_k), "q6_K");
  EXPECT_EQ(parse_ggml_type("Q4_K"), GgmlType::q4_k);
  EXPECT_EQ(parse_ggml_type("q4_k"), GgmlType::q4_k);
  EXPECT_EQ(parse_ggml_type("bf16"), GgmlType::bf16);
  EXPECT_FALSE(parse_ggml_type("q4_2").has_value());
  EXPECT_FALSE(parse_ggml_type("q4_").has_value());
  EXPECT_FALSE(find_ggml_type(4).has_value());  // q4_2, removed from ggml
  EXPECT_FALSE(find_ggml_type(43).has_value());
  EXPECT_EQ(find_ggml_type(41)->name, std::string("q1_0"));
  EXPECT_EQ(find_ggml_block_format(GgmlType::iq2_xxs), nullptr);
  EXPECT_THROW(ggml_block_format(GgmlType::f32), Error);
}

}  // namespace
}  // namespace lowbit
