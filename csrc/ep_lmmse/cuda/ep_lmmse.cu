// ep_lmmse CUDA kernels: launch configuration, launches, host emulation and bindings.
// The math (formula: mimo_fast/ops/ep_lmmse.py; backward: mimo_fast/ops/reference/
// ep_lmmse.py) is in ep_lmmse_group.cuh; read its header first.
//
// Two paths, each one kernel template per (dtype, forward/backward):
//   warp path  (K <= 32): a warp per matrix, up to 8 matrices per block, each in its own
//              slice of shared memory (<= 5.8 KB a matrix, so 8 fit the default 48 KB);
//   block path (K > 32): a block of 64..256 threads per matrix; shared memory beyond
//              48 KB is opted into (cudaFuncSetAttribute). K whose backward does not fit the
//              device's opt-in limit is refused (config "fits" = False, with the reason)
//              and the op falls back to another backend.
// Memory traffic per matrix: gram read once (both triangles, for sym()), the K-vectors read
// once, outputs written once; all O(K^3) work is in shared memory.
// A batch needing more blocks than the grid allows (or than max_blocks, for tests) is
// launched in chunks, every pointer offset to the chunk's first matrix.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/cuda/batch_chunks.h"
#include "common/cuda/block_emulator.h"
#include "common/cuda/cuda_utils.cuh"
#include "common/cuda/op_bindings.h"
#include "ep_lmmse/cuda/ep_lmmse_group.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace cuda {
namespace ep {

template <typename T, bool kWarpPath, bool kBackward>
__global__ void __launch_bounds__(256) ep_lmmse_kernel(Args<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  block_body<T, kWarpPath, kBackward>(DeviceBlock(), a, blockIdx.x, smem);
}

constexpr int kMaxWarpsPerBlock = 8;
constexpr int kWarpPathMaxK = 32;

struct Config {
  bool warp_path = false;
  int threads = 0;            // per block
  int per_block = 1;          // matrices per block
  int64_t smem_per_matrix = 0;
  int64_t smem_bytes = 0;     // dynamic shared memory per block
  int64_t chunk = 0;          // matrices per launch
  int64_t launches = 0;
  int64_t blocks = 0;         // blocks of the first launch
  bool fits = true;
  std::string reason;
};

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string kib(int64_t bytes) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  return buf;
}

// path: 0 automatic, 1 warp path (K <= 32 only), 2 block path. threads: block-path
// threads (0 = automatic; tests pass small counts). max_blocks: grid limit (0 = CUDA's).
Config make_config(int64_t B, int64_t K, int dtype, int64_t smem_optin, bool backward, int path,
                   int threads, int64_t max_blocks) {
  if (B < 0 || K < 1) throw std::invalid_argument("ep_lmmse: need B >= 0 and K >= 1");
  if (dtype != kFloat32 && dtype != kFloat64) throw std::invalid_argument("ep_lmmse: unsupported dtype code");
  if (path < 0 || path > 2) throw std::invalid_argument("ep_lmmse: path must be 0 (auto), 1 (warp) or 2 (block)");
  if (smem_optin < 1) throw std::invalid_argument("ep_lmmse: smem_optin must be the device's shared memory per block (bytes)");
  if (path == 1 && K > kWarpPathMaxK) throw std::invalid_argument("ep_lmmse: the warp path serves K <= 32");
  if (threads != 0 && (threads < 32 || threads > 256 || threads % 32))
    throw std::invalid_argument("ep_lmmse: threads must be 0 or a multiple of 32 in [32, 256]");
  const int64_t isz = dtype == kFloat64 ? 8 : 4;
  Config c;
  c.warp_path = path == 1 || (path == 0 && K <= kWarpPathMaxK);
  // smem_reals() in int64 (a refused K may be too large for the kernels' int indices).
  c.smem_per_matrix = (K * (K + 1) / 2 + (backward ? 4 : 2) * K) * isz;
  // Refuse by the backward's need, so forward and backward always take the same backend.
  const int64_t need = (K * (K + 1) / 2 + 4 * K) * isz;
  if (!c.warp_path && need > smem_optin) {
    int64_t kmax = 0;
    while ((kmax + 1) * (kmax + 2) / 2 * isz + 4 * (kmax + 1) * isz <= smem_optin) ++kmax;
    c.fits = false;
    c.reason = "K=" + std::to_string(K) + " needs " + kib(need) + " of shared memory per matrix (" +
               (isz == 8 ? "float64" : "float32") + ": the packed Cholesky factor and the backward's 4 "
               "K-vectors), over this GPU's " + kib(smem_optin) + " per block; the cuda ep_lmmse kernel "
               "serves K <= " + std::to_string(kmax) + " in this dtype";
  }
  if (c.warp_path) {
    const int64_t fit = std::max<int64_t>(1, kDefaultSmem / c.smem_per_matrix);
    c.per_block = static_cast<int>(std::min<int64_t>({kMaxWarpsPerBlock, fit, std::max<int64_t>(B, 1)}));
    c.threads = kWarp * c.per_block;
  } else {
    c.threads = threads ? threads : static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(64, cdiv(K, 32) * 32)));
  }
  c.smem_bytes = c.per_block * c.smem_per_matrix;
  const int64_t grid = max_blocks > 0 ? std::min<int64_t>(max_blocks, kMaxGridX) : kMaxGridX;
  c.chunk = grid * c.per_block;
  c.launches = cdiv(B, c.chunk);
  c.blocks = cdiv(std::min(B, c.chunk), c.per_block);
  return c;
}

