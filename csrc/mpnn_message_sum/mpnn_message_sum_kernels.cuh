// mpnn_message_sum, CUDA backend: the projection and forward kernels (launched from
// mpnn_message_sum.cu; geometry and shared device pieces in mpnn_message_sum_cuda.cuh).
//
// Forward = two launches:
//  1. proj_kernel: recv = node Wa^T + b1, send = node Wb^T as (B*N, H1P) buffers.
//  2. fwd_kernel, one block per (batch element b, RN receivers): streams the senders BJ at a
//     time; per tile GEMM1 gives p2 for BM = RN*BJ pairs in registers, and each thread adds
//     relu(p2 + b2) of its valid rows into per-receiver sums s (registers). After the last
//     sender chunk the sums are reduced per receiver in shared memory and the epilogue
//     writes out[n] = mask[n] * (s[n] W3^T + count[n] b3), count = number of valid senders.
//     HBM traffic per block: its edge rows once, recv/send rows (cached), out once; never
//     anything of size N*N*H.
#pragma once

#include "mpnn_message_sum/mpnn_message_sum_tile.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

// ------------------------------------------------------------------ projection
// recv[bn, k] = b1[k] + sum_f node[bn, f] w1[k, f];  send[bn, k] = sum_f node[bn, f] w1[k, F + f]
// (k < H1; 0 for H1 <= k < H1P). Thread (g, k) computes 4 nodes of column k: the w1
// values are read once per feature for 4 FMAs each, the node values are broadcasts.
template <typename T>
__global__ void __launch_bounds__(kThreads) proj_kernel(const T* __restrict__ node, const T* __restrict__ w1,
                                                         const T* __restrict__ b1, T* __restrict__ recv,
                                                         T* __restrict__ send, long BN, int F, int E, int H1,
                                                         int H1P) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int wp = H1P + 1;                   // odd pitch: the transposing stores hit distinct banks
  T* wr = reinterpret_cast<T*>(smem_raw);   // [kProjK][wp] receiver weights, feature-major
  T* ws = wr + kProjK * wp;                 // [kProjK][wp] sender weights
  T* xs = ws + kProjK * wp;                 // [nodes][kProjK + 1] node features
  const int groups = kThreads / H1P, nodes = 4 * groups;
  const int k = threadIdx.x % H1P, g = threadIdx.x / H1P;
  const int ld = 2 * F + E;  // row length of w1
  for (long bn0 = long(blockIdx.x) * nodes; bn0 < BN; bn0 += long(gridDim.x) * nodes) {
    T r[4] = {0, 0, 0, 0}, s[4] = {0, 0, 0, 0};
    for (int f0 = 0; f0 < F; f0 += kProjK) {
      const int fk = min(kProjK, F - f0);
      __syncthreads();  // the previous step's readers are done
      for (int idx = threadIdx.x; idx < kProjK * H1P; idx += kThreads) {
        const int kk = idx / kProjK, f = idx % kProjK;  // consecutive threads: one w1 row
        const bool in = kk < H1 && f < fk;
        wr[f * wp + kk] = in ? w1[long(kk) * ld + f0 + f] : T(0);
        ws[f * wp + kk] = in ? w1[long(kk) * ld + F + f0 + f] : T(0);
      }
      for (int idx = threadIdx.x; idx < nodes * kProjK; idx += kThreads) {
        const int nd = idx / kProjK, f = idx % kProjK;
        xs[nd * (kProjK + 1) + f] = (bn0 + nd < BN && f < fk) ? node[(bn0 + nd) * F + f0 + f] : T(0);
      }
      __syncthreads();
      for (int f = 0; f < fk; ++f) {
        const T a = wr[f * wp + k], b = ws[f * wp + k];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const T x = xs[(g * 4 + i) * (kProjK + 1) + f];
          r[i] += x * a;
          s[i] += x * b;
        }
      }
    }
    const T bias = k < H1 ? b1[k] : T(0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const long bn = bn0 + g * 4 + i;
      if (bn < BN) {
        recv[bn * H1P + k] = k < H1 ? r[i] + bias : T(0);
        send[bn * H1P + k] = k < H1 ? s[i] : T(0);
      }
    }
  }
}

