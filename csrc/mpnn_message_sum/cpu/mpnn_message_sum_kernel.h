// mpnn_message_sum CPU pair kernels, written once and compiled once per instruction set:
// mpnn_message_sum.cpp includes this file inside namespace `portable` (baseline x86-64,
// 16-byte vectors), inside namespace `avx2` under target("avx2,fma") (32-byte vectors)
// and inside namespace `avx512` under target("avx512f,avx512vl,avx512bw,avx512dq,fma")
// (64-byte vectors). No includes and no include guard on purpose: everything here must be
// defined inside the including namespace so that it gets that namespace's target.
// The including namespace defines kBytes (vector width), kMR1 (rows of the pair x H
// micro-kernel for 1 column vector), kMR2/kNV2 (rows and column vectors otherwise;
// kMR2 divides kMR1, which divides the tile size), kMRw/kNVw (shape of the weight-
// gradient micro-kernel); the structs FwdArgs/BwdArgs/Work/Part live in the parent
// namespace.
//
// Contract: the pair kernels of mimo_fast/ops/mpnn_message_sum.py (PairKernels). recv,
// send (B, N, H1) and gin (B, N, D) arrive unpadded; each unit copies the rows it needs
// into zero-padded scratch (N x H1p, N x Dp) unless the width is already a multiple of
// the vector. Weights arrive padded (H1p, H2p, Fop: multiples of the vector width and of
// kMRw) with zeros in the pad, so no loop here has a column tail. Rows (pairs) are padded
// to a multiple of kMR1 with rows whose results are never stored (rows are independent
// in every pair GEMM, so they never reach a stored row).
//
// Memory: per thread one tile of TP pairs (h1, h2 and gradient tiles) and a few N x H
// rows; nothing of size N*N*H is ever held.

template <typename T>
struct Vt {
  typedef T V __attribute__((vector_size(kBytes)));
  static constexpr int W = kBytes / static_cast<int>(sizeof(T));
};

template <typename T>
static inline __attribute__((always_inline)) typename Vt<T>::V vload(const T* p) {
  typename Vt<T>::V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T, typename V>
static inline __attribute__((always_inline)) void vstore(T* p, V v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename V>
static inline __attribute__((always_inline)) V vrelu(V v) {
  const V z = {};
  return v > z ? v : z;
}

// One register tile: acc[MR][NV] = init; acc += sum_k A(r0 + r, k) * B(k, cols of block c)
// with A(r, k) = a[r * ars + k * aks] (broadcast) and B(k, :) = b[k * ldb + ...] (vector
// loads); then epi(r0, c, acc). FMA-bound when MR * NV >= 8 (two FMA ports, latency 4).
template <typename T, int MR, int NV, typename Init, typename Epi>
static inline __attribute__((always_inline)) void tile(long r0, long c, long K, const T* a,
                                                       long ars, long aks, const T* b, long ldb,
                                                       Init& init, Epi& epi) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  V acc[MR][NV];
  init(r0, c, acc);
  const T* ap = a + r0 * ars;
  const T* bp = b + c * W;
  for (long k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(bp + k * ldb + v * W);
#pragma GCC unroll 32
    for (int r = 0; r < MR; ++r) {
      const V av = V{} + ap[r * ars + k * aks];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
    }
  }
  epi(r0, c, acc);
}

// C (M x NVT vectors) = A (M x K) B (K x NVT vectors), tile by tile; M % MR == 0.
template <typename T, int MR, int NVMAX, typename Init, typename Epi>
static inline void gemm(long M, long NVT, long K, const T* a, long ars, long aks, const T* b,
                        long ldb, Init init, Epi epi) {
  long c = 0;
  for (; c + NVMAX <= NVT; c += NVMAX)
    for (long r0 = 0; r0 < M; r0 += MR) tile<T, MR, NVMAX>(r0, c, K, a, ars, aks, b, ldb, init, epi);
  if constexpr (NVMAX > 2) {
    if (NVT - c >= 2) {
      for (long r0 = 0; r0 < M; r0 += MR) tile<T, MR, 2>(r0, c, K, a, ars, aks, b, ldb, init, epi);
      c += 2;
    }
  }
  if constexpr (NVMAX > 1) {
    if (NVT - c >= 1)
      for (long r0 = 0; r0 < M; r0 += MR) tile<T, MR, 1>(r0, c, K, a, ars, aks, b, ldb, init, epi);
  }
}

// A pair x H product (M pairs, row-major A with leading dimension lda): shape chosen by
// the number of column vectors (one vector: taller tile, same register count; else
// kMR2 x kNV2 with 2- and 1-vector tiles for the column remainder).
template <typename T, typename Init, typename Epi>
static inline void gemm_pairs(long M, long NVT, long K, const T* a, long lda, const T* b,
                              long ldb, Init init, Epi epi) {
  if (NVT == 1)
    gemm<T, kMR1, 1>(M, NVT, K, a, lda, 1, b, ldb, init, epi);
  else
    gemm<T, kMR2, kNV2>(M, NVT, K, a, lda, 1, b, ldb, init, epi);
}

// Weight gradient: C (M x NVT vectors, row-major, ldc = NVT * W) += A^T B over K pairs,
// A (K x M) row-major with leading dimension lda, B (K x NVT vectors) with ldb. M % kMRw == 0.
template <typename T>
static inline void gemm_wgrad(long M, long NVT, long K, const T* a, long lda, const T* b, long ldb,
                              T* c_out) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  const long ldc = NVT * W;
  auto init = [&](long r0, long c, auto& acc) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]);
    constexpr int NV = sizeof(acc[0]) / sizeof(V);
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = vload(c_out + (r0 + r) * ldc + (c + v) * W);
  };
  auto epi = [&](long r0, long c, auto& acc) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]);
    constexpr int NV = sizeof(acc[0]) / sizeof(V);
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) vstore(c_out + (r0 + r) * ldc + (c + v) * W, acc[r][v]);
  };
  gemm<T, kMRw, kNVw>(M, NVT, K, a, 1, lda, b, ldb, init, epi);
}

