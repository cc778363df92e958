// ep_lmmse CPU kernels (formula: mimo_fast/ops/ep_lmmse.py; backward formulas:
// mimo_fast/ops/reference/ep_lmmse.py).
//
// Layout: W matrices are interleaved across the SIMD lanes (W = 8 float / 4 double
// with AVX2, 4 / 2 with SSE2). A group is transposed once into lane-major scratch
// (packed lower triangle, element (i,j) at tri(i)+j, each element a W-lane vector) and
// factorised, solved and inverted with every instruction serving W matrices, so the
// small-K case keeps the lanes full and needs no horizontal reductions. Per group the
// scratch is tri(K) lane vectors for L (forward) plus tri(K) for L^{-1} and K*K for
// S = A^{-1} (backward, only when grad_var is non-zero): the matrix is read from memory
// once and the outputs written once; everything else stays in L1/L2 (K <= 64) or L2.
// A batch that is not a multiple of W pads its last group with identity matrices; in
// forward and backward, a group less than half full at K >= 32 (small batches, remainders) is
// instead done one matrix at a time (*_single: right-looking, row-vectorised).
// Dots and inverse columns are register-blocked four wide (see lane_cholesky.h).
//
// Backward recomputes the factor instead of caching it from forward: the forward
// contract returns (mean, var, info) only, the factor costs K^3/6 lane FMAs against
// ~K^3 for S diag(g_var) S, and nothing B*K*K-sized has to be kept alive.
//
// Non-PD: the first pivot d <= 0 (or NaN) of a lane sets info = its order (1-based),
// the pivot is replaced by 1 so the lane stays finite, and that lane's outputs
// (mean/var, or all gradients) are written as NaN.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "common/args.h"
#include "common/cpu/cpu_features.h"
#include "common/cpu/lane_transpose.h"
#include "common/cpu/lanes.h"
#include "common/cpu/parallel.h"
#include "common/cpu/prefetch.h"
#include "ep_lmmse/cpu/lane_cholesky.h"
#include "ep_lmmse/cpu/single_cholesky.h"

namespace py = pybind11;

namespace mimo_fast {
namespace {

using ep::cholesky;
using ep::colq;
using ep::dot;
using ep::factor_single;
using ep::inverse_single;
using ep::solve_single;
using ep::inverse_columns;
using ep::solve;
using ep::tri;

template <typename T>
struct EpArgs {
  const T *gram, *rhs, *lam, *gam, *grad_mean, *grad_var;
  T *mean, *var, *g_gram, *g_rhs, *g_lam, *g_gam;
  int32_t* info;
  uint8_t* screen;  // optional (forward): 1 where the inputs may hold a NaN/inf or a lam <= 0
  int64_t B;
  int K;
};

// Lane IO for one group of matrices b0..b0+nl-1 (lane l is matrix b0 + l): rows are moved
// in and out of lane vectors by register transposes (common/cpu/lane_transpose.h). Idle
// lanes (l >= nl) read zeros, and a lam of ones, so their system is A = I, and write
// into a scratch row.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
struct GroupIO {
  int K;
  int64_t b0 = 0;
  int nl = 0;
  std::vector<T> zeros, ones, sink;
  LaneBuf<V> row, tmp;
  // Input screen (when asked): the sum of every value read is finite unless one of them
  // is NaN/inf (or the finite sum overflowed: the caller's full scan then finds nothing),
  // and the smallest lam must be > 0. One add per loaded vector.
  bool screening = false;
  V sum{}, lam_min{};

  explicit GroupIO(int k)
      : K(k), zeros(static_cast<size_t>(k) * k), ones(k, T(1)), sink(static_cast<size_t>(k) * k), row(k), tmp(k) {}
  void at(int64_t b, int n) {
    b0 = b;
    nl = n;
    sum = V{};
  }
  MIMO_FAST_INLINE void add_to_screen(const V* v, int n) {
    if (screening)
      for (int i = 0; i < n; ++i) sum += v[i];
  }
  // screen[b] for this group's matrices (see `screening`).
  MIMO_FAST_INLINE void write_screen(uint8_t* screen) const {
    for (int l = 0; l < nl; ++l) screen[b0 + l] = !(sum[l] - sum[l] == T(0)) || !(lam_min[l] > T(0));
  }

