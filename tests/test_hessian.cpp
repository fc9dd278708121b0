// core/hessian.hpp: the damped inverse-Hessian factor against the reference
// Hinv stored in the golden GPTQ and BPDQ files, its defining property, the
// damping escalation, and the prologue GPTQ and BPDQ share.
#include <algorithm>
#include <lowbit/core/column_order.hpp>
#include <lowbit/core/hessian.hpp>
#include <random>

#include "test_support.hpp"

namespace lowbit {
namespace {

// The references' treatment of dead inputs: H[d, d] = 1 where it is 0.
MatrixD with_dead_diagonal_set(MatrixD h) {
  for (Index i = 0; i < h.rows(); ++i)
    if (h(i, i) == 0) h(i, i) = 1;
  return h;
}

void check_reference_hinv(const io::SafetensorsReader& f, double percdamp) {
  MatrixD h = with_dead_diagonal_set(f.matrix_d("H"));
  if (f.contains("perm")) h = permute_symmetric(h, f.ints("perm"));
  if (f.contains("final_perm")) h = permute_symmetric(h, f.ints("final_perm"));
  DampingConfig config;
  config.percdamp = percdamp;
  const InverseHessian inverse = inverse_hessian_factor(h, config);
  EXPECT_EQ(inverse.failed_factorizations, 0);
  EXPECT_EQ(inverse.percdamp, percdamp);
  const MatrixD expected = f.matrix_d("Hinv");
  EXPECT_LE(test::max_rel_diff(inverse.factor, expected), 1e-5);
}

TEST(HessianGolden, GptqHinvMatchesTheReference) {
  test::for_each_golden("gptq_", true, [](const io::SafetensorsReader& f, const std::string&) {
    check_reference_hinv(f, test::meta_double(f, "percdamp"));
  });
}

TEST(HessianGolden, BpdqHinvMatchesTheReference) {
  test::for_each_golden("bpdq_", true, [](const io::SafetensorsReader& f, const std::string&) {
    check_reference_hinv(f, test::meta_double(f, "damp_used"));
  });
}

MatrixD random_hessian(Index n, unsigned seed) {
  const MatrixD x = test::random_activations(4 * n, n, seed).cast<double>();
  return 2.0 / static_cast<double>(x.rows()) * x.transpose() * x;
}

TEST(Hessian, FactorIsTheUpperCholeskyFactorOfTheDampedInverse) {
  for (Index n : {1, 2, 7, 64, 129}) {
    const MatrixD h = random_hessian(n, 81 + static_cast<unsigned>(n));
    const InverseHessian inverse = inverse_hessian_factor(h);
    const MatrixD& u = inverse.factor;
    EXPECT_TRUE(u.isUpperTriangular(0)) << n;
    EXPECT_TRUE((u.diagonal().array() > 0).all()) << n;
    MatrixD damped = h;
    damped.diagonal().array() += 0.01 * h.diagonal().mean();
    EXPECT_LE((u.transpose() * u * damped - MatrixD::Identity(n, n)).cwiseAbs().maxCoeff(), 1e-9)
        << n;
  }
}

TEST(Hessian, TriangularInverseInChunks) {
  for (Index n : {1, 64, 65, 600}) {  // 600: products split into chunks of 256
    MatrixD l = test::random_weights(n, n, 83, 0.1f).cast<double>().triangularView<Eigen::Lower>();
    l.diagonal().array() = 1.0 + l.diagonal().array().abs();
    MatrixD inverse = l;
    const int saved = Eigen::nbThreads();
    Eigen::setNbThreads(2);
    detail::invert_lower_triangular(inverse);
    Eigen::setNbThreads(saved);
    EXPECT_TRUE(inverse.isLowerTriangular(0)) << n;
    EXPECT_LE((l * inverse - MatrixD::Identity(n, n)).cwiseAbs().maxCoeff(), 1e-12) << n;
  }
}

TEST(HessianPrologue, DeadColumnsOrderAndFactor) {
  MatrixD h = random_hessian(70, 82);
  for (Index d : {2, 41}) h.row(d).setZero(), h.col(d).setZero();
  const MatrixF original = test::random_weights(5, 70, 84);
  MatrixF w = original;
  MatrixD seen;
  DampingConfig damping;
  damping.percdamp = 0.05;
  const detail::HessianPrologue p =
      detail::hessian_prologue(h, w, damping, [&](const MatrixD& fixed) {
        seen = fixed;
        return act_order_permutation(fixed);
      });
  // Dead inputs: listed, their weights zeroed, a unit diagonal before the order is chosen.
  EXPECT_EQ(p.report.dead_columns, (std::vector<Index>{2, 41}));
  EXPECT_TRUE(w.col(2).isZero() && w.col(41).isZero());
  MatrixF expected_w = original;
  expected_w.col(2).setZero();
  expected_w.col(41).setZero();
  EXPECT_EQ(w, expected_w);
  EXPECT_EQ(seen, with_dead_diagonal_set(h));
  // The order chosen on that H, and the factor of H in that order, rounded to float.
  EXPECT_EQ(p.report.column_order, act_order_permutation(seen));
  const InverseHessian inverse =
      inverse_hessian_factor(permute_symmetric(seen, p.report.column_order), damping);
  EXPECT_EQ(p.factor, MatrixF(inverse.factor.cast<float>()));
  EXPECT_EQ(p.report.percdamp, 0.05);
  EXPECT_EQ(p.report.failed_factorizations, 0);
  EXPECT_EQ(p.report.diagonal_floor, 0.0);
  // No order: the original one, reported as empty.
  w = original;
  const detail::HessianPrologue plain =
      detail::hessian_prologue(h, w, damping, [](const MatrixD&) { return Permutation(); });
  EXPECT_TRUE(plain.report.column_order.empty());
  EXPECT_EQ(plain.factor, MatrixF(inverse_hessian_factor(seen, damping).factor.cast<float>()));
}

TEST(HessianPrologue, RejectsAnAsymmetricOrMisshapenH) {
  const MatrixD h = random_hessian(8, 85);
  EXPECT_NO_THROW(detail::validate_hessian(h, 8, "test"));
  MatrixD asymmetric = h;
  asymmetric(1, 6) += 1;
  try {
    detail::validate_hessian(asymmetric, 8, "test");
    FAIL() << "an asymmetric H was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("test: H must be symmetric"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(detail::validate_hessian(h, 9, "test"), Error);
  MatrixD nan_h = h;
  nan_h(3, 3) = NAN;
  EXPECT_THROW(detail::validate_hessian(nan_h, 8, "test"), Error);
}

TEST(Hessian, DampingRisesUntilTheFactorizationSucceeds) {
  // Eigenvalues 3.01 and -0.51 on a diagonal of 1.25: needs damping > 0.408 of the mean,
  // reached at the 41st step 0.01, 0.02, ..., 0.41.
  MatrixD h(2, 2);
  h << 1.25, 1.76, 1.76, 1.25;
  const InverseHessian inverse = inverse_hessian_factor(h);
  EXPECT_GT(inverse.percdamp, 0.408);
  EXPECT_LT(inverse.percdamp, 0.42);
  EXPECT_EQ(inverse.diagonal_floor, 0.0);
  // GPTQModel's schedule, step by step: the bisection lands on the same damping, bit for bit,
  // and its factor is that damping's.
  double linear = 0.01;
  for (; linear < 1; linear += 0.01) {
    MatrixD damped = h;
    damped.diagonal().array() += linear * h.diagonal().mean();
    if (Eigen::LLT<MatrixD>(damped).info() == Eigen::Success) break;
  }
  EXPECT_EQ(inverse.percdamp, linear);
  MatrixD damped = h;
  damped.diagonal().array() += linear * h.diagonal().mean();
  EXPECT_LT((inverse.factor.transpose() * inverse.factor * damped - MatrixD::Identity(2, 2))
                .cwiseAbs()
                .maxCoeff(),
            1e-9);
  // The first and last steps, then a bisection over the 99: far fewer than 40 failures.
  EXPECT_GE(inverse.failed_factorizations, 1);
  EXPECT_LE(inverse.failed_factorizations, 8);
  // Without escalation it fails straight away and falls through to diagonal floors,
  // which cannot fix an indefinite off-diagonal structure of this size.
  DampingConfig strict;
  strict.increment = 0;
  EXPECT_THROW(inverse_hessian_factor(h, strict), Error);
}

// An H no damping below 1 nor any diagonal floor repairs: the search gives up after two
// factorizations per floor (the first and the last damping), not one per damping step.
TEST(Hessian, AnIrreparableHGivesUpAfterBoundedTries) {
  MatrixD h(3, 3);
  h << 1, 3, 0, 3, 1, 0, 0, 0, 1;  // eigenvalue -2 against a mean diagonal of 1
  try {
    inverse_hessian_factor(h);
    FAIL() << "an indefinite H was factorized";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("not positive definite"), std::string::npos) << message;
    EXPECT_NE(message.find("(14 factorizations tried)"), std::string::npos) << message;
  }
  DampingConfig bad;
  bad.increment = 1e-9;  // a billion steps: refused, not run
  test::expect_error_containing([&] { inverse_hessian_factor(h, bad); }, "increment");
}

// Every attempt factorizes in H's own storage and the retry restores H from
// the triangle the factorization leaves alone: on a matrix wide enough for
// several tiles and the recursive inverse, the escalated factor is the one a
// single factorization at the winning damping gives, and H's upper triangle is
// the one read (its lower one may differ in the last bits).
TEST(Hessian, RetriesStartFromTheUntouchedUpperTriangle) {
  const Index n = 200;
  MatrixD h = random_hessian(n, 86);
  h.diagonal() *= 0.5;  // indefinite until damped
  const InverseHessian escalated = inverse_hessian_factor(h);
  EXPECT_GT(escalated.failed_factorizations, 0);
  EXPECT_GT(escalated.percdamp, 0.01);
  DampingConfig winning;
  winning.percdamp = escalated.percdamp;
  winning.increment = 0;
  const InverseHessian direct = inverse_hessian_factor(h, winning);
  EXPECT_EQ(direct.failed_factorizations, 0);
  EXPECT_EQ(escalated.factor, direct.factor);
  MatrixD damped = h;
  damped.diagonal().array() += escalated.percdamp * h.diagonal().mean();
  EXPECT_LE((escalated.factor.transpose() * escalated.factor * damped - MatrixD::Identity(n, n))
                .cwiseAbs()
                .maxCoeff(),
            1e-8);

  MatrixD lower_perturbed = h;
  for (Index i = 1; i < n; ++i) lower_perturbed.row(i).head(i) *= 1 + 1e-12;
  EXPECT_EQ(inverse_hessian_factor(lower_perturbed).factor, escalated.factor);
}

// The prologue reorders H in place: the same entries as permute_symmetric.
TEST(ColumnOrder, PermuteSymmetricInPlace) {
  const MatrixD h = random_hessian(150, 87);
  Permutation perm(150);
  for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<std::int32_t>(i);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(88));  // cycles of many lengths
  MatrixD in_place = h;
  detail::permute_symmetric_in_place(in_place, perm);
  EXPECT_EQ(in_place, permute_symmetric(h, perm));
  for (Index i = 0; i < 150; ++i) EXPECT_EQ(in_place(i, 7), h(perm[std::size_t(i)], perm[7])) << i;
}

TEST(Hessian, NegativeDiagonalIsRescuedByAFloor) {
  const MatrixD h = -MatrixD::Identity(3, 3);
  const InverseHessian inverse = inverse_hessian_factor(h);
  EXPECT_EQ(inverse.diagonal_floor, 1e-6);
  EXPECT_GT(inverse.failed_factorizations, 0);
}

TEST(Hessian, RejectsBadInput) {
  EXPECT_THROW(inverse_hessian_factor(MatrixD(2, 3)), Error);
  MatrixD h = MatrixD::Identity(3, 3);
  h(1, 1) = NAN;
  EXPECT_THROW(inverse_hessian_factor(h), Error);
  DampingConfig config;
  config.percdamp = 0;
  EXPECT_THROW(inverse_hessian_factor(MatrixD::Identity(2, 2), config), Error);
  MatrixD hopeless(2, 2);
  hopeless << 1, 3, 3, 1;
  try {
    inverse_hessian_factor(hopeless);
    FAIL() << "an indefinite H was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not positive definite"), std::string::npos) << e.what();
  }
}

