// Kernel bodies of the amp_step CUDA kernels (csrc/amp_step/cuda/amp_step.cu). Formula:
// mimo_fast/ops/amp_step.py (eqs. 8a-8d); backward: mimo_fast/ops/reference/amp_step.py.
//
// A "row tile" is R consecutive rows of H for one batch element, R*N complex numbers that
// are contiguous in memory. A rows kernel block owns one tile: it copies it to shared
// memory once (when it fits), then
//   pass 1, a warp per row:   row dots over N (V_m and (Hx)_m; backward: (H g_u)_m and
//                             (|H|^2 g_q)_m), then lane 0 forms the row's scalars;
//   pass 2, a thread per column: sums over the tile's rows (forward: |H|^2 w and H^H t;
//                             backward: g_H's entries, H^H g_z' and |H|^2^T g_V'),
//                             written as per-tile partials to a (B, tiles, N) buffer.
// A cols kernel (one thread per (b, n), grid-stride) then adds the partials over the tiles
// in tile order and finishes the column: deterministic, no atomics. A tile too large for
// shared memory (huge N) is read from global memory in both passes instead (kSmem false).
// All indices into H and the (B, ...) buffers are int64.
#pragma once

#include <cstdint>

#include "common/cuda/block_ctx.cuh"

namespace mimo_fast {
namespace cuda {
namespace amp {

template <typename T>
struct Args {
  const Cx<T> *H, *y, *x, *zp;          // (B,M,N), (B,M), (B,N), (B,M)
  const T *v, *Vp, *s2;                 // (B,N), (B,M), (B,)
  Cx<T>* r;                             // forward outputs; in the backward z, V, w are
  T* Sigma;                             // workspace rows of the recomputed forward
  Cx<T>* z;
  T *V, *w;                             // w = 1/(noise_var + V): backward only
  T* pq;                                // (B,tiles,N) partials: forward |H|^2^T w, backward |H|^2^T g_V'
  Cx<T>* pu;                            // (B,tiles,N) partials: forward H^H t, backward H^H g_z'
  T* pn;                                // (B,tiles) backward: sum of g_d2 + g_d1 over the tile's rows
  const Cx<T> *gr, *gz;                 // output gradients
  const T *gS, *gV;
  Cx<T>* gu;                            // (B,N) workspace: g_u = Sigma g_r
  T* gq;                                // (B,N) workspace: g_q = -Sigma^2 g_Sigma'
  Cx<T> *gH, *gy, *gx, *gzp;            // input gradients
  T *gv, *gVp, *gs2;
  int64_t B, M, N;                      // batch elements in this launch (pointers offset per launch)
  int R, tiles;                         // rows per tile, tiles per batch element
};

// Shared memory of a rows block: the tile (when held) and 8 reals of row scalars per row.
MIMO_FAST_HD inline int64_t rows_smem_bytes(int R, int64_t N, bool tile, int64_t isz) {
  return (tile ? static_cast<int64_t>(R) * N * 2 * isz : 0) + 8 * static_cast<int64_t>(R) * isz;
}

// Where a rows block stands: batch element, tile, first row, rows in the tile.
struct Tile {
  int64_t b, m0;
  int tile, rows;
};

template <typename T>
MIMO_FAST_HD Tile locate(const Args<T>& a, int64_t blk) {
  Tile t;
  t.b = blk / a.tiles;
  t.tile = static_cast<int>(blk % a.tiles);
  t.m0 = static_cast<int64_t>(t.tile) * a.R;
  t.rows = static_cast<int>(a.M - t.m0 < a.R ? a.M - t.m0 : a.R);
  return t;
}

// Copy the tile to shared memory (kSmem) and return where the passes read it from.
template <typename T, bool kSmem, class Ctx>
MIMO_FAST_HD const Cx<T>* load_tile(const Ctx& c, const Cx<T>* Hg, int64_t count, Cx<T>* sH) {
  if constexpr (kSmem) {
    for (int64_t e = c.tid; e < count; e += c.nthreads) sH[e] = Hg[e];
    c.sync();
    return sH;
  } else {
    return Hg;
  }
}

template <typename T, bool kSmem, class Ctx>
MIMO_FAST_HD void rows_forward(const Ctx& c, const Args<T>& a, int64_t blk, unsigned char* smem) {
  const int64_t M = a.M, N = a.N;
  const Tile tl = locate(a, blk);
  const int64_t b = tl.b;
  Cx<T>* sH = reinterpret_cast<Cx<T>*>(smem);
  Cx<T>* st = reinterpret_cast<Cx<T>*>(smem + (kSmem ? a.R * N * sizeof(Cx<T>) : 0));  // t, R
  T* sw = reinterpret_cast<T*>(st + a.R);                                                // w, R
  const Cx<T>* Ht = load_tile<T, kSmem>(c, a.H + (b * M + tl.m0) * N, tl.rows * N, sH);
  const Cx<T>* x = a.x + b * N;
  const T* v = a.v + b * N;
  const T s2 = a.s2[b];
  for (int r = c.warp; r < tl.rows; r += c.nwarps) {  // pass 1
    T V = T(0), hr = T(0), hi = T(0);
    for (int64_t n = c.lane; n < N; n += kWarp) {
      const Cx<T> h = Ht[r * N + n];
      const Cx<T> hx = h * x[n];
      V += abs2(h) * v[n];
      hr += hx.re;
      hi += hx.im;
    }
    V = c.warp_sum(V);                                      // (8a)
    hr = c.warp_sum(hr);
    hi = c.warp_sum(hi);
    if (c.lane == 0) {
      const int64_t i = b * M + tl.m0 + r;
      const Cx<T> e = a.y[i] - a.zp[i];
      const T d1 = s2 + a.Vp[i];
      const Cx<T> z = cx(hr - V * e.re / d1, hi - V * e.im / d1);  // (8b)
      const T w = T(1) / (s2 + V);
      a.z[i] = z;
      a.V[i] = V;
      if (a.w) a.w[i] = w;
      sw[r] = w;
      st[r] = w * (a.y[i] - z);                             // t = (y - z) w
    }
  }
  c.sync();
  for (int64_t n = c.tid; n < N; n += c.nthreads) {  // pass 2
    T q = T(0);
    Cx<T> u = cx(T(0), T(0));
    for (int r = 0; r < tl.rows; ++r) {
      const Cx<T> h = Ht[r * N + n];
      q += abs2(h) * sw[r];
      u = u + conj(h) * st[r];
    }
    const int64_t o = (b * a.tiles + tl.tile) * N + n;
    a.pq[o] = q;
    a.pu[o] = u;
  }
}

// Finish the forward's columns: Sigma = 1/q (8c), r = x + Sigma u (8d); or, for the
// backward, its per-column seeds g_u = Sigma g_r and g_q = -Sigma^2 (g_Sigma + Re(conj(u) g_r)).
template <typename T, bool kBackward, class Ctx>
MIMO_FAST_HD void cols_forward(const Ctx& c, const Args<T>& a, int64_t blk, int64_t nblocks) {
  const int64_t total = a.B * a.N;
  for (int64_t idx = blk * c.nthreads + c.tid; idx < total; idx += nblocks * c.nthreads) {
    const int64_t b = idx / a.N, n = idx % a.N;
    T q = T(0);
    Cx<T> u = cx(T(0), T(0));
    for (int t = 0; t < a.tiles; ++t) {
      const int64_t o = (b * a.tiles + t) * a.N + n;
      q += a.pq[o];
      u = u + a.pu[o];
    }
    const T Sigma = T(1) / q;
    if (!kBackward) {
      a.Sigma[idx] = Sigma;
      a.r[idx] = a.x[idx] + Sigma * u;
    } else {
      const Cx<T> gr = a.gr[idx];
      a.gu[idx] = Sigma * gr;
      a.gq[idx] = -(Sigma * Sigma) * (a.gS[idx] + re_dot(u, gr));
    }
  }
}

// Backward rows: the chain rule of the reference through (8b) and (8a) per row, then g_H
// and the column partials from the same tile.
template <typename T, bool kSmem, class Ctx>
MIMO_FAST_HD void rows_backward(const Ctx& c, const Args<T>& a, int64_t blk, unsigned char* smem) {
  const int64_t M = a.M, N = a.N;
  const int R = a.R;
  const Tile tl = locate(a, blk);
  const int64_t b = tl.b;
  Cx<T>* sH = reinterpret_cast<Cx<T>*>(smem);
  Cx<T>* st = reinterpret_cast<Cx<T>*>(smem + (kSmem ? R * N * sizeof(Cx<T>) : 0));  // t
  Cx<T>* sgz = st + R;                                                                // g_z'
  T* scw = reinterpret_cast<T*>(sgz + R);                                             // 2 w
  T* scv = scw + R;                                                                   // 2 g_V'
  T* sgv = scv + R;                                                                   // g_V'
  T* sn = sgv + R;                                                                    // g_d2 + g_d1
  const Cx<T>* Ht = load_tile<T, kSmem>(c, a.H + (b * M + tl.m0) * N, tl.rows * N, sH);
  const Cx<T>* gu = a.gu + b * N;
  const T* gq = a.gq + b * N;
  const T s2 = a.s2[b];
  for (int r = c.warp; r < tl.rows; r += c.nwarps) {  // pass 1: g_t = H g_u, |H|^2 g_q
    T gtr = T(0), gti = T(0), hq = T(0);
    for (int64_t n = c.lane; n < N; n += kWarp) {
      const Cx<T> h = Ht[r * N + n];
      const Cx<T> p = h * gu[n];
      gtr += p.re;
      gti += p.im;
      hq += abs2(h) * gq[n];
    }
    gtr = c.warp_sum(gtr);
    gti = c.warp_sum(gti);
    hq = c.warp_sum(hq);
    if (c.lane == 0) {
      const int64_t i = b * M + tl.m0 + r;
      const Cx<T> y = a.y[i], z = a.z[i];
      const T V = a.V[i], w = a.w[i];
      const Cx<T> e = y - a.zp[i];
      const T d1 = s2 + a.Vp[i];
      const Cx<T> k = cx(e.re / d1, e.im / d1);
      const Cx<T> ymz = y - z;
      const Cx<T> gt = cx(gtr, gti);
      const T gw = re_dot(ymz, gt) + hq;
      const T gd2 = -(w * w) * gw;
      const Cx<T> gzt = a.gz[i] - w * gt;                   // g_z'
      const T gVt = a.gV[i] + gd2 - re_dot(k, gzt);         // g_V'
      const Cx<T> gk = cx(-V * gzt.re, -V * gzt.im);
      const Cx<T> ge = cx(gk.re / d1, gk.im / d1);
      const T gd1 = -re_dot(e, gk) / (d1 * d1);
      a.gy[i] = w * gt + ge;
      a.gzp[i] = cx(-ge.re, -ge.im);
      a.gVp[i] = gd1;
      st[r] = w * ymz;
      sgz[r] = gzt;
      scw[r] = T(2) * w;
      scv[r] = T(2) * gVt;
      sgv[r] = gVt;
      sn[r] = gd2 + gd1;
    }
  }
  c.sync();
  const Cx<T>* x = a.x + b * N;
  const T* v = a.v + b * N;
  for (int64_t n = c.tid; n < N; n += c.nthreads) {  // pass 2
    const Cx<T> guc = conj(gu[n]), xc = conj(x[n]);
    const T gqn = gq[n], vn = v[n];
    Cx<T> px = cx(T(0), T(0));
    T pv = T(0);
    for (int r = 0; r < tl.rows; ++r) {
      const Cx<T> h = Ht[r * N + n];
      // g_H = t conj(g_u) + g_z' conj(x) + 2 H (w g_q + g_V' v)
      a.gH[(b * M + tl.m0 + r) * N + n] = st[r] * guc + sgz[r] * xc + (scw[r] * gqn + scv[r] * vn) * h;
      px = px + conj(h) * sgz[r];
      pv += abs2(h) * sgv[r];
    }
    const int64_t o = (b * a.tiles + tl.tile) * N + n;
    a.pu[o] = px;
    a.pq[o] = pv;
  }
  if (c.tid == 0) {
    T s = T(0);
    for (int r = 0; r < tl.rows; ++r) s += sn[r];
    a.pn[b * a.tiles + tl.tile] = s;
  }
}

// Backward columns: g_x = g_r + H^H g_z', g_v = |H|^2^T g_V', g_noise = sum of the rows' terms.
template <typename T, class Ctx>
MIMO_FAST_HD void cols_backward(const Ctx& c, const Args<T>& a, int64_t blk, int64_t nblocks) {
  const int64_t total = a.B * a.N;
  for (int64_t idx = blk * c.nthreads + c.tid; idx < total; idx += nblocks * c.nthreads) {
    const int64_t b = idx / a.N, n = idx % a.N;
    Cx<T> px = cx(T(0), T(0));
    T pv = T(0);
    for (int t = 0; t < a.tiles; ++t) {
      const int64_t o = (b * a.tiles + t) * a.N + n;
      px = px + a.pu[o];
      pv += a.pq[o];
    }
    a.gx[idx] = a.gr[idx] + px;
    a.gv[idx] = pv;
    if (n == 0) {
      T s = T(0);
      for (int t = 0; t < a.tiles; ++t) s += a.pn[b * a.tiles + t];
      a.gs2[b] = s;
    }
  }
}

}  // namespace amp
}  // namespace cuda
}  // namespace mimo_fast