  // out[i] = p[b, i] (+ q[b, i]) for each lane's batch row b; p: (B, n) rows, idle lanes read `idle`.
  MIMO_FAST_INLINE void load(const T* p, const T* q, int n, V* out, const T* idle = nullptr) {
    const T* src[W];
    for (int l = 0; l < W; ++l) src[l] = l < nl ? p + (b0 + l) * n : (idle ? idle : zeros.data());
    rows_to_lanes<T, W>(src, n, out);
    add_to_screen(out, n);
    if (!q) return;
    for (int l = 0; l < nl; ++l) src[l] = q + (b0 + l) * n;
    rows_to_lanes<T, W>(src, n, tmp.data());
    add_to_screen(tmp.data(), n);
    for (int i = 0; i < n; ++i) out[i] += tmp[i];
  }
  // p[b, i] = sign * v[i] for each lane's batch row b (row `off` of a (B, rows, n) tensor).
  MIMO_FAST_INLINE void store(const V* v, int n, T* p, T sign = T(1), int64_t rows = 1, int64_t off = 0) {
    T* dst[W];
    for (int l = 0; l < W; ++l) dst[l] = l < nl ? p + ((b0 + l) * rows + off) * n : sink.data();
    if (sign == T(1)) return lanes_to_rows<T, W>(v, n, dst);
    for (int i = 0; i < n; ++i) tmp[i] = sign * v[i];
    lanes_to_rows<T, W>(tmp.data(), n, dst);
  }
  // Prefetch the next group's rows of a (B, n) input (one block of W n elements), for the
  // same small groups as load_system's prefetch (see there).
  MIMO_FAST_INLINE bool prefetches(int64_t next) const { return next >= 0 && int64_t(W) * K * K * sizeof(T) <= 32768; }
  MIMO_FAST_INLINE void prefetch_rows(const T* p, int64_t next, int n) const {
    if (!prefetches(next)) return;
    const char* q = reinterpret_cast<const char*>(p + next * n);
    for (size_t c = 0; c < size_t(W) * n * sizeof(T); c += 64) __builtin_prefetch(q + c, 0, 3);
  }
  // L = packed lower A = sym(gram) + diag(lam), row by row: row i's entries left of the
  // diagonal finish (i, j) = (g_ji + g_ij) / 2, those right of it park g_ij at (j, i).
  // With `next` (the first matrix of the next group, or -1) and a group's gram within 32 KB
  // (K <= 22 in float), the next group's gram is prefetched into L1 as this group's rows are
  // read (one K-th of it per row, in address order), and prefetch_rows does the same for its
  // rhs/gam/lam: it then arrives during this group's factorisation instead of stalling the
  // next load. B4096 K16 float, one core, median of 8 interleaved runs: forward 0.80 ->
  // 0.69 ms (distances of 2-8 groups, L2 and NTA hints were no better or slower). At K 64
  // (256 KB groups) the same prefetch, spread over this group's load, measured slower (the
  // lines compete with the load's own); bigger groups are prefetched during the factor and
  // inverse instead (forward_range, ep::prefetch_steps).
  // Where the time goes at K 32, 64, 128 (Zen 4, session 13): the W rows read at once sit a
  // multiple of 4 KB apart, so all W lines fall in one L1 set (8 ways): this loop alone on an
  // L2-resident group (experiments/ep_lmmse_load_sets/) takes 115-205 TSC cycles per 16 x 16
  // block at K 64, 60-107 with the matrices one line further apart. Not fixed. Tried (B1024
  // K64 unless said): copying the next group's gram to such a padded stride during the
  // factor and inverse cut this phase by a quarter but slowed them by more (-0.6M, +1.2M TSC
  // cycles per call); reading the rows eight lanes at a time (8-lane transposes into the
  // halves of L's vectors) moved the op by -3% to +3% (K 32, 64, 128); a transpose without
  // vpermt2ps gained 0.5-1%; for scale, dropping this phase's stores into L altogether 2-4%.
  //
  // The columns come a transposed W x W block at a time, still in registers
  // (rows_to_lanes_blocks), and each block is wholly left of the diagonal, wholly right of it
  // or holds it, so the per-column choice is made once per block; the screen sums into two
  // chains. As a callback per column (rows_to_lanes_each) the compiler kept the block in a
  // stack copy and branched three ways per column: B1024 K64 float, one core, load phase
  // 0.93-0.98 -> 0.84-0.89 ms (then 0.78-0.83 with the half-width loads of
  // rows_to_lanes_blocks); an L2-resident batch: 12.0 -> 10.3 us per group.
  MIMO_FAST_INLINE void load_system(const T* gram, const T* lam, V* __restrict L, int64_t next = -1) {
    const T* src[W];
    // the next group's gram is one block: a K-th of it per row, in address order, into L1
    LinePrefetch<3> ahead;
    if (prefetches(next)) ahead = LinePrefetch<3>(gram + next * K * K, size_t(W) * K * K * sizeof(T), K);
    V s0{}, s1{};
    for (int i = 0; i < K; ++i) {
      for (int l = 0; l < W; ++l) src[l] = l < nl ? gram + ((b0 + l) * K + i) * K : zeros.data();
      ahead.step();
      V* Li = L + tri(i);
      auto put = [&](int j, V v) __attribute__((always_inline)) {
        if (j < i) Li[j] = T(0.5) * (Li[j] + v);
        else if (j == i) Li[i] = v;
        else L[tri(j) + i] = v;
      };
      rows_to_lanes_blocks<T, W>(src, K, [&](int j0, const V* r, int m) __attribute__((always_inline)) {
        if (m < W) {  // the zero-padded last block (W does not divide K)
          for (int q = 0; q < m; ++q) {
            if (screening) ((j0 + q) & 1 ? s1 : s0) += r[q];
            put(j0 + q, r[q]);
          }
          return;
        }
        if (screening) {
#pragma GCC unroll 16
          for (int q = 0; q < W; q += 2) {
            s0 += r[q];
            s1 += r[q + 1];
          }
        }
        if (j0 + W <= i) {  // left of the diagonal: finish (i, j)
#pragma GCC unroll 16
          for (int q = 0; q < W; ++q) Li[j0 + q] = T(0.5) * (Li[j0 + q] + r[q]);
        } else if (j0 > i) {  // right of it: park g_ij at (j, i), rows j0.. of column i
          V* p = L + tri(j0) + i;
#pragma GCC unroll 16
          for (int q = 0; q < W; ++q) {
            *p = r[q];
            p += j0 + q + 1;
          }
        } else {
#pragma GCC unroll 16
          for (int q = 0; q < W; ++q) put(j0 + q, r[q]);
        }
      });
    }
    sum += s0 + s1;
    load(lam, nullptr, K, row.data(), ones.data());
    lam_min = row[0];
    for (int i = 0; i < K; ++i) {
      L[tri(i) + i] += row[i];
      lam_min = row[i] < lam_min ? row[i] : lam_min;
    }
  }
};

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void nan_failed(const int32_t* info, int64_t b0, int nl, int64_t n, T* p) {
  for (int l = 0; l < nl; ++l)
    if (info[l]) std::fill(p + (b0 + l) * n, p + (b0 + l + 1) * n, std::numeric_limits<T>::quiet_NaN());
}

// One matrix on its own, for a lane group that would be mostly idle (a batch smaller than
// the lane count, or its remainder) at K >= 32 (kernels: single_cholesky.h).
// var_i = |row i of Z|^2 with Z = U^{-1}; S = A^{-1} = Z Z^T.
template <typename T, int W>
MIMO_FAST_INLINE void forward_single(const EpArgs<T>& a, int64_t b, T* U, T* Z) {
  const int K = a.K;
  const int32_t info = factor_single(a.gram + b * K * K, a.lam + b * K, K, U);
  T* m = a.mean + b * K;
  T* var = a.var + b * K;
  for (int i = 0; i < K; ++i) m[i] = a.rhs[b * K + i] + a.gam[b * K + i];
  solve_single<T, W>(U, K, m);
  inverse_single(U, K, Z, var);
  a.info[b] = info;
  if (a.screen) {
    T sum = 0, lam_min = a.lam[b * K];
    for (int64_t i = 0; i < int64_t(K) * K; ++i) sum += a.gram[b * K * K + i];
    for (int i = 0; i < K; ++i) {
      sum += a.rhs[b * K + i] + a.gam[b * K + i] + a.lam[b * K + i];
      lam_min = std::min(lam_min, a.lam[b * K + i]);
    }
    a.screen[b] = !(sum - sum == T(0)) || !(lam_min > T(0));
  }
  if (info) {
    std::fill(m, m + K, std::numeric_limits<T>::quiet_NaN());
    std::fill(var, var + K, std::numeric_limits<T>::quiet_NaN());
  }
}

// Backward for one matrix (same formulas as backward_range). buf: 3 K*K + 3 K.
template <typename T, int W>
MIMO_FAST_INLINE void backward_single(const EpArgs<T>& a, int64_t b, T* buf) {
  const int K = a.K;
  const size_t KK = static_cast<size_t>(K) * K;
  T *U = buf, *Z = buf + KK, *S = buf + 2 * KK, *m = buf + 3 * KK, *u = m + K, *wrow = u + K;
  const int32_t info = factor_single(a.gram + b * K * K, a.lam + b * K, K, U);
  for (int i = 0; i < K; ++i) {
    m[i] = a.rhs[b * K + i] + a.gam[b * K + i];
    u[i] = a.grad_mean[b * K + i];
  }
  solve_single<T, W>(U, K, m);
  solve_single<T, W>(U, K, u);
  const T* gv = a.grad_var + b * K;
  bool any_gv = false;
  for (int i = 0; i < K; ++i) any_gv |= gv[i] != T(0);
  if (any_gv) {
    inverse_single(U, K, Z, static_cast<T*>(nullptr));
    for (int i = 0; i < K; ++i)
      for (int j = 0; j <= i; ++j)
        S[i * K + j] = S[j * K + i] = dot<T, W>(Z + i * K + i, Z + j * K + i, K - i);
  }
  T* G = a.g_gram + b * K * K;
  T* glam = a.g_lam + b * K;
  for (int i = 0; i < K; ++i) {
    if (any_gv)
      for (int k = 0; k < K; ++k) wrow[k] = S[i * K + k] * gv[k];
    for (int j = 0; j <= i; ++j) {
      const T t = any_gv ? dot<T, W>(wrow, S + j * K, K) : T(0);
      const T g = -(T(0.5) * (u[i] * m[j] + m[i] * u[j]) + t);
      G[i * K + j] = G[j * K + i] = g;
      if (i == j) glam[i] = -(u[i] * m[i] + t);
    }
  }
  std::copy(u, u + K, a.g_rhs + b * K);
  std::copy(u, u + K, a.g_gam + b * K);
  if (info) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    std::fill(G, G + KK, nan);
    for (T* p : {a.g_rhs, a.g_lam, a.g_gam}) std::fill(p + b * K, p + (b + 1) * K, nan);
  }
}

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void forward_range(const EpArgs<T>& a, int64_t b_begin, int64_t b_end) {
  const int K = a.K;
  LaneBuf<V> L(tri(K)), dinv(K), x(K), col(ep::inverse_var_scratch<V>(K)), var(K);
  GroupIO<T, W> io(K);
  io.screening = a.screen != nullptr;
  std::vector<T> U, Z;
  const int64_t pf_steps = ep::prefetch_steps<V>(K);  // see the prefetch below
  for (int64_t b0 = b_begin; b0 < b_end; b0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, b_end - b0));
    if (2 * nl < W && K >= 32) {  // mostly idle lanes: one matrix at a time is faster
      U.resize(static_cast<size_t>(K) * K);
      Z.resize(static_cast<size_t>(K) * K);
      for (int l = 0; l < nl; ++l) forward_single<T, W>(a, b0 + l, U.data(), Z.data());
      continue;
    }
    int32_t info[W] = {};
    io.at(b0, nl);
    const int64_t next = b0 + 2 * W <= b_end ? b0 + W : -1;
    io.load_system(a.gram, a.lam, L.data(), next);
    for (const T* p : {a.rhs, a.gam, a.lam}) io.prefetch_rows(p, next, K);
    io.load(a.rhs, a.gam, K, x.data());
    // Groups too big for load_system's own prefetch (K >= 23 in float) prefetch the next
    // group's gram during this group's factor and inverse (see ep::prefetch_steps).
    LinePrefetch<> pf;
    if (next >= 0 && !io.prefetches(next))
      pf = LinePrefetch<>(a.gram + next * K * K, size_t(W) * K * K * sizeof(T), pf_steps);
    cholesky<T, W>(L.data(), dinv.data(), K, info, x.data(), &pf);  // with the forward sweep
    solve<T, W, true>(L.data(), dinv.data(), K, x.data());
    ep::inverse_var<T, W>(L.data(), dinv.data(), K, col.data(), var.data(), &pf);
    io.store(x.data(), K, a.mean);
    io.store(var.data(), K, a.var);
    if (a.screen) io.write_screen(a.screen);
    for (int l = 0; l < nl; ++l) a.info[b0 + l] = info[l];
    nan_failed<T, W>(info, b0, nl, K, a.mean);
    nan_failed<T, W>(info, b0, nl, K, a.var);
  }
}

