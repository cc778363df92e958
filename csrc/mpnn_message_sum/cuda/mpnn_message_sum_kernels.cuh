// mpnn_message_sum, CUDA backend: the forward pair kernel (launched from mpnn_message_sum.cu;
// geometry and shared device pieces in mpnn_message_sum_cuda.cuh / _tile.cuh). Contract:
// PairKernels.forward in mimo_fast/ops/mpnn_message_sum.py (recv, send come from the op).
//
// fwd_kernel, one block per RN receivers of the flattened (B*N) node list: streams the
// senders BJ at a time; per tile GEMM1 gives p2 for BM = RN*BJ pairs in registers. Then
//   "none": each thread adds relu(p2 + b2) of its valid rows into per-receiver sums
//     (registers); after the last sender chunk they are reduced per receiver in shared
//     memory and written as s[n] = sum_j h2[n, j] (the op applies W3 once per receiver).
//   "relu": h2 = relu(p2 + b2) goes to shared memory; per chunk of FC outputs GEMM3 gives
//     p3 = h2 W3^T + b3 per row (4-row x 4-output register blocks), and relu(p3) of the valid
//     rows is summed per receiver (a fixed set of threads per (receiver, 4 outputs), their
//     partials summed in thread order) into out[n]: written by the first sender chunk,
//     added to by the later ones (same owner, a barrier apart: deterministic).
// HBM traffic per block: its edge rows once, recv/send rows (cached), its output rows once
// (per sender chunk for "relu" with streamed senders); never anything of size N*N*H.
#pragma once

#include "mpnn_message_sum/cuda/mpnn_message_sum_tile.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

template <typename T>
struct FwdParams {
  const T* recv;   // (B*N, H1P) node Wa^T + b1, zero past H1
  const T* send;   // (B*N, H1P) node Wb^T, zero past H1
  const T* edge;   // (B, N, N, E)
  const T* we;     // (H1, E)
  const T* w2;     // (H2, H1)
  const T* b2;     // (H2)
  const T* w3;     // (Fo, H2)   "relu" only
  const T* b3;     // (Fo)       "relu" only
  const unsigned char* mask;  // (B, N) or null
  T* out;          // "none": s (B*N, H2); "relu": (B*N, Fo)
  long block0;     // first block of this launch (grids past CUDA's limit run in chunks)
  long BN;         // B * N
  int N, E, H1, H2, Fo, H1P, H2P, FoP, FC;
  int TC, TR, BM, BJ, RN;
};

// sum[c] += relu(p3[row, o0 + c]) over the valid rows [row0, row0 + rows) of the tile
// (p3 = h2 W3^T + b3; h2s [row][H2P + 4], w3s [o][H2P + 4] from o0 - f0).
template <typename T, int RB>
__device__ __forceinline__ void relu_rows(const T* h2s, const T* w3s, const int* valid, const T (&b3v)[4], int row0,
                                          int rows, int H2P, T (&sum)[4]) {
  const int ld = H2P + 4;
  for (int row = row0; row < row0 + rows; row += RB) {
    T acc[RB][4];
    dot_rows<T, RB>(h2s + long(row) * ld, ld, w3s, ld, H2P, acc);
#pragma unroll
    for (int i = 0; i < RB; ++i) {
      if (!valid[row + i]) continue;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const T v = acc[i][c] + b3v[c];
        sum[c] += v > T(0) ? v : T(0);
      }
    }
  }
}

