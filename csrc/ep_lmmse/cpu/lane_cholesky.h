// Lane-interleaved dense kernels for ep_lmmse: W independent K x K SPD systems, one per
// SIMD lane, stored lane-major as a packed lower triangle (element (i,j) at tri(i)+j, each
// element a W-lane vector). Every instruction serves W matrices and no horizontal
// reduction is needed. Used by csrc/ep_lmmse/cpu/ep_lmmse.cpp.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/cpu/lanes.h"
#include "common/cpu/prefetch.h"

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

// The pivot of row i from d = A_ii - sum_k L_ik^2: a pivot that is not > 0 (or NaN) marks
// its lane in info (order i + 1, first failure only) and is replaced by 1. Whole-vector
// compare, select and square root (a per-lane scalar loop with the branch cost about as
// much as the K16 factor's FMAs); the lane loop runs only when some pivot failed.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_pivot(V* L, V* dinv, int i, const V& d_in, int32_t* info) {
  const auto ok = d_in > T(0);  // lane mask: -1 where the pivot is > 0 (false for NaN)
  V d = d_in;
  if (!lane_all(ok)) {
    for (int l = 0; l < W; ++l)
      if (!ok[l]) {
        if (info[l] == 0) info[l] = i + 1;
        d[l] = T(1);
      }
  }
  d = lane_sqrt<T, W>(d);
  L[tri(i) + i] = d;
  dinv[i] = T(1) / d;
}

// Row i of the factor from column j on (columns < j done): eight columns at a time, then
// four, then one, then the pivot. Only for rows that are not part of a full diagonal block.
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
  cholesky_pivot<T, W>(L, dinv, i, d, info);
}

// The N x N diagonal block of rows i..i+N-1 once every column < i is done: its N(N+1)/2
// entries' dots over k < i run as independent FMA chains (one chain per entry, N loads per
// k), then the small triangle is finished in order. Done row by row, each of these entries
// was one dot with a single accumulator (B1024 K64 float, AVX-512, one core: the factor
// took 1.08 ms that way, 0.91 ms with the block). Summation order per entry is unchanged
// (k ascending).
template <typename T, int W, int N, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky_diag_block(V* L, V* dinv, int i, int32_t* info) {
  V* R[N];
  V s[N][N];
#pragma GCC unroll 4
  for (int r = 0; r < N; ++r) {
    R[r] = L + tri(i + r);
#pragma GCC unroll 4
    for (int q = 0; q <= r; ++q) s[r][q] = R[r][i + q];
  }
  for (int k = 0; k < i; ++k) {
    V a[N];
#pragma GCC unroll 4
    for (int r = 0; r < N; ++r) a[r] = R[r][k];
#pragma GCC unroll 4
    for (int r = 0; r < N; ++r)
#pragma GCC unroll 4
      for (int q = 0; q <= r; ++q) s[r][q] -= a[r] * a[q];
  }
#pragma GCC unroll 4
  for (int q = 0; q < N; ++q) {
#pragma GCC unroll 4
    for (int p = 0; p < q; ++p) s[q][q] -= R[q][i + p] * R[q][i + p];
    cholesky_pivot<T, W>(L, dinv, i + q, s[q][q], info);
#pragma GCC unroll 4
    for (int r = q + 1; r < N; ++r) {
#pragma GCC unroll 4
      for (int p = 0; p < q; ++p) s[r][q] -= R[r][i + p] * R[q][i + p];
      R[r][i + q] = s[r][q] * dinv[i + q];
    }
  }
}

// y_i <- (y_i - sum_{k<i} L_ik y_k) / L_ii: row i of the forward substitution L y = b, once
// y_0..y_{i-1} are final (cholesky's sweep and solve's are this same function, so forward and
// backward see the same y). Four partial sums (k mod 4): one chain of i FMAs made the sweep
// latency-bound inside cholesky (B1024 K64 float, AVX-512, one core: factor with the sweep
// 0.73-0.78 -> 0.72-0.73 ms, 0.68 without it).
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void forward_row(const V* L, const V* dinv, int i, V* y) {
  const V* Li = L + tri(i);
  V s0 = y[i], s1{}, s2{}, s3{};
  int k = 0;
  for (; k + 4 <= i; k += 4) {
    s0 -= Li[k] * y[k];
    s1 -= Li[k + 1] * y[k + 1];
    s2 -= Li[k + 2] * y[k + 2];
    s3 -= Li[k + 3] * y[k + 3];
  }
  for (; k < i; ++k) s0 -= Li[k] * y[k];
  y[i] = ((s0 + s1) + (s2 + s3)) * dinv[i];
}