// g_A = -(u m^T + S diag(g_var) S);  g_gram = sym(g_A);  g_lam = diag(g_A);  g_rhs = g_gam = u.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void backward_range(const EpArgs<T>& a, int64_t b_begin, int64_t b_end) {
  const int K = a.K;
  LaneBuf<V> L(tri(K)), dinv(K), m(K), u(K), gv(K), glam(K), wrow(K), GA(tri(K)), grow(K);
  LaneBuf<V> X, S;  // only when some grad_var is non-zero
  GroupIO<T, W> io(K);
  std::vector<T> single;
  for (int64_t b0 = b_begin; b0 < b_end; b0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, b_end - b0));
    if (2 * nl < W && a.K >= 32) {  // mostly idle lanes: one matrix at a time is faster
      single.resize(3 * static_cast<size_t>(K) * K + 3 * static_cast<size_t>(K));
      for (int l = 0; l < nl; ++l) backward_single<T, W>(a, b0 + l, single.data());
      continue;
    }
    int32_t info[W] = {};
    io.at(b0, nl);
    io.load_system(a.gram, a.lam, L.data());
    cholesky<T, W>(L.data(), dinv.data(), K, info);
    io.load(a.rhs, a.gam, K, m.data());
    solve<T, W>(L.data(), dinv.data(), K, m.data());
    io.load(a.grad_mean, nullptr, K, u.data());
    solve<T, W>(L.data(), dinv.data(), K, u.data());
    io.load(a.grad_var, nullptr, K, gv.data());
    bool any_gv = false;
    for (int i = 0; i < K && !any_gv; ++i)
      for (int l = 0; l < nl; ++l) any_gv |= gv[i][l] != T(0);

    for (int i = 0; i < K; ++i) glam[i] = u[i] * m[i];
    if (any_gv) {
      if (X.empty()) {
        X.resize(tri(K));
        S.resize(static_cast<size_t>(K) * K);
      }
      inverse_columns<T, W, true>(L.data(), dinv.data(), K, X.data(), static_cast<V*>(nullptr));
      // S_ij = sum_{k >= max(i,j)} X_ki X_kj (columns of X are contiguous); j <= i, four
      // j at a time so each load of column i serves four FMA chains.
      for (int i = 0; i < K; ++i) {
        const V* ci = X.data() + colq(i, K);
        int j = 0;
        for (; j + 4 <= i + 1; j += 4) {
          const V *c0 = X.data() + colq(j, K), *c1 = X.data() + colq(j + 1, K),
                  *c2 = X.data() + colq(j + 2, K), *c3 = X.data() + colq(j + 3, K);
          V s0{}, s1{}, s2{}, s3{};
          for (int k = i; k < K; ++k) {
            const V a = ci[k];
            s0 += a * c0[k];
            s1 += a * c1[k];
            s2 += a * c2[k];
            s3 += a * c3[k];
          }
          const V sq[4] = {s0, s1, s2, s3};
          for (int q = 0; q < 4; ++q) S[static_cast<size_t>(i) * K + j + q] = S[static_cast<size_t>(j + q) * K + i] = sq[q];
        }
        for (; j <= i; ++j) {
          const V* cj = X.data() + colq(j, K);
          V s = V{};
          for (int k = i; k < K; ++k) s += ci[k] * cj[k];
          S[static_cast<size_t>(i) * K + j] = S[static_cast<size_t>(j) * K + i] = s;
        }
      }
    }
    // g_A entries (i, j <= i) into the packed lower GA; T = S diag(g_var) S four j at a
    // time (shared loads of S_i. g_var).
    auto emit = [&](int i, int j, V t) __attribute__((always_inline)) {
      GA[tri(i) + j] = -(T(0.5) * (u[i] * m[j] + m[i] * u[j]) + t);
      if (i == j) glam[i] += t;
    };
    for (int i = 0; i < K; ++i) {
      if (!any_gv) {
        for (int j = 0; j <= i; ++j) emit(i, j, V{});
        continue;
      }
      const V* Si = S.data() + static_cast<size_t>(i) * K;
      for (int k = 0; k < K; ++k) wrow[k] = Si[k] * gv[k];
      int j = 0;
      for (; j + 4 <= i + 1; j += 4) {
        const V* S0 = S.data() + static_cast<size_t>(j) * K;
        const V *S1 = S0 + K, *S2 = S0 + 2 * K, *S3 = S0 + 3 * K;
        V t0{}, t1{}, t2{}, t3{};
        for (int k = 0; k < K; ++k) {
          const V w = wrow[k];
          t0 += w * S0[k];
          t1 += w * S1[k];
          t2 += w * S2[k];
          t3 += w * S3[k];
        }
        emit(i, j, t0);
        emit(i, j + 1, t1);
        emit(i, j + 2, t2);
        emit(i, j + 3, t3);
      }
      for (; j <= i; ++j) {
        const V* Sj = S.data() + static_cast<size_t>(j) * K;
        V t = V{};
        for (int k = 0; k < K; ++k) t += wrow[k] * Sj[k];
        emit(i, j, t);
      }
    }
    for (int i = 0; i < K; ++i) {  // g_gram row i = row i of the symmetric g_A
      for (int j = 0; j <= i; ++j) grow[j] = GA[tri(i) + j];
      for (int j = i + 1; j < K; ++j) grow[j] = GA[tri(j) + i];
      io.store(grow.data(), K, a.g_gram, T(1), K, i);
    }
    io.store(u.data(), K, a.g_rhs);
    io.store(u.data(), K, a.g_gam);
    io.store(glam.data(), K, a.g_lam, T(-1));
    nan_failed<T, W>(info, b0, nl, static_cast<int64_t>(K) * K, a.g_gram);
    nan_failed<T, W>(info, b0, nl, K, a.g_rhs);
    nan_failed<T, W>(info, b0, nl, K, a.g_lam);
    nan_failed<T, W>(info, b0, nl, K, a.g_gam);
  }
}

