// mpnn_message_sum, CUDA backend: launches of the backward kernels
// (mpnn_message_sum_backward_kernels.cuh) and their Python entry point.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common/args.h"
#include "mpnn_message_sum/cuda/mpnn_message_sum_backward_kernels.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace mpnn_cuda {

template <typename T, int TM>
void launch_bwd_tiled(const Config& c, const BwdParams<T>& p, cudaStream_t st) {
  auto kernel = c.relu ? bwd_kernel<T, TM, true> : bwd_kernel<T, TM, false>;
  launch_kernel(kernel, dim3(unsigned(c.bwd_blocks)), c.bwd_smem, st, "mpnn_message_sum bwd_kernel", p);
}

namespace {

// Block layout (mimo_fast/ops/cuda/mpnn_message_sum.py builds it; sizes from
// mpnn_message_sum_launch_config). Buffers contiguous, on the current device:
//   recv, send (B*N, H1P), zero past H1; we (H1, E); gin (B*N, H2) for relu = false,
//   (B*N, Fo) for relu = true; s (B*N, H2), relu = false only; grecv (B*N, H1);
//   gsend_part (G, B*N, H1); gsend (B*N, H1), written only when G > 1 (else None: gsend_part[0]
//   is the gradient); gedge (B, N, N, E); part_w2 (blocks*S, H2P, H1P); part_b2 (blocks, H2);
//   part_we (blocks, H1, E); gw2 (H2, H1); gb2 (H2); gwe (H1, E); relu = true only:
//   part_w3 (blocks*S3, FoP, H2P), part_b3 (blocks, Fo), gw3 (Fo, H2), gb3 (Fo).
constexpr Layout kBackward{"mpnn_message_sum_backward",
                           "gin recv send edge we w2 b2 w3 b3 mask s grecv gsend_part gsend gedge part_w2 part_b2 "
                           "part_we part_w3 part_b3 gw2 gb2 gwe gw3 gb3",
                           "relu B N E H1 H2 Fo sm_count smem_block smem_sm stream"};
namespace bwd {
enum : int { gin, recv, send, edge, we, w2, b2, w3, b3, mask, s, grecv, gsend_part, gsend, gedge, part_w2, part_b2,
             part_we, part_w3, part_b3, gw2, gb2, gwe, gw3, gb3, kTensors };
}
namespace sc { enum : int { relu, B, N, E, H1, H2, Fo, sm_count, smem_block, smem_sm, stream }; }
static_assert(kBackward.tensor_count() == bwd::kTensors, "layout");

void backward(const py::bytes& block) {
  const ArgView a(block, kBackward);
  const bool relu = a.i(sc::relu) != 0;
  const long B = a.i(sc::B), N = a.i(sc::N), E = a.i(sc::E), H1 = a.i(sc::H1), H2 = a.i(sc::H2), Fo = a.i(sc::Fo);
  const int dtype = a.dtype(bwd::recv) == DType::f32 ? cuda::kFloat32 : cuda::kFloat64;
  const Config c = make_config(B, N, E, H1, H2, Fo, dtype, relu,
                               DeviceLimits{int(a.i(sc::sm_count)), a.i(sc::smem_block), a.i(sc::smem_sm)});
  if (!c.refusal.empty()) throw std::invalid_argument("mpnn_message_sum (cuda): " + c.refusal);
  if (B == 0) return;
  const long BN = B * N, blocks = c.bwd_blocks;
  a.expect_numel(bwd::gin, BN * (relu ? Fo : H2));
  a.expect_numel({bwd::recv, bwd::send}, BN * c.H1P);
  a.expect_numel({bwd::edge, bwd::gedge}, BN * N * E);
  a.expect_numel({bwd::we, bwd::gwe}, H1 * E);
  a.expect_numel({bwd::w2, bwd::gw2}, H2 * H1);
  a.expect_numel({bwd::b2, bwd::gb2}, H2);
  a.expect_numel({bwd::w3, bwd::gw3}, Fo * H2);
  a.expect_numel({bwd::b3, bwd::gb3}, Fo);
  a.expect_numel(bwd::mask, BN);
  a.expect_numel(bwd::s, BN * H2);
  a.expect_numel({bwd::grecv, bwd::gsend}, BN * H1);
  a.expect_numel(bwd::gsend_part, c.G * BN * H1);
  a.expect_numel(bwd::part_w2, blocks * c.S * c.H2P * c.H1P);
  a.expect_numel(bwd::part_b2, blocks * H2);
  a.expect_numel(bwd::part_we, blocks * H1 * E);
  a.expect_numel(bwd::part_w3, blocks * c.S3 * c.FoP * c.H2P);
  a.expect_numel(bwd::part_b3, blocks * Fo);
  if (c.G > 1 && !a.present(bwd::gsend)) a.fail("gsend is required when G > 1");
  const cudaStream_t st = cuda::as_stream(static_cast<std::uintptr_t>(a.i(sc::stream)));
  auto run = [&](auto zero) {
    using T = decltype(zero);
    BwdParams<T> p{a.in<T>(bwd::recv), a.in<T>(bwd::send), a.in<T>(bwd::edge), a.in<T>(bwd::we), a.in<T>(bwd::w2),
                   a.in<T>(bwd::b2), a.in<T>(bwd::w3), a.in<T>(bwd::b3), a.in<T>(bwd::gin),
                   a.in_opt<unsigned char>(bwd::mask), relu ? nullptr : a.out<T>(bwd::s), a.out<T>(bwd::grecv),
                   a.out<T>(bwd::gsend_part), a.out<T>(bwd::gedge), a.out<T>(bwd::part_w2), a.out<T>(bwd::part_b2),
                   a.out<T>(bwd::part_we), relu ? a.out<T>(bwd::part_w3) : nullptr,
                   relu ? a.out<T>(bwd::part_b3) : nullptr, B, c.items, int(c.G),
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
    sg.s[n++] = Segment<T>{a.in<T>(bwd::part_w2), a.out<T>(bwd::gw2), long(c.H2P) * c.H1P, H2, int(H1), c.H1P, int(H1), P * c.S};
    sg.s[n++] = Segment<T>{a.in<T>(bwd::part_b2), a.out<T>(bwd::gb2), H2, 1, int(H2), int(H2), int(H2), P};
    if (E > 0) sg.s[n++] = Segment<T>{a.in<T>(bwd::part_we), a.out<T>(bwd::gwe), H1 * E, H1, int(E), int(E), int(E), P};
    if (c.G > 1)
      sg.s[n++] = Segment<T>{a.in<T>(bwd::gsend_part), a.out<T>(bwd::gsend), B * N * H1, B * N, int(H1), int(H1), int(H1),
                             int(c.G)};
    if (relu) {
      sg.s[n++] = Segment<T>{a.in<T>(bwd::part_w3), a.out<T>(bwd::gw3), long(c.FoP) * c.H2P, Fo, int(H2), c.H2P, int(H2),
                             P * c.S3};
      sg.s[n++] = Segment<T>{a.in<T>(bwd::part_b3), a.out<T>(bwd::gb3), Fo, 1, int(Fo), int(Fo), int(Fo), P};
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
  m.def("mpnn_message_sum_backward", &backward, "block"_a,
        "Pair backward of mpnn_message_sum on the GPU: grecv, gsend, gedge and the reduced gW2, gb2, gWe, "
        "plus s (relu=False) or the reduced gW3, gb3 (relu=True). Block (mimo_fast.ops.native): gin recv send edge "
        "we w2 b2 w3 b3 mask, then s grecv gsend_part gsend gedge part_w2 part_b2 part_we part_w3 part_b3 gw2 gb2 "
        "gwe gw3 gb3 (None where unused; shapes: mimo_fast/ops/cuda/mpnn_message_sum.py); scalars relu B N E H1 "
        "H2 Fo sm_count smem_block smem_sm stream.");
}

}  // namespace mpnn_cuda
}  // namespace mimo_fast