// Row-oriented (left-looking) Cholesky in place on the packed lower triangle; dinv = 1/L_ii.
// Rows go in blocks of four (64-byte vectors: 32 registers) or two: their columns left of
// the block's diagonal in register tiles (cholesky_rows4_block: 4 x 4, each load of the
// factor above used four times; cholesky_rows2_block: 2 x 8), then the diagonal block
// (cholesky_diag_block). With one row and four chains at a time the kernel streamed the
// factor from L2 at about one vector per FMA (B1024 K64 float, AVX-512, one core:
// Cholesky 1.5 ms of a 4.0 ms forward). Summation order is the plain one (k ascending)
// whatever the blocking, so results do not depend on it.
// With y, the forward substitution L y = y runs along, each row block right after it is
// factorised, while its rows are still in L1 (solve<..., true> then does only the backward
// sweep): at K 64 the factor does not fit in L1, and a separate forward sweep streamed all
// of it from L2 once more (B1024 K64 float, AVX-512, one core: factor + solve 0.91 -> 0.84
// ms; same results bit for bit).
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cholesky(V* L, V* dinv, int K, int32_t* info, V* y = nullptr, LinePrefetch<>* pf = nullptr) {
  constexpr int N = sizeof(V) == 64 ? 4 : 2;
  int i = 0;
  for (; i + N <= K; i += N) {
    if constexpr (N == 4) {
      for (int j = 0; j < i; j += 4) {
        cholesky_rows4_block<T, W>(L, dinv, i, j);
        if (pf) pf->step();
      }
    } else {
      V *Li = L + tri(i), *Li1 = L + tri(i + 1);
      int j = 0;
      for (; j + 8 <= i; j += 8) {
        cholesky_rows2_block<T, W, 8>(L, dinv, Li, Li1, j);
        if (pf) pf->step();
      }
      for (; j + 4 <= i; j += 4) cholesky_rows2_block<T, W, 4>(L, dinv, Li, Li1, j);
      for (; j < i; j += 2) cholesky_rows2_block<T, W, 2>(L, dinv, Li, Li1, j);
    }
    cholesky_diag_block<T, W, N>(L, dinv, i, info);
    if (y)
      for (int r = 0; r < N; ++r) forward_row<T, W>(L, dinv, i + r, y);
  }
  for (; i < K; ++i) {
    cholesky_finish_row<T, W>(L, dinv, i, 0, info);
    if (y) forward_row<T, W>(L, dinv, i, y);
  }
}

// x <- A^{-1} x with A = L L^T; with forward_done, x already holds L^{-1} x (cholesky's y).
// The backward sweep (x_i <- x_i / L_ii, then x_k -= L_ik x_i for k < i) takes rows four at
// a time: each x_k is loaded and stored once per four rows and takes their four updates in
// the same order as row by row, so x is bitwise the same.
template <typename T, int W, bool forward_done = false, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void solve(const V* L, const V* dinv, int K, V* x) {
  if constexpr (!forward_done)
    for (int i = 0; i < K; ++i) forward_row<T, W>(L, dinv, i, x);
  int i = K - 1;
  for (; i >= 3; i -= 4) {
    const V *L0 = L + tri(i), *L1 = L + tri(i - 1), *L2 = L + tri(i - 2), *L3 = L + tri(i - 3);
    const V x0 = x[i] * dinv[i];
    const V x1 = (x[i - 1] - L0[i - 1] * x0) * dinv[i - 1];
    const V x2 = ((x[i - 2] - L0[i - 2] * x0) - L1[i - 2] * x1) * dinv[i - 2];
    const V x3 = (((x[i - 3] - L0[i - 3] * x0) - L1[i - 3] * x1) - L2[i - 3] * x2) * dinv[i - 3];
    x[i] = x0;
    x[i - 1] = x1;
    x[i - 2] = x2;
    x[i - 3] = x3;
    for (int k = 0; k < i - 3; ++k) x[k] = (((x[k] - L0[k] * x0) - L1[k] * x1) - L2[k] * x2) - L3[k] * x3;
  }
  for (; i >= 0; --i) {
    const V* Li = L + tri(i);
    const V xi = x[i] * dinv[i];
    x[i] = xi;
    for (int k = 0; k < i; ++k) x[k] -= Li[k] * xi;
  }
}

