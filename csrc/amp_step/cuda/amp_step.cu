// amp_step CUDA kernels: launch configuration, launches, host emulation and bindings.
// The kernel bodies (and the tiling they share) are in amp_step_tiles.cuh; read it first.
//
// Forward, per chunk of the batch:  rows_forward  (B*tiles blocks; H read once)
//                                   cols_forward  (grid-stride over B*N: Sigma, r)
// Backward (recomputes, saves nothing from the forward; H read twice, g_H written once):
//   rows_forward into workspace rows (z, V, w), cols_forward<backward> (g_u, g_q),
//   rows_backward (row chain rule, g_H, column partials), cols_backward (g_x, g_v, g_noise).
// Tile size: R = min(16, M) rows, fewer when R rows of N complex numbers (plus 8 reals a
// row of scalars) exceed min(opt-in limit, 96 KiB) of shared memory; when not even one row
// fits (N in the tens of thousands), the tile stays in global memory (read by both passes,
// the second mostly from L2) and only the row scalars are in shared memory. Rows blocks get clamp(next_pow2(N), 32, 256) threads.
// Workspace (one buffer of reals, allocated by the caller; sizes from the config):
//   forward:  pu (2 B tiles N), pq (B tiles N)
//   backward: pu, z (2 B M), g_u (2 B N), then pq, V (B M), w (B M), g_q (B N), pn (B tiles)
// (complex arrays first, so each starts at an even offset, aligned for 8/16-byte loads).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "amp_step/cuda/amp_step_tiles.cuh"
#include "common/args.h"
#include "common/cuda/batch_chunks.h"
#include "common/cuda/block_emulator.h"
#include "common/cuda/cuda_utils.cuh"
#include "common/cuda/op_bindings.h"

namespace py = pybind11;

