// mpnn_message_sum, CUDA backend: launches of the forward pair kernel
// (mpnn_message_sum_kernels.cuh), the launch configuration and the pybind11 bindings
// (backward: mpnn_message_sum_backward.cu). Raw pointers and torch's stream as an integer,
// no libtorch.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common/args.h"
#include "mpnn_message_sum/cuda/mpnn_message_sum_kernels.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace mpnn_cuda {

template <typename T, int TM, int TN>
void launch_fwd_tiled(const Config& c, FwdParams<T> p, cudaStream_t st) {
  // grids past CUDA's limit run in several launches (block0 = first block of the launch)
  for (long block0 = 0; block0 < c.fwd_blocks; block0 += c.max_grid) {
    p.block0 = block0;
    auto kernel = c.relu ? fwd_kernel<T, TM, TN, true> : fwd_kernel<T, TM, TN, false>;
    launch_kernel(kernel, dim3(unsigned(std::min(c.max_grid, c.fwd_blocks - block0))),
                  c.fwd_smem, st, "mpnn_message_sum fwd_kernel", p);
  }
}

template <typename T>
void launch_fwd(const Config& c, const FwdParams<T>& p, cudaStream_t st) {
  const int TM = c.fwd.TM, TN = c.fwd.TN;
  if constexpr (sizeof(T) == 4) {
    if (TN == 8 && TM == 8) return launch_fwd_tiled<T, 8, 8>(c, p, st);
    if (TN == 8 && TM == 4) return launch_fwd_tiled<T, 4, 8>(c, p, st);
    if (TN == 8 && TM == 2) return launch_fwd_tiled<T, 2, 8>(c, p, st);
    if (TN == 4 && TM == 8) return launch_fwd_tiled<T, 8, 4>(c, p, st);
    if (TN == 4 && TM == 4) return launch_fwd_tiled<T, 4, 4>(c, p, st);
    if (TN == 4 && TM == 2) return launch_fwd_tiled<T, 2, 4>(c, p, st);
  } else {
    if (TN == 4 && TM == 4) return launch_fwd_tiled<T, 4, 4>(c, p, st);
    if (TN == 4 && TM == 2) return launch_fwd_tiled<T, 2, 4>(c, p, st);
    if (TN == 4 && TM == 1) return launch_fwd_tiled<T, 1, 4>(c, p, st);
  }
  throw std::logic_error("mpnn_message_sum: no forward kernel for TM=" + std::to_string(TM) +
                         " TN=" + std::to_string(TN));
}

DeviceLimits device_limits(int device) {
  DeviceLimits d{};
  int v = 0;
  cuda::check(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  d.sm_count = v;
  cuda::check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device), "cudaDeviceGetAttribute");
  d.smem_block = v;
  cuda::check(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
              "cudaDeviceGetAttribute");
  d.smem_sm = v;
  return d;
}

