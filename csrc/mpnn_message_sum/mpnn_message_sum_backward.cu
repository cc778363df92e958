// mpnn_message_sum, CUDA backend: launches of the backward kernels
// (mpnn_message_sum_backward_kernels.cuh) and their Python entry point.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "mpnn_message_sum/mpnn_message_sum_backward_kernels.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace mpnn_cuda {

template <typename T, int TM>
void launch_bwd_tiled(const Config& c, const BwdParams<T>& p, cudaStream_t st) {
  launch_kernel(bwd_kernel<T, TM>, dim3(unsigned(c.bwd_blocks)), c.bwd_smem, st, "mpnn_message_sum bwd_kernel", p);
}

namespace {

template <typename T>
const T* cptr(std::uintptr_t p) { return reinterpret_cast<const T*>(p); }
template <typename T>
T* mptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

// Buffers (contiguous, current device; sizes from mpnn_message_sum_launch_config):
//   recv, send (B*N, H1P) scratch; s (B*N, H2P); grecv (B*N, H1P); gsend_part (G, B*N, H1P);
//   gsend (B*N, H1), written only when G > 1 (else gsend_part[0] is the gradient);
//   gedge (B, N, N, E); part_w2 (blocks*S, H2P, H1P); part_b2 (blocks, H2); part_we
//   (blocks, H1, E); gw2 (H2, H1); gb2 (H2); gwe (H1, E).
void backward(int dtype, std::uintptr_t grad, std::uintptr_t node, std::uintptr_t edge, std::uintptr_t w1,
              std::uintptr_t b1, std::uintptr_t w2, std::uintptr_t b2, std::uintptr_t w3, std::uintptr_t mask,
              std::uintptr_t recv, std::uintptr_t send, std::uintptr_t s, std::uintptr_t grecv,
              std::uintptr_t gsend_part, std::uintptr_t gsend, std::uintptr_t gedge, std::uintptr_t part_w2,
              std::uintptr_t part_b2, std::uintptr_t part_we, std::uintptr_t gw2, std::uintptr_t gb2,
              std::uintptr_t gwe, long B, long N, long F, long E, long H1, long H2, long Fo, int sm_count,
              long smem_block, long smem_sm, std::uintptr_t stream) {
  const Config c = make_config(B, N, F, E, H1, H2, Fo, dtype, DeviceLimits{sm_count, smem_block, smem_sm});
  if (!c.refusal.empty()) throw std::invalid_argument("mpnn_message_sum (cuda): " + c.refusal);
  if (B == 0) return;
  const cudaStream_t st = cuda::as_stream(stream);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    launch_proj<T>(c, cptr<T>(node), cptr<T>(w1), cptr<T>(b1), mptr<T>(recv), mptr<T>(send), st);
    BwdParams<T> p{cptr<T>(recv), cptr<T>(send), cptr<T>(edge), cptr<T>(w1), cptr<T>(w2), cptr<T>(b2),
                   cptr<T>(w3), cptr<T>(grad), reinterpret_cast<const unsigned char*>(mask), mptr<T>(s),
                   mptr<T>(grecv), mptr<T>(gsend_part), mptr<T>(gedge), mptr<T>(part_w2), mptr<T>(part_b2),
                   mptr<T>(part_we), B, c.items, int(c.G), c.RG, int(N), int(F), int(E), int(H1), int(H2),
                   int(Fo), c.H1P, c.H2P, c.CW, c.bwd.TC, c.bwd.TR, c.bwd.BM, c.bwd.BJ, c.bwd.RN};
    bool launched = true;
    switch (c.bwd.TM) {
      case 1: launch_bwd_tiled<T, 1>(c, p, st); break;
      case 2: launch_bwd_tiled<T, 2>(c, p, st); break;
      case 4: launch_bwd_tiled<T, 4>(c, p, st); break;
      default:  // TM = 8 comes only with H2P = 256, which float64 never fits in shared memory
        launched = false;
        if constexpr (sizeof(T) == 4) {
          if (c.bwd.TM == 8) {
            launch_bwd_tiled<T, 8>(c, p, st);
            launched = true;
          }
        }
    }
    if (!launched) throw std::logic_error("mpnn_message_sum: no backward kernel for TM=" + std::to_string(c.bwd.TM));
    const int P = int(c.bwd_blocks);
    Segments<T> sg{};
    int n = 0;
    sg.s[n++] = Segment<T>{cptr<T>(part_w2), mptr<T>(gw2), long(c.H2P) * c.H1P, H2, int(H1), c.H1P, int(H1), P * c.S};
    sg.s[n++] = Segment<T>{cptr<T>(part_b2), mptr<T>(gb2), H2, 1, int(H2), int(H2), int(H2), P};
    if (E > 0) sg.s[n++] = Segment<T>{cptr<T>(part_we), mptr<T>(gwe), H1 * E, H1, int(E), int(E), int(E), P};
    if (c.G > 1)
      sg.s[n++] = Segment<T>{cptr<T>(gsend_part), mptr<T>(gsend), B * N * c.H1P, B * N, int(H1), c.H1P, int(H1),
                             int(c.G)};
    long most = 0;
    for (int i = 0; i < n; ++i) most = std::max(most, sg.s[i].rows * sg.s[i].cols);
    const dim3 grid(unsigned(std::min(cdiv(most, kThreads), 4096L)), unsigned(n));
    launch_kernel(reduce_kernel<T>, grid, 0, st, "mpnn_message_sum reduce_kernel", sg);
  };
  py::gil_scoped_release release;
  if (dtype == cuda::kFloat32) run(float(0)); else run(double(0));
}

}  // namespace

void bind_backward(py::module_& m) {
  using namespace py::literals;
  m.def("mpnn_message_sum_backward", &backward, "dtype"_a, "grad"_a, "node"_a, "edge"_a, "w1"_a, "b1"_a, "w2"_a,
        "b2"_a, "w3"_a, "mask"_a, "recv"_a, "send"_a, "s"_a, "grecv"_a, "gsend_part"_a, "gsend"_a, "gedge"_a,
        "part_w2"_a, "part_b2"_a, "part_we"_a, "gw2"_a, "gb2"_a, "gwe"_a, "B"_a, "N"_a, "F"_a, "E"_a, "H1"_a,
        "H2"_a, "Fo"_a, "sm_count"_a, "smem_block"_a, "smem_sm"_a, "stream"_a,
        "Pair-level gradients of mpnn_message_sum on the GPU: s, grecv, gsend, gedge and the "
        "reduced gW2, gb2, gWe (buffer shapes: see mimo_fast/ops/cuda/mpnn_message_sum.py).");
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