// ------------------------------------------------------------------ forward
template <typename T>
struct FwdParams {
  const T* recv;   // (B*N, H1P)
  const T* send;   // (B*N, H1P)
  const T* edge;   // (B, N, N, E)
  const T* w1;     // (H1, 2F+E): We is columns 2F..
  const T* w2;     // (H2, H1)
  const T* b2;     // (H2)
  const T* w3;     // (Fo, H2)
  const T* b3;     // (Fo)
  const unsigned char* mask;  // (B, N) or null
  T* out;          // (B, N, Fo)
  long block0;     // first block of this launch (grids past CUDA's limit run in chunks)
  long BN;         // B * N
  int N, F, E, H1, H2, Fo, H1P, H2P;
  int TC, TR, BM, BJ, RN;
};

// A block owns RN consecutive receivers of the flattened (B*N) node list, so with small N
// one tile spans several batch elements (each row finds its own b): no idle rows.
template <typename T, int TM, int TN>
__global__ void __launch_bounds__(kThreads, 2) fwd_kernel(FwdParams<T> p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const FwdSmem L = fwd_smem(p.BM, p.TR, p.RN, p.H1P, p.H2P, p.E, int(sizeof(T)));
  T* As2 = reinterpret_cast<T*>(smem_raw + L.scratch);
  T* Bs2 = As2 + 2 * kBK * (p.BM + 4);
  T* red = reinterpret_cast<T*>(smem_raw + L.scratch);  // after the last GEMM1 (barrier)
  T* es = reinterpret_cast<T*>(smem_raw + L.es);
  T* wet = reinterpret_cast<T*>(smem_raw + L.wet);
  int* valid = reinterpret_cast<int*>(smem_raw + L.valid);
  T* ssum = reinterpret_cast<T*>(smem_raw + L.ssum);
  int* count = reinterpret_cast<int*>(smem_raw + L.count);

  const long q0 = (p.block0 + blockIdx.x) * p.RN;  // first receiver (flat index b*N + n)
  const int t = threadIdx.x, tc = t % p.TC, tr = t / p.TC;
  const int N = p.N, E = p.E, BJ = p.BJ;
  const unsigned char* mask = p.mask;

  for (int idx = t; idx < E * p.H1P; idx += kThreads) {
    const int e = idx / p.H1P, k = idx % p.H1P;
    wet[idx] = k < p.H1 ? p.w1[long(k) * (2 * p.F + E) + 2 * p.F + e] : T(0);
  }
  // messages each receiver sums: N - 1, or (unmasked nodes of its graph - 1), 0 if masked
  for (int r = t; r < p.RN; r += kThreads) {
    const long q = q0 + r;
    int c = N - 1;
    if (q >= p.BN || (mask && !mask[q])) {
      c = 0;
    } else if (mask) {
      const unsigned char* m = mask + (q - q % N);
      c = -1;
      for (int j = 0; j < N; ++j) c += m[j] != 0;
    }
    count[r] = c;
  }

  const PairTile<T> a0{p.recv, p.send, p.w2, es, wet, q0, p.BN, N, E, p.H1, p.H2, p.H1P, p.H2P, p.BM, BJ, p.TC, 0};
  T ssum_r[TN];  // this thread's receiver: sum over its valid rows of relu(p2 + b2)
#pragma unroll
  for (int c = 0; c < TN; ++c) ssum_r[c] = T(0);

  for (int j0 = 0; j0 < N; j0 += BJ) {
    __syncthreads();  // the previous chunk's readers of es / valid are done
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
  }

  // s[r] = sum of the BJ/TM per-thread sums of receiver r (threads tr = r*per .. +per-1)
#pragma unroll
  for (int c = 0; c < TN; ++c) red[tr * p.H2P + tc * TN + c] = ssum_r[c];
  __syncthreads();
  const int per = BJ / TM;
  for (int idx = t; idx < p.RN * p.H2P; idx += kThreads) {
    const int r = idx / p.H2P, h = idx % p.H2P;
    T v = T(0);
    for (int g = 0; g < per; ++g) v += red[(r * per + g) * p.H2P + h];
    ssum[idx] = v;
  }
  __syncthreads();
  // out[q, o] = mask[q] * (sum_h s[q, h] W3[o, h] + count[q] b3[o])  (s = 0, count = 0 if masked)
  for (int idx = t; idx < p.RN * p.Fo; idx += kThreads) {
    const int r = idx / p.Fo, o = idx % p.Fo;
    const long q = q0 + r;
    if (q >= p.BN) continue;
    T v = T(count[r]) * p.b3[o];
    for (int h = 0; h < p.H2; ++h) v += ssum[r * p.H2P + h] * p.w3[long(o) * p.H2 + h];
    p.out[q * p.Fo + o] = (mask == nullptr || mask[q]) ? v : T(0);
  }
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
