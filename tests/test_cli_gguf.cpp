// `lowbit gguf info` and `lowbit gguf dequantize` on the GGUF file ggml itself
// wrote (tests/data/golden/gguf): every block tensor decodes to exactly what
// ggml's own dequantization stored beside it.
#include <lowbit/io/gguf.hpp>

#include "ggml_golden.hpp"
#include "test_support.hpp"

namespace lowbit {
namespace {

class CliGguf : public test::ToolTest {};

TEST_F(CliGguf, DequantizeIsGgmlsOwnDecoding) {
  const std::string out = dir.file("deq.safetensors");
  const test::CommandResult r =
      lowbit("gguf dequantize --in " + test::bundled_gguf_golden() + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::GgufReader golden(test::bundled_gguf_golden());
  const io::SafetensorsReader result(out);
  EXPECT_EQ(result.names().size(), golden.tensors().size());
  int compared = 0;
  for (GgmlType type : test::golden_block_types(golden))
    for (const auto& [q, deq] : {std::pair{"q", "deq"}, std::pair{"qi", "deqi"}}) {
      const std::string name = test::golden_name(type, q);
      if (!golden.contains_tensor(name)) continue;
      SCOPED_TRACE(name);
      EXPECT_EQ(result.info(name).shape, (std::vector<std::int64_t>{16, 512}));
      EXPECT_TRUE(
          test::same_bits(result.matrix(name), golden.matrix(test::golden_name(type, deq))));
      ++compared;
    }
  EXPECT_EQ(compared, 23);  // twelve types, eleven with the importance matrix too
  EXPECT_EQ(result.metadata_value("general.architecture"),
            golden.get<std::string>("general.architecture"));
  EXPECT_EQ(result.metadata_value("test.str"), golden.get<std::string>("test.str"));
  EXPECT_EQ(result.metadata_value("test.bool"),
            std::string(golden.get<bool>("test.bool") ? "true" : "false"));
  EXPECT_EQ(std::stoll(*result.metadata_value("test.i64")), golden.get<std::int64_t>("test.i64"));
}

TEST_F(CliGguf, InfoListsEveryKeyAndTensor) {
  const test::CommandResult r = lowbit("gguf info " + test::bundled_gguf_golden());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::GgufReader golden(test::bundled_gguf_golden());
  EXPECT_NE(r.output.find("GGUF v3, alignment 32"), std::string::npos) << r.output;
  for (const std::string& key : golden.keys())
    EXPECT_NE(r.output.find("  " + key + " (" + golden.value(key).type_string() + ") = "),
              std::string::npos)
        << key;
  for (const io::GgufTensorInfo& t : golden.tensors())
    EXPECT_NE(
        r.output.find("  tensor " + t.name + " " + ggml_type_name(t.type) + " " + t.shape_string()),
        std::string::npos)
        << t.name;
}

TEST_F(CliGguf, MisuseAndBadFilesSayWhy) {
  const std::string out = dir.file("out.safetensors");
  const std::string hostile = test::test_data_dir() + "/gguf_hostile/alignment_zero.gguf";
  struct Case {
    std::string args;
    int exit_code;
    std::string message;
  };
  const std::vector<Case> cases{
      {"gguf", 2, "gguf: missing its command, info, dequantize or logits"},
      {"gguf --in x.gguf", 2, "gguf: missing its command"},
      {"gguf frob x.gguf", 2, "unknown command 'gguf frob'"},
      {"gguf dequantize --in " + test::bundled_gguf_golden(), 2, "missing required option --out"},
      {"gguf info " + dir.file("absent.gguf"), 1, "absent.gguf"},
      {"gguf dequantize --in " + hostile + " --out " + out, 1, "alignment_zero.gguf"},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit
