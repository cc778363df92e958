// mpnn_message_sum, CUDA backend: the backward kernels (launched from
// mpnn_message_sum_backward.cu). Contract: PairKernels.backward in
// mimo_fast/ops/mpnn_message_sum.py; formulas as in mimo_fast/ops/reference/mpnn_message_sum.py:
//   "none": gp2 = valid * gin[n] * (p2 > 0)  (gin = (grad * mask) W3);  s[n] = sum_j valid relu(p2)
//   "relu": go3 = valid * gin[n] * (p3 > 0)  (gin = grad * mask, p3 = h2 W3^T + b3);
//           gW3 += go3^T h2;  gb3 += sum go3;  gp2 = (go3 W3) * (p2 > 0)
//   then gW2 += gp2^T h1;  gb2 += sum gp2;  gp1 = (gp2 W2) * (h1 > 0);  gedge[n, j] = gp1 We;
//   gWe += gp1^T edge;  grecv[n] = sum_j gp1[n, j];  gsend[j] = sum_n gp1[n, j]
// The op module finishes with per-node GEMMs (gnode, gw1's node columns, gb1; gW3, gb3 for "none").
//
// bwd_kernel: a persistent grid of blocks loops over items = (batch element, group of RG
// receivers). Per item it streams the senders BJ at a time and, per sender chunk, the
// group's receivers RN at a time (a tile of BM = RN*BJ pairs). Per tile, all on chip:
//   GEMM1 (recompute p2, registers); "relu": h2 to shared memory, then per chunk of FC
//   outputs: p3 and go3 (4-row x 4-output blocks), gW3 partial += go3^T h2 (4x4 blocks of
//   this block's own partial slice, like gW2's), gb3 partial, and gd2 += go3 W3 into the
//   GEMM1 registers; -> gp2 in shared memory in both layouts;
//   per chunk of CW columns of H1: h1 chunk (recomputed), GEMM2 (gW2 partial += gp2^T h1,
//   4x4 register blocks read-modify-writing this block's own slice of a global partial
//   buffer: L2-resident, once per BM pair rows), GEMM3 (gp1 = gp2 W2 chunk, masked by
//   h1 > 0, in place of h1), then the sums over senders (grecv), receivers (gsend),
//   columns (gedge) and rows (gWe) of that chunk.
// Every sum has one owner thread and a fixed order, and weight gradients go to per-block
// partial slices summed by reduce_kernel in block order: no float atomics, the same inputs
// give the same bits (on a given GPU model: the grid follows its SM count).
// HBM traffic per item: its edge rows once, gedge once, recv/send/grad rows (cached), its
// s, grecv and gsend-partial rows once.
#pragma once

#include "mpnn_message_sum/cuda/mpnn_message_sum_tile.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

template <typename T>
struct BwdParams {
  const T* recv;   // (B*N, H1P), zero past H1
  const T* send;   // (B*N, H1P), zero past H1
  const T* edge;   // (B, N, N, E)
  const T* we;     // (H1, E)
  const T* w2;     // (H2, H1)
  const T* b2;     // (H2)
  const T* w3;     // (Fo, H2)   "relu" only
  const T* b3;     // (Fo)       "relu" only
  const T* gin;    // "none": (B*N, H2) = (grad * mask) W3; "relu": (B*N, Fo) = grad * mask
  const unsigned char* mask;  // (B, N) or null
  T* s;            // "none": (B*N, H2) s[n] = sum_j valid relu(p2)
  T* grecv;        // (B*N, H1)
  T* gsend;        // (G, B*N, H1): per receiver group (G == 1: the gradient itself)
  T* gedge;        // (B, N, N, E)
  T* part_w2;      // (blocks * S, H2P, H1P)
  T* part_b2;      // (blocks, H2)
  T* part_we;      // (blocks, H1, E)
  T* part_w3;      // "relu": (blocks * S3, FoP, H2P)
  T* part_b3;      // "relu": (blocks, Fo)
  long B, items;
  int G, RG;
  int N, E, H1, H2, Fo, H1P, H2P, FoP, FC, S3, CW;
  int TC, TR, BM, BJ, RN;
  BwdSmem L;       // shared-memory layout (kernel parameters: no registers held for it)
};

