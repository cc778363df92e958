// mpnn_message_sum, CUDA backend: launch geometry (host, no GPU needed) and the pieces the
// forward (mpnn_message_sum.cu) and backward (mpnn_message_sum_backward.cu) kernels share.
// Formula: mimo_fast/ops/mpnn_message_sum.py; written-out backward:
// mimo_fast/ops/reference/mpnn_message_sum.py.
//
// The pair work is a GEMM whose rows are (receiver n, sender j) pairs. A tile holds
// BM = RN x BJ pair rows (row = nl * BJ + jl: receiver n0 + nl, sender j0 + jl) and
//   p1[row, k] = recv[n, k] + send[j, k] + sum_e edge[n, j, e] We[k, e]   (k < H1)
//   p2[row, :] = relu(p1[row, :]) W2^T + b2                                  ("GEMM1")
// recv = node Wa^T + b1 and send = node Wb^T come from a projection kernel (w1 = [Wa|Wb|We]).
// GEMM1 is tiled over 256 threads as a TR x TC grid: thread (tr, tc) owns the TM x TN
// register block rows [tr*TM, tr*TM+TM) x columns [tc*TN, tc*TN+TN) of p2. BJ is a multiple
// of TM, so a thread's rows share one receiver and its sums over senders stay in registers.
// H1 and H2 are zero-padded to powers of two (H1P >= 16, H2P >= 8): zero rows of the
// padded weights give h1 = 0 and p2 = 0 there, so the pad never reaches a result.
// All arithmetic is IEEE (fp32 or fp64 FMA, no tensor cores / TF32).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "common/cuda_utils.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

constexpr int kThreads = 256;   // every kernel here runs 256-thread blocks (8 warps)
constexpr int kBK = 8;          // GEMM1 K-step (H1 columns staged per step)
constexpr int kHMax = 256;      // largest H1, H2 served (register tiles and shared memory)
constexpr int kProjK = 32;      // projection kernel: node features staged per step