TEST(ColumnOrder, ArgsortDescendingAndPermutations) {
  EXPECT_EQ(detail::torch_argsort_descending({0.5f, 2.0f, 1.0f}), (Permutation{1, 2, 0}));
  const Permutation perm{2, 0, 3, 1};
  EXPECT_EQ(inverse_permutation(perm), (Permutation{1, 3, 0, 2}));
  EXPECT_THROW(inverse_permutation({0, 0}), Error);
  MatrixF w(1, 4);
  w << 10, 11, 12, 13;
  EXPECT_EQ(permute_columns(w, perm), (MatrixF(1, 4) << 12, 10, 13, 11).finished());
  MatrixD h = MatrixD::Zero(4, 4);
  for (Index i = 0; i < 4; ++i) h(i, i) = static_cast<double>(i);
  const MatrixD p = permute_symmetric(h, perm);
  for (Index i = 0; i < 4; ++i) EXPECT_EQ(p(i, i), perm[static_cast<std::size_t>(i)]);
  EXPECT_EQ(act_order_permutation(h), (Permutation{3, 2, 1, 0}));
}

TEST(ColumnOrder, ActOrderMatchesTheGoldenPermutations) {
  test::for_each_golden("gptq_", true, [](const io::SafetensorsReader& f, const std::string&) {
    if (!f.contains("perm")) return;
    EXPECT_EQ(act_order_permutation(with_dead_diagonal_set(f.matrix_d("H"))), f.ints("perm"));
  });
}

}  // namespace
}  // namespace lowbit