// ISA wrappers: the always_inline bodies above are compiled once per target here.
MIMO_FAST_LANE_ENTRIES(fwd, EpArgs, forward_range)
MIMO_FAST_LANE_ENTRIES(bwd, EpArgs, backward_range)

// Runs fn over the batch with the GIL released: chunks of whole groups of 16 matrices (the
// widest lane group); below ~2M B*K^3 (~0.1 ms on one core) one thread is faster.
template <typename T>
void run(void (*fn)(const EpArgs<T>&, int64_t, int64_t), const EpArgs<T>& a, int nthreads) {
  py::gil_scoped_release release;
  parallel_batches(a.B, 16, static_cast<double>(a.B) * a.K * a.K * a.K, 1 << 21, nthreads,
                   [&](int64_t b, int64_t e) { fn(a, b, e); });
}

// Block layouts (mimo_fast/ops/cpu/ep_lmmse.py builds them): slots by name below.
constexpr Layout kForward{"ep_lmmse_forward", "gram rhs lam gam mean var info screen", "B K nthreads"};
constexpr Layout kBackward{"ep_lmmse_backward", "grad_mean grad_var gram rhs lam gam g_gram g_rhs g_lam g_gam",
                           "B K nthreads"};
namespace fwd { enum : int { gram, rhs, lam, gam, mean, var, info, screen, kTensors }; }
namespace bwd { enum : int { grad_mean, grad_var, gram, rhs, lam, gam, g_gram, g_rhs, g_lam, g_gam, kTensors }; }
namespace sc { enum : int { B, K, nthreads }; }
static_assert(kForward.tensor_count() == fwd::kTensors && kBackward.tensor_count() == bwd::kTensors, "layouts");