__host__ __device__ inline int next_pow2(long n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

inline long cdiv(long a, long b) { return (a + b - 1) / b; }

// Bump allocator over a shared-memory buffer; every region starts 16-byte aligned so the
// kernels can use 16-byte vector loads.
struct Carve {
  long off = 0;
  __host__ __device__ long take(long bytes) {
    long o = off;
    off += (bytes + 15) / 16 * 16;
    return o;
  }
};

// GEMM1 geometry of one pair tile (see the file comment).
struct Tile {
  int TM = 0, TN = 0;  // register block of one thread: TM pair rows x TN columns of H2
  int TC = 0, TR = 0;  // threads along H2 (TC * TN = H2P) and along rows (TC * TR = 256)
  int BM = 0, BJ = 0, RN = 0;  // pair rows per tile = RN receivers x BJ senders
};

inline Tile make_tile(long N, int H2P, int TM, int TN) {
  Tile t;
  t.TM = TM;
  t.TN = TN;
  t.TC = H2P / TN;
  t.TR = kThreads / t.TC;
  t.BM = t.TR * TM;
  t.BJ = std::min(t.BM, std::max(TM, next_pow2(N)));
  t.RN = t.BM / t.BJ;
  return t;
}

// Shared-memory regions (byte offsets) of the forward kernel.
struct FwdSmem {
  long scratch, es, wet, valid, ssum, total;
};

__host__ __device__ inline FwdSmem fwd_smem(int BM, int TR, int RN, int H1P, int H2P, int E, int sz) {
  Carve c;
  FwdSmem s;
  // GEMM1's double-buffered A (kBK x BM) and B (kBK x H2P) steps, later reused for the
  // per-thread sender sums (TR x H2P) that are reduced per receiver
  long asbs = 2L * kBK * (BM + 4) + 2L * kBK * (H2P + 4), red = long(TR) * H2P;
  s.scratch = c.take((asbs > red ? asbs : red) * sz);
  s.es = c.take(long(BM) * E * sz);      // edge rows of the tile
  s.wet = c.take(long(E) * H1P * sz);    // We^T (E x H1P)
  s.valid = c.take(long(BM) * 4);        // pair row is a message (j != n, both unmasked)
  s.ssum = c.take(long(RN) * H2P * sz);  // s[n] = sum_j relu(p2) per receiver
  s.total = c.off;
  return s;
}

// Shared-memory regions (byte offsets) of the backward pair kernel.
struct BwdSmem {
  long wet, gwes, scratch, gs_t, gs, hs, w2s, es, ge, gsr, ssum, grecv, gsend, valid, total;
};

__host__ __device__ inline BwdSmem bwd_smem(int BM, int TR, int BJ, int RG, int CW, int H1P, int H2P,
                                            int E, int sz) {
  Carve c;
  BwdSmem s;
  long asbs = 2L * kBK * (BM + 4) + 2L * kBK * (H2P + 4), red = long(TR) * H2P;
  s.wet = c.take(long(E) * H1P * sz);                      // We^T (E x H1P)
  s.gwes = c.take(long(H1P) * E * sz);                     // this block's gWe partial
  s.scratch = c.take((asbs > red ? asbs : red) * sz);      // GEMM1 steps / per-thread sums
  s.gs_t = c.take(long(BM) * (H2P + 4) * sz);              // gp2 as [row][h2] (GEMM2's A)
  s.gs = c.take(long(H2P) * (BM + 4) * sz);                // gp2 as [h2][row] (GEMM3's A)
  s.hs = c.take(long(BM) * (CW + 4) * sz);                 // h1 chunk, then gp1 chunk
  s.w2s = c.take(long(H2P) * (CW + 4) * sz);               // W2[:, chunk] (GEMM3's B)
  s.es = c.take(long(BM) * E * sz);                        // edge rows of the tile
  s.ge = c.take(long(BM) * E * sz);                        // gedge rows of the tile
  s.gsr = c.take(long(RG) * H2P * sz);                     // gs = (grad*mask) W3, item receivers
  s.ssum = c.take(long(RG) * H2P * sz);                    // s, item receivers
  s.grecv = c.take(long(RG) * H1P * sz);                   // grecv, item receivers
  s.gsend = c.take(long(BJ) * H1P * sz);                   // gsend, current sender chunk
  s.valid = c.take(long(BM) * 4);
  s.total = c.off;
  return s;
}

// GEMM2 (gW2 += gp2^T h1 over a tile's rows) uses 4x4 register blocks over the H2P x CW
// chunk; when there are fewer blocks than threads, the rows are split S ways and each
// split accumulates into its own partial slice (so every thread works, no atomics).
__host__ __device__ inline int gemm2_splits(int H2P, int CW) {
  int blocks = (H2P / 4) * (CW / 4);
  return blocks >= kThreads ? 1 : kThreads / blocks;
}

// Everything the host decides for one problem size. Pure function of the sizes and the
// device's limits, so the Python glue (buffer sizes) and the launchers (grids) agree.
struct Config {
  long B = 0, N = 0, F = 0, E = 0, H1 = 0, H2 = 0, Fo = 0;
  int dtype = 0, sz = 0;
  int H1P = 0, H2P = 0;
  // forward: grid = (batch elements of the launch) x fwd_tiles blocks
  Tile fwd;
  long fwd_tiles = 0, fwd_batch_chunk = 0, fwd_smem = 0;
  // backward: persistent grid of bwd_blocks over items = (batch element, receiver group)
  Tile bwd;
  int CW = 0, S = 0, RG = 0;
  long G = 0, items = 0, bwd_blocks = 0, bwd_smem = 0;
  // projection kernel (recv, send)
  int proj_nodes = 0;
  long proj_blocks = 0, proj_smem = 0;
  std::string refusal;  // empty when these sizes can run on this device
};

struct DeviceLimits {
  int sm_count;
  long smem_block;  // opt-in maximum per block
  long smem_sm;     // per multiprocessor
};

inline Config make_config(long B, long N, long F, long E, long H1, long H2, long Fo, int dtype,
                          DeviceLimits dev) {
  Config c;
  c.B = B; c.N = N; c.F = F; c.E = E; c.H1 = H1; c.H2 = H2; c.Fo = Fo; c.dtype = dtype;
  if (dtype != cuda::kFloat32 && dtype != cuda::kFloat64) {
    c.refusal = "unsupported dtype code " + std::to_string(dtype);
    return c;
  }
  c.sz = dtype == cuda::kFloat32 ? 4 : 8;
  if (B < 0 || N < 1 || F < 1 || E < 0 || H1 < 1 || H2 < 1 || Fo < 1) {
    c.refusal = "sizes must be B >= 0 and N, F, H1, H2, Fo >= 1, E >= 0";
    return c;
  }
  if (H1 > kHMax || H2 > kHMax) {
    c.refusal = "hidden widths H1=" + std::to_string(H1) + ", H2=" + std::to_string(H2) +
                ": the cuda mpnn_message_sum kernels serve H1, H2 <= " + std::to_string(kHMax) +
                " (register tiles and shared-memory staging)";
    return c;
  }
  c.H1P = std::max(16, next_pow2(H1));
  c.H2P = std::max(8, next_pow2(H2));
  const int sz = c.sz, H1P = c.H1P, H2P = c.H2P;
  // two blocks per SM when they fit: the budget a block aims for
  const long budget = std::min(dev.smem_block, dev.smem_sm / 2 - 1024);

  // Tile choice, candidates in order of preference (widest register block first): the
  // first that fits the budget with no more receivers per tile than the graph has, else the
  // first that fits, else the one needing the least shared memory.
  const long graph = next_pow2(N);
  auto rank = [&](const Tile& t, long smem) { return smem > budget ? 2 : t.RN <= graph ? 0 : 1; };

  // ---- forward: tiles of at most 1024 pair rows
  {
    const int TN = (sz == 4 && H2P >= 32) ? 8 : 4;
    const int tms[3] = {sz == 4 ? 8 : 4, sz == 4 ? 4 : 2, sz == 4 ? 2 : 1};
    int best = 1 << 30;
    for (int TM : tms) {
      const Tile t = make_tile(N, H2P, TM, TN);
      if (t.BM > 1024) continue;
      const long smem = fwd_smem(t.BM, t.TR, t.RN, H1P, H2P, int(E), sz).total;
      const int r = rank(t, smem);
      if (r < best || (r == best && r >= 2 && smem < c.fwd_smem)) {
        best = r;
        c.fwd = t;
        c.fwd_smem = smem;
      }
    }
    c.fwd_tiles = cdiv(N, c.fwd.RN);
    c.fwd_batch_chunk = std::max(1LL, cuda::kMaxGridX / c.fwd_tiles);
  }

  // ---- backward: tiles of 32..256 pair rows; H1 in chunks of CW columns
  {
    c.CW = std::min(H1P, 64);
    c.S = gemm2_splits(H2P, c.CW);
    const int TN = 4;
    const int tms[4] = {4, 2, 1, 8};
    int best = 1 << 30;
    for (int TM : tms) {
      const Tile t = make_tile(N, H2P, TM, TN);
      if (t.BM < 32 || t.BM > 256) continue;
      // items = (batch element, group of RG receivers): enough items for two blocks per
      // SM, few groups (each group writes its own gsend partial), and the group's
      // receiver accumulators (gs, s, grecv) within 24 KiB of shared memory
      const long tiles_per_b = cdiv(N, t.RN);
      const long G = std::min(tiles_per_b, std::max(1L, cdiv(2L * dev.sm_count, std::max(B, 1L))));
      long rg_tiles = cdiv(tiles_per_b, G);
      while (rg_tiles > 1 && rg_tiles * t.RN * (2L * H2P + H1P) * sz > 24 * 1024) rg_tiles = cdiv(rg_tiles, 2);
      const int RG = int(rg_tiles * t.RN);
      const long smem = bwd_smem(t.BM, t.TR, t.BJ, RG, c.CW, H1P, H2P, int(E), sz).total;
      const int r = rank(t, smem);
      if (r < best || (r == best && r >= 2 && smem < c.bwd_smem)) {
        best = r;
        c.bwd = t;
        c.RG = RG;
        c.bwd_smem = smem;
        c.G = cdiv(N, RG);
        c.items = B * c.G;
        c.bwd_blocks = std::max(1L, std::min(c.items, 2L * dev.sm_count));
      }
    }
  }

  // ---- projection: 256 threads = H1P columns x (256 / H1P) groups of 4 nodes
  c.proj_nodes = 4 * (kThreads / H1P);
  c.proj_blocks = cdiv(B * N, c.proj_nodes);
  c.proj_smem = (2L * kProjK * H1P + long(c.proj_nodes) * (kProjK + 1)) * sz;

  const long need = std::max(c.fwd_smem, c.bwd_smem);
  if (need > dev.smem_block)
    c.refusal = "needs " + std::to_string(need / 1024) + " KiB of shared memory per block (H1=" +
                std::to_string(H1) + ", H2=" + std::to_string(H2) + ", E=" + std::to_string(E) +
                "), this GPU offers " + std::to_string(dev.smem_block / 1024) + " KiB";
  return c;
}

// ------------------------------------------------------------------ device helpers
// Vector loads/stores of n consecutive values (16-byte aligned when n * sizeof(T) >= 16).
template <int n>
__device__ __forceinline__ void ldv(const float* p, float* v) {
  if constexpr (n % 4 == 0) {
#pragma unroll
    for (int i = 0; i < n; i += 4) {
      float4 x = *reinterpret_cast<const float4*>(p + i);
      v[i] = x.x; v[i + 1] = x.y; v[i + 2] = x.z; v[i + 3] = x.w;
    }
  } else if constexpr (n == 2) {
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
      double2 x = *reinterpret_cast<const double2*>(p + i);
      v[i] = x.x; v[i + 1] = x.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < n; ++i) v[i] = p[i];
  }
}

