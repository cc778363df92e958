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

// Columns j..j+NB-1 of row i of the left-looking Cholesky (j + NB <= i): the dot products
// over k < j share each load of L_ik among NB independent FMA chains (NB + 1 loads per NB
// FMAs), then the NB x NB triangle inside the block is finished in order. Summation order
// is the plain one (k ascending) whatever NB.
template <typename T, int W, int NB, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_row_block(V* L, const V* dinv, V* Li, int j) {
  const V* Lq[NB];
  V s[NB];
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) {
    Lq[q] = L + tri(j + q);
    s[q] = Li[j + q];
  }
  for (int k = 0; k < j; ++k) {
    const V a = Li[k];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) s[q] -= a * Lq[q][k];
  }
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) {
#pragma GCC unroll 8
    for (int r = 0; r < q; ++r) s[q] -= s[r] * Lq[q][j + r];
    s[q] = s[q] * dinv[j + q];
    Li[j + q] = s[q];
  }
}

// cholesky_row_block for rows i and i + 1 at once (j + NB <= i): each loaded L_jk now feeds
// two FMAs, so the L2-resident factor (K 64: tri(K) lane vectors, 133 KB at 16 floats) is
// streamed about half as often.
template <typename T, int W, int NB, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_rows2_block(V* L, const V* dinv, V* Li, V* Li1, int j) {
  const V* Lq[NB];
  V s[NB], t[NB];
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) {
    Lq[q] = L + tri(j + q);
    s[q] = Li[j + q];
    t[q] = Li1[j + q];
  }
  for (int k = 0; k < j; ++k) {
    const V a = Li[k], b = Li1[k];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      const V c = Lq[q][k];
      s[q] -= a * c;
      t[q] -= b * c;
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) {
#pragma GCC unroll 8
    for (int r = 0; r < q; ++r) {
      s[q] -= s[r] * Lq[q][j + r];
      t[q] -= t[r] * Lq[q][j + r];
    }
    s[q] = s[q] * dinv[j + q];
    t[q] = t[q] * dinv[j + q];
    Li[j + q] = s[q];
    Li1[j + q] = t[q];
  }
}

// Columns j..j+3 of rows i..i+3 (j + 4 <= i): a 4 x 4 register tile, so each row of the
// factor above is streamed from L2 once per four rows (4 loads of it per 16 FMAs; the four
// rows being computed stay in L1).
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_rows4_block(V* L, const V* dinv, int i, int j) {
  V* R[4];
  const V* Q[4];
  V s[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    R[r] = L + tri(i + r);
    Q[r] = L + tri(j + r);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) s[r][q] = R[r][j + q];
  }
  for (int k = 0; k < j; ++k) {
    V a[4], c[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      a[r] = R[r][k];
      c[r] = Q[r][k];
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) s[r][q] -= a[r] * c[q];
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q)
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
#pragma GCC unroll 4
      for (int p = 0; p < q; ++p) s[r][q] -= s[r][p] * Q[q][j + p];
      s[r][q] = s[r][q] * dinv[j + q];
      R[r][j + q] = s[r][q];
    }
}

// Row i of the factor from column j on (columns < j done): eight columns at a time, then
// four, then one, then the pivot.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_finish_row(V* L, V* dinv, int i, int j, int32_t* info) {
  V* Li = L + tri(i);
  for (; j + 8 <= i; j += 8) cholesky_row_block<T, W, 8>(L, dinv, Li, j);
  for (; j + 4 <= i; j += 4) cholesky_row_block<T, W, 4>(L, dinv, Li, j);
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

