// Naive netlib-order float LAPACK emulation for the hypothesis test.
#pragma once
#include <Eigen/Core>
#include <cmath>
namespace nl {
using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
// A block view: pointer + ld; 1-based helpers.
struct V { float* p; long ld; float& operator()(long i, long j) const { return p[(i - 1) + (j - 1) * ld]; } V at(long i, long j) const { return V{&(*this)(i, j), ld}; } };

inline void ssyrk_LN(long n, long k, float alpha, V a, V c) {
  for (long j = 1; j <= n; ++j) for (long l = 1; l <= k; ++l) if (a(j, l) != 0) { float t = alpha * a(j, l); for (long i = j; i <= n; ++i) c(i, j) = c(i, j) + t * a(i, l); } }
inline void ssyrk_UT(long n, long k, float alpha, V a, V c) {
  for (long j = 1; j <= n; ++j) for (long i = 1; i <= j; ++i) { float t = 0; for (long l = 1; l <= k; ++l) t = t + a(l, i) * a(l, j); c(i, j) = alpha * t + c(i, j); } }
inline void ssyrk_LT(long n, long k, float alpha, V a, V c) {
  for (long j = 1; j <= n; ++j) for (long i = j; i <= n; ++i) { float t = 0; for (long l = 1; l <= k; ++l) t = t + a(l, i) * a(l, j); c(i, j) = alpha * t + c(i, j); } }
inline void sgemm_NT(long m, long n, long k, float alpha, V a, V b, V c) {
  for (long j = 1; j <= n; ++j) for (long l = 1; l <= k; ++l) { float t = alpha * b(j, l); for (long i = 1; i <= m; ++i) c(i, j) = c(i, j) + t * a(i, l); } }
inline void sgemm_TN(long m, long n, long k, float alpha, V a, V b, V c) {
  for (long j = 1; j <= n; ++j) for (long i = 1; i <= m; ++i) { float t = 0; for (long l = 1; l <= k; ++l) t = t + a(l, i) * b(l, j); c(i, j) = alpha * t + c(i, j); } }
inline void strsm_RLTN(long m, long n, V a, V b) {
  for (long k = 1; k <= n; ++k) { float t = 1.0f / a(k, k); for (long i = 1; i <= m; ++i) b(i, k) = t * b(i, k);
    for (long j = k + 1; j <= n; ++j) if (a(j, k) != 0) { float tt = a(j, k); for (long i = 1; i <= m; ++i) b(i, j) = b(i, j) - tt * b(i, k); } } }
inline void strsm_LUTN(long m, long n, V a, V b) {
  for (long j = 1; j <= n; ++j) for (long i = 1; i <= m; ++i) { float t = b(i, j); for (long k = 1; k <= i - 1; ++k) t = t - a(k, i) * b(k, j); t = t / a(i, i); b(i, j) = t; } }
inline void strsm_RLNN_alpha(long m, long n, float alpha, V a, V b) {
  for (long j = n; j >= 1; --j) { if (alpha != 1) for (long i = 1; i <= m; ++i) b(i, j) = alpha * b(i, j);
    for (long k = j + 1; k <= n; ++k) if (a(k, j) != 0) for (long i = 1; i <= m; ++i) b(i, j) = b(i, j) - a(k, j) * b(i, k);
    float t = 1.0f / a(j, j); for (long i = 1; i <= m; ++i) b(i, j) = t * b(i, j); } }
inline void strmm_LLNN(long m, long n, V a, V b) {
  for (long j = 1; j <= n; ++j) for (long k = m; k >= 1; --k) if (b(k, j) != 0) { float t = b(k, j); b(k, j) = t; b(k, j) = b(k, j) * a(k, k); for (long i = k + 1; i <= m; ++i) b(i, j) = b(i, j) + t * a(i, k); } }
inline void strmm_LLTN(long m, long n, V a, V b) {
  for (long j = 1; j <= n; ++j) for (long i = 1; i <= m; ++i) { float t = b(i, j); t = t * a(i, i); for (long k = i + 1; k <= m; ++k) t = t + a(k, i) * b(k, j); b(i, j) = t; } }
inline void strmv_LN(long n, V a, float* x) {
  for (long j = n; j >= 1; --j) if (x[j - 1] != 0) { float t = x[j - 1]; for (long i = n; i >= j + 1; --i) x[i - 1] = x[i - 1] + t * a(i, j); x[j - 1] = x[j - 1] * a(j, j); } }
inline bool spotrf2_L(long n, V a) {
  if (n == 1) { if (!(a(1, 1) > 0)) return false; a(1, 1) = std::sqrt(a(1, 1)); return true; }
  long n1 = n / 2, n2 = n - n1;
  if (!spotrf2_L(n1, a)) return false;
  strsm_RLTN(n2, n1, a, a.at(n1 + 1, 1));
  ssyrk_LN(n2, n1, -1.0f, a.at(n1 + 1, 1), a.at(n1 + 1, n1 + 1));
  return spotrf2_L(n2, a.at(n1 + 1, n1 + 1));
}
inline bool spotrf2_U(long n, V a) {
  if (n == 1) { if (!(a(1, 1) > 0)) return false; a(1, 1) = std::sqrt(a(1, 1)); return true; }
  long n1 = n / 2, n2 = n - n1;
  if (!spotrf2_U(n1, a)) return false;
  strsm_LUTN(n1, n2, a, a.at(1, n1 + 1));
  ssyrk_UT(n2, n1, -1.0f, a.at(1, n1 + 1), a.at(n1 + 1, n1 + 1));
  return spotrf2_U(n2, a.at(n1 + 1, n1 + 1));
}
inline bool spotrf_L(long n, V a, long nb = 64) {
  if (nb <= 1 || nb >= n) return spotrf2_L(n, a);
  for (long j = 1; j <= n; j += nb) { long jb = std::min(nb, n - j + 1);
    ssyrk_LN(jb, j - 1, -1.0f, a.at(j, 1), a.at(j, j));
    if (!spotrf2_L(jb, a.at(j, j))) return false;
    if (j + jb <= n) { sgemm_NT(n - j - jb + 1, jb, j - 1, -1.0f, a.at(j + jb, 1), a.at(j, 1), a.at(j + jb, j)); strsm_RLTN(n - j - jb + 1, jb, a.at(j, j), a.at(j + jb, j)); } }
  return true;
}
inline bool spotrf_U(long n, V a, long nb = 64) {
  if (nb <= 1 || nb >= n) return spotrf2_U(n, a);
  for (long j = 1; j <= n; j += nb) { long jb = std::min(nb, n - j + 1);
    ssyrk_UT(jb, j - 1, -1.0f, a.at(1, j), a.at(j, j));
    if (!spotrf2_U(jb, a.at(j, j))) return false;
    if (j + jb <= n) { sgemm_TN(jb, n - j - jb + 1, j - 1, -1.0f, a.at(1, j), a.at(1, j + jb), a.at(j, j + jb)); strsm_LUTN(jb, n - j - jb + 1, a.at(j, j), a.at(j, j + jb)); } }
  return true;
}
inline void strti2_L(long n, V a) {
  for (long j = n; j >= 1; --j) { a(j, j) = 1.0f / a(j, j); float ajj = -a(j, j);
    if (j < n) { std::vector<float> x(static_cast<size_t>(n - j)); for (long i = 0; i < n - j; ++i) x[i] = a(j + 1 + i, j);
      strmv_LN(n - j, a.at(j + 1, j + 1), x.data()); for (long i = 0; i < n - j; ++i) a(j + 1 + i, j) = ajj * x[i]; } } }
inline void strtri_L(long n, V a, long nb = 64) {
  if (nb <= 1 || nb >= n) { strti2_L(n, a); return; }
  long nn = ((n - 1) / nb) * nb + 1;
  for (long j = nn; j >= 1; j -= nb) { long jb = std::min(nb, n - j + 1);
    if (j + jb <= n) { strmm_LLNN(n - j - jb + 1, jb, a.at(j + jb, j + jb), a.at(j + jb, j)); strsm_RLNN_alpha(n - j - jb + 1, jb, -1.0f, a.at(j, j), a.at(j + jb, j)); }
    strti2_L(jb, a.at(j, j)); } }
inline void slauu2_L(long n, V a) {
  for (long i = 1; i <= n; ++i) { float aii = a(i, i);
    if (i < n) { float s = 0; for (long r = i; r <= n; ++r) s = s + a(r, i) * a(r, i); a(i, i) = s;
      // sgemv T: y(j) = beta*y(j) then y(j) += temp
      for (long j = 1; j <= i - 1; ++j) a(i, j) = aii * a(i, j);
      for (long j = 1; j <= i - 1; ++j) { float t = 0; for (long r = i + 1; r <= n; ++r) t = t + a(r, j) * a(r, i); a(i, j) = a(i, j) + t; }
    } else { for (long j = 1; j <= i; ++j) a(i, j) = aii * a(i, j); } } }
inline void slauum_L(long n, V a, long nb = 64) {
  if (nb <= 1 || nb >= n) { slauu2_L(n, a); return; }
  for (long i = 1; i <= n; i += nb) { long ib = std::min(nb, n - i + 1);
    strmm_LLTN(ib, i - 1, a.at(i, i), a.at(i, 1));
    slauu2_L(ib, a.at(i, i));
    if (i + ib <= n) { sgemm_TN(ib, i - 1, n - i - ib + 1, 1.0f, a.at(i + ib, i), a.at(i + ib, 1), a.at(i, 1)); ssyrk_LT(ib, n - i - ib + 1, 1.0f, a.at(i + ib, i), a.at(i, i)); } } }
}  // namespace nl