// Matrices [b0, b0 + n) of `a`, as a launch of its own.
template <typename T>
Args<T> slice(const Args<T>& a, int64_t b0, int64_t n) {
  const int64_t K = a.K, v = b0 * K, m = v * K;
  Args<T> s = a;
  advance_each(m, s.gram, s.g_gram);
  advance_each(v, s.rhs, s.lam, s.gam, s.grad_mean, s.grad_var, s.mean, s.var, s.g_rhs, s.g_lam, s.g_gam);
  advance_each(b0, s.info);
  s.B = n;
  return s;
}

template <typename T, bool kWarpPath, bool kBackward>
void launch(const Args<T>& a, int64_t blocks, const Config& c, cudaStream_t stream, int emulate) {
  if (emulate >= 0) {  // host emulation: same body, same configuration
    emulate_grid(blocks, c.threads, static_cast<size_t>(c.smem_bytes), emulate == 1,
                 [&](const HostBlock& ctx, int64_t blk, unsigned char* sm) {
                   block_body<T, kWarpPath, kBackward>(ctx, a, blk, sm);
                 });
    return;
  }
  auto kernel = ep_lmmse_kernel<T, kWarpPath, kBackward>;
  if (c.smem_bytes > kDefaultSmem)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(c.smem_bytes)),
          "ep_lmmse: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  kernel<<<static_cast<unsigned>(blocks), c.threads, static_cast<size_t>(c.smem_bytes), stream>>>(a);
  check_launch(kBackward ? "ep_lmmse backward kernel" : "ep_lmmse forward kernel");
}

template <typename T>
void run(const Args<T>& all, const Config& c, bool backward, cudaStream_t stream, int emulate) {
  if (!c.fits) throw std::invalid_argument("ep_lmmse: " + c.reason);
  for (int64_t b0 = 0; b0 < all.B; b0 += c.chunk) {
    const Args<T> a = slice(all, b0, std::min(c.chunk, all.B - b0));
    const int64_t blocks = cdiv(a.B, c.per_block);
    if (c.warp_path && backward) launch<T, true, true>(a, blocks, c, stream, emulate);
    else if (c.warp_path) launch<T, true, false>(a, blocks, c, stream, emulate);
    else if (backward) launch<T, false, true>(a, blocks, c, stream, emulate);
    else launch<T, false, false>(a, blocks, c, stream, emulate);
  }
}

// Block layouts (mimo_fast/ops/cuda/ep_lmmse.py builds them). emulate: -1 runs on the GPU
// (stream = torch's stream handle); 0 / 1 runs the same launches in the host emulator,
// threads in forward / reverse order (host pointers).
constexpr Layout kForward{"ep_lmmse_forward", "gram rhs lam gam mean var info",
                          "B K stream smem_optin path threads max_blocks emulate"};
constexpr Layout kBackward{"ep_lmmse_backward", "grad_mean grad_var gram rhs lam gam g_gram g_rhs g_lam g_gam",
                           "B K stream smem_optin path threads max_blocks emulate"};
namespace fwd { enum : int { gram, rhs, lam, gam, mean, var, info, kTensors }; }
namespace bwd { enum : int { grad_mean, grad_var, gram, rhs, lam, gam, g_gram, g_rhs, g_lam, g_gam, kTensors }; }
namespace sc { enum : int { B, K, stream, smem_optin, path, threads, max_blocks, emulate }; }
static_assert(kForward.tensor_count() == fwd::kTensors && kBackward.tensor_count() == bwd::kTensors, "layouts");

