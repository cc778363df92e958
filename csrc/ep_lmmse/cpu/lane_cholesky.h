// Lane-interleaved dense kernels for ep_lmmse: W independent K x K SPD systems, one per
// SIMD lane, stored lane-major as a packed lower triangle (element (i,j) at tri(i)+j, each
// element a W-lane vector). Every instruction serves W matrices and no horizontal
// reduction is needed. Used by csrc/ep_lmmse/cpu/ep_lmmse.cpp.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/cpu/lanes.h"

namespace mimo_fast {
namespace ep {

MIMO_FAST_INLINE int64_t tri(int64_t i) { return i * (i + 1) / 2; }
// Column c of the packed lower L^{-1} (rows c..K-1), biased so that col[i] is row i.
MIMO_FAST_INLINE int64_t colq(int64_t c, int64_t K) { return c * K - c * (c - 1) / 2 - c; }

// Row-oriented (left-looking) Cholesky in place on the packed lower triangle; dinv = 1/L_ii.
// Row i is computed four columns at a time: the dot products over k < j0 share each load
// of L_ik (5 loads per 4 FMAs instead of 8, four independent FMA chains), then the 4x4
// triangle inside the block is finished in order. Summation order is the plain one.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky(V* L, V* dinv, int K, int32_t* info) {
  for (int i = 0; i < K; ++i) {
    V* Li = L + tri(i);
    int j = 0;
    for (; j + 4 <= i; j += 4) {
      const V *L0 = L + tri(j), *L1 = L + tri(j + 1), *L2 = L + tri(j + 2), *L3 = L + tri(j + 3);
      V s0 = Li[j], s1 = Li[j + 1], s2 = Li[j + 2], s3 = Li[j + 3];
      for (int k = 0; k < j; ++k) {
        const V a = Li[k];
        s0 -= a * L0[k];
        s1 -= a * L1[k];
        s2 -= a * L2[k];
        s3 -= a * L3[k];
      }
      s0 = s0 * dinv[j];
      s1 -= s0 * L1[j];
      s1 = s1 * dinv[j + 1];
      s2 -= s0 * L2[j];
      s2 -= s1 * L2[j + 1];
      s2 = s2 * dinv[j + 2];
      s3 -= s0 * L3[j];
      s3 -= s1 * L3[j + 1];
      s3 -= s2 * L3[j + 2];
      s3 = s3 * dinv[j + 3];
      Li[j] = s0;
      Li[j + 1] = s1;
      Li[j + 2] = s2;
      Li[j + 3] = s3;
    }
    for (; j < i; ++j) {
      const V* Lj = L + tri(j);
      V s = Li[j];
      for (int k = 0; k < j; ++k) s -= Li[k] * Lj[k];
      Li[j] = s * dinv[j];
    }
    V d = Li[i];
    for (int k = 0; k < i; ++k) d -= Li[k] * Li[k];
    for (int l = 0; l < W; ++l) {
      T dl = d[l];
      if (!(dl > T(0))) {
        if (info[l] == 0) info[l] = i + 1;
        dl = T(1);
      }
      d[l] = std::sqrt(dl);
    }
    Li[i] = d;
    dinv[i] = T(1) / d;
  }
}

// x <- A^{-1} x with A = L L^T.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void solve(const V* L, const V* dinv, int K, V* x) {
  for (int i = 0; i < K; ++i) {
    const V* Li = L + tri(i);
    V s = x[i];
    for (int k = 0; k < i; ++k) s -= Li[k] * x[k];
    x[i] = s * dinv[i];
  }
  for (int i = K - 1; i >= 0; --i) {
    const V* Li = L + tri(i);
    const V xi = x[i] * dinv[i];
    x[i] = xi;
    for (int k = 0; k < i; ++k) x[k] -= Li[k] * xi;
  }
}

// Columns of X = L^{-1} by forward substitution; var[c] = sum_i X_ic^2 = (A^{-1})_cc.
// With store, column c is kept at X + colq(c) (biased: col[i] is row i); otherwise X is
// scratch for four columns of K. Columns go four at a time so each load of L_ik serves
// four FMA chains (the rows above the block's diagonal triangle are done column by column).
template <typename T, int W, bool store, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_columns(const V* L, const V* dinv, int K, V* X, V* var) {
  int c = 0;
  for (; c + 4 <= K; c += 4) {
    V* x[4];
    V acc[4];
    for (int q = 0; q < 4; ++q) x[q] = store ? X + colq(c + q, K) : X + static_cast<size_t>(q) * K;
    // The 4x4 diagonal triangle (rows c..c+3).
    for (int q = 0; q < 4; ++q) {
      const int cq = c + q;
      x[q][cq] = dinv[cq];
      acc[q] = x[q][cq] * x[q][cq];
      for (int i = cq + 1; i < c + 4; ++i) {
        const V* Li = L + tri(i);
        V t = V{};
        for (int k = cq; k < i; ++k) t += Li[k] * x[q][k];
        x[q][i] = -t * dinv[i];
        acc[q] += x[q][i] * x[q][i];
      }
    }
    V *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
    for (int i = c + 4; i < K; ++i) {
      const V* Li = L + tri(i);
      V s0 = Li[c] * x0[c] + Li[c + 1] * x0[c + 1] + Li[c + 2] * x0[c + 2];
      V s1 = Li[c + 1] * x1[c + 1] + Li[c + 2] * x1[c + 2];
      V s2 = Li[c + 2] * x2[c + 2];
      V s3 = V{};
      for (int k = c + 3; k < i; ++k) {
        const V a = Li[k];
        s0 += a * x0[k];
        s1 += a * x1[k];
        s2 += a * x2[k];
        s3 += a * x3[k];
      }
      const V m = -dinv[i];
      x0[i] = s0 * m;
      x1[i] = s1 * m;
      x2[i] = s2 * m;
      x3[i] = s3 * m;
      acc[0] += x0[i] * x0[i];
      acc[1] += x1[i] * x1[i];
      acc[2] += x2[i] * x2[i];
      acc[3] += x3[i] * x3[i];
    }
    if (var)
      for (int q = 0; q < 4; ++q) var[c + q] = acc[q];
  }
  for (; c < K; ++c) {
    V* x = store ? X + colq(c, K) : X;
    x[c] = dinv[c];
    V acc = x[c] * x[c];
    for (int i = c + 1; i < K; ++i) {
      const V* Li = L + tri(i);
      V s = V{};
      for (int k = c; k < i; ++k) s += Li[k] * x[k];
      x[i] = -s * dinv[i];
      acc += x[i] * x[i];
    }
    if (var) var[c] = acc;
  }
}

}  // namespace ep
}  // namespace mimo_fast