// B and K, checked against every buffer's element count.
std::pair<int64_t, int64_t> sizes(const ArgView& a) {
  const int64_t B = a.i(sc::B), K = a.i(sc::K);
  if (B < 0 || K < 1) a.fail("need B >= 0 and K >= 1");
  return {B, K};
}

template <typename T>
EpArgs<T> system_args(const ArgView& a, int gram, int64_t B, int64_t K) {
  EpArgs<T> x{};
  x.gram = a.in<T>(gram);
  x.rhs = a.in<T>(gram + 1);
  x.lam = a.in<T>(gram + 2);
  x.gam = a.in<T>(gram + 3);
  x.B = B;
  x.K = static_cast<int>(K);
  return x;
}

template <typename T>
EpArgs<T> forward_args(const ArgView& a, int64_t B, int64_t K) {
  EpArgs<T> x = system_args<T>(a, fwd::gram, B, K);
  x.mean = a.out<T>(fwd::mean);
  x.var = a.out<T>(fwd::var);
  x.info = a.out<int32_t>(fwd::info);
  x.screen = a.out_opt<uint8_t>(fwd::screen);
  return x;
}

template <typename T>
EpArgs<T> backward_args(const ArgView& a, int64_t B, int64_t K) {
  EpArgs<T> x = system_args<T>(a, bwd::gram, B, K);
  x.grad_mean = a.in<T>(bwd::grad_mean);
  x.grad_var = a.in<T>(bwd::grad_var);
  x.g_gram = a.out<T>(bwd::g_gram);
  x.g_rhs = a.out<T>(bwd::g_rhs);
  x.g_lam = a.out<T>(bwd::g_lam);
  x.g_gam = a.out<T>(bwd::g_gam);
  return x;
}