// A block owns RN consecutive receivers of the flattened (B*N) node list, so with small N
// one tile spans several batch elements (each row finds its own b): no idle rows.
template <typename T, int TM, int TN, bool RELU>
__global__ void __launch_bounds__(kThreads, 2) fwd_kernel(FwdParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const FwdSmem L = fwd_smem(p.BM, p.TR, p.H1P, p.H2P, p.E, int(sizeof(T)), RELU, p.FC);
  T* As2 = reinterpret_cast<T*>(smem_raw + L.scratch);
  T* Bs2 = As2 + 2 * kBK * (p.BM + 4);
  T* red = reinterpret_cast<T*>(smem_raw + L.scratch);  // after the last GEMM1 (barrier)
  T* h2s = reinterpret_cast<T*>(smem_raw + L.h2);       // "relu", after each GEMM1
  T* red3 = reinterpret_cast<T*>(smem_raw + L.red3);
  T* es = reinterpret_cast<T*>(smem_raw + L.es);
  T* wet = reinterpret_cast<T*>(smem_raw + L.wet);
  int* valid = reinterpret_cast<int*>(smem_raw + L.valid);
  T* w3s = reinterpret_cast<T*>(smem_raw + L.w3s);

  const long q0 = (p.block0 + blockIdx.x) * p.RN;  // first receiver (flat index b*N + n)
  const int t = threadIdx.x, tc = t % p.TC, tr = t / p.TC;
  const int N = p.N, E = p.E, BJ = p.BJ, H2P = p.H2P;
  const unsigned char* mask = p.mask;

  for (int idx = t; idx < E * p.H1P; idx += kThreads) {
    const int e = idx / p.H1P, k = idx % p.H1P;
    wet[idx] = k < p.H1 ? p.we[long(k) * E + e] : T(0);
  }
  if constexpr (RELU) {
    if (p.FC == p.FoP) stage_w3(p.w3, w3s, 0, p.FC, p.Fo, p.H2, H2P);  // one chunk: staged once
  }

  const PairTile<T> a0{p.recv, p.send, p.w2, es, wet, q0, p.BN, N, E, p.H1, p.H2, p.H1P, H2P, p.BM, BJ, p.TC, 0};
  T ssum_r[TN];  // "none": this thread's receiver: sum over its valid rows of relu(p2 + b2)
#pragma unroll
  for (int c = 0; c < TN; ++c) ssum_r[c] = T(0);
  // "relu" GEMM3: items = (receiver r, 4 outputs of the chunk), P3 threads per item, each
  // summing rpp consecutive rows (senders) of the item's receiver
  const int oq_n = p.FC / 4, items = p.RN * oq_n;
  int P3 = 1;
  while (RELU && 2 * P3 * items <= kThreads && 2 * P3 <= BJ) P3 *= 2;
  const int rpp = BJ / P3;

  for (int j0 = 0; j0 < N; j0 += BJ) {
    __syncthreads();  // the previous chunk's readers of es / valid / h2s / red3 are done
    for (int idx = t; idx < p.BM * E; idx += kThreads) {
      const int row = idx / E, j = j0 + row % BJ;
      const long q = q0 + row / BJ;  // edge[b, n, j] is row q*N + j of (B*N*N, E)
      es[idx] = (q < p.BN && j < N) ? p.edge[(q * N + j) * E + idx % E] : T(0);
    }
    for (int row = t; row < p.BM; row += kThreads) {
      const int j = j0 + row % BJ;
      const long q = q0 + row / BJ, bN = q - q % N;
      valid[row] = q < p.BN && j < N && bN + j != q && (mask == nullptr || (mask[q] && mask[bN + j]));
    }
    __syncthreads();
    PairTile<T> a = a0;
    a.j0 = j0;
    T acc[TM][TN];
    gemm1<T, TM, TN>(a, As2, Bs2, acc);
    if constexpr (!RELU) {
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        if (!valid[tr * TM + i]) continue;
#pragma unroll
        for (int c = 0; c < TN; ++c) {
          const int h = tc * TN + c;
          const T v = acc[i][c] + (h < p.H2 ? p.b2[h] : T(0));
          ssum_r[c] += v > T(0) ? v : T(0);
        }
      }
    } else {
      // h2 = relu(p2 + b2) of the tile into h2s (GEMM1 ended with a barrier: scratch is free)
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        T v[TN];
#pragma unroll
        for (int c = 0; c < TN; ++c) {
          const int h = tc * TN + c;
          const T x = acc[i][c] + (h < p.H2 ? p.b2[h] : T(0));
          v[c] = x > T(0) ? x : T(0);
        }
        stv<TN>(h2s + long(tr * TM + i) * (H2P + 4) + tc * TN, v);
      }
      for (int f0 = 0; f0 < p.FoP; f0 += p.FC) {
        __syncthreads();  // h2s is complete; the previous chunk's readers of w3s / red3 are done
        if (p.FC < p.FoP) {
          stage_w3(p.w3, w3s, f0, p.FC, p.Fo, p.H2, H2P);
          __syncthreads();
        }
        auto write = [&](int item, const T (&sum)[4]) {
          const long q = q0 + item / oq_n;
          if (q >= p.BN) return;
          const int o0 = f0 + 4 * (item % oq_n);
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            if (o0 + c >= p.Fo) continue;
            T* d = p.out + q * p.Fo + o0 + c;
            *d = j0 == 0 ? sum[c] : *d + sum[c];  // same owner thread in every sender chunk
          }
        };
        for (int w = t; w < items * P3; w += kThreads) {
          const int item = w % items, part = w / items, oq = item % oq_n;
          T b3v[4], sum[4] = {T(0), T(0), T(0), T(0)};
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int o = f0 + 4 * oq + c;
            b3v[c] = o < p.Fo ? p.b3[o] : T(0);
          }
          const int row0 = (item / oq_n) * BJ + part * rpp;
          const T* w3q = w3s + long(4 * oq) * (H2P + 4);
          if (rpp % 4 == 0)
            relu_rows<T, 4>(h2s, w3q, valid, b3v, row0, rpp, H2P, sum);
          else
            relu_rows<T, 1>(h2s, w3q, valid, b3v, row0, rpp, H2P, sum);
          if (P3 == 1)
            write(item, sum);
          else
            stv<4>(red3 + 4L * w, sum);
        }
        if (P3 > 1) {  // uniform: every thread takes this branch or none
          __syncthreads();
          for (int item = t; item < items; item += kThreads) {
            T sum[4] = {T(0), T(0), T(0), T(0)};
            for (int part = 0; part < P3; ++part)
#pragma unroll
              for (int c = 0; c < 4; ++c) sum[c] += red3[4L * (part * items + item) + c];
            write(item, sum);
          }
        }
      }
    }
  }

  if constexpr (!RELU) {
    // s[r] = sum of the BJ/TM per-thread sums of receiver r (threads tr = r*per .. +per-1)
#pragma unroll
    for (int c = 0; c < TN; ++c) red[tr * H2P + tc * TN + c] = ssum_r[c];
    __syncthreads();
    const int per = BJ / TM;
    for (int idx = t; idx < p.RN * p.H2; idx += kThreads) {
      const int r = idx / p.H2, h = idx % p.H2;
      const long q = q0 + r;
      if (q >= p.BN) continue;
      T v = T(0);
      for (int g = 0; g < per; ++g) v += red[(r * per + g) * H2P + h];
      p.out[q * p.H2 + h] = v;  // 0 for masked receivers (no valid rows)
    }
  }
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