namespace mimo_fast {
namespace cuda {
namespace amp {

template <typename T, bool kSmem>
__global__ void __launch_bounds__(256) amp_rows_forward_kernel(Args<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  rows_forward<T, kSmem>(DeviceBlock(), a, blockIdx.x, smem);
}

template <typename T, bool kBackward>
__global__ void __launch_bounds__(256) amp_cols_forward_kernel(Args<T> a) {
  cols_forward<T, kBackward>(DeviceBlock(), a, blockIdx.x, gridDim.x);
}

template <typename T, bool kSmem>
__global__ void __launch_bounds__(256) amp_rows_backward_kernel(Args<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  rows_backward<T, kSmem>(DeviceBlock(), a, blockIdx.x, smem);
}

template <typename T>
__global__ void __launch_bounds__(256) amp_cols_backward_kernel(Args<T> a) {
  cols_backward<T>(DeviceBlock(), a, blockIdx.x, gridDim.x);
}

constexpr int64_t kTileBudget = 96 * 1024;   // at most 2 rows blocks per SM on an H100
constexpr int kMaxRows = 16;
constexpr int kColsThreads = 256;

struct Config {
  int threads = 0, R = 0, tiles = 0;
  bool tile_in_smem = true;
  int64_t smem_bytes = 0;
  int64_t chunk = 0, launches = 0;     // batch elements per launch, launches
  int64_t blocks = 0, cols_blocks = 0; // rows / cols blocks of the first launch
  int64_t ws_forward = 0, ws_backward = 0;
  bool fits = true;
  std::string reason;
};

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

Config make_config(int64_t B, int64_t M, int64_t N, int dtype, int64_t smem_optin, int64_t max_blocks) {
  if (B < 0 || M < 1 || N < 1) throw std::invalid_argument("amp_step: need B >= 0 and M, N >= 1");
  if (dtype != kFloat32 && dtype != kFloat64) throw std::invalid_argument("amp_step: unsupported dtype code");
  if (smem_optin < 1) throw std::invalid_argument("amp_step: smem_optin must be the device's shared memory per block (bytes)");
  const int64_t isz = dtype == kFloat64 ? 8 : 4;
  Config c;
  const int64_t budget = std::min(smem_optin, kTileBudget);
  const int64_t fit = budget / ((2 * N + 8) * isz);  // rows whose tile and scalars fit
  c.tile_in_smem = fit >= 1;
  const int64_t rows = c.tile_in_smem ? fit : std::max<int64_t>(1, budget / (8 * isz));
  c.R = static_cast<int>(std::min<int64_t>({kMaxRows, M, rows}));
  c.smem_bytes = rows_smem_bytes(c.R, N, c.tile_in_smem, isz);
  int64_t p2 = 32;
  while (p2 < N && p2 < 256) p2 *= 2;
  c.threads = static_cast<int>(p2);
  const int64_t grid = max_blocks > 0 ? std::min<int64_t>(max_blocks, kMaxGridX) : kMaxGridX;
  const int64_t tiles = cdiv(M, c.R);
  if (tiles > grid) {
    c.fits = false;
    c.reason = "M=" + std::to_string(M) + " needs " + std::to_string(tiles) +
               " row tiles per batch element, over the grid limit of " + std::to_string(grid) + " blocks";
    return c;
  }
  c.tiles = static_cast<int>(tiles);  // <= grid <= INT_MAX
  c.chunk = std::max<int64_t>(1, grid / c.tiles);
  c.launches = cdiv(B, c.chunk);
  c.blocks = std::min(B, c.chunk) * c.tiles;
  c.cols_blocks = std::min(cdiv(std::min(B, c.chunk) * N, kColsThreads), grid);
  c.ws_forward = 3 * B * c.tiles * N;
  c.ws_backward = c.ws_forward + 4 * B * M + 3 * B * N + B * c.tiles;
  return c;
}

// Batch elements [b0, b0 + n) of `a`, as a launch of its own.
template <typename T>
Args<T> slice(const Args<T>& a, int64_t b0, int64_t n) {
  const int64_t M = b0 * a.M, N = b0 * a.N, MN = M * a.N, TN = b0 * a.tiles * a.N;
  Args<T> s = a;
  advance_each(MN, s.H, s.gH);
  advance_each(M, s.y, s.zp, s.z, s.gz, s.gy, s.gzp, s.Vp, s.V, s.w, s.gV, s.gVp);
  advance_each(N, s.x, s.r, s.gr, s.gu, s.gx, s.v, s.Sigma, s.gS, s.gq, s.gv);
  advance_each(b0, s.s2, s.gs2);
  advance_each(TN, s.pq, s.pu);
  advance_each(b0 * a.tiles, s.pn);
  s.B = n;
  return s;
}

// One launch on the GPU, or the same grid in the host emulator (emulate 0/1: thread order).
// body(ctx, block, nblocks, smem) is what the kernel runs.
template <typename T, class Body>
void launch(void (*kernel)(Args<T>), Body&& body, const Args<T>& a, int64_t blocks, int threads, int64_t smem,
            cudaStream_t stream, int emulate, const char* name) {
  if (blocks == 0) return;
  if (emulate >= 0) {
    emulate_grid(blocks, threads, static_cast<size_t>(smem), emulate == 1,
                 [&](const HostBlock& c, int64_t blk, unsigned char* sm) { body(c, blk, blocks, sm); });
    return;
  }
  if (smem > kDefaultSmem)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "amp_step: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  kernel<<<static_cast<unsigned>(blocks), threads, static_cast<size_t>(smem), stream>>>(a);
  check_launch(name);
}

template <typename T, bool kSmem>
void run_chunk(const Args<T>& a, const Config& c, bool backward, cudaStream_t s, int emulate) {
  const int64_t rows = a.B * c.tiles;
  const int64_t cols = std::min(cdiv(a.B * a.N, kColsThreads), c.cols_blocks);
  launch<T>(amp_rows_forward_kernel<T, kSmem>,
            [&](const HostBlock& x, int64_t blk, int64_t, unsigned char* sm) { rows_forward<T, kSmem>(x, a, blk, sm); },
            a, rows, c.threads, c.smem_bytes, s, emulate, "amp_step rows_forward kernel");
  if (!backward) {
    launch<T>(amp_cols_forward_kernel<T, false>,
              [&](const HostBlock& x, int64_t blk, int64_t nb, unsigned char*) { cols_forward<T, false>(x, a, blk, nb); },
              a, cols, kColsThreads, 0, s, emulate, "amp_step cols_forward kernel");
    return;
  }
  launch<T>(amp_cols_forward_kernel<T, true>,
            [&](const HostBlock& x, int64_t blk, int64_t nb, unsigned char*) { cols_forward<T, true>(x, a, blk, nb); },
            a, cols, kColsThreads, 0, s, emulate, "amp_step cols_forward<backward> kernel");
  launch<T>(amp_rows_backward_kernel<T, kSmem>,
            [&](const HostBlock& x, int64_t blk, int64_t, unsigned char* sm) { rows_backward<T, kSmem>(x, a, blk, sm); },
            a, rows, c.threads, c.smem_bytes, s, emulate, "amp_step rows_backward kernel");
  launch<T>(amp_cols_backward_kernel<T>,
            [&](const HostBlock& x, int64_t blk, int64_t nb, unsigned char*) { cols_backward<T>(x, a, blk, nb); },
            a, cols, kColsThreads, 0, s, emulate, "amp_step cols_backward kernel");
}

template <typename T>
void run(const Args<T>& all, const Config& c, bool backward, cudaStream_t s, int emulate) {
  for (int64_t b0 = 0; b0 < all.B; b0 += c.chunk) {
    const Args<T> a = slice(all, b0, std::min(c.chunk, all.B - b0));
    if (c.tile_in_smem) run_chunk<T, true>(a, c, backward, s, emulate);
    else run_chunk<T, false>(a, c, backward, s, emulate);
  }
}

// Block layouts (mimo_fast/ops/cuda/amp_step.py builds them); complex tensors arrive as
// their interleaved (re, im) memory. emulate: -1 runs on the GPU (stream = torch's stream
// handle); 0 / 1 runs the same launches in the host emulator (host pointers).
constexpr Layout kForward{"amp_step_forward", "H y x v z_prev V_prev noise_var r Sigma z V workspace",
                          "B M N stream smem_optin max_blocks emulate"};
constexpr Layout kBackward{"amp_step_backward",
                           "grad_r grad_Sigma grad_z grad_V H y x v z_prev V_prev noise_var "
                           "g_H g_y g_x g_v g_z_prev g_V_prev g_noise_var workspace",
                           "B M N stream smem_optin max_blocks emulate"};
namespace fwd { enum : int { H, y, x, v, z_prev, V_prev, noise_var, r, Sigma, z, V, workspace, kTensors }; }
namespace bwd {
enum : int { grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var,
             g_H, g_y, g_x, g_v, g_z_prev, g_V_prev, g_noise_var, workspace, kTensors };
}
namespace sc { enum : int { B, M, N, stream, smem_optin, max_blocks, emulate }; }
static_assert(kForward.tensor_count() == fwd::kTensors && kBackward.tensor_count() == bwd::kTensors, "layouts");

// Every buffer's dtype and element count checked against B, M, N; the workspace split as
// the header describes.
template <typename T>
Args<T> make_args(const ArgView& a, bool backward, int64_t B, int64_t M, int64_t N, const Config& c) {
  using C = Cx<T>;
  const int o = backward ? int(bwd::H) : int(fwd::H);    // H, y, x, v, z_prev, V_prev, noise_var in a row
  a.expect_numel(o, B * M * N);
  a.expect_numel({o + 1, o + 4, o + 5}, B * M);
  a.expect_numel({o + 2, o + 3}, B * N);
  a.expect_numel(o + 6, B);
  Args<T> x{};
  x.H = reinterpret_cast<const C*>(a.cx_in<T>(o));
  x.y = reinterpret_cast<const C*>(a.cx_in<T>(o + 1));
  x.x = reinterpret_cast<const C*>(a.cx_in<T>(o + 2));
  x.v = a.in<T>(o + 3);
  x.zp = reinterpret_cast<const C*>(a.cx_in<T>(o + 4));
  x.Vp = a.in<T>(o + 5);
  x.s2 = a.in<T>(o + 6);
  T* ws = a.out<T>(backward ? int(bwd::workspace) : int(fwd::workspace));
  const int64_t TN = B * c.tiles * N;
  x.pu = reinterpret_cast<C*>(ws);
  T* w = ws + 2 * TN;
  if (!backward) {
    a.expect_numel({fwd::r, fwd::Sigma}, B * N);
    a.expect_numel({fwd::z, fwd::V}, B * M);
    x.pq = w;
    x.r = reinterpret_cast<C*>(a.cx<T>(fwd::r));
    x.Sigma = a.out<T>(fwd::Sigma);
    x.z = reinterpret_cast<C*>(a.cx<T>(fwd::z));
    x.V = a.out<T>(fwd::V);
  } else {
    a.expect_numel({bwd::grad_r, bwd::grad_Sigma, bwd::g_x, bwd::g_v}, B * N);
    a.expect_numel({bwd::grad_z, bwd::grad_V, bwd::g_y, bwd::g_z_prev, bwd::g_V_prev}, B * M);
    a.expect_numel(bwd::g_H, B * M * N);
    a.expect_numel(bwd::g_noise_var, B);
    x.z = reinterpret_cast<C*>(w);
    w += 2 * B * M;
    x.gu = reinterpret_cast<C*>(w);
    w += 2 * B * N;
    x.pq = w;
    w += TN;
    x.V = w;
    w += B * M;
    x.w = w;
    w += B * M;
    x.gq = w;
    w += B * N;
    x.pn = w;
    x.gr = reinterpret_cast<const C*>(a.cx_in<T>(bwd::grad_r));
    x.gS = a.in<T>(bwd::grad_Sigma);
    x.gz = reinterpret_cast<const C*>(a.cx_in<T>(bwd::grad_z));
    x.gV = a.in<T>(bwd::grad_V);
    x.gH = reinterpret_cast<C*>(a.cx<T>(bwd::g_H));
    x.gy = reinterpret_cast<C*>(a.cx<T>(bwd::g_y));
    x.gx = reinterpret_cast<C*>(a.cx<T>(bwd::g_x));
    x.gv = a.out<T>(bwd::g_v);
    x.gzp = reinterpret_cast<C*>(a.cx<T>(bwd::g_z_prev));
    x.gVp = a.out<T>(bwd::g_V_prev);
    x.gs2 = a.out<T>(bwd::g_noise_var);
  }
  x.B = B;
  x.M = M;
  x.N = N;
  x.R = c.R;
  x.tiles = c.tiles;
  return x;
}

void amp_entry(const py::bytes& block, bool backward) {
  const ArgView a(block, backward ? kBackward : kForward);
  const int64_t B = a.i(sc::B), M = a.i(sc::M), N = a.i(sc::N);
  const int emulate = static_cast<int>(a.i(sc::emulate));
  if (emulate < -1 || emulate > 1) a.fail("emulate must be -1, 0 or 1");
  const int H = backward ? int(bwd::H) : int(fwd::H), ws = backward ? int(bwd::workspace) : int(fwd::workspace);
  const int dtype = a.dtype(H) == DType::c64 ? kFloat32 : kFloat64;
  const Config c = make_config(B, M, N, dtype, a.i(sc::smem_optin), a.i(sc::max_blocks));
  if (!c.fits) a.fail(c.reason);
  if (B == 0) return;
  const int64_t need = backward ? c.ws_backward : c.ws_forward;
  if (a.numel(ws) < need)
    a.fail("workspace has " + std::to_string(a.numel(ws)) + " elements, needs " + std::to_string(need));
  // Complex loads are single 8/16-byte accesses: every complex buffer (and the workspace,
  // which holds complex arrays) must be aligned to its element size, as torch's are.
  const std::uintptr_t align = 2 * (dtype == kFloat64 ? 8 : 4);
  for (int k = 0; k < a.tensors(); ++k) {
    const DType d = a.dtype(k);
    if ((d == DType::c64 || d == DType::c128 || k == ws) && a.tensor(k).ptr % align)
      a.fail(a.tname(k) + " is not aligned to a complex element");
  }
  const cudaStream_t stream = as_stream(static_cast<std::uintptr_t>(a.i(sc::stream)));
  if (dtype == kFloat32) {
    const Args<float> x = make_args<float>(a, backward, B, M, N, c);
    py::gil_scoped_release release;
    run(x, c, backward, stream, emulate);
  } else {
    const Args<double> x = make_args<double>(a, backward, B, M, N, c);
    py::gil_scoped_release release;
    run(x, c, backward, stream, emulate);
  }
}

py::dict config_dict(int64_t B, int64_t M, int64_t N, int dtype, int64_t smem_optin, int64_t max_blocks) {
  const Config c = make_config(B, M, N, dtype, smem_optin, max_blocks);
  py::dict d;
  d["threads"] = c.threads;
  d["rows_per_tile"] = c.R;
  d["row_tiles"] = c.tiles;
  d["tile_in_smem"] = c.tile_in_smem;
  d["cols_threads"] = kColsThreads;
  d["cols_blocks"] = c.cols_blocks;
  d["workspace_forward"] = c.ws_forward;
  d["workspace_backward"] = c.ws_backward;
  add_launch_fields(d, c);  // smem_bytes, smem_optin_needed, chunk, launches, blocks, fits, reason
  return d;
}

}  // namespace amp
}  // namespace cuda

void bind_amp_step_cuda(py::module_& m) {
  using namespace cuda::amp;
  m.def("amp_step_launch_config", &config_dict, py::arg("B"), py::arg("M"), py::arg("N"), py::arg("dtype"),
        py::arg("smem_optin"), py::arg("max_blocks") = 0,
        "Launch configuration of the cuda amp_step kernels (no GPU needed): threads, rows_per_tile, "
        "row_tiles, tile_in_smem, smem_bytes, smem_optin_needed, chunk (batch elements per launch), "
        "launches, blocks, cols_threads, cols_blocks, workspace_forward/backward (elements of the "
        "real dtype), fits, reason.");
  cuda::bind_forward_backward(
      m, "amp_step", &amp_entry,
      "amp_step forward; block (mimo_fast.ops.native): H, y, x, v, z_prev, V_prev, noise_var -> r, Sigma, z, V, "
      "plus the workspace (complex as interleaved re/im); scalars B, M, N, stream, smem_optin, max_blocks, "
      "emulate (0/1: the host emulator on host pointers).",
      "amp_step backward; block: grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var -> "
      "g_H, g_y, g_x, g_v, g_z_prev, g_V_prev, g_noise_var, plus the workspace; scalars as amp_step_forward.");
}

}  // namespace mimo_fast