// dst[i * ldd + j] += sum over rows [r0, r1) of A[row * lda + i] Bm[row * ldb + j] (i, j < 4;
// A, Bm and dst point at the block's first column / element, 16-byte aligned): a 4x4 block of
// a weight gradient (gW2 = gp2^T h1, gW3 = go3^T h2); dst is this thread's own part of the
// block's partial slice (read-modify-write, no other writer).
template <typename T>
__device__ __forceinline__ void gemm_tn_block(const T* A, int lda, const T* Bm, int ldb, T* dst, long ldd, int r0,
                                              int r1) {
  T acc[4][4] = {};
  for (int row = r0; row < r1; ++row) {
    T av[4], bv[4];
    ldv<4>(A + long(row) * lda, av);
    ldv<4>(Bm + long(row) * ldb, bv);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    T* d = dst + i * ldd;
    T o[4];
    ldv<4>(d, o);
#pragma unroll
    for (int j = 0; j < 4; ++j) o[j] += acc[i][j];
    st4(d, o);
  }
}

// 4x4 block of gW2 (rows h2 = 4hq.., columns k = k0 + 4cq..) += sum over rows [r0, r1) of
// gp2[row, h2] h1[row, k].
template <typename T>
__device__ __forceinline__ void gemm2_block(const T* gs_t, const T* hs, T* dst, int r0, int r1, int hq, int cq,
                                            int H1P, int H2P, int CW, int k0) {
  gemm_tn_block(gs_t + hq * 4, H2P + 4, hs + cq * 4, CW + 4, dst + long(hq * 4) * H1P + k0 + cq * 4, H1P, r0, r1);
}

// go3[row, o0 + c] = valid[row] * gin[receiver of row, o0 + c] * (p3 > 0) for RB rows from
// row0 (p3 = h2 W3^T + b3: h2 in gs_t [row][H2P + 4], W3 rows of the chunk in w3s), into
// go3s [row][FC + 4] at column oc = o0 - f0.
template <typename T, int RB>
__device__ __forceinline__ void go3_rows(const T* h2s, const T* w3s, const int* valid, const T* gin, T* go3s,
                                         int row0, int oc, int f0, long q0, int BJ, int Fo, int FC, int H2P,
                                         const T* b3) {
  const int ld = H2P + 4;
  T acc[RB][4];
  dot_rows<T, RB>(h2s + long(row0) * ld, ld, w3s + long(oc) * ld, ld, H2P, acc);
#pragma unroll
  for (int i = 0; i < RB; ++i) {
    const int row = row0 + i;
    const bool v = valid[row];
    const T* g = gin + (q0 + row / BJ) * Fo;
    T out[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int o = f0 + oc + c;
      out[c] = (v && o < Fo && acc[i][c] + b3[o] > T(0)) ? g[o] : T(0);
    }
    st4(go3s + long(row) * (FC + 4) + oc, out);
  }
}

// Thread -> 4x4 block: a warp covers wh x wk blocks (wk = min(8, CW/4)), so its loads
// of either operand touch at most 8 distinct 16-byte vectors (one shared-memory wavefront).
__device__ __forceinline__ void warp_block(int m, int cq_n, int& rq, int& cq) {
  const int wk = min(8, cq_n), wh = 32 / wk, nbk = cq_n / wk;
  const int wb = m / 32, ln = m % 32;
  rq = (wb / nbk) * wh + ln / wk;
  cq = (wb % nbk) * wk + ln % wk;
}

