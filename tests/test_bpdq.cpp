// quant/bpdq.hpp: the golden files of the official code (planes, coefficients,
// output error, the 8-bit init, the first fit, the kept rounds and GAR
// permutations), the algorithm's invariants, any-precision truncation, and
// bad input.
#include <lowbit/quant/bpdq.hpp>

#include "bpdq_golden.hpp"

namespace lowbit {
namespace {

void check_golden_case(const io::SafetensorsReader& f, const std::string& dir) {
  const BpdqConfig config = test::golden_bpdq_config(f);
  const MatrixF w = test::golden_input(f, dir, "W");
  const BpdqResult result = quantize_bpdq(w, test::golden_hessian(f, dir), config);
  const BpdqReport& report = result.report;
  const test::BpdqAgreement a = test::compare_with_golden(f, dir, result.weights);
  std::printf("%s: bits %.2e  c %.2e cell %.2e  rel_out_err %.6f (ref %.6f)\n", f.source().c_str(), a.bit_mismatch,
              a.c_rel_diff, a.c_cell_rel_diff, a.rel_out_err, a.ref_rel_out_err);
  test::expect_golden_agreement(a);

  const int k = config.planes;
  const Index groups = w.cols() / config.group_size;
  // The 8-bit init and the first fit.
  const MatrixF scale8 = f.matrix("init_scale8"), zero8 = f.matrix("init_zero8");
  std::printf("  init scale %.2e zero %.2e\n", test::max_rel_diff(report.init_scale, scale8),
              test::max_rel_diff(report.init_zero, zero8));
  const std::vector<double> c_init = f.doubles("c_init");
  const MatrixD c_init_ref = Eigen::Map<const MatrixD>(c_init.data(), groups * (k + 1), w.rows());
  std::printf("  c_init %.2e\n", test::max_rel_diff(report.init_coeffs, c_init_ref));
  // Kept rounds and their scores.
  const std::vector<std::int32_t> best_iter = f.ints("best_iter");
  const std::vector<float> group_score = f.floats("group_score");
  for (Index g = 0; g < groups; ++g) {
    const std::size_t i = static_cast<std::size_t>(g);
    std::printf("  group %ld best %d (ref %d) score %.8g (ref %.8g)\n", static_cast<long>(g), report.best_iter[i],
                best_iter[i], report.group_score[i], group_score[i]);
  }
  if (config.group_aware_reorder) {
    EXPECT_EQ(report.column_order, f.ints("final_perm"));
    EXPECT_EQ(report.group_order, f.ints("global_perm"));
  }
  EXPECT_EQ(report.percdamp, test::meta_double(f, "damp_used"));
  std::printf("  avg_loss %.8g (ref %s)\n", report.loss / test::meta_double(f, "nsamples"),
              test::meta(f, "avg_loss").c_str());
}

TEST(BpdqGolden, BundledCasesMatchTheReference) {
  test::for_each_golden("bpdq_", false, check_golden_case);
}

TEST(BpdqGolden, EveryCaseMatchesTheReference) {
  test::for_each_golden("bpdq_", true, check_golden_case);
}

}  // namespace
}  // namespace lowbit
namespace lowbit {
namespace {
TEST(BpdqGolden, DiagWithReferenceHinv) {
  test::for_each_golden("bpdq_", true, [](const io::SafetensorsReader& f, const std::string& dir) {
    const BpdqConfig config = test::golden_bpdq_config(f);
    MatrixF w = test::golden_input(f, dir, "W");
    BpdqResult result;
    if (config.group_aware_reorder) {
      result.report.column_order = f.ints("final_perm");
      result.report.group_order = f.ints("global_perm");
      w = permute_columns(w, result.report.column_order);
    }
    const MatrixF u = f.matrix("Hinv");
    detail::bpdq::run_pass(w, u, config, result);
    const test::BpdqAgreement a = test::compare_with_golden(f, dir, result.weights);
    std::printf("REFHINV %s: bits %.2e  c %.2e  rel_out_err %.6f (ref %.6f)\n", f.source().c_str(), a.bit_mismatch,
                a.c_rel_diff, a.rel_out_err, a.ref_rel_out_err);
    const int k = config.planes;
    const Index groups = w.cols() / config.group_size;
    const std::vector<double> c_init = f.doubles("c_init");
    const MatrixD c_init_ref = Eigen::Map<const MatrixD>(c_init.data(), groups * (k + 1), w.rows());
    std::printf("  c_init %.2e first group %.2e scale %.2e\n", test::max_rel_diff(result.report.init_coeffs, c_init_ref),
                test::max_rel_diff(result.report.init_coeffs.topRows(k + 1), c_init_ref.topRows(k + 1)),
                test::max_rel_diff(result.report.init_scale, f.matrix("init_scale8")));
  });
}
}  // namespace
}  // namespace lowbit
namespace lowbit {
namespace {
TEST(BpdqGolden, DiagWorstCells) {
  test::for_each_golden("bpdq_k2_g64_it5_garon", true, [](const io::SafetensorsReader& f, const std::string& dir) {
    const BpdqConfig config = test::golden_bpdq_config(f);
    const MatrixF w = test::golden_input(f, dir, "W");
    const BpdqResult result = quantize_bpdq(w, test::golden_hessian(f, dir), config);
    const BitPlaneWeights ref = test::golden_bitplanes(f);
    const double cmax = ref.coeffs.cwiseAbs().maxCoeff();
    std::vector<std::pair<double, std::string>> cells;
    for (Index g = 0; g < 4; ++g)
      for (Index r = 0; r < 64; ++r)
        for (int p = 0; p < 3; ++p) {
          double d = std::abs(result.weights.coeff(g, p, r) - ref.coeff(g, p, r)) / cmax;
          char buf[200];
          std::snprintf(buf, sizeof buf, "g%ld r%ld p%d ours %.8g ref %.8g | c %.5g %.5g %.5g", (long)g, (long)r, p,
                        result.weights.coeff(g, p, r), ref.coeff(g, p, r), ref.coeff(g, 0, r), ref.coeff(g, 1, r), ref.coeff(g, 2, r));
          cells.push_back({d, buf});
        }
    std::sort(cells.rbegin(), cells.rend());
    for (int i = 0; i < 12; ++i) std::printf("%.2e %s\n", cells[i].first, cells[i].second.c_str());
    std::printf("median %.2e  p90 %.2e\n", cells[cells.size() / 2].first, cells[cells.size() / 10].first);
  });
}
}  // namespace
}  // namespace lowbit
namespace lowbit {
namespace {
// Netlib-order float emulation of solve_C for group 0.
TEST(BpdqGolden, DiagNetlibEmulation) {
  test::for_each_golden("bpdq_k", true, [](const io::SafetensorsReader& f, const std::string& dir) {
    const BpdqConfig config = test::golden_bpdq_config(f);
    if (config.group_aware_reorder) return;
    const int k = config.planes, n = k + 1;
    const Index G = 64;
    const MatrixF w = test::golden_input(f, dir, "W");
    const MatrixF hinv = f.matrix("Hinv");
    const Index rows = w.rows();
    GridConfig grid; grid.bits = 8;
    const MatrixF target = w.leftCols(G);
    const GridParams gp = find_grid_params(target, grid);
    const std::vector<double> c_init = f.doubles("c_init");
    for (int ts = 0; ts < 3; ++ts) for (int gm = 0; gm < 3; ++gm) for (int lu = 0; lu < 2; ++lu) {
    int exact = 0; double maxd = 0;
    for (Index r = 0; r < rows; ++r) {
      std::vector<std::vector<float>> x(n, std::vector<float>(G));
      for (Index t = 0; t < G; ++t) {
        unsigned q = static_cast<unsigned>(grid_code(target(r, t), gp.scale(r), gp.zero(r), 255.f));
        for (int p = 0; p < k; ++p) x[p][t] = static_cast<float>((q >> (8 - k + p)) & 1u);
        x[k][t] = 1.f;
      }
      std::vector<float> y(G);
      for (Index t = 0; t < G; ++t) y[t] = target(r, t);
      auto fwd = [&](std::vector<float>& b) {
        for (Index kk = 0; kk < G; ++kk) {
          if (ts == 0) b[kk] = b[kk] / hinv(kk, kk); else b[kk] = b[kk] * (1.0f / hinv(kk, kk));
          for (Index i = kk + 1; i < G; ++i) b[i] = ts == 1 ? std::fmaf(-b[kk], hinv(kk, i), b[i]) : b[i] - b[kk] * hinv(kk, i);
        }
      };
      for (int p = 0; p < n; ++p) fwd(x[p]);
      fwd(y);
      auto dot = [&](const std::vector<float>& u, const std::vector<float>& v) {
        if (gm == 0) { float acc = 0; for (Index l = 0; l < G; ++l) acc = acc + u[l] * v[l]; return acc; }
        if (gm == 1) { float acc = 0; for (Index l = 0; l < G; ++l) acc = std::fmaf(u[l], v[l], acc); return acc; }
        float acc[16] = {}; for (Index l = 0; l < G; ++l) acc[l % 16] = std::fmaf(u[l], v[l], acc[l % 16]);
        float s2 = 0; for (int q = 0; q < 16; ++q) s2 = s2 + acc[q]; return s2;
      };
      float a[5][5], b[5];
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) a[i][j] = dot(x[i], x[j]);
        b[i] = dot(x[i], y);
      }
      for (int i = 0; i < n; ++i) a[i][i] = a[i][i] + static_cast<float>(1e-4);
      auto fms = [&](float c0, float x0, float y0) { return c0 - x0 * y0; };
      int piv[5];
      for (int cc = 0; cc < n; ++cc) {
        int pv = cc; for (int i = cc + 1; i < n; ++i) if (std::abs(a[i][cc]) > std::abs(a[pv][cc])) pv = i;
        piv[cc] = pv;
        if (pv != cc) for (int j = 0; j < n; ++j) std::swap(a[pv][j], a[cc][j]);
        const float rec = 1.0f / a[cc][cc];
        for (int i = cc + 1; i < n; ++i) a[i][cc] = a[i][cc] * rec;
        for (int j = cc + 1; j < n; ++j) for (int i = cc + 1; i < n; ++i) a[i][j] = fms(a[i][j], a[cc][j], a[i][cc]);
      }
      if (lu == 0) {
      for (int cc = 0; cc < n; ++cc) if (piv[cc] != cc) std::swap(b[cc], b[piv[cc]]);
      for (int cc = 0; cc < n; ++cc) for (int i = cc + 1; i < n; ++i) b[i] = fms(b[i], b[cc], a[i][cc]);
      for (int cc = n - 1; cc >= 0; --cc) { b[cc] = b[cc] / a[cc][cc]; for (int i = 0; i < cc; ++i) b[i] = fms(b[i], b[cc], a[i][cc]); }
      } else {
        // transposed solve: U^T z = b, L^T y = z, then pivots in reverse
        for (int i = 0; i < n; ++i) { float tmp = b[i]; for (int kk = 0; kk < i; ++kk) tmp = tmp - a[kk][i] * b[kk]; b[i] = tmp / a[i][i]; }
        for (int i = n - 1; i >= 0; --i) { float tmp = b[i]; for (int kk = i + 1; kk < n; ++kk) tmp = tmp - a[kk][i] * b[kk]; b[i] = tmp; }
        for (int i = n - 1; i >= 0; --i) if (piv[i] != i) std::swap(b[i], b[piv[i]]);
      }
      bool same = true;
      for (int p = 0; p < n; ++p) {
        const double ref = c_init[static_cast<std::size_t>(p * rows + r)];
        same &= (static_cast<double>(b[p]) == ref);
        maxd = std::max(maxd, std::abs(b[p] - ref));
      }
      exact += same;
    }
    std::printf("NETLIB ts%d gm%d lu%d %s: rows exact %d / %ld  maxdiff %.3e\n", ts, gm, lu, f.source().c_str() + 20, exact, (long)rows, maxd);
    }
  });
}
}  // namespace
}  // namespace lowbit
namespace lowbit {
namespace {
TEST(BpdqGolden, DiagHinvFloatInput) {
  test::for_each_golden("bpdq_", true, [](const io::SafetensorsReader& f, const std::string& dir) {
    MatrixD h = test::golden_hessian(f, dir);
    set_dead_diagonal(h, dead_columns(h));
    if (f.contains("final_perm")) h = permute_symmetric(h, f.ints("final_perm"));
    const MatrixD ref = f.matrix_d("Hinv");
    DampingConfig dc; dc.percdamp = 0.05;
    const MatrixD u1 = inverse_hessian_factor(h, dc).factor;
    // float damping
    const Index n = h.rows();
    float sum = 0; for (Index i = 0; i < n; ++i) sum += static_cast<float>(h(i, i));
    const float mean = sum / static_cast<float>(n);
    const float damp = static_cast<float>(0.05 * static_cast<double>(mean));
    MatrixD h2 = h;
    for (Index i = 0; i < n; ++i) h2(i, i) = static_cast<double>(static_cast<float>(h(i, i)) + damp);
    MatrixD u2;
    detail::inverse_upper_factor(h2, u2);
    auto stats = [&](const MatrixD& u) {
      const MatrixD d = (u - ref).cwiseAbs();
      double rel = 0; for (Index i = 0; i < n; ++i) for (Index j = i; j < n; ++j) rel = std::max(rel, d(i, j) / std::abs(ref(i, j) == 0 ? 1 : ref(i, j)));
      return std::make_pair(d.maxCoeff() / ref.cwiseAbs().maxCoeff(), d.norm() / ref.norm());
    };
    auto a = stats(u1), b = stats(u2);
    std::printf("HINV %s double-damp max %.2e fro %.2e | float-damp max %.2e fro %.2e\n", f.source().c_str() + 20, a.first, a.second, b.first, b.second);
  });
}
}  // namespace
}  // namespace lowbit
#include "netlib_scratch.hpp"
namespace lowbit {
namespace {
float torch_sum(const std::vector<float>& v, int lanes) {
  if (lanes == 1) { float s = 0; for (float x : v) s += x; return s; }
  const long n = static_cast<long>(v.size()), vec_numel = n / lanes, size_ilp = vec_numel / 4;
  std::vector<std::vector<float>> acc(4, std::vector<float>(static_cast<size_t>(lanes), 0.f));
  // assume size_ilp < level_step (16) so only the tail loop runs
  for (long i = 0; i < size_ilp; ++i) for (int k = 0; k < 4; ++k) for (int l = 0; l < lanes; ++l) acc[k][l] += v[static_cast<size_t>((i * 4 + k) * lanes + l)];
  for (long i = size_ilp * 4; i < vec_numel; ++i) for (int l = 0; l < lanes; ++l) acc[0][l] += v[static_cast<size_t>(i * lanes + l)];
  for (int k = 1; k < 4; ++k) for (int l = 0; l < lanes; ++l) acc[0][l] += acc[k][l];
  float fin = 0; for (long k = vec_numel * lanes; k < n; ++k) fin += v[static_cast<size_t>(k)];
  for (int l = 0; l < lanes; ++l) fin += acc[0][l];
  return fin;
}
TEST(BpdqGolden, DiagHinvNetlib) {
  test::for_each_golden("bpdq_", true, [](const io::SafetensorsReader& f, const std::string& dir) {
    MatrixD hd = test::golden_hessian(f, dir);
    set_dead_diagonal(hd, dead_columns(hd));
    if (f.contains("final_perm")) hd = permute_symmetric(hd, f.ints("final_perm"));
    const MatrixF ref = f.matrix("Hinv");
    const long n = hd.rows();
    for (int lanes : {1, 8, 16}) {
      nl::M a = hd.cast<float>();
      std::vector<float> diag(static_cast<size_t>(n)); for (long i = 0; i < n; ++i) diag[i] = a(i, i);
      const float mean = torch_sum(diag, lanes) / static_cast<float>(n);
      const float damp = 0.05f * mean;
      for (long i = 0; i < n; ++i) a(i, i) = a(i, i) + damp;
      nl::V v{a.data(), n};
      bool ok = nl::spotrf_L(n, v);
      nl::strtri_L(n, v);
      nl::slauum_L(n, v);
      for (long j = 0; j < n; ++j) for (long i = 0; i < j; ++i) a(i, j) = a(j, i);
      ok &= nl::spotrf_U(n, v);
      long same = 0, total = 0; double maxd = 0;
      for (long i = 0; i < n; ++i) for (long j = i; j < n; ++j) { ++total; same += a(i, j) == ref(i, j); maxd = std::max(maxd, double(std::abs(a(i, j) - ref(i, j)))); }
      std::printf("NLHINV %s lanes %d ok %d: exact %ld / %ld maxdiff %.3e\n", f.source().c_str() + 20, lanes, ok, same, total, maxd);
    }
  });
}
}  // namespace
}  // namespace lowbit
