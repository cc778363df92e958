// mpnn_message_sum, CUDA backend: device pieces shared by the forward and backward kernels:
// vector loads, the rebuild of h1 = relu(p1) for a tile of pair rows, GEMM1 (p2 = h1 W2^T
// for the tile, register-blocked; see mpnn_message_sum_cuda.cuh for the tile geometry) and
// the row-by-row dot blocks of GEMM3 (p3 = h2 W3^T, out_act "relu"). IEEE arithmetic only
// (FMA in the dtype, no tensor cores / TF32).
#pragma once

#include "mpnn_message_sum/cuda/mpnn_message_sum_cuda.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

// ------------------------------------------------------------------ device helpers
// A misaligned vector access faults on a GPU; the CPU emulation (tests) checks every one.
#ifdef MIMO_FAST_CUDA_EMULATION
#define MPNN_CHECK_ALIGNED(p, bytes) emulation_check_aligned(p, bytes, __FILE__, __LINE__)
#else
#define MPNN_CHECK_ALIGNED(p, bytes) ((void)0)
#endif

// Vector loads/stores of n consecutive values (16-byte aligned when n * sizeof(T) >= 16).
template <int n>
__device__ __forceinline__ void ldv(const float* p, float* v) {
  if constexpr (n % 4 == 0) {
#pragma unroll
    for (int i = 0; i < n; i += 4) {
      MPNN_CHECK_ALIGNED(p + i, 16);
      float4 x = *reinterpret_cast<const float4*>(p + i);
      v[i] = x.x; v[i + 1] = x.y; v[i + 2] = x.z; v[i + 3] = x.w;
    }
  } else if constexpr (n == 2) {
    MPNN_CHECK_ALIGNED(p, 8);
    float2 x = *reinterpret_cast<const float2*>(p);
    v[0] = x.x; v[1] = x.y;
  } else {
#pragma unroll
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
}

template <int n>
__device__ __forceinline__ void ldv(const double* p, double* v) {
  if constexpr (n % 2 == 0) {
#pragma unroll
    for (int i = 0; i < n; i += 2) {
      MPNN_CHECK_ALIGNED(p + i, 16);
      double2 x = *reinterpret_cast<const double2*>(p + i);
      v[i] = x.x; v[i + 1] = x.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
}

__device__ __forceinline__ void st4(float* p, const float* v) {
  MPNN_CHECK_ALIGNED(p, 16);
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(double* p, const double* v) {
  MPNN_CHECK_ALIGNED(p, 16);
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
  *reinterpret_cast<double2*>(p + 2) = make_double2(v[2], v[3]);
}

// n (a multiple of 4) consecutive values, 16-byte aligned
template <int n, typename T>
__device__ __forceinline__ void stv(T* p, const T* v) {
#pragma unroll
  for (int i = 0; i < n; i += 4) st4(p + i, v + i);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {  // butterfly: same order on every run
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// What GEMM1 needs to rebuild relu(p1) for one tile.
template <typename T>
struct PairTile {
  const T* recv;   // (B*N, H1P) node Wa^T + b1, zero past H1
  const T* send;   // (B*N, H1P) node Wb^T, zero past H1
  const T* w2;     // (H2, H1)
  const T* es;     // shared: edge rows of the tile (BM x E)
  const T* wet;    // shared: We^T (E x H1P), zero past H1
  long q0;         // first receiver of the tile, as a flat node index b*N + n
  long q_end;      // receivers from here on are not in the tile's graph(s): rows of 0
  int N, E, H1, H2, H1P, H2P;
  int BM, BJ, TC;
  int j0;          // first sender of the tile (in each row's own batch element)
};

// h1[row, k..k+3] = relu(p1[row, k..k+3]) (k a multiple of 4); 0 for rows past the graph
// (receiver q >= q_end or sender j >= N). Row = (receiver q = q0 + row / BJ, sender
// j = j0 + row % BJ of q's batch element). GEMM1's staging and the backward's h1 chunks both call this, so they see
// the same bits. Vector loads: recv/send rows and We^T rows are 16-byte aligned.
template <typename T>
__device__ __forceinline__ void h1_quad(const PairTile<T>& a, int row, int k, T (&v)[4]) {
  const long q = a.q0 + row / a.BJ;
  const int j = a.j0 + row % a.BJ;
  if (q >= a.q_end || j >= a.N) {
    v[0] = v[1] = v[2] = v[3] = T(0);
    return;
  }
  T s[4];
  ldv<4>(a.recv + q * a.H1P + k, v);
  ldv<4>(a.send + (q - q % a.N + j) * a.H1P + k, s);
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] += s[i];
  for (int e = 0; e < a.E; ++e) {
    const T x = a.es[row * a.E + e];
    T w[4];
    ldv<4>(a.wet + e * a.H1P + k, w);
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] += x * w[i];
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = v[i] > T(0) ? v[i] : T(0);
}

// One K-step of GEMM1 into shared memory: As[kk][row] = h1[row, k0+kk] (k-major, so a
// thread's TM rows are one vector load) and Bs[kk][h] = W2[h, k0+kk]. A thread builds 4
// consecutive kk of one row (vector loads); a warp's stores hit 32 distinct banks.
template <typename T>
__device__ __forceinline__ void gemm1_stage(const PairTile<T>& a, int k0, T* As, T* Bs) {
  for (int idx = threadIdx.x; idx < a.BM * (kBK / 4); idx += kThreads) {
    const int row = idx / (kBK / 4), kq = idx % (kBK / 4);
    T v[4];
    h1_quad(a, row, k0 + 4 * kq, v);
#pragma unroll
    for (int i = 0; i < 4; ++i) As[(4 * kq + i) * (a.BM + 4) + row] = v[i];
  }
  for (int idx = threadIdx.x; idx < a.H2P * kBK; idx += kThreads) {
    const int h = idx / kBK, k = k0 + idx % kBK;
    Bs[(idx % kBK) * (a.H2P + 4) + h] = (h < a.H2 && k < a.H1) ? a.w2[long(h) * a.H1 + k] : T(0);
  }
}

// acc[i][c] = (relu(p1) W2^T)[tr*TM + i, tc*TN + c] (without b2). Double-buffered K-steps:
// stage step s+1 while computing step s, one barrier per step. Ends with a barrier, so
// the staging buffers (As2, Bs2) are free when it returns.
template <typename T, int TM, int TN>
__device__ __forceinline__ void gemm1(const PairTile<T>& a, T* As2, T* Bs2, T (&acc)[TM][TN]) {
  const int tc = threadIdx.x % a.TC, tr = threadIdx.x / a.TC;
  const int as = a.BM + 4, bs = a.H2P + 4, asz = kBK * as, bsz = kBK * bs;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int c = 0; c < TN; ++c) acc[i][c] = T(0);
  const int steps = a.H1P / kBK;
  gemm1_stage(a, 0, As2, Bs2);
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const T* As = As2 + (s & 1) * asz;
    const T* Bs = Bs2 + (s & 1) * bsz;
    // the other buffer was last read in step s-1, which every thread finished (barrier)
    if (s + 1 < steps) gemm1_stage(a, (s + 1) * kBK, As2 + ((s + 1) & 1) * asz, Bs2 + ((s + 1) & 1) * bsz);
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      T av[TM], bv[TN];
      ldv<TM>(As + kk * as + tr * TM, av);
      ldv<TN>(Bs + kk * bs + tc * TN, bv);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int c = 0; c < TN; ++c) acc[i][c] += av[i] * bv[c];
    }
    __syncthreads();
  }
}

// W3 rows f0 .. f0 + FC ("relu") into shared memory as [o][h] (pitch H2P + 4),
// zero past Fo and H2.
template <typename T>
__device__ __forceinline__ void stage_w3(const T* w3, T* w3s, int f0, int FC, int Fo, int H2, int H2P) {
  for (int idx = threadIdx.x; idx < FC * H2P; idx += kThreads) {
    const int o = f0 + idx / H2P, h = idx % H2P;
    w3s[(idx / H2P) * (H2P + 4) + h] = (o < Fo && h < H2) ? w3[long(o) * H2 + h] : T(0);
  }
}

// acc[i][c] = sum_{k < K} A[i * lda + k] W[c * ldw + k] for RB rows of A and 4 rows of W,
// both k-contiguous with 16-byte aligned rows (K a multiple of 4): RB + 4 vector loads per
// 16 RB FMAs. GEMM3 (p3 = h2 W3^T) and, in backward, gd2 = go3 W3 run on it.
template <typename T, int RB>
__device__ __forceinline__ void dot_rows(const T* A, int lda, const T* W, int ldw, int K, T (&acc)[RB][4]) {
#pragma unroll
  for (int i = 0; i < RB; ++i)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[i][c] = T(0);
  for (int k = 0; k < K; k += 4) {
    T a[RB][4];
#pragma unroll
    for (int i = 0; i < RB; ++i) ldv<4>(A + long(i) * lda + k, a[i]);
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      T w[4];
      ldv<4>(W + long(c) * ldw + k, w);
#pragma unroll
      for (int i = 0; i < RB; ++i)
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) acc[i][c] += a[i][kk] * w[kk];
    }
  }
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