template <typename T, int TM, bool RELU>
__global__ void __launch_bounds__(kThreads, 2) bwd_kernel(BwdParams<T> p) {
  constexpr int TN = 4;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int N = p.N, E = p.E, BM = p.BM, BJ = p.BJ, RN = p.RN, H1P = p.H1P, H2P = p.H2P, CW = p.CW;
  const BwdSmem& L = p.L;
  auto at = [&](long off) { return reinterpret_cast<T*>(smem_raw + off); };
  T *wet = at(L.wet), *gwes = at(L.gwes), *gs_t = at(L.gs_t), *gs = at(L.gs), *hs = at(L.hs);
  T *w2s = at(L.w2s), *es = at(L.es), *ge = at(L.ge), *gsr = at(L.gsr), *ssum = at(L.ssum);
  T *grecv_s = at(L.grecv), *gsend_s = at(L.gsend), *go3s = at(L.go3), *w3s = at(L.w3s), *gb3s = at(L.gb3);
  T* As2 = at(L.scratch);
  T* Bs2 = As2 + 2 * kBK * (BM + 4);
  T* red = at(L.scratch);  // per-thread sums, only between GEMM1s (GEMM1 ends with a barrier)
  int* valid = reinterpret_cast<int*>(smem_raw + L.valid);

  const int t = threadIdx.x, tc = t % p.TC, tr = t / p.TC, lane = t % 32, warp = t / 32;
  const int S = gemm2_splits(H2P, CW);
  T* my_w2 = p.part_w2 + long(blockIdx.x) * S * H2P * H1P;

  for (int idx = t; idx < E * H1P; idx += kThreads) {
    const int e = idx / H1P, k = idx % H1P;
    wet[idx] = k < p.H1 ? p.we[long(k) * E + e] : T(0);
    gwes[idx] = T(0);  // [k][e], as part_we
  }
  for (long idx = t; idx < long(S) * H2P * H1P; idx += kThreads) my_w2[idx] = T(0);
  T gb2_r[TN] = {};  // this thread's share of gb2 (its columns, all its rows)
  const int FC = p.FC, oq_n = FC / 4;
  T* my_w3 = p.part_w3 + long(blockIdx.x) * p.S3 * p.FoP * H2P;
  if constexpr (RELU) {
    for (long idx = t; idx < long(p.S3) * p.FoP * H2P; idx += kThreads) my_w3[idx] = T(0);
    for (int o = t; o < p.FoP; o += kThreads) gb3s[o] = T(0);
    if (FC == p.FoP) stage_w3(p.w3, w3s, 0, FC, p.Fo, p.H2, H2P);  // one chunk: staged once
  }

  for (long item = blockIdx.x; item < p.items; item += gridDim.x) {
    const long b = item / p.G;
    const int g = int(item % p.G), r0 = g * p.RG, rcount = min(p.RG, N - r0);
    const unsigned char* mask = p.mask ? p.mask + b * N : nullptr;
    __syncthreads();  // the previous item's readers of gsr / ssum / grecv_s are done
    if constexpr (!RELU) {
      for (int idx = t; idx < p.RG * H2P; idx += kThreads) {
        const int rl = idx / H2P, h = idx % H2P, n = r0 + rl;
        // gin[n] = ((grad * mask) W3)[n] from the op (masked receivers have no valid rows anyway)
        gsr[idx] = (rl < rcount && h < p.H2) ? p.gin[(b * N + n) * p.H2 + h] : T(0);
        ssum[idx] = T(0);
      }
    }
    for (int idx = t; idx < p.RG * H1P; idx += kThreads) grecv_s[idx] = T(0);

    for (int j0 = 0; j0 < N; j0 += BJ) {
      __syncthreads();  // the previous chunk's gsend flush is done
      for (int idx = t; idx < BJ * H1P; idx += kThreads) gsend_s[idx] = T(0);
      for (int rt = 0; rt < rcount; rt += RN) {
        const int n0 = r0 + rt;
        __syncthreads();  // the previous tile's readers of es / valid / ge are done
        for (int idx = t; idx < BM * E; idx += kThreads) {
          const int row = idx / E, n = n0 + row / BJ, j = j0 + row % BJ;
          es[idx] = (n < N && j < N) ? p.edge[((b * N + n) * N + j) * E + idx % E] : T(0);
          ge[idx] = T(0);
        }
        for (int row = t; row < BM; row += kThreads) {
          const int n = n0 + row / BJ, j = j0 + row % BJ;
          valid[row] = n < N && j < N && j != n && (mask == nullptr || (mask[n] && mask[j]));
        }
        __syncthreads();
        const PairTile<T> a{p.recv, p.send, p.w2, es, wet, b * N + n0, (b + 1) * N, N, E, p.H1, p.H2, H1P, H2P, BM, BJ,
                            p.TC, j0};
        T acc[TM][TN];
        gemm1<T, TM, TN>(a, As2, Bs2, acc);

        // gp2 (into acc), s ("none") and gb2 shares, then both layouts of gp2
        T sp[TN] = {};
        if constexpr (RELU) {
          // p2 = acc + b2: h2 = relu(p2) into gs_t as [row][H2P + 4], (p2 > 0) as bits (TM*TN <= 32);
          // acc then accumulates gd2 = go3 W3 for this thread's rows and columns over all chunks
          static_assert(TM * TN <= 32, "one bit per register-block element");
          unsigned live = 0;
#pragma unroll
          for (int i = 0; i < TM; ++i) {
            T v[TN];
#pragma unroll
            for (int c = 0; c < TN; ++c) {
              const int h = tc * TN + c;
              const T p2 = acc[i][c] + (h < p.H2 ? p.b2[h] : T(0));
              if (p2 > T(0)) live |= 1u << (i * TN + c);
              v[c] = p2 > T(0) ? p2 : T(0);
              acc[i][c] = T(0);
            }
            st4(gs_t + (tr * TM + i) * (H2P + 4) + tc * TN, v);
          }
          const long q0 = b * N + n0;
          for (int f0 = 0; f0 < p.FoP; f0 += FC) {
            __syncthreads();  // h2 is complete; the previous chunk's readers of go3s / w3s are done
            if (FC < p.FoP) {
              stage_w3(p.w3, w3s, f0, FC, p.Fo, p.H2, H2P);
              __syncthreads();
            }
            // go3 of the chunk: 4-row blocks when they keep every thread busy, else single rows
            if ((BM / 4) * oq_n >= kThreads) {
              for (int m = t; m < (BM / 4) * oq_n; m += kThreads)
                go3_rows<T, 4>(gs_t, w3s, valid, p.gin, go3s, 4 * (m / oq_n), 4 * (m % oq_n), f0, q0, BJ, p.Fo,
                               FC, H2P, p.b3);
            } else {
              for (int m = t; m < BM * oq_n; m += kThreads)
                go3_rows<T, 1>(gs_t, w3s, valid, p.gin, go3s, m / oq_n, 4 * (m % oq_n), f0, q0, BJ, p.Fo, FC,
                               H2P, p.b3);
            }
            __syncthreads();
            // gb3 partial (one owner per output, rows in order)
            for (int o = t; o < FC; o += kThreads) {
              T v = T(0);
              for (int row = 0; row < BM; ++row) v += go3s[row * (FC + 4) + o];
              gb3s[f0 + o] += v;
            }
            // gW3 partial (FC x H2P of this chunk) += go3^T h2, rows split S3 ways
            {
              const int hq_n = H2P / 4, Q = oq_n * hq_n, rows = BM / p.S3;
              for (int m = t; m < Q * p.S3; m += kThreads) {
                const int q = m % Q, sp_i = m / Q, oq = q / hq_n, hq = q % hq_n;
                gemm_tn_block(go3s + 4 * oq, FC + 4, gs_t + 4 * hq, H2P + 4,
                              my_w3 + (long(sp_i) * p.FoP + f0 + 4 * oq) * H2P + 4 * hq, H2P, sp_i * rows,
                              (sp_i + 1) * rows);
              }
            }
            // gd2 += go3 W3 (chunk) in GEMM1's layout: rows tr*TM + i, columns tc*TN + c
            for (int o = 0; o < FC; o += 4) {
              T av[TM][4];
#pragma unroll
              for (int i = 0; i < TM; ++i) ldv<4>(go3s + (tr * TM + i) * (FC + 4) + o, av[i]);
#pragma unroll
              for (int k = 0; k < 4; ++k) {
                T bv[TN];
                ldv<TN>(w3s + (o + k) * (H2P + 4) + tc * TN, bv);
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                  for (int c = 0; c < TN; ++c) acc[i][c] += av[i][k] * bv[c];
              }
            }
          }
          __syncthreads();  // the readers of h2 (gs_t) are done before gp2 overwrites it
#pragma unroll
          for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int c = 0; c < TN; ++c) acc[i][c] = (live >> (i * TN + c)) & 1u ? acc[i][c] : T(0);
        } else {
          // gp2 = valid * (p2 > 0) * gin[n]
          const int nl = tr * TM / BJ;
#pragma unroll
          for (int i = 0; i < TM; ++i) {
            const bool v = valid[tr * TM + i];
#pragma unroll
            for (int c = 0; c < TN; ++c) {
              const int h = tc * TN + c;
              const T p2 = acc[i][c] + (h < p.H2 ? p.b2[h] : T(0));
              const bool live = v && p2 > T(0);
              if (live) sp[c] += p2;
              acc[i][c] = live ? gsr[(rt + nl) * H2P + h] : T(0);
            }
          }
        }
#pragma unroll
        for (int i = 0; i < TM; ++i) {
#pragma unroll
          for (int c = 0; c < TN; ++c) gb2_r[c] += acc[i][c];
          st4(gs_t + (tr * TM + i) * (H2P + 4) + tc * TN, acc[i]);
        }
#pragma unroll
        for (int c = 0; c < TN; ++c) {
#pragma unroll
          for (int i = 0; i < TM; ++i) gs[(tc * TN + c) * (BM + 4) + tr * TM + i] = acc[i][c];
          if constexpr (!RELU) red[tr * H2P + tc * TN + c] = sp[c];
        }
        __syncthreads();
        if constexpr (!RELU) {
          const int per = BJ / TM;  // threads sharing one receiver
          for (int idx = t; idx < RN * H2P; idx += kThreads) {
            const int q = idx / H2P, h = idx % H2P;
            T v = T(0);
            for (int k = 0; k < per; ++k) v += red[(q * per + k) * H2P + h];
            ssum[(rt + q) * H2P + h] += v;
          }
        }

        for (int k0 = 0; k0 < H1P; k0 += CW) {
          for (int idx = t; idx < BM * (CW / 4); idx += kThreads) {
            const int row = idx / (CW / 4), cc = 4 * (idx % (CW / 4));
            T v[4];
            h1_quad(a, row, k0 + cc, v);
            st4(hs + row * (CW + 4) + cc, v);
          }
          for (int idx = t; idx < H2P * CW; idx += kThreads) {
            const int h = idx / CW, k = k0 + idx % CW;
            w2s[h * (CW + 4) + idx % CW] = (h < p.H2 && k < p.H1) ? p.w2[long(h) * p.H1 + k] : T(0);
          }
          __syncthreads();
          // GEMM2: gW2[:, chunk] += gp2^T h1 (the rows split S ways when blocks are few)
          {
            const int cq_n = CW / 4, Q = (H2P / 4) * cq_n;
            if (S == 1) {
              for (int m = t; m < Q; m += kThreads) {
                int hq, cq;
                warp_block(m, cq_n, hq, cq);
                gemm2_block(gs_t, hs, my_w2, 0, BM, hq, cq, H1P, H2P, CW, k0);
              }
            } else {
              const int q = t % Q, sp_i = t / Q, rows = BM / S;
              gemm2_block(gs_t, hs, my_w2 + long(sp_i) * H2P * H1P, sp_i * rows, (sp_i + 1) * rows, q / cq_n,
                          q % cq_n, H1P, H2P, CW, k0);
            }
          }
          __syncthreads();  // GEMM3 overwrites hs
          // GEMM3: gp1 = (gp2 W2[:, chunk]) * (h1 > 0), written over h1 (each 4x4 block by its owner)
          {
            const int cq_n = CW / 4, Q = (BM / 4) * cq_n;
            for (int m = t; m < Q; m += kThreads) {
              int rq, cq;
              warp_block(m, cq_n, rq, cq);
              T acc3[4][4] = {};
              for (int h = 0; h < H2P; ++h) {
                T av[4], bv[4];
                ldv<4>(gs + h * (BM + 4) + rq * 4, av);
                ldv<4>(w2s + h * (CW + 4) + cq * 4, bv);
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                  for (int j = 0; j < 4; ++j) acc3[i][j] += av[i] * bv[j];
              }
#pragma unroll
              for (int i = 0; i < 4; ++i) {
                T* d = hs + (rq * 4 + i) * (CW + 4) + cq * 4;
                T hv[4];
                ldv<4>(d, hv);
#pragma unroll
                for (int j = 0; j < 4; ++j) hv[j] = hv[j] > T(0) ? acc3[i][j] : T(0);
                st4(d, hv);
              }
            }
          }
          __syncthreads();
          // sums of gp1: over senders (grecv), over receivers (gsend), rows (gWe), columns (gedge)
          for (int idx = t; idx < RN * CW; idx += kThreads) {
            const int q = idx / CW, cc = idx % CW;
            T v = T(0);
            for (int jl = 0; jl < BJ; ++jl) v += hs[(q * BJ + jl) * (CW + 4) + cc];
            grecv_s[(rt + q) * H1P + k0 + cc] += v;
          }
          for (int idx = t; idx < BJ * CW; idx += kThreads) {
            const int jl = idx / CW, cc = idx % CW;
            T v = T(0);
            for (int q = 0; q < RN; ++q) v += hs[(q * BJ + jl) * (CW + 4) + cc];
            gsend_s[jl * H1P + k0 + cc] += v;
          }
          if (E > 0) {
            for (int idx = t; idx < CW * E; idx += kThreads) {
              const int cc = idx / E, e = idx % E;
              T v = T(0);
              for (int row = 0; row < BM; ++row) v += hs[row * (CW + 4) + cc] * es[row * E + e];
              gwes[(k0 + cc) * E + e] += v;
            }
            for (int row = warp; row < BM; row += kThreads / 32) {
              for (int e = 0; e < E; ++e) {
                T v = T(0);
                for (int cc = lane; cc < CW; cc += 32) v += hs[row * (CW + 4) + cc] * wet[e * H1P + k0 + cc];
                v = warp_sum(v);
                if (lane == 0) ge[row * E + e] += v;
              }
            }
          }
          __syncthreads();  // the next chunk overwrites hs
        }
        for (int idx = t; idx < BM * E; idx += kThreads) {
          const int row = idx / E, n = n0 + row / BJ, j = j0 + row % BJ;
          if (n < N && j < N) p.gedge[((b * N + n) * N + j) * E + idx % E] = ge[idx];
        }
      }
      __syncthreads();
      for (int idx = t; idx < BJ * p.H1; idx += kThreads) {
        const int jl = idx / p.H1, k = idx % p.H1, j = j0 + jl;
        if (j < N) p.gsend[((long(g) * p.B + b) * N + j) * p.H1 + k] = gsend_s[jl * H1P + k];
      }
    }
    __syncthreads();
    if constexpr (!RELU) {
      for (int idx = t; idx < rcount * p.H2; idx += kThreads)
        p.s[(b * N + r0) * p.H2 + idx] = ssum[(idx / p.H2) * H2P + idx % p.H2];
    }
    for (int idx = t; idx < rcount * p.H1; idx += kThreads)
      p.grecv[(b * N + r0) * p.H1 + idx] = grecv_s[(idx / p.H1) * H1P + idx % p.H1];
  }

  // this block's partials of gb2 (its threads' shares, summed in thread order) and gWe
  __syncthreads();