// Rows i..i+R-1 of columns c..c+NB-1 of X = L^{-1} (rows above i done; x[q][k * S] is
// X_{k,c+q}): the dots over k < i share each load of x_k among R rows and each load of L_ik
// among NB columns (R * NB chains), then the R x R triangle inside the rows is finished in
// order; acc[q] gathers the squares (the variance).
template <typename T, int W, int NB, int R, int S, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_rows(const V* L, const V* dinv, V* const* x, V* acc, int c, int i) {
  const V* Lr[R];
  V s[R][NB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) Lr[r] = L + tri(i + r);
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) {  // column c+q is zero above row c+q
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) s[r][q] = V{};
#pragma GCC unroll 8
    for (int k = c + q; k < c + NB - 1; ++k)
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) s[r][q] += Lr[r][k] * x[q][k * S];
  }
  for (int k = c + NB - 1; k < i; ++k) {
    V a[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) a[r] = Lr[r][k];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
      const V xv = x[q][k * S];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) s[r][q] += a[r] * xv;
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const V m = -dinv[i + r];
#pragma GCC unroll 8
    for (int q = 0; q < NB; ++q) {
#pragma GCC unroll 4
      for (int p = 0; p < r; ++p) s[r][q] += Lr[r][i + p] * x[q][(i + p) * S];
      const V xv = s[r][q] * m;
      x[q][(i + r) * S] = xv;
      acc[q] += xv * xv;
    }
  }
}

// Columns c..c+NB-1 of X = L^{-1} by forward substitution (see inverse_columns). Below
// the block's NB x NB diagonal triangle each load of L_ik serves NB FMA chains.
template <typename T, int W, int NB, bool store, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_column_block(const V* L, const V* dinv, int K, V* X, V* var, int c) {
  // Scratch columns (store = false) are interleaved, element k of column q at k * NB + q.
  // As K separate columns they sat K lane vectors apart (at K 64: 2 KB with 32-byte lanes,
  // 4 KB with 64), and the AVX2 float inverse at B1024 K64 took 1.83 ms against 1.43 ms
  // interleaved (AVX-512: no change).
  constexpr int S = store ? 1 : NB;
  V* x[NB];
  V acc[NB];
#pragma GCC unroll 8
  for (int q = 0; q < NB; ++q) x[q] = store ? X + colq(c + q, K) : X + q;
  for (int q = 0; q < NB; ++q) {  // the diagonal triangle (rows c..c+NB-1)
    const int cq = c + q;
    x[q][cq * S] = dinv[cq];
    acc[q] = x[q][cq * S] * x[q][cq * S];
    for (int i = cq + 1; i < c + NB; ++i) {
      const V* Li = L + tri(i);
      V t = V{};
      for (int k = cq; k < i; ++k) t += Li[k] * x[q][k * S];
      x[q][i * S] = -t * dinv[i];
      acc[q] += x[q][i * S] * x[q][i * S];
    }
  }
  int i = c + NB;
  // Two rows at a time: each load of x_k feeds two FMAs. Three (24 chains, for 32
  // registers) measured slower at K 64 on AVX-512: 0.89 against 0.82 ms per 1024 matrices.
  for (; i + 2 <= K; i += 2) inverse_rows<T, W, NB, 2, S>(L, dinv, x, acc, c, i);
  for (; i < K; ++i) inverse_rows<T, W, NB, 1, S>(L, dinv, x, acc, c, i);
  if (var)
    for (int q = 0; q < NB; ++q) var[c + q] = acc[q];
}

// Rows i..i+3, columns j..j+3 (j + 4 <= i) of X = L^{-1} stored packed like L:
// X_ic = -(sum_{k=c}^{i-1} L_ik X_kc) / L_ii. A 4 x 4 register tile as in
// cholesky_rows4_block: rows i..i+3 of L stay in L1 and each row k of X above is streamed
// once per four rows. Column c starts at k = c; sums run k ascending, as in
// inverse_column_block, so X is bitwise the same.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_rows4_block(const V* L, const V* dinv, V* X, V* var, int i, int j) {
  const V* Lr[4];
  V s[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {
    Lr[r] = L + tri(i + r);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) s[r][q] = V{};
  }
#pragma GCC unroll 4
  for (int k = j; k < j + 3; ++k)  // the tile's upper-left triangle: column j+q from k = j+q