// Row-oriented (left-looking) Cholesky in place on the packed lower triangle; dinv = 1/L_ii.
// Rows go in pairs: their columns left of the pair's diagonal block eight at a time
// (cholesky_rows2_block: 16 independent FMA chains, each load of the factor used twice),
// then each row is finished on its own. With one row and four chains at a time the kernel
// streamed the factor from L2 at about one vector per FMA (B1024 K64 float, AVX-512, one
// core: Cholesky 1.5 ms of a 4.0 ms forward). Summation order is the plain one (k
// ascending) whatever the blocking, so results do not depend on it.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky(V* L, V* dinv, int K, int32_t* info) {
  if constexpr (sizeof(V) == 64) {  // 32 vector registers: 4 x 4 tiles
    for (int i = 0; i < K; i += 4) {
      int j = 0;
      if (i + 3 < K)
        for (; j + 4 <= i; j += 4) cholesky_rows4_block<T, W>(L, dinv, i, j);
      for (int r = 0; r < 4 && i + r < K; ++r) cholesky_finish_row<T, W>(L, dinv, i + r, j, info);
    }
  } else {  // 16 registers: 2 x 8 tiles
    for (int i = 0; i < K; i += 2) {
      int j = 0;
      if (i + 1 < K)
        for (; j + 8 <= i; j += 8) cholesky_rows2_block<T, W, 8>(L, dinv, L + tri(i), L + tri(i + 1), j);
      cholesky_finish_row<T, W>(L, dinv, i, j, info);
      if (i + 1 < K) cholesky_finish_row<T, W>(L, dinv, i + 1, j, info);
    }
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

// Columns c..c+NB-1 of X = L^{-1} by forward substitution (see inverse_columns). Below
// the block's NB x NB diagonal triangle each load of L_ik serves NB FMA chains.
template <typename T, int W, int NB, bool store, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_column_block(const V* L, const V* dinv, int K, V* X, V* var, int c) {
  V* x[NB];
  V acc[NB];
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) x[q] = store ? X + colq(c + q, K) : X + static_cast<size_t>(q) * K;
  for (int q = 0; q < NB; ++q) {  // the diagonal triangle (rows c..c+NB-1)
    const int cq = c + q;
    x[q][cq] = dinv[cq];
    acc[q] = x[q][cq] * x[q][cq];
    for (int i = cq + 1; i < c + NB; ++i) {
      const V* Li = L + tri(i);
      V t = V{};
      for (int k = cq; k < i; ++k) t += Li[k] * x[q][k];
      x[q][i] = -t * dinv[i];
      acc[q] += x[q][i] * x[q][i];
    }
  }
  int i = c + NB;
  for (; i + 1 < K; i += 2) {  // two rows at a time: each load of x_k feeds two FMAs
    const V *Li = L + tri(i), *Li1 = L + tri(i + 1);
    V s[NB], u[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {  // column c+q is zero above row c+q
      s[q] = V{};
      u[q] = V{};
#pragma GCC unroll 8
      for (int k = c + q; k < c + NB - 1; ++k) {
        s[q] += Li[k] * x[q][k];
        u[q] += Li1[k] * x[q][k];
      }
    }
    for (int k = c + NB - 1; k < i; ++k) {
      const V a = Li[k], b = Li1[k];
#pragma GCC unroll 8
      for (int q = 0; q < NB; ++q) {
        const V xv = x[q][k];
        s[q] += a * xv;
        u[q] += b * xv;
      }
    }
    const V m = -dinv[i], m1 = -dinv[i + 1], a = Li1[i];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      x[q][i] = s[q] * m;
      acc[q] += x[q][i] * x[q][i];
      u[q] += a * x[q][i];
      x[q][i + 1] = u[q] * m1;
      acc[q] += x[q][i + 1] * x[q][i + 1];
    }
  }
  for (; i < K; ++i) {
    const V* Li = L + tri(i);
    V s[NB];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {  // column c+q is zero above row c+q
      s[q] = V{};
#pragma GCC unroll 8
      for (int k = c + q; k < c + NB - 1; ++k) s[q] += Li[k] * x[q][k];
    }
    for (int k = c + NB - 1; k < i; ++k) {
      const V a = Li[k];
#pragma GCC unroll 8
      for (int q = 0; q < NB; ++q) s[q] += a * x[q][k];
    }
    const V m = -dinv[i];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      x[q][i] = s[q] * m;
      acc[q] += x[q][i] * x[q][i];
    }
  }
  if (var)
    for (int q = 0; q < NB; ++q) var[c + q] = acc[q];
}

// Scratch inverse_columns<store = false> needs: kInverseScratch * K lane vectors.
constexpr int kInverseScratch = 8;

// Columns of X = L^{-1} by forward substitution; var[c] = sum_i X_ic^2 = (A^{-1})_cc.
// With store, column c is kept at X + colq(c) (biased: col[i] is row i); otherwise X is
// scratch for eight columns of K. Columns go eight at a time, then four, then one (eight
// FMA chains per shared load of L_ik, as in cholesky).
template <typename T, int W, bool store, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_columns(const V* L, const V* dinv, int K, V* X, V* var) {
  int c = 0;
  for (; c + 8 <= K; c += 8) inverse_column_block<T, W, 8, store>(L, dinv, K, X, var, c);
  for (; c + 4 <= K; c += 4) inverse_column_block<T, W, 4, store>(L, dinv, K, X, var, c);
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
