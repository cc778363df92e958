// mpnn_message_sum, CUDA backend: the pair kernels of the op (contract: PairKernels in
// mimo_fast/ops/mpnn_message_sum.py; the op module makes recv = node Wa^T + b1 and
// send = node Wb^T and does the per-node layers). Launch geometry (host code, no GPU needed)
// and the launch helper here. Device pieces shared by the kernels: mpnn_message_sum_tile.cuh;
// kernels: mpnn_message_sum_kernels.cuh (forward), mpnn_message_sum_backward_kernels.cuh.
// Ground truth: mimo_fast/ops/reference/mpnn_message_sum.py.
//
// The pair work is a GEMM whose rows are (receiver n, sender j) pairs. A tile holds
// BM = RN x BJ pair rows: row = r * BJ + jl is receiver q0 + r (a flat node index b*N + n)
// and sender j0 + jl of the same batch element. With BJ >= N every sender is in one tile;
// otherwise RN = 1 and the senders are streamed BJ at a time. For each row
//   p1[row, k] = recv[n, k] + send[j, k] + sum_e edge[n, j, e] We[k, e]   (k < H1)
//   p2[row, :] = relu(p1[row, :]) W2^T + b2                                  ("GEMM1")
// recv and send arrive as (B*N, H1P) rows (the glue pads them when H1 < H1P).
// out_act "none": the forward sums h2 = relu(p2) over senders (s, per receiver); "relu"
// ("GEMM3", per tile): p3 = h2 W3^T + b3 for the tile's rows, summed as relu(p3) over
// senders; Fo in chunks of FC columns (W3 staged in shared memory per chunk).
// GEMM1 is tiled over 256 threads as a TR x TC grid: thread (tr, tc) owns the TM x TN
// register block rows [tr*TM, tr*TM+TM) x columns [tc*TN, tc*TN+TN) of p2. BJ is a multiple
// of TM, so a thread's rows share one receiver and its sums over senders stay in registers.
// H1, H2 and Fo are zero-padded to powers of two (H1P >= 16, H2P >= 8, FoP >= 4): zero rows
// of the padded weights give h1 = 0, p2 = 0 and p3 = 0 there, so the pad never reaches a result.
// All arithmetic is IEEE (fp32 or fp64 FMA, no tensor cores / TF32).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "common/cuda/cuda_utils.cuh"