__device__ __forceinline__ void st4(float* p, const float* v) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st4(double* p, const double* v) {
  *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
  *reinterpret_cast<double2*>(p + 2) = make_double2(v[2], v[3]);
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
  long bN;         // b * N: this batch element's first row in recv/send
  int N, E, H1, H2, H1P, H2P;
  int BM, BJ, TC;
  int n0, j0;      // first receiver and sender of the tile
};

// h1[row, k..k+3] = relu(p1[row, k..k+3]) (k a multiple of 4); 0 for rows past the graph
// (n or j >= N). GEMM1's staging and the backward's h1 chunks both call this, so they see
// the same bits. Vector loads: recv/send rows and We^T rows are 16-byte aligned.
template <typename T>
__device__ __forceinline__ void h1_quad(const PairTile<T>& a, int row, int k, T (&v)[4]) {
  const int n = a.n0 + row / a.BJ, j = a.j0 + row % a.BJ;
  if (n >= a.N || j >= a.N) {
    v[0] = v[1] = v[2] = v[3] = T(0);
    return;
  }
  T s[4];
  ldv<4>(a.recv + (a.bN + n) * a.H1P + k, v);
  ldv<4>(a.send + (a.bN + j) * a.H1P + k, s);
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

// Count of unmasked nodes of one batch element (all threads get it).
__device__ __forceinline__ int present_nodes(const unsigned char* mask_b, int N) {
  if (mask_b == nullptr) return N;
  int present = 0;
  for (int j0 = 0; j0 < N; j0 += kThreads) {
    const int j = j0 + int(threadIdx.x);
    present += __syncthreads_count(j < N && mask_b[j] != 0);
  }
  return present;
}

// Host side: launch `kernel` on `grid` blocks of kThreads with `smem` bytes of dynamic shared
// memory (opting in past 48 KiB), then check the launch. Built with
// MIMO_FAST_CUDA_EMULATION (tests/cuda_emulation: the kernels compiled as C++ for a CPU
// test), the blocks run on CPU threads instead.
template <typename... KArgs, typename... Args>
inline void launch_kernel(void (*kernel)(KArgs...), dim3 grid, long smem, cudaStream_t st, const char* what,
                          Args... args) {
  cuda::check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), what);
#ifdef MIMO_FAST_CUDA_EMULATION
  (void)st;
  emulation_launch(kernel, grid, kThreads, smem, args...);
#else
  kernel<<<grid, kThreads, smem, st>>>(args...);
#endif
  cuda::check_launch(what);
}

DeviceLimits device_limits(int device);  // mpnn_message_sum.cu

// recv, send = the per-node projections (mpnn_message_sum.cu), used by both directions.
template <typename T>
void launch_proj(const Config& c, const T* node, const T* w1, const T* b1, T* recv, T* send, cudaStream_t st);

}  // namespace mpnn_cuda
}  // namespace mimo_fast
