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
  auto kernel = c.relu ? bwd_kernel<T, TM, true> : bwd_kernel<T, TM, false>;
  launch_kernel(kernel, dim3(unsigned(c.bwd_blocks)), c.bwd_smem, st, "mpnn_message_sum bwd_kernel", p);
}

namespace {

template <typename T>
const T* cptr(std::uintptr_t p) { return reinterpret_cast<const T*>(p); }
template <typename T>
T* mptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

// Buffers (contiguous, current device; sizes from mpnn_message_sum_launch_config):
//   recv, send (B*N, H1P), zero past H1; we (H1, E); gin (B*N, H2) for relu = false,
//   (B*N, Fo) for relu = true; s (B*N, H2), relu = false only; grecv (B*N, H1);
//   gsend_part (G, B*N, H1); gsend (B*N, H1), written only when G > 1 (else gsend_part[0]
//   is the gradient); gedge (B, N, N, E); part_w2 (blocks*S, H2P, H1P); part_b2 (blocks, H2);
//   part_we (blocks, H1, E); gw2 (H2, H1); gb2 (H2); gwe (H1, E); relu = true only:
//   part_w3 (blocks*S3, FoP, H2P), part_b3 (blocks, Fo), gw3 (Fo, H2), gb3 (Fo).
void backward(int dtype, bool relu, std::uintptr_t gin, std::uintptr_t recv, std::uintptr_t send,
              std::uintptr_t edge, std::uintptr_t we, std::uintptr_t w2, std::uintptr_t b2, std::uintptr_t w3,
              std::uintptr_t b3, std::uintptr_t mask, std::uintptr_t s, std::uintptr_t grecv,
              std::uintptr_t gsend_part, std::uintptr_t gsend, std::uintptr_t gedge, std::uintptr_t part_w2,
              std::uintptr_t part_b2, std::uintptr_t part_we, std::uintptr_t part_w3, std::uintptr_t part_b3,
              std::uintptr_t gw2, std::uintptr_t gb2, std::uintptr_t gwe, std::uintptr_t gw3, std::uintptr_t gb3,
              long B, long N, long E, long H1, long H2, long Fo, int sm_count, long smem_block, long smem_sm,
              std::uintptr_t stream) {
  const Config c = make_config(B, N, E, H1, H2, Fo, dtype, relu, DeviceLimits{sm_count, smem_block, smem_sm});
  if (!c.refusal.empty()) throw std::invalid_argument("mpnn_message_sum (cuda): " + c.refusal);
  if (B == 0) return;
  const cudaStream_t st = cuda::as_stream(stream);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    BwdParams<T> p{cptr<T>(recv), cptr<T>(send), cptr<T>(edge), cptr<T>(we), cptr<T>(w2), cptr<T>(b2),
                   cptr<T>(w3), cptr<T>(b3), cptr<T>(gin), reinterpret_cast<const unsigned char*>(mask),
                   mptr<T>(s), mptr<T>(grecv), mptr<T>(gsend_part), mptr<T>(gedge), mptr<T>(part_w2),
                   mptr<T>(part_b2), mptr<T>(part_we), mptr<T>(part_w3), mptr<T>(part_b3), B, c.items, int(c.G),
                   c.RG, int(N), int(E), int(H1), int(H2), int(Fo), c.H1P, c.H2P, c.FoP, c.bwd_FC, c.S3, c.CW,
                   c.bwd.TC, c.bwd.TR, c.bwd.BM, c.bwd.BJ, c.bwd.RN,
                   bwd_smem(c.bwd.BM, c.bwd.TR, c.bwd.BJ, c.RG, c.CW, c.H1P, c.H2P, int(E), c.sz, relu, c.bwd_FC,
                            c.FoP)};
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
      sg.s[n++] = Segment<T>{cptr<T>(gsend_part), mptr<T>(gsend), B * N * H1, B * N, int(H1), int(H1), int(H1),
                             int(c.G)};
    if (relu) {
      sg.s[n++] = Segment<T>{cptr<T>(part_w3), mptr<T>(gw3), long(c.FoP) * c.H2P, Fo, int(H2), c.H2P, int(H2),
                             P * c.S3};
      sg.s[n++] = Segment<T>{cptr<T>(part_b3), mptr<T>(gb3), Fo, 1, int(Fo), int(Fo), int(Fo), P};
    }
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
  m.def("mpnn_message_sum_backward", &backward, "dtype"_a, "relu"_a, "gin"_a, "recv"_a, "send"_a, "edge"_a, "we"_a,
        "w2"_a, "b2"_a, "w3"_a, "b3"_a, "mask"_a, "s"_a, "grecv"_a, "gsend_part"_a, "gsend"_a, "gedge"_a,
        "part_w2"_a, "part_b2"_a, "part_we"_a, "part_w3"_a, "part_b3"_a, "gw2"_a, "gb2"_a, "gwe"_a, "gw3"_a,
        "gb3"_a, "B"_a, "N"_a, "E"_a, "H1"_a, "H2"_a, "Fo"_a, "sm_count"_a, "smem_block"_a, "smem_sm"_a,
        "stream"_a,
        "Pair backward of mpnn_message_sum on the GPU: grecv, gsend, gedge and the reduced gW2, gb2, gWe, "
        "plus s (relu=False) or the reduced gW3, gb3 (relu=True) (buffer shapes: see "
        "mimo_fast/ops/cuda/mpnn_message_sum.py).");
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