namespace mimo_fast {
namespace mpnn_cuda {

constexpr int kThreads = 256;   // every kernel here runs 256-thread blocks (8 warps)
constexpr int kBK = 8;          // GEMM1 K-step (H1 columns staged per step)
constexpr int kHMax = 256;      // largest H1, H2 served (register tiles and shared memory)

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

// Shared-memory regions (byte offsets) of the forward kernel. FC = Fo chunk ("relu" only).
struct FwdSmem {
  long scratch, h2, red3, es, wet, valid, w3s, total;
};

__host__ __device__ inline FwdSmem fwd_smem(int BM, int TR, int H1P, int H2P, int E, int sz, bool relu, int FC) {
  Carve c;
  FwdSmem s;
  // GEMM1's double-buffered A (kBK x BM) and B (kBK x H2P) steps, later reused: "none" for
  // the per-thread sender sums (TR x H2P) reduced per receiver; "relu" for the h2 tile
  // ([row][H2P + 4]) and GEMM3's per-thread partial sums (4 per thread)
  const long asbs = 2L * kBK * (BM + 4) + 2L * kBK * (H2P + 4);
  const long h2 = long(BM) * (H2P + 4), red = relu ? h2 + 4L * kThreads : long(TR) * H2P;
  s.scratch = c.take((asbs > red ? asbs : red) * sz);
  s.h2 = s.scratch;
  s.red3 = s.scratch + h2 * sz;
  s.es = c.take(long(BM) * E * sz);                     // edge rows of the tile
  s.wet = c.take(long(E) * H1P * sz);                   // We^T (E x H1P)
  s.valid = c.take(long(BM) * 4);                       // pair row is a message (j != n, both unmasked)
  s.w3s = c.take(relu ? long(FC) * (H2P + 4) * sz : 0);  // W3 rows of the Fo chunk ([o][h])
  s.total = c.off;
  return s;
}

// Shared-memory regions (byte offsets) of the backward pair kernel.
struct BwdSmem {
  long wet, gwes, scratch, gs_t, gs, hs, w2s, es, ge, gsr, ssum, grecv, gsend, valid, go3, w3s, gb3, total;
};

__host__ __device__ inline BwdSmem bwd_smem(int BM, int TR, int BJ, int RG, int CW, int H1P, int H2P, int E, int sz,
                                            bool relu, int FC, int FoP) {
  Carve c;
  BwdSmem s;
  long asbs = 2L * kBK * (BM + 4) + 2L * kBK * (H2P + 4), red = long(TR) * H2P;
  s.wet = c.take(long(E) * H1P * sz);                      // We^T (E x H1P)
  s.gwes = c.take(long(H1P) * E * sz);                     // this block's gWe partial
  s.scratch = c.take((asbs > red ? asbs : red) * sz);      // GEMM1 steps / per-thread sums
  s.gs_t = c.take(long(BM) * (H2P + 4) * sz);              // gp2 as [row][h2] (GEMM2's A); "relu": h2 first
  s.gs = c.take(long(H2P) * (BM + 4) * sz);                // gp2 as [h2][row] (GEMM3's A)
  s.hs = c.take(long(BM) * (CW + 4) * sz);                 // h1 chunk, then gp1 chunk
  s.w2s = c.take(long(H2P) * (CW + 4) * sz);               // W2[:, chunk] (GEMM3's B)
  s.es = c.take(long(BM) * E * sz);                        // edge rows of the tile
  s.ge = c.take(long(BM) * E * sz);                        // gedge rows of the tile
  s.gsr = c.take(relu ? 0 : long(RG) * H2P * sz);          // "none": gin rows of the item's receivers
  s.ssum = c.take(relu ? 0 : long(RG) * H2P * sz);         // "none": s, item receivers
  s.grecv = c.take(long(RG) * H1P * sz);                   // grecv, item receivers
  s.gsend = c.take(long(BJ) * H1P * sz);                   // gsend, current sender chunk
  s.valid = c.take(long(BM) * 4);
  s.go3 = c.take(relu ? long(BM) * (FC + 4) * sz : 0);     // "relu": go3 of the Fo chunk, [row][o]
  s.w3s = c.take(relu ? long(FC) * (H2P + 4) * sz : 0);    // "relu": W3 rows of the chunk, [o][h]
  s.gb3 = c.take(relu ? long(FoP) * sz : 0);               // "relu": this block's gb3 partial
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

// The same for gW3 += go3^T h2 (FC x H2P per Fo chunk, "relu"), at most 8 splits (the
// partial buffer is blocks * S3 * FoP * H2P).
__host__ __device__ inline int gemm_w3_splits(int FC, int H2P) {
  int blocks = (FC / 4) * (H2P / 4);
  return blocks >= kThreads ? 1 : (kThreads / blocks < 8 ? kThreads / blocks : 8);
}

// Everything the host decides for one problem size and out_act. Pure function of the sizes
// and the device's limits, so the Python glue (buffer sizes) and the launchers (grids) agree.
struct Config {
  long B = 0, N = 0, E = 0, H1 = 0, H2 = 0, Fo = 0;
  int dtype = 0, sz = 0;
  bool relu = false;
  int H1P = 0, H2P = 0, FoP = 0;
  // forward: fwd_blocks blocks of RN receivers each, launched at most max_grid at a time;
  // "relu": Fo in chunks of fwd_FC columns
  Tile fwd;
  int fwd_FC = 0;
  long max_grid = cuda::kMaxGridX, fwd_blocks = 0, fwd_launches = 0, fwd_smem = 0;
  // backward: persistent grid of bwd_blocks over items = (batch element, receiver group)
  Tile bwd;
  int CW = 0, S = 0, RG = 0, bwd_FC = 0, S3 = 0;
  long G = 0, items = 0, bwd_blocks = 0, bwd_smem = 0;
  std::string refusal;  // empty when these sizes can run on this device
};

struct DeviceLimits {
  int sm_count;
  long smem_block;  // opt-in maximum per block
  long smem_sm;     // per multiprocessor
};

inline Config make_config(long B, long N, long E, long H1, long H2, long Fo, int dtype, bool relu, DeviceLimits dev,
                          long max_grid = cuda::kMaxGridX) {
  Config c;
  c.max_grid = std::max(1L, max_grid);
  c.B = B; c.N = N; c.E = E; c.H1 = H1; c.H2 = H2; c.Fo = Fo; c.dtype = dtype; c.relu = relu;
  if (dtype != cuda::kFloat32 && dtype != cuda::kFloat64) {
    c.refusal = "unsupported dtype code " + std::to_string(dtype);
    return c;
  }
  c.sz = dtype == cuda::kFloat32 ? 4 : 8;
  if (B < 0 || N < 1 || E < 0 || H1 < 1 || H2 < 1 || Fo < 1) {
    c.refusal = "sizes must be B >= 0 and N, H1, H2, Fo >= 1, E >= 0";
    return c;
  }
  if (H1 > kHMax || H2 > kHMax) {
    c.refusal = "hidden widths H1=" + std::to_string(H1) + ", H2=" + std::to_string(H2) +
                ": the cuda mpnn_message_sum kernels serve H1, H2 <= " + std::to_string(kHMax) +
                " (register tiles and shared-memory staging)";
    return c;
  }
  if (Fo > (1L << 20)) {
    c.refusal = "output width Fo=" + std::to_string(Fo) + " > 2^20";
    return c;
  }
  c.H1P = std::max(16, next_pow2(H1));
  c.H2P = std::max(8, next_pow2(H2));
  c.FoP = std::max(4, next_pow2(Fo));
  const int sz = c.sz, H1P = c.H1P, H2P = c.H2P, FoP = c.FoP;
  // two blocks per SM when they fit: the budget a block aims for
  const long budget = std::min(dev.smem_block, dev.smem_sm / 2 - 1024);
  // "relu": the Fo chunk of a tile: the widest whose shared memory fits the budget, else the
  // widest that fits a block at all, else the narrowest (one chunk = W3 staged once per block)
  auto pick_fc = [&](auto smem_of) {
    if (!relu) return 0;
    for (int fc = FoP; fc >= 4; fc /= 2)
      if (smem_of(fc) <= budget) return fc;
    for (int fc = FoP; fc >= 4; fc /= 2)
      if (smem_of(fc) <= dev.smem_block) return fc;
    return 4;
  };

  // ---- forward: the widest register block whose tile (<= 1024 pair rows) fits the budget,
  // else the one needing the least shared memory. Tiles take
  // receivers from the flattened node list, so small graphs share a tile and no receiver
  // row idles.
  {
    const int TN = (sz == 4 && H2P >= 32) ? 8 : 4;
    const int tms[3] = {sz == 4 ? 8 : 4, sz == 4 ? 4 : 2, sz == 4 ? 2 : 1};
    bool have = false;
    for (int TM : tms) {
      const Tile t = make_tile(N, H2P, TM, TN);
      if (t.BM > 1024) continue;
      auto smem_of = [&](int fc) { return fwd_smem(t.BM, t.TR, H1P, H2P, int(E), sz, relu, fc).total; };
      const int fc = pick_fc(smem_of);
      const long smem = smem_of(fc);
      const bool holding_fit = have && c.fwd_smem <= budget;
      if (!have || (!holding_fit && (smem <= budget || smem < c.fwd_smem))) {
        c.fwd = t;
        c.fwd_FC = fc;
        c.fwd_smem = smem;
        have = true;
      }
    }
    c.fwd_blocks = cdiv(B * N, c.fwd.RN);
    c.fwd_launches = cdiv(c.fwd_blocks, c.max_grid);
  }

  // ---- backward: candidates in order of preference (widest register block first): the
  // first that fits the budget with no more receivers per tile
  // than the graph has, else the first that fits, else the one needing the least shared memory.
  const long graph = next_pow2(N);
  auto rank = [&](const Tile& t, long smem) { return smem > budget ? 2 : t.RN <= graph ? 0 : 1; };
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
      // receiver accumulators (gin and s for "none", grecv) within 24 KiB of shared memory
      const long tiles_per_b = cdiv(N, t.RN);
      const long G = std::min(tiles_per_b, std::max(1L, cdiv(2L * dev.sm_count, std::max(B, 1L))));
      const long per_receiver = (relu ? 0L : 2L * H2P) + H1P;
      long rg_tiles = cdiv(tiles_per_b, G);
      while (rg_tiles > 1 && rg_tiles * t.RN * per_receiver * sz > 24 * 1024) rg_tiles = cdiv(rg_tiles, 2);
      const int RG = int(rg_tiles * t.RN);
      auto smem_of = [&](int fc) {
        return bwd_smem(t.BM, t.TR, t.BJ, RG, c.CW, H1P, H2P, int(E), sz, relu, fc, FoP).total;
      };
      const int fc = pick_fc(smem_of);
      const long smem = smem_of(fc);
      const int r = rank(t, smem);
      if (r < best || (r == best && r >= 2 && smem < c.bwd_smem)) {
        best = r;
        c.bwd = t;
        c.RG = RG;
        c.bwd_FC = fc;
        c.bwd_smem = smem;
        c.G = cdiv(N, RG);
        c.items = B * c.G;
        c.bwd_blocks = std::max(1L, std::min(c.items, 2L * dev.sm_count));
      }
    }
    c.S3 = relu ? gemm_w3_splits(c.bwd_FC, H2P) : 0;
  }

  const long need = std::max(c.fwd_smem, c.bwd_smem);
  if (need > dev.smem_block)
    c.refusal = "needs " + std::to_string(need / 1024) + " KiB of shared memory per block (H1=" +
                std::to_string(H1) + ", H2=" + std::to_string(H2) + ", E=" + std::to_string(E) +
                (relu ? ", Fo=" + std::to_string(Fo) + ", out_act=\"relu\"" : std::string()) +
                "), this GPU offers " + std::to_string(dev.smem_block / 1024) + " KiB";
  return c;
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

}  // namespace mpnn_cuda
}  // namespace mimo_fast