#pragma unroll
  for (int c = 0; c < TN; ++c) red[tr * H2P + tc * TN + c] = gb2_r[c];
  __syncthreads();
  for (int h = t; h < p.H2; h += kThreads) {
    T v = T(0);
    for (int r = 0; r < p.TR; ++r) v += red[r * H2P + h];
    p.part_b2[long(blockIdx.x) * p.H2 + h] = v;
  }
  for (int idx = t; idx < p.H1 * E; idx += kThreads) p.part_we[long(blockIdx.x) * p.H1 * E + idx] = gwes[idx];
  if constexpr (RELU) {
    for (int o = t; o < p.Fo; o += kThreads) p.part_b3[long(blockIdx.x) * p.Fo + o] = gb3s[o];
  }
}

// ------------------------------------------------------------------ partial sums
// out[r, c] = sum_{q < P} part[q * slot + r * part_ld + c], q in order (deterministic).
template <typename T>
struct Segment {
  const T* part;
  T* out;
  long slot, rows;
  int cols, part_ld, out_ld, P;
};

template <typename T>
struct Segments {
  Segment<T> s[6];
};

template <typename T>
__global__ void __launch_bounds__(kThreads) reduce_kernel(Segments<T> segs) {
  const Segment<T> sg = segs.s[blockIdx.y];
  const long total = sg.rows * sg.cols;
  for (long idx = long(blockIdx.x) * kThreads + threadIdx.x; idx < total; idx += long(gridDim.x) * kThreads) {
    const long r = idx / sg.cols;
    const int c = int(idx % sg.cols);
    const T* src = sg.part + r * sg.part_ld + c;
    T v = T(0);
    for (int q = 0; q < sg.P; ++q) v += src[q * sg.slot];
    sg.out[r * sg.out_ld + c] = v;
  }
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