// gram, rhs, lam, gam -> mean, var (B, K), int32 info (B,) and, when given, the uint8 input
// screen (B,). Returns (number of failed matrices, number of flagged ones): the Python side
// then needs no tensor op to decide whether to raise or to run the full value scan (after
// the kernel has streamed the batch, each small torch op runs with cold caches, ~20 us).
py::tuple ep_forward(const py::bytes& block) {
  const ArgView a(block, kForward);
  const auto [B, K] = sizes(a);
  a.expect_numel(fwd::gram, B * K * K);
  a.expect_numel({fwd::rhs, fwd::lam, fwd::gam, fwd::mean, fwd::var}, B * K);
  a.expect_numel(fwd::info, B);
  if (a.present(fwd::screen)) a.expect_numel(fwd::screen, B);
  const int nthreads = static_cast<int>(a.i(sc::nthreads));
  if (a.dtype(fwd::gram) == DType::f32) run(fwd_for<float>(lane_isa()), forward_args<float>(a, B, K), nthreads);
  else run(fwd_for<double>(lane_isa()), forward_args<double>(a, B, K), nthreads);
  const int32_t* info = a.out<int32_t>(fwd::info);
  const uint8_t* screen = a.out_opt<uint8_t>(fwd::screen);
  int64_t failed = 0, flagged = 0;
  for (int64_t b = 0; b < B; ++b) {
    failed += info[b] != 0;
    if (screen) flagged += screen[b] != 0;
  }
  return py::make_tuple(failed, flagged);
}

