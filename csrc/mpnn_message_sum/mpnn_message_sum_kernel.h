// mpnn_message_sum CPU kernel body, written once and compiled once per instruction set:
// mpnn_message_sum.cpp includes this file inside namespace `portable` (baseline x86-64,
// 16-byte vectors), inside namespace `avx2` under target("avx2,fma") (32-byte vectors)
// and inside namespace `avx512` under target("avx512f,avx512vl,avx512bw,avx512dq,fma")
// (64-byte vectors). No includes and no include guard on purpose: everything here must be
// defined inside the including namespace so that it gets that namespace's target.
// The including namespace defines kBytes (vector width), kMR1 (rows of the pair x H2
// micro-kernel for 1 column vector), kMR2/kNV2 (rows and column vectors otherwise;
// kMR2 divides kMR1, which divides the tile size), kMRw/kNVw (shape of the weight-
// gradient micro-kernel), and the structs FwdArgs/BwdArgs live in the parent namespace.
//
// Formula: see mimo_fast/ops/mpnn_message_sum.py. Dimensions H1, H2 arrive padded
// (H1p, H2p: multiples of the vector width and of kMRw) with zero weights in the pad,
// so no loop here has a column tail. Rows (pairs) are padded to a multiple of kMR1
// with zero rows whose results are never stored.
//
// Memory: per thread one tile of TP pairs: h1 (TP x H1p), and in backward gp2
// (TP x H2p) and gp1 (TP x H1p); TP is chosen so the tile stays in L1/L2. Nothing of
// size N*N*H is ever held. Weights (w2^T, H1p x H2p) are read from L1/L2 every tile.

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

// The pair x H2 product (forward layer 2 and the backward's gp2 @ w2): M pairs, shape
// chosen by the number of column vectors (one vector: taller tile, same register count;
// else kMR2 x kNV2 with 2- and 1-vector tiles for the column remainder).
template <typename T, typename Init, typename Epi>
static inline void gemm_pairs(long M, long NVT, long K, const T* a, long lda, const T* b,
                              long ldb, Init init, Epi epi) {
  if (NVT == 1)
    gemm<T, kMR1, 1>(M, NVT, K, a, lda, 1, b, ldb, init, epi);
  else
    gemm<T, kMR2, kNV2>(M, NVT, K, a, lda, 1, b, ldb, init, epi);
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

// Forward for batch element b, receivers [n0, n1), everything after the input checks:
//   recv = node Wa^T + b1, send = node Wb^T          (per node, into scratch)
//   S[n] = sum_{j valid} relu(W2 relu(recv[n] + send[j] + We e[n, j]) + b2)
//   out[n] = W3 S[n] + count[n] b3, zero for a masked receiver.
// Scratch: A1 (TP x H1p), recv/send (N x H1p), S (N x H2p), dst/src (TP).
template <typename T>
static void fwd_unit(const FwdArgs& a, long b, long n0, long n1, T* A1, T* recv, T* send, T* S,
                     int* dst, int* src, long TP) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  const long N = a.N, F = a.F, E = a.E, H1 = a.H1, H2 = a.H2, Fo = a.Fo;
  const T* node = static_cast<const T*>(a.node) + b * N * F;
  const T* edge = static_cast<const T*>(a.edge) + b * N * N * E;
  const T* waT = static_cast<const T*>(a.waT);
  const T* wbT = static_cast<const T*>(a.wbT);
  const T* b1 = static_cast<const T*>(a.b1);
  const T* weT = static_cast<const T*>(a.weT);
  const T* w2t = static_cast<const T*>(a.w2t);
  const T* b2 = static_cast<const T*>(a.b2);
  const T* w3 = static_cast<const T*>(a.w3);
  const T* b3 = static_cast<const T*>(a.b3);
  const unsigned char* m = a.mask ? a.mask + b * N : nullptr;
  T* out = static_cast<T*>(a.out) + b * N * Fo;
  long nvalid = N;
  if (m) { nvalid = 0; for (long i = 0; i < N; ++i) nvalid += m[i] != 0; }
  // per-node projections: senders are all nodes, receivers only [n0, n1)
  for (long i = 0; i < N; ++i) {
    const bool need_recv = i >= n0 && i < n1;
    for (long k = 0; k < H1; k += W) {
      V r = vload(b1 + k), s = V{};
      for (long f = 0; f < F; ++f) {
        const T x = node[i * F + f];
        if (need_recv) r += x * vload(waT + f * H1 + k);
        s += x * vload(wbT + f * H1 + k);
      }
      if (need_recv) vstore(recv + i * H1 + k, r);
      vstore(send + i * H1 + k, s);
    }
  }
  for (long i = n0 * H2; i < n1 * H2; ++i) S[i] = T(0);
  long n = n0, j = 0;
  for (;;) {
    const long rows = next_pairs(m, N, n1, n, j, dst, src, TP);
    if (rows == 0) break;
    const long rp = round_up(rows, kMR1);
    build_h1(recv, send, edge, weT, N, E, H1, dst, src, rows, rp, A1);
    auto init = [&](long, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int v = 0; v < NV; ++v) {
        const V bb = vload(b2 + (c + v) * W);
        for (int r = 0; r < MR; ++r) acc[r][v] = bb;
      }
    };
    auto epi = [&](long r0, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r) {
        if (r0 + r >= rows) break;
        T* d = S + dst[r0 + r] * H2 + c * W;
        for (int v = 0; v < NV; ++v) vstore(d + v * W, vload(d + v * W) + vrelu(acc[r][v]));
      }
    };
    gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init, epi);
    if (rows < TP) break;
  }
  // last layer on the sums (b3 once per message)
  for (long i = n0; i < n1; ++i) {
    T* o = out + i * Fo;
    if (m && !m[i]) { for (long q = 0; q < Fo; ++q) o[q] = T(0); continue; }
    const T count = static_cast<T>(nvalid - 1);
    const T* si = S + i * H2;
    for (long q = 0; q < Fo; ++q) {
      V acc = V{};
      for (long k = 0; k < H2; k += W) acc += vload(si + k) * vload(w3 + q * H2 + k);
      T sum = T(0);
      for (int l = 0; l < W; ++l) sum += acc[l];
      o[q] = sum + count * b3[q];
    }
  }
}