// Next valid (receiver, sender) pairs of one batch element, receivers in [n, n1):
// j != n, mask[j] (and mask[n]); resumes from (n, j). Returns how many it wrote (< cap: done).
static inline long next_pairs(const unsigned char* m, long N, long n1, long& n, long& j,
                              int* dst, int* src, long cap) {
  long cnt = 0;
  while (n < n1 && cnt < cap) {
    if (m && !m[n]) { ++n; j = 0; continue; }
    if (j != n && (!m || m[j])) { dst[cnt] = static_cast<int>(n); src[cnt] = static_cast<int>(j); ++cnt; }
    if (++j == N) { j = 0; ++n; }
  }
  return cnt;
}

// h1 rows of a tile: relu(recv[n] + send[j] + sum_e edge[n, j, e] We[:, e]); pad rows zero.
template <typename T>
static inline void build_h1(const T* recv, const T* send, const T* edge, const T* weT, long N,
                            long E, long H1, const int* dst, const int* src, long rows, long rp,
                            T* A1) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  for (long r = 0; r < rows; ++r) {
    const T* rn = recv + dst[r] * H1;
    const T* sj = send + src[r] * H1;
    const T* e = edge + (static_cast<long>(dst[r]) * N + src[r]) * E;
    T* out = A1 + r * H1;
    for (long k = 0; k < H1; k += W) {
      V p = vload(rn + k) + vload(sj + k);
      for (long q = 0; q < E; ++q) p += e[q] * vload(weT + q * H1 + k);
      vstore(out + k, vrelu(p));
    }
  }
  for (long i = rows * H1; i < rp * H1; ++i) A1[i] = T(0);
}

static inline long round_up(long x, long m) { return (x + m - 1) / m * m; }

// Rows [r0, r1) of a (rows x D) matrix as a zero-padded (rows x Dp) one: src itself when
// D == Dp, else copied into scratch (same row indices).
template <typename T>
static inline const T* padded_rows(const T* src, long r0, long r1, long D, long Dp, T* scratch) {
  if (D == Dp) return src;
  for (long i = r0; i < r1; ++i) {
    for (long k = 0; k < D; ++k) scratch[i * Dp + k] = src[i * D + k];
    for (long k = D; k < Dp; ++k) scratch[i * Dp + k] = T(0);
  }
  return scratch;
}

// Rows [r0, r1) of a padded (rows x Dp) matrix into an unpadded (rows x D) one.
template <typename T>
static inline void unpad_rows(const T* src, long r0, long r1, long D, long Dp, T* dst) {
  for (long i = r0; i < r1; ++i)
    for (long k = 0; k < D; ++k) dst[i * D + k] = src[i * Dp + k];
}

// Epilogue pieces shared by the pair GEMMs.
template <typename T, typename V, int MR, int NV>
static inline void acc_bias(const T* bias, long c, V (&acc)[MR][NV]) {
  constexpr int W = Vt<T>::W;
  for (int v = 0; v < NV; ++v) {
    const V bb = vload(bias + (c + v) * W);
    for (int r = 0; r < MR; ++r) acc[r][v] = bb;
  }
}

