// `lowbit quantize bpdq`: a golden case through the tool (the official payload
// B_packed and c at the API's tolerances), the output tensor contract, and
// misuse.
#include "bpdq_golden.hpp"

namespace lowbit {
namespace {

// The golden case's W and H (the reference's own H, normalized by tokens) and X.
std::string write_bpdq_case_input(const io::SafetensorsReader& f, const std::string& golden_dir,
                                  const std::string& path) {
  io::SafetensorsWriter in;
  in.add_matrix("W", test::golden_input(f, golden_dir, "W"));
  in.add_matrix("X", test::golden_input(f, golden_dir, "X"));
  in.add_matrix("H", test::golden_hessian(f, golden_dir).cast<float>());
  in.write(path);
  return path;
}

class CliBpdq : public test::ToolTest {
 protected:
  // One golden case through the tool, checked like the API's result.
  void check_case(const io::SafetensorsReader& f, const std::string& golden_dir) {
    const std::string in = write_bpdq_case_input(f, golden_dir, dir.file("in.safetensors"));
    const std::string out = dir.file("bpdq.safetensors");
    const std::string args = "quantize bpdq --in " + in + " --out " + out + " --planes " +
                             test::meta(f, "msbits") + " --group-size " +
                             test::meta(f, "group_size") + " --iters " + test::meta(f, "n_iters") +
                             (test::meta_bool(f, "act_group_aware_GAR") ? " --gar" : " --no-gar");
    const test::CommandResult r = lowbit(args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const io::SafetensorsReader result(out);
    const BitPlaneWeights ours =
        io::bitplanes_from_bpdq(result.info("B_packed").shape, result.ints("B_packed"),
                                result.info("c").shape, result.doubles("c"));
    const test::BpdqAgreement a = test::compare_with_golden(f, golden_dir, ours);
    test::expect_golden_agreement(a);
    // The contract: Q = [B, 1] c, and B is B_packed unpacked.
    EXPECT_LE(test::max_rel_diff(result.matrix("Q"), ours.dequantize()), 1e-6);
    const std::vector<std::int32_t> b = result.ints("B");
    ASSERT_EQ(b.size(), static_cast<std::size_t>(ours.planes * ours.rows() * ours.cols()));
    for (int p = 0; p < ours.planes; ++p)
      for (Index row = 0; row < ours.rows(); ++row)
        for (Index j = 0; j < ours.cols(); ++j)
          ASSERT_EQ(b[static_cast<std::size_t>((p * ours.rows() + row) * ours.cols() + j)],
                    (ours.codes(row, j) >> p) & 1);
    EXPECT_LE(test::max_rel_diff(result.matrix("init_scale8"), f.matrix("init_scale8")), 1e-5);
    EXPECT_EQ(result.contains("final_perm"), test::meta_bool(f, "act_group_aware_GAR"));
    EXPECT_EQ(result.metadata_value("planes"), test::meta(f, "msbits"));
  }
};

// One golden case (GAR on); every case runs through the library in test_bpdq.cpp.
TEST_F(CliBpdq, GoldenCaseThroughTheTool) {
  check_case(test::golden_case("bpdq_k3_g64_it5_garon"), test::bundled_golden_dir());
}

TEST_F(CliBpdq, XAloneGivesTheHessianAndAvgLoss) {
  io::SafetensorsWriter in;
  in.add_matrix("W", test::random_weights(16, 128, 4));
  in.add_matrix("X", test::random_activations(64, 128, 5));
  in.write(dir.file("in.safetensors"));
  const test::CommandResult r =
      lowbit("quantize bpdq --in " + dir.file("in.safetensors") + " --out " +
             dir.file("out.safetensors") + " --planes 3 --iters 2 --group-size 32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const io::SafetensorsReader out(dir.file("out.safetensors"));
  EXPECT_EQ(out.info("B").shape, (std::vector<std::int64_t>{3, 16, 128}));
  EXPECT_EQ(out.info("c").shape, (std::vector<std::int64_t>{4, 4, 16}));
  EXPECT_EQ(out.info("B_packed").shape, (std::vector<std::int64_t>{4, 3, 16}));
  EXPECT_TRUE(out.metadata_value("avg_loss").has_value());
}

TEST_F(CliBpdq, MisuseGetsClearErrors) {
  io::SafetensorsWriter in;
  in.add_matrix("W", test::random_weights(8, 128, 1));
  in.add_matrix("X", test::random_activations(32, 128, 2));
  in.write(dir.file("in.safetensors"));
  io::SafetensorsWriter w_only;
  w_only.add_matrix("W", test::random_weights(8, 128, 1));
  w_only.write(dir.file("w_only.safetensors"));
  const std::string base =
      "quantize bpdq --in " + dir.file("in.safetensors") + " --out " + dir.file("o.safetensors");
  struct Case {
    std::string args;
    int exit_code;
    std::string text;
  };
  for (const Case& c : std::vector<Case>{
           {base + " --planes 5", 2, "option --planes: expected an integer in 1..4"},
           {base + " --planes 0", 2, "option --planes: expected an integer in 1..4"},
           {base + " --group-size 48", 1, "BpdqConfig::group_size"},
           {base + " --iters 0", 2, "option --iters: expected"},
           {base + " --gar --no-gar", 2, "conflict"},
           {base + " --bits 4", 2, "does not apply"},
           {"quantize bpdq --in " + dir.file("w_only.safetensors") + " --out " +
                dir.file("o.safetensors"),
            2, "'H'"},
       }) {
    const test::CommandResult r = lowbit(c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.text), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace lowbit