// Backward for batch element b, receivers [n0, n1): recompute h1, p2 per tile, then
//   gp2 = gs[n] * (p2 > 0); s[n] += relu(p2); gb2 += gp2; gW2 += gp2^T h1
//   gp1 = (gp2 w2) * (h1 > 0); grecv[n] += gp1; gsend[j] += gp1
//   gedge[n, j] = We^T gp1; gWe += gp1 edge[n, j]^T
// (the reference backward's docstring, one tile of pairs at a time). gw2/gb2/gwe are this
// thread's accumulators; gsend points at this thread's (or the shared) (B, N, H1p) buffer.
template <typename T>
static void bwd_unit(const BwdArgs& a, long b, long n0, long n1, T* A1, T* G2, T* G1, int* dst,
                     int* src, long TP, T* gw2, T* gb2, T* gwe, T* gsend_all) {
  using V = typename Vt<T>::V;
  constexpr int W = Vt<T>::W;
  const long N = a.N, E = a.E, H1 = a.H1, H2 = a.H2;
  const T* recv = static_cast<const T*>(a.recv) + b * N * H1;
  const T* send = static_cast<const T*>(a.send) + b * N * H1;
  const T* edge = static_cast<const T*>(a.edge) + b * N * N * E;
  const T* weT = static_cast<const T*>(a.weT);
  const T* w2t = static_cast<const T*>(a.w2t);
  const T* w2 = static_cast<const T*>(a.w2);
  const T* b2 = static_cast<const T*>(a.b2);
  const T* gs = static_cast<const T*>(a.gs) + b * N * H2;
  const unsigned char* m = a.mask ? a.mask + b * N : nullptr;
  T* s = static_cast<T*>(a.s) + b * N * H2;
  T* grecv = static_cast<T*>(a.grecv) + b * N * H1;
  T* gsend = gsend_all + b * N * H1;
  T* gedge = static_cast<T*>(a.gedge) + b * N * N * E;
  const V zero = {};
  long n = n0, j = 0;
  for (;;) {
    const long rows = next_pairs(m, N, n1, n, j, dst, src, TP);
    if (rows == 0) break;
    const long rp = round_up(rows, kMR1);
    build_h1(recv, send, edge, weT, N, E, H1, dst, src, rows, rp, A1);
    // p2 = h1 w2^T + b2 -> gp2 (G2), s, gb2
    auto init_b2 = [&](long, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int v = 0; v < NV; ++v) {
        const V bb = vload(b2 + (c + v) * W);
        for (int r = 0; r < MR; ++r) acc[r][v] = bb;
      }
    };
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
        T* sd = s + d * H2 + c * W;
        const T* gd = gs + d * H2 + c * W;
        T* gb = gb2 + c * W;
        for (int v = 0; v < NV; ++v) {
          const V p = acc[r][v];
          const V g = p > zero ? vload(gd + v * W) : zero;
          vstore(g2 + v * W, g);
          vstore(sd + v * W, vload(sd + v * W) + vrelu(p));
          vstore(gb + v * W, vload(gb + v * W) + g);
        }
      }
    };
    gemm_pairs<T>(rp, H2 / W, H1, A1, H1, w2t, H2, init_b2, epi_gp2);
    // gW2 (H2p x H1p) += gp2^T h1: rows h2 broadcast from G2 columns, K = pairs
    auto init_w = [&](long r0, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = vload(gw2 + (r0 + r) * H1 + (c + v) * W);
    };
    auto epi_w = [&](long r0, long c, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) vstore(gw2 + (r0 + r) * H1 + (c + v) * W, acc[r][v]);
    };
    gemm<T, kMRw, kNVw>(H2, H1 / W, rows, G2, 1, H2, A1, H1, init_w, epi_w);
    // gp1 = (gp2 w2) * (h1 > 0)
    auto init_0 = [&](long, long, auto& acc) {
      constexpr int MR = sizeof(acc) / sizeof(acc[0]);
      constexpr int NV = sizeof(acc[0]) / sizeof(V);
      for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = zero;
    };
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
      T* gr = grecv + dst[r] * H1;
      T* gsj = gsend + src[r] * H1;
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
        T* gq = gwe + q * H1;
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
    if (rows < TP) break;
  }
}