// Forward for batch element b, receivers [n0, n1) (PairKernels.forward):
//   h1 = relu(recv[n] + send[j] + We e[n, j]);  p2 = h1 W2^T + b2;  h2 = relu(p2)
//   relu_out False: S[n] = sum_j h2               (D = H2)
//   relu_out True:  S[n] = sum_j relu(h2 W3^T + b3) (D = Fo)
// over valid pairs, tile by tile; out rows [n0, n1) = S unpadded (zero for a masked receiver).
template <typename T>
static void fwd_unit(const FwdArgs& a, long b, long n0, long n1, const Work<T>& w) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  const long N = a.N, E = a.E, H1 = a.H1p, H2 = a.H2p, Fo = a.Fop;
  const bool relu = a.relu;
  const long D = relu ? a.Fo : a.H2, Dp = relu ? Fo : H2;
  const T* recv = padded_rows(static_cast<const T*>(a.recv) + b * N * a.H1, n0, n1, a.H1, H1, w.R);
  const T* send = padded_rows(static_cast<const T*>(a.send) + b * N * a.H1, 0L, N, a.H1, H1, w.Sd);
  const T* edge = static_cast<const T*>(a.edge) + b * N * N * E;
  const T* weT = static_cast<const T*>(a.weT);
  const T* w2t = static_cast<const T*>(a.w2t);
  const T* b2 = static_cast<const T*>(a.b2);
  const T* w3t = static_cast<const T*>(a.w3t);
  const T* b3 = static_cast<const T*>(a.b3);
  const unsigned char* m = a.mask ? a.mask + b * N : nullptr;
  T* out = static_cast<T*>(a.out) + b * N * D;
  T* S = w.S;
  T* A1 = w.A1;
  T* H2t = w.H2t;
  for (long i = n0 * Dp; i < n1 * Dp; ++i) S[i] = T(0);
  long n = n0, j = 0;
  for (;;) {
    const long rows = next_pairs(m, N, n1, n, j, w.dst, w.src, w.TP);
    if (rows == 0) break;
    const long rp = round_up(rows, kMR1);
    build_h1(recv, send, edge, weT, N, E, H1, w.dst, w.src, rows, rp, A1);
    auto init_b2 = [&](long, long c, auto& acc) { acc_bias(b2, c, acc); };
    auto init_b3 = [&](long, long c, auto& acc) { acc_bias(b3, c, acc); };
    // S[dst] += relu(acc): the sum over senders (h2 or relu(p3)), width Dp
    auto epi_sum = [&](long r0, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r) {
        if (r0 + r >= rows) break;
        T* d = S + w.dst[r0 + r] * Dp + c * W;
        for (int v = 0; v < NV; ++v) vstore(d + v * W, vload(d + v * W) + vrelu(acc[r][v]));
      }
    };
    if (!relu) {
      gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init_b2, epi_sum);
    } else {
      auto epi_h2 = [&](long r0, long c, auto& acc) {
        constexpr int MR = sizeof(acc) / sizeof(acc[0]);
        constexpr int NV = sizeof(acc[0]) / sizeof(V);
        for (int r = 0; r < MR; ++r)
          for (int v = 0; v < NV; ++v) vstore(H2t + (r0 + r) * H2 + (c + v) * W, vrelu(acc[r][v]));
      };
      gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init_b2, epi_h2);
      gemm_pairs<T>(rp, Fo / W, H2, H2t, H2, w3t, Fo, init_b3, epi_sum);
    }
    if (rows < w.TP) break;
  }
  unpad_rows(S, n0, n1, D, Dp, out);
}

