// lowbit/model/residual_stream.hpp: the calibration sequences' states in one
// span, in memory or in a scratch file, holding exactly the floats written
// (embed_stream gives embed_sequences' bits), with errors naming what is
// wrong.
#include <lowbit/model/residual_stream.hpp>

#include "model_fixtures.hpp"

namespace lowbit::model {
namespace {

TEST(ResidualStream, HoldsEachSequenceExactlyInMemoryOrInAScratchFile) {
  const Model m = test::tiny_model(9);
  const std::vector<Sequence> sequences{{1, 5, 7}, {2}, {3, 4, 8, 9, 10, 11, 12}};
  const std::vector<MatrixF> expected = embed_sequences(m, sequences);
  const test::TempDir dir;
  for (const std::string& scratch : {std::string(), dir.file("")}) {
    SCOPED_TRACE(scratch.empty() ? "in memory" : "in a scratch file");
    ResidualStream stream = embed_stream(m, sequences, {scratch});
    ASSERT_EQ(stream.sequences(), 3u);
    EXPECT_EQ(stream.tokens(), 11);
    EXPECT_EQ(stream.dim(), m.config.dim);
    for (std::size_t s = 0; s < sequences.size(); ++s) {
      const MatrixF x = stream.read(s);
      ASSERT_EQ(x.rows(), static_cast<Index>(sequences[s].size()));
      EXPECT_EQ(x, expected[s]) << s;  // bit for bit
    }
    // A write touches its own sequence only.
    const MatrixF changed = MatrixF::Constant(1, m.config.dim, -2.5f);
    stream.write(1, changed);
    EXPECT_EQ(stream.read(0), expected[0]);
    EXPECT_EQ(stream.read(1), changed);
    EXPECT_EQ(stream.read(2), expected[2]);
    // A copy of states given whole.
    const ResidualStream copy(expected, {scratch});
    for (std::size_t s = 0; s < sequences.size(); ++s) EXPECT_EQ(copy.read(s), expected[s]) << s;
  }
}

TEST(ResidualStream, RefusesMisuseNamingIt) {
  const test::TempDir dir;
  ResidualStream stream({2, 3}, 4);
  test::expect_error_containing([&] { stream.write(1, MatrixF::Zero(2, 4)); },
                                "sequence 1 is 3 x 4, got 2 x 4");
  test::expect_error_containing([&] { stream.read(2); }, "sequence 2 of 2");
  test::expect_error_containing([&] { ResidualStream({2, 0}, 4); }, "every sequence needs tokens");
  test::expect_error_containing(
      [&] {
        ResidualStream({2, 3}, 4, {dir.file("missing")});
      },
      "the residual stream of the calibration sequences (5 tokens x 4 floats): a scratch file in " +
          dir.file("missing"));
  test::expect_error_containing(
      [&] {
        ResidualStream(std::vector<MatrixF>{MatrixF::Zero(2, 4), MatrixF::Zero(1, 5)});
      },
      "different widths");
}

}  // namespace
}  // namespace lowbit::model