// grad_mean, grad_var, gram, rhs, lam, gam -> the gradients of gram, rhs, lam, gam.
void ep_backward(const py::bytes& block) {
  const ArgView a(block, kBackward);
  const auto [B, K] = sizes(a);
  a.expect_numel({bwd::gram, bwd::g_gram}, B * K * K);
  a.expect_numel({bwd::grad_mean, bwd::grad_var, bwd::rhs, bwd::lam, bwd::gam, bwd::g_rhs, bwd::g_lam, bwd::g_gam},
                 B * K);
  const int nthreads = static_cast<int>(a.i(sc::nthreads));
  if (a.dtype(bwd::gram) == DType::f32) run(bwd_for<float>(lane_isa()), backward_args<float>(a, B, K), nthreads);
  else run(bwd_for<double>(lane_isa()), backward_args<double>(a, B, K), nthreads);
}

}  // namespace

void bind_ep_lmmse(py::module_& m) {
  m.def("ep_lmmse_forward", &ep_forward, py::arg("block"),
        "ep_lmmse forward; block (mimo_fast.ops.native): gram (B,K,K), rhs, lam, gam (B,K) -> mean, var "
        "(B,K), int32 info (B,), uint8 screen (B,) or None; scalars B, K, nthreads. Returns (failed, flagged) counts.");
  m.def("ep_lmmse_backward", &ep_backward, py::arg("block"),
        "ep_lmmse backward; block: grad_mean, grad_var, gram, rhs, lam, gam -> g_gram, g_rhs, g_lam, g_gam; "
        "scalars B, K, nthreads.");
}

}  // namespace mimo_fast