#pragma GCC unroll 4
    for (int q = 0; q <= k - j; ++q)
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) s[r][q] += Lr[r][k] * X[tri(k) + j + q];
  for (int k = j + 3; k < i; ++k) {
    const V* Xk = X + tri(k) + j;
    V a[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) a[r] = Lr[r][k];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const V c = Xk[q];
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) s[r][q] += a[r] * c;
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {  // k = i..i+r-1: the rows of this block, in order
    const V m = -dinv[i + r];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
#pragma GCC unroll 4
      for (int p = 0; p < r; ++p) s[r][q] += Lr[r][i + p] * s[p][q];  // s[p][q] = X_{i+p, j+q}
      s[r][q] = s[r][q] * m;
      X[tri(i + r) + j + q] = s[r][q];
    }
  }
  // var[c] += X_ic^2 for these rows, in row order (see inverse_var_rows), while they are
  // in registers.
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    V v = var[j + q];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) v += s[r][q] * s[r][q];
    var[j + q] = v;
  }
}

// var[c] = sum_i X_ic^2 = (A^{-1})_cc with X = L^{-1} computed row by row (X: tri(K)
// scratch), for 64-byte lane vectors: four rows at a time in 4 x 4 tiles, then the
// block's own triangle. Each var[c] sums its squares in row order from X_cc^2, as
// inverse_columns does, so var is bitwise the same; at B1024 K64 float (AVX-512, one core)
// it takes 0.81 ms against the column blocks' 0.88 ms, which stream L from L2 once per
// eight columns.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_var_rows(const V* L, const V* dinv, int K, V* X, V* var, LinePrefetch<>* pf = nullptr) {
  for (int i = 0; i < K; i += 4) {
    const int R = K - i < 4 ? K - i : 4;
    int j = 0;
    if (R == 4)
      for (; j + 4 <= i; j += 4) {
        inverse_rows4_block<T, W>(L, dinv, X, var, i, j);
        if (pf) pf->step();
      }
    for (int r = 0; r < R; ++r) {  // the columns left: one dot each
      const V* Li = L + tri(i + r);
      V* Xi = X + tri(i + r);
      for (int c = j; c < i + r; ++c) {
        V t = V{};
        for (int k = c; k < i + r; ++k) t += Li[k] * X[tri(k) + c];
        Xi[c] = -t * dinv[i + r];
      }
      Xi[i + r] = dinv[i + r];
    }
    for (int r = 0; r < R; ++r) {  // columns j.. (the tiles added their squares)
      const V* Xi = X + tri(i + r);
      for (int c = j; c < i + r; ++c) var[c] += Xi[c] * Xi[c];
      var[i + r] = Xi[i + r] * Xi[i + r];
    }
  }
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

// var = diag(A^{-1}) from the factor: row-oriented (inverse_var_rows) with 64-byte lane
// vectors (32 registers for its 4 x 4 tiles), column blocks (inverse_columns) otherwise.
// scratch: inverse_var_scratch<V>(K) lane vectors.
template <typename V>
inline size_t inverse_var_scratch(int K) {
  return sizeof(V) == 64 ? static_cast<size_t>(tri(K)) : static_cast<size_t>(kInverseScratch) * K;
}
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void inverse_var(const V* L, const V* dinv, int K, V* scratch, V* var, LinePrefetch<>* pf = nullptr) {
  if constexpr (sizeof(V) == 64) inverse_var_rows<T, W>(L, dinv, K, scratch, var, pf);
  else inverse_columns<T, W, false>(L, dinv, K, scratch, var);
}

// The number of pf->step() calls cholesky and inverse_var make at K (one per register tile
// of the factor and, with 64-byte lanes, of the inverse), so a LinePrefetch spreads its lines
// evenly over both. The forward kernel prefetches the next group's gram this way once a
// group's gram is too big for load_system's own prefetch: its lines then arrive during this
// group's compute-bound factor and inverse (which keep their working set in L1/L2) instead
// of stalling the next load_system, which was memory-bound. Float, one core (Zen 4, session 13),
// medians of 200-300 calls interleaved in one process, same results bit for bit: AVX-512
// B1024 K64 3.44 -> 3.32 ms (three runs, 1.04-1.10x), B2048 K32 1.17x, B1024 K48 1.22x,
// B256 K128 1.04x, B1024 K64 on two threads 1.04x; AVX2 B1024 K64 1.05-1.15x, K48 1.07x.
template <typename V>
inline int64_t prefetch_steps(int K) {
  if (sizeof(V) == 64) return 2 * tri(K / 4 - 1);
  int64_t n = 0;
  for (int i = 0; i + 2 <= K; i += 2) n += i / 8;
  return n;
}

}  // namespace ep
}  // namespace mimo_fast