// ------------------------------------------------------------------ Python entry points
namespace {

void check_runnable(const Config& c) {
  if (!c.refusal.empty()) throw std::invalid_argument("mpnn_message_sum (cuda): " + c.refusal);
}

// Block layout (mimo_fast/ops/cuda/mpnn_message_sum.py builds it). All tensors contiguous, on
// the current device. recv, send: (B*N, H1P) (zero past H1); we: (H1, E); mask: bool (B, N) or
// None; out: s (B*N, H2) for relu = false, (B*N, Fo) for relu = true.
constexpr Layout kForward{"mpnn_message_sum_forward", "recv send edge we w2 b2 w3 b3 mask out",
                          "relu B N E H1 H2 Fo sm_count smem_block smem_sm stream max_grid"};
namespace fwd { enum : int { recv, send, edge, we, w2, b2, w3, b3, mask, out, kTensors }; }
namespace sc { enum : int { relu, B, N, E, H1, H2, Fo, sm_count, smem_block, smem_sm, stream, max_grid }; }
static_assert(kForward.tensor_count() == fwd::kTensors, "layout");

void forward(const py::bytes& block) {
  const ArgView a(block, kForward);
  const bool relu = a.i(sc::relu) != 0;
  const long B = a.i(sc::B), N = a.i(sc::N), E = a.i(sc::E), H1 = a.i(sc::H1), H2 = a.i(sc::H2), Fo = a.i(sc::Fo);
  const int dtype = a.dtype(fwd::recv) == DType::f32 ? cuda::kFloat32 : cuda::kFloat64;
  const Config c = make_config(B, N, E, H1, H2, Fo, dtype, relu,
                               DeviceLimits{int(a.i(sc::sm_count)), a.i(sc::smem_block), a.i(sc::smem_sm)},
                               a.i(sc::max_grid));
  check_runnable(c);
  const long BN = B * N;
  a.expect_numel({fwd::recv, fwd::send}, BN * c.H1P);
  a.expect_numel(fwd::edge, BN * N * E);
  a.expect_numel(fwd::we, H1 * E);
  a.expect_numel(fwd::w2, H2 * H1);
  a.expect_numel(fwd::b2, H2);
  a.expect_numel(fwd::w3, Fo * H2);
  a.expect_numel(fwd::b3, Fo);
  a.expect_numel(fwd::mask, BN);
  a.expect_numel(fwd::out, BN * (relu ? Fo : H2));
  if (B == 0) return;
  const cudaStream_t st = cuda::as_stream(static_cast<std::uintptr_t>(a.i(sc::stream)));
  auto run = [&](auto zero) {
    using T = decltype(zero);
    FwdParams<T> p{a.in<T>(fwd::recv), a.in<T>(fwd::send), a.in<T>(fwd::edge), a.in<T>(fwd::we), a.in<T>(fwd::w2),
                   a.in<T>(fwd::b2), a.in<T>(fwd::w3), a.in<T>(fwd::b3), a.in_opt<unsigned char>(fwd::mask),
                   a.out<T>(fwd::out), 0, B * N, int(N), int(E), int(H1), int(H2), int(Fo), c.H1P, c.H2P, c.FoP,
                   c.fwd_FC, c.fwd.TC, c.fwd.TR, c.fwd.BM, c.fwd.BJ, c.fwd.RN};
    py::gil_scoped_release release;
    launch_fwd<T>(c, p, st);
  };
  if (dtype == cuda::kFloat32) run(float(0)); else run(double(0));
}

py::dict tile_dict(const Tile& t) {
  py::dict d;
  d["TM"] = t.TM; d["TN"] = t.TN; d["TC"] = t.TC; d["TR"] = t.TR;
  d["BM"] = t.BM; d["BJ"] = t.BJ; d["RN"] = t.RN;
  return d;
}

py::dict launch_config(long B, long N, long E, long H1, long H2, long Fo, int dtype, bool relu, int sm_count,
                       long smem_block, long smem_sm, long max_grid) {
  const Config c =
      make_config(B, N, E, H1, H2, Fo, dtype, relu, DeviceLimits{sm_count, smem_block, smem_sm}, max_grid);
  py::dict d;
  d["refusal"] = c.refusal;
  d["relu"] = c.relu;
  d["H1P"] = c.H1P; d["H2P"] = c.H2P; d["FoP"] = c.FoP; d["threads"] = kThreads;
  if (!c.refusal.empty() && c.H1P == 0) return d;
  py::dict f = tile_dict(c.fwd);
  f["FC"] = c.fwd_FC; f["blocks"] = c.fwd_blocks; f["launches"] = c.fwd_launches; f["smem"] = c.fwd_smem;
  f["grid"] = std::min(c.fwd_blocks, c.max_grid);
  py::dict bw = tile_dict(c.bwd);
  bw["CW"] = c.CW; bw["S"] = c.S; bw["RG"] = c.RG; bw["G"] = c.G; bw["items"] = c.items;
  bw["FC"] = c.bwd_FC; bw["S3"] = c.S3; bw["blocks"] = c.bwd_blocks; bw["smem"] = c.bwd_smem;
  d["fwd"] = f; d["bwd"] = bw;
  return d;
}

py::tuple limits(int device) {
  const DeviceLimits d = device_limits(device);
  return py::make_tuple(d.sm_count, d.smem_block, d.smem_sm);
}

}  // namespace

void bind_backward(py::module_& m);  // mpnn_message_sum_backward.cu

}  // namespace mpnn_cuda

void bind_mpnn_message_sum_cuda(py::module_& m) {
  using namespace py::literals;
  m.def("mpnn_message_sum_launch_config", &mpnn_cuda::launch_config, "B"_a, "N"_a, "E"_a, "H1"_a, "H2"_a,
        "Fo"_a, "dtype"_a, "relu"_a = false, "sm_count"_a = 132, "smem_block"_a = 232448, "smem_sm"_a = 233472,
        "max_grid"_a = long(cuda::kMaxGridX),
        "Launch geometry of the cuda mpnn_message_sum pair kernels for out_act 'relu' (relu=True) or "
        "'none' (pure function of the sizes and the device limits; defaults: an H100 SXM). 'refusal' "
        "is empty when the sizes can run.");
  m.def("mpnn_message_sum_device_limits", &mpnn_cuda::limits, "device"_a,
        "(sm_count, shared memory per block (opt-in), shared memory per SM) of a CUDA device.");
  m.def("mpnn_message_sum_forward", &mpnn_cuda::forward, "block"_a,
        "Pair forward of mpnn_message_sum on the GPU: out = s (B*N, H2) = sum_j h2 for relu=False, "
        "sum_j relu(W3 h2 + b3) (B*N, Fo) for relu=True. Block (mimo_fast.ops.native): recv send edge we w2 b2 "
        "w3 b3 mask -> out; scalars relu B N E H1 H2 Fo sm_count smem_block smem_sm stream max_grid. recv/send: "
        "(B*N, H1P), zero past H1; we: (H1, E); mask: bool (B, N) or None; stream: cudaStream_t as an integer; "
        "max_grid: blocks per launch (CUDA's limit; smaller values only to test the chunked launches).");
  mpnn_cuda::bind_backward(m);
}

}  // namespace mimo_fast