// Backward for batch element b, receivers [n0, n1) (PairKernels.backward), per tile:
//   relu_out True:  h2 = relu(p2) (tile); p3 = h2 W3^T + b3; go3 = gin[n] (p3 > 0);
//                   gb3 += go3; gW3 += go3^T h2; gp2 = (go3 W3) (h2 > 0)
//   relu_out False: gp2 = gin[n] (p2 > 0); s[n] += relu(p2)
//   gb2 += gp2; gW2 += gp2^T h1; gp1 = (gp2 W2) (h1 > 0)
//   grecv[n] += gp1; gsend[j] += gp1; gedge[n, j] = We^T gp1; gWe += gp1 e[n, j]^T
// Weight gradients go to p (this unit's group's partial, padded layouts); grecv, s and
// gedge rows [n0, n1) of batch b are written whole; gsend_out (N x H1) gets this unit's
// sender gradient (all N rows, written whole).
template <typename T>
static void bwd_unit(const BwdArgs& a, long b, long n0, long n1, const Work<T>& w, const Part<T>& p,
                     T* gsend_out) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  const long N = a.N, E = a.E, H1 = a.H1p, H2 = a.H2p, Fo = a.Fop;
  const bool relu = a.relu;
  const long D = relu ? a.Fo : a.H2, Dp = relu ? Fo : H2;
  const T* recv = padded_rows(static_cast<const T*>(a.recv) + b * N * a.H1, n0, n1, a.H1, H1, w.R);
  const T* send = padded_rows(static_cast<const T*>(a.send) + b * N * a.H1, 0L, N, a.H1, H1, w.Sd);
  const T* gin = padded_rows(static_cast<const T*>(a.gin) + b * N * D, n0, n1, D, Dp, w.GI);
  const T* edge = static_cast<const T*>(a.edge) + b * N * N * E;
  const T* weT = static_cast<const T*>(a.weT);
  const T* w2t = static_cast<const T*>(a.w2t);
  const T* w2 = static_cast<const T*>(a.w2);
  const T* b2 = static_cast<const T*>(a.b2);
  const T* w3t = static_cast<const T*>(a.w3t);
  const T* w3 = static_cast<const T*>(a.w3);
  const T* b3 = static_cast<const T*>(a.b3);
  const unsigned char* m = a.mask ? a.mask + b * N : nullptr;
  T* gedge = static_cast<T*>(a.gedge) + b * N * N * E;
  T *A1 = w.A1, *H2t = w.H2t, *G3 = w.G3, *G2 = w.G2, *G1 = w.G1, *GR = w.GR, *GS = w.GS, *S = w.S;
  const int* dst = w.dst;
  const int* src = w.src;
  const V zero = {};
  for (long i = n0 * H1; i < n1 * H1; ++i) GR[i] = T(0);
  for (long i = 0; i < N * H1; ++i) GS[i] = T(0);
  if (!relu)
    for (long i = n0 * H2; i < n1 * H2; ++i) S[i] = T(0);
  for (long i = n0 * N * E; i < n1 * N * E; ++i) gedge[i] = T(0);
  auto init_0 = [&](long, long, auto& acc) {
    constexpr int MR = sizeof(acc) / sizeof(acc[0]);
    constexpr int NV = sizeof(acc[0]) / sizeof(V);
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = zero;
  };
  auto init_b2 = [&](long, long c, auto& acc) { acc_bias(b2, c, acc); };
  auto init_b3 = [&](long, long c, auto& acc) { acc_bias(b3, c, acc); };
  long n = n0, j = 0;
  for (;;) {
    const long rows = next_pairs(m, N, n1, n, j, w.dst, w.src, w.TP);
    if (rows == 0) break;
    const long rp = round_up(rows, kMR1);
    build_h1(recv, send, edge, weT, N, E, H1, dst, src, rows, rp, A1);
    if (relu) {
      // h2 = relu(h1 W2^T + b2) (tile)
      auto epi_h2 = [&](long r0, long c, auto& acc) {
        constexpr int MR = sizeof(acc) / sizeof(acc[0]);
        constexpr int NV = sizeof(acc[0]) / sizeof(V);
        for (int r = 0; r < MR; ++r)
          for (int v = 0; v < NV; ++v) vstore(H2t + (r0 + r) * H2 + (c + v) * W, vrelu(acc[r][v]));
      };
      gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init_b2, epi_h2);
      // p3 = h2 W3^T + b3 -> go3 = gin[n] (p3 > 0) (G3, pad rows zero); gb3 += go3
      auto epi_go3 = [&](long r0, long c, auto& acc) {
        constexpr int MR = sizeof(acc) / sizeof(acc[0]);
        constexpr int NV = sizeof(acc[0]) / sizeof(V);
        for (int r = 0; r < MR; ++r) {
          T* g3 = G3 + (r0 + r) * Fo + c * W;
          if (r0 + r >= rows) {
            for (int v = 0; v < NV; ++v) vstore(g3 + v * W, zero);
            continue;
          }
          const T* gd = gin + dst[r0 + r] * Fo + c * W;
          T* gb = p.gb3 + c * W;
          for (int v = 0; v < NV; ++v) {
            const V g = acc[r][v] > zero ? vload(gd + v * W) : zero;
            vstore(g3 + v * W, g);
            vstore(gb + v * W, vload(gb + v * W) + g);
          }
        }
      };
      gemm_pairs<T>(rp, Fo / W, H2, H2t, H2, w3t, Fo, init_b3, epi_go3);
      // gW3 (Fop x H2p) += go3^T h2
      gemm_wgrad<T>(Fo, H2 / W, rows, G3, Fo, H2t, H2, p.gw3);
      // gp2 = (go3 W3) (h2 > 0) (G2; pad rows: go3 = 0 -> 0); gb2 += gp2
      auto epi_gp2 = [&](long r0, long c, auto& acc) {
        constexpr int MR = sizeof(acc) / sizeof(acc[0]);
        constexpr int NV = sizeof(acc[0]) / sizeof(V);
        T* gb = p.gb2 + c * W;
        for (int r = 0; r < MR; ++r) {
          const T* h = H2t + (r0 + r) * H2 + c * W;
          T* g2 = G2 + (r0 + r) * H2 + c * W;
          for (int v = 0; v < NV; ++v) {
            const V g = vload(h + v * W) > zero ? acc[r][v] : zero;
            vstore(g2 + v * W, g);
            if (r0 + r < rows) vstore(gb + v * W, vload(gb + v * W) + g);
          }
        }
      };
      gemm_pairs<T>(rp, H2 / W, Fo, G3, Fo, w3, H2, init_0, epi_gp2);
    } else {
      // p2 = h1 W2^T + b2 -> gp2 = gin[n] (p2 > 0) (G2, pad rows zero), s, gb2
      auto epi_gp2 = [&](long r0, long c, auto& acc) {
        constexpr int MR = sizeof(acc) / sizeof(acc[0]);
        constexpr int NV = sizeof(acc[0]) / sizeof(V);
        for (int r = 0; r < MR; ++r) {
          T* g2 = G2 + (r0 + r) * H2 + c * W;
          if (r0 + r >= rows) {
            for (int v = 0; v < NV; ++v) vstore(g2 + v * W, zero);
            continue;
          }
          const long d = dst[r0 + r];
          T* sd = S + d * H2 + c * W;
          const T* gd = gin + d * H2 + c * W;
          T* gb = p.gb2 + c * W;
          for (int v = 0; v < NV; ++v) {
            const V pv = acc[r][v];
            const V g = pv > zero ? vload(gd + v * W) : zero;
            vstore(g2 + v * W, g);
            vstore(sd + v * W, vload(sd + v * W) + vrelu(pv));
            vstore(gb + v * W, vload(gb + v * W) + g);
          }
        }
      };
      gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init_b2, epi_gp2);
    }
    // gW2 (H2p x H1p) += gp2^T h1
    gemm_wgrad<T>(H2, H1 / W, rows, G2, H2, A1, H1, p.gw2);
    // gp1 = (gp2 W2) (h1 > 0)
    auto epi_gp1 = [&](long r0, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r) {
        const T* h = A1 + (r0 + r) * H1 + c * W;
        T* g1 = G1 + (r0 + r) * H1 + c * W;
        for (int v = 0; v < NV; ++v) vstore(g1 + v * W, vload(h + v * W) > zero ? acc[r][v] : zero);
      }
    };
    gemm_pairs<T>(rp, H1 / W, H2, G2, H2, w2, H1, init_0, epi_gp1);
    // per pair: receiver, sender, edge
    for (long r = 0; r < rows; ++r) {
      const T* g1 = G1 + r * H1;
      T* gr = GR + dst[r] * H1;
      T* gsj = GS + src[r] * H1;
      for (long k = 0; k < H1; k += W) {
        const V g = vload(g1 + k);
        vstore(gr + k, vload(gr + k) + g);
        vstore(gsj + k, vload(gsj + k) + g);
      }
      if (E == 0) continue;
      const long pe = (static_cast<long>(dst[r]) * N + src[r]) * E;
      const T* e = edge + pe;
      for (long q = 0; q < E; ++q) {
        const T* wq = weT + q * H1;
        T* gq = p.gwe + q * H1;
        const T eq = e[q];
        V dot = zero;
        for (long k = 0; k < H1; k += W) {
          const V g = vload(g1 + k);
          dot += g * vload(wq + k);
          vstore(gq + k, vload(gq + k) + eq * g);
        }
        T sum = T(0);
        for (int i = 0; i < W; ++i) sum += dot[i];
        gedge[pe + q] = sum;
      }
    }
    if (rows < w.TP) break;
  }
  unpad_rows(GR, n0, n1, a.H1, H1, static_cast<T*>(a.grecv) + b * N * a.H1);
  unpad_rows(GS, 0L, N, a.H1, H1, gsend_out);
  if (!relu) unpad_rows(S, n0, n1, a.H2, H2, static_cast<T*>(a.s) + b * N * a.H2);
}