// Every buffer's dtype and element count checked against B and K.
template <typename T>
Args<T> make_args(const ArgView& a, bool backward, int64_t B, int64_t K, int per_block) {
  const int g = backward ? int(bwd::gram) : int(fwd::gram);
  a.expect_numel(g, B * K * K);
  a.expect_numel({g + 1, g + 2, g + 3}, B * K);
  Args<T> x{};
  x.gram = a.in<T>(g);
  x.rhs = a.in<T>(g + 1);
  x.lam = a.in<T>(g + 2);
  x.gam = a.in<T>(g + 3);
  if (backward) {
    a.expect_numel(bwd::g_gram, B * K * K);
    a.expect_numel({bwd::grad_mean, bwd::grad_var, bwd::g_rhs, bwd::g_lam, bwd::g_gam}, B * K);
    x.grad_mean = a.in<T>(bwd::grad_mean);
    x.grad_var = a.in<T>(bwd::grad_var);
    x.g_gram = a.out<T>(bwd::g_gram);
    x.g_rhs = a.out<T>(bwd::g_rhs);
    x.g_lam = a.out<T>(bwd::g_lam);
    x.g_gam = a.out<T>(bwd::g_gam);
  } else {
    a.expect_numel({fwd::mean, fwd::var}, B * K);
    a.expect_numel(fwd::info, B);
    x.mean = a.out<T>(fwd::mean);
    x.var = a.out<T>(fwd::var);
    x.info = a.out<int32_t>(fwd::info);
  }
  x.B = B;
  x.K = static_cast<int>(K);
  x.per_block = per_block;
  return x;
}

void ep_entry(const py::bytes& block, bool backward) {
  const ArgView a(block, backward ? kBackward : kForward);
  const int64_t B = a.i(sc::B), K = a.i(sc::K);
  const int emulate = static_cast<int>(a.i(sc::emulate));
  if (emulate < -1 || emulate > 1) a.fail("emulate must be -1, 0 or 1");
  const DType dt = a.dtype(backward ? int(bwd::gram) : int(fwd::gram));
  const int dtype = dt == DType::f32 ? kFloat32 : kFloat64;
  const Config c = make_config(B, K, dtype, a.i(sc::smem_optin), backward, static_cast<int>(a.i(sc::path)),
                               static_cast<int>(a.i(sc::threads)), a.i(sc::max_blocks));
  const cudaStream_t stream = as_stream(static_cast<std::uintptr_t>(a.i(sc::stream)));
  if (dt == DType::f32) {
    const Args<float> x = make_args<float>(a, backward, B, K, c.per_block);
    if (B == 0) return;
    py::gil_scoped_release release;
    run(x, c, backward, stream, emulate);
  } else {
    const Args<double> x = make_args<double>(a, backward, B, K, c.per_block);
    if (B == 0) return;
    py::gil_scoped_release release;
    run(x, c, backward, stream, emulate);
  }
}

py::dict config_dict(int64_t B, int64_t K, int dtype, int64_t smem_optin, bool backward, int path, int threads,
                     int64_t max_blocks) {
  const Config c = make_config(B, K, dtype, smem_optin, backward, path, threads, max_blocks);
  py::dict d;
  d["path"] = c.warp_path ? "warp" : "block";
  d["threads"] = c.threads;
  d["matrices_per_block"] = c.per_block;
  d["smem_per_matrix"] = c.smem_per_matrix;
  add_launch_fields(d, c);  // smem_bytes, smem_optin_needed, chunk, launches, blocks, fits, reason
  return d;
}

}  // namespace ep
}  // namespace cuda

void bind_ep_lmmse_cuda(py::module_& m) {
  using namespace cuda::ep;
  m.def("ep_lmmse_launch_config", &config_dict, py::arg("B"), py::arg("K"), py::arg("dtype"),
        py::arg("smem_optin"), py::arg("backward") = false, py::arg("path") = 0, py::arg("threads") = 0,
        py::arg("max_blocks") = 0,
        "Launch configuration of the cuda ep_lmmse kernels (no GPU needed): path ('warp' for "
        "K <= 32, else 'block'), threads, matrices_per_block, smem_per_matrix, smem_bytes, "
        "smem_optin_needed, chunk (matrices per launch), launches, blocks, fits, reason.");
  cuda::bind_forward_backward(
      m, "ep_lmmse", &ep_entry,
      "ep_lmmse forward; block (mimo_fast.ops.native): gram, rhs, lam, gam -> mean, var, info (int32); "
      "scalars B, K, stream, smem_optin, path, threads, max_blocks, emulate (0/1: the host emulator on "
      "host pointers, forward/reverse thread order).",
      "ep_lmmse backward; block: grad_mean, grad_var, gram, rhs, lam, gam -> g_gram, g_rhs, g_lam, g_gam; "
      "same scalars as ep_lmmse_forward.");
}

}  // namespace mimo_fast
