// Group algorithms of the ep_lmmse CUDA kernels (csrc/ep_lmmse/cuda/ep_lmmse.cu): batched
// Cholesky-based LMMSE on one matrix held in shared memory by a group of threads, either
// one warp (K <= 32, several matrices per block) or a whole block.
//
// The lower triangle of A = sym(gram) + diag(lam) is packed row by row (element (i, j),
// j <= i, at tri(i) + j) and transformed in place, as LAPACK's potrf, trtri and lauum do:
//
//   A  --cholesky-->  L  --invert-->  Z = L^{-1}  --gram_of_inverse-->  S = Z^T Z = A^{-1}
//
// Work partitioning: a loop `for (i = start + g.rank(); i < end; i += g.size())` gives
// each index to one thread of the group; `for (i = start + g.warp(); ...; i += g.nwarps())`
// with an inner `for (k = ... + g.lane(); ...; k += kWarp)` gives rows to warps and columns
// to lanes (contiguous shared-memory addresses, no bank conflicts). Each phase between two
// g.sync() calls writes only locations no other thread reads in that phase (checked by
// the host emulation in both thread orders, tests/test_ep_lmmse_cuda.py).
#pragma once

#include <cstdint>

#include "common/cuda/block_ctx.cuh"

namespace mimo_fast {
namespace cuda {
namespace ep {

MIMO_FAST_HD constexpr int tri(int i) { return i * (i + 1) / 2; }
// Packed lower-triangle index of (i, j), j <= i.
MIMO_FAST_HD constexpr int ix(int i, int j) { return tri(i) + j; }
// Shared-memory reals one matrix needs: the packed triangle plus 2 (forward) or 4
// (backward) K-vectors. Used by the launch configuration and by the kernels alike.
MIMO_FAST_HD constexpr int64_t smem_reals(int K, bool backward) {
  return static_cast<int64_t>(tri(K)) + (backward ? 4 : 2) * static_cast<int64_t>(K);
}

template <typename T>
struct Args {
  const T *gram, *rhs, *lam, *gam;  // (B,K,K), (B,K) x3
  const T *grad_mean, *grad_var;    // backward only
  T *mean, *var;                    // forward outputs (B,K)
  int32_t* info;                    // forward output (B,)
  T *g_gram, *g_rhs, *g_lam, *g_gam;  // backward outputs
  int64_t B;                        // matrices in this launch (pointers are offset per launch)
  int K;
  int per_block;                    // matrices per block (warp path; 1 on the block path)
};

// One warp shares a matrix.
template <class Ctx>
struct WarpGroup {
  const Ctx& c;
  MIMO_FAST_HD int rank() const { return c.lane; }
  MIMO_FAST_HD int size() const { return kWarp; }
  MIMO_FAST_HD int warp() const { return 0; }
  MIMO_FAST_HD int nwarps() const { return 1; }
  MIMO_FAST_HD int lane() const { return c.lane; }
  MIMO_FAST_HD void sync() const { c.warp_sync(); }
  MIMO_FAST_HD bool any(bool p) const { return c.warp_any(p); }
};

// The whole block shares a matrix (blockDim a multiple of 32).
template <class Ctx>
struct BlockGroup {
  const Ctx& c;
  MIMO_FAST_HD int rank() const { return c.tid; }
  MIMO_FAST_HD int size() const { return c.nthreads; }
  MIMO_FAST_HD int warp() const { return c.warp; }
  MIMO_FAST_HD int nwarps() const { return c.nwarps; }
  MIMO_FAST_HD int lane() const { return c.lane; }
  MIMO_FAST_HD void sync() const { c.sync(); }
  MIMO_FAST_HD bool any(bool p) const { return c.sync_or(p); }
};

// P <- packed lower triangle of sym(g) + diag(lm), as the CPU kernel forms it (the diagonal
// as 0.5 (g_ii + g_ii) + lam_i, the same bits as g_ii + lam_i). Row i of gram is read
// along the lanes (coalesced); its transpose is the strided second read.
template <typename T, class G>
MIMO_FAST_HD void load_system(const G& g, const T* gm, const T* lm, int K, T* P) {
  for (int i = g.warp(); i < K; i += g.nwarps())
    for (int j = g.lane(); j <= i; j += kWarp)
      P[ix(i, j)] = i == j ? T(0.5) * (gm[i * K + i] + gm[i * K + i]) + lm[i]
                           : T(0.5) * (gm[i * K + j] + gm[j * K + i]);
}

// In-place right-looking Cholesky A = L L^T on the packed triangle. Returns info.
// Step j: pivot d = A_jj (Schur complement so far); column j below it /= sqrt(d); then
// the trailing triangle A_ik -= L_ij L_kj (j < k <= i), rows to warps, columns to lanes.
template <typename T, class G>
MIMO_FAST_HD int cholesky(const G& g, T* P, int K) {
  int info = 0;
  for (int j = 0; j < K; ++j) {
    T d = P[ix(j, j)];  // every thread reads the pivot (uniform info and scaling)
    if (!(d > T(0))) {
      if (info == 0) info = j + 1;
      d = T(1);
    }
    const T ljj = sqrt_t(d);
    const T inv = T(1) / ljj;
    for (int i = j + 1 + g.rank(); i < K; i += g.size()) P[ix(i, j)] *= inv;
    g.sync();
    if (g.rank() == 0) P[ix(j, j)] = ljj;  // nobody reads (j, j) in this phase
    for (int i = j + 1 + g.warp(); i < K; i += g.nwarps()) {
      const T lij = P[ix(i, j)];
      for (int k = j + 1 + g.lane(); k <= i; k += kWarp) P[ix(i, k)] -= lij * P[ix(k, j)];
    }
    g.sync();
  }
  return info;
}

// c <- A^{-1} c = L^{-T} L^{-1} c; y is a K-vector of scratch. Each step reads one solved
// entry (written in the previous phase) and updates the entries after (or before) it.
template <typename T, class G>
MIMO_FAST_HD void solve(const G& g, const T* P, int K, T* c, T* y) {
  for (int j = 0; j < K; ++j) {  // L y = c (column-oriented forward substitution)
    const T yj = c[j] / P[ix(j, j)];
    if (g.rank() == 0) y[j] = yj;
    for (int i = j + 1 + g.rank(); i < K; i += g.size()) c[i] -= P[ix(i, j)] * yj;
    g.sync();
  }
  for (int j = K - 1; j >= 0; --j) {  // L^T x = y, x into c (c is not read any more)
    const T xj = y[j] / P[ix(j, j)];
    if (g.rank() == 0) c[j] = xj;
    for (int i = g.rank(); i < j; i += g.size()) y[i] -= P[ix(j, i)] * xj;
    g.sync();
  }
}

// L -> Z = L^{-1} in place, columns right to left. From Z L = I, for i > j:
//   Z_ij = -(sum_{k=j+1..i} Z_ik L_kj) / L_jj,   Z_jj = 1 / L_jj,
// where Z_ik (k > j) is already in place and column j still holds L. t: K scratch.
template <typename T, class G>
MIMO_FAST_HD void invert(const G& g, T* P, int K, T* t) {
  for (int j = K - 1; j >= 0; --j) {
    const T ljj = P[ix(j, j)];
    for (int i = j + 1 + g.rank(); i < K; i += g.size()) {
      T acc = T(0);
      for (int k = j + 1; k <= i; ++k) acc += P[ix(i, k)] * P[ix(k, j)];
      t[i] = acc;
    }
    g.sync();
    const T zjj = T(1) / ljj;
    for (int i = j + 1 + g.rank(); i < K; i += g.size()) P[ix(i, j)] = -t[i] * zjj;
    if (g.rank() == 0) P[ix(j, j)] = zjj;
    g.sync();
  }
}

// Z -> S = Z^T Z = A^{-1} (lower triangle) in place, rows top to bottom:
//   S_ij = sum_{k=i..K-1} Z_ki Z_kj   (j <= i; Z is lower, so k >= i),
// which reads rows k >= i only: row i may be overwritten once it is computed. t: scratch.
template <typename T, class G>
MIMO_FAST_HD void gram_of_inverse(const G& g, T* P, int K, T* t) {
  for (int i = 0; i < K; ++i) {
    for (int j = g.rank(); j <= i; j += g.size()) {
      T acc = T(0);
      for (int k = i; k < K; ++k) acc += P[ix(k, i)] * P[ix(k, j)];
      t[j] = acc;
    }
    g.sync();
    for (int j = g.rank(); j <= i; j += g.size()) P[ix(i, j)] = t[j];
    g.sync();
  }
}

// S_ab of the symmetric matrix whose lower triangle is packed in P.
template <typename T>
MIMO_FAST_HD T sym(const T* P, int a, int b) { return a >= b ? P[ix(a, b)] : P[ix(b, a)]; }

// Matrix b: mean, var, info. sm: smem_reals(K, false) reals.
template <typename T, class G>
MIMO_FAST_HD void forward_matrix(const G& g, const Args<T>& a, int64_t b, T* sm) {
  const int K = a.K;
  T* P = sm;
  T* c = P + tri(K);  // rhs + gam, then the mean
  T* y = c + K;       // scratch
  const int64_t v0 = b * K;
  load_system(g, a.gram + v0 * K, a.lam + v0, K, P);
  for (int i = g.rank(); i < K; i += g.size()) c[i] = a.rhs[v0 + i] + a.gam[v0 + i];
  g.sync();
  const int info = cholesky(g, P, K);
  solve(g, P, K, c, y);
  invert(g, P, K, y);
  const T nan = quiet_nan<T>();
  for (int i = g.rank(); i < K; i += g.size()) {
    T v = T(0);  // var_i = (Z^T Z)_ii = |column i of Z|^2
    for (int k = i; k < K; ++k) v += P[ix(k, i)] * P[ix(k, i)];
    a.mean[v0 + i] = info ? nan : c[i];
    a.var[v0 + i] = info ? nan : v;
  }
  if (g.rank() == 0) a.info[b] = info;
}

// Matrix b: gradients of gram, rhs, lam, gam. sm: smem_reals(K, true) reals.
template <typename T, class G>
MIMO_FAST_HD void backward_matrix(const G& g, const Args<T>& a, int64_t b, T* sm) {
  const int K = a.K;
  T* P = sm;
  T* m = P + tri(K);  // rhs + gam, then A^{-1}(rhs + gam)
  T* u = m + K;       // g_mean, then A^{-1} g_mean
  T* gv = u + K;      // g_var
  T* t = gv + K;      // scratch
  const int64_t v0 = b * K;
  load_system(g, a.gram + v0 * K, a.lam + v0, K, P);
  bool nonzero = false;
  for (int i = g.rank(); i < K; i += g.size()) {
    m[i] = a.rhs[v0 + i] + a.gam[v0 + i];
    u[i] = a.grad_mean[v0 + i];
    gv[i] = a.grad_var[v0 + i];
    nonzero = nonzero || gv[i] != T(0);
  }
  g.sync();
  // S diag(g_var) S is skipped (it is zero) when g_var is: the usual mean-only loss.
  const bool any_gv = g.any(nonzero);
  const int info = cholesky(g, P, K);
  solve(g, P, K, m, t);
  solve(g, P, K, u, t);
  if (any_gv) {
    invert(g, P, K, t);
    gram_of_inverse(g, P, K, t);
  }
  const T nan = quiet_nan<T>();
  T* gg = a.g_gram + v0 * K;
  for (int i = g.warp(); i < K; i += g.nwarps()) {
    for (int j = g.lane(); j <= i; j += kWarp) {
      T w = T(0);  // (S diag(g_var) S)_ij
      if (any_gv)
        for (int k = 0; k < K; ++k) w += sym(P, i, k) * gv[k] * sym(P, k, j);
      const T gij = -(T(0.5) * (u[i] * m[j] + m[i] * u[j]) + w);
      gg[i * K + j] = info ? nan : gij;
      gg[j * K + i] = info ? nan : gij;
      if (i == j) a.g_lam[v0 + i] = info ? nan : -(u[i] * m[i] + w);
    }
  }
  for (int i = g.rank(); i < K; i += g.size()) {
    a.g_rhs[v0 + i] = info ? nan : u[i];
    a.g_gam[v0 + i] = info ? nan : u[i];
  }
}

// One block's work: matrix blk (block path) or matrices blk * per_block + warp (warp path).
template <typename T, bool kWarpPath, bool kBackward, class Ctx>
MIMO_FAST_HD void block_body(const Ctx& c, const Args<T>& a, int64_t blk, unsigned char* smem) {
  T* sm = reinterpret_cast<T*>(smem);
  if (kWarpPath) {
    const int64_t b = blk * a.per_block + c.warp;
    if (b >= a.B) return;  // whole warps only: the warp path has no block-wide barrier
    const WarpGroup<Ctx> g{c};
    T* mine = sm + c.warp * smem_reals(a.K, kBackward);
    if (kBackward) backward_matrix(g, a, b, mine);
    else forward_matrix(g, a, b, mine);
  } else {
    const BlockGroup<Ctx> g{c};
    if (kBackward) backward_matrix(g, a, blk, sm);
    else forward_matrix(g, a, blk, sm);
  }
}

}  // namespace ep
}  // namespace cuda
}  // namespace mimo_fast
