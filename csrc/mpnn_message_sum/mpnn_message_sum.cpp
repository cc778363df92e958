// mpnn_message_sum: fused CPU forward and backward (float32, float64).
//
// Forward is the whole op in one parallel region: per batch element the per-node
// projections recv = node Wa^T + b1, send = node Wb^T (N x H1p scratch), the stream
// over all (receiver, sender) pairs, and the last layer on the sums; nothing of size
// N*N*H is ever held. Backward takes recv/send from torch (Python glue) and returns
// per-node and per-thread gradient pieces that the glue finishes with small GEMMs. Kernel
// body: mpnn_message_sum_kernel.h, compiled three times (portable baseline, AVX2/FMA,
// AVX-512), chosen at run time by cpu_has_avx512_core() / cpu_has_avx2_fma().
//
// Work split: OpenMP over units = (batch element, range of receivers). Receivers are
// split only when the batch is too small to feed the threads; then backward's sender
// gradient goes to per-thread buffers that Python sums (every other output row belongs
// to one unit). Weight gradients always go to per-thread buffers.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#if MIMO_FAST_HAVE_OPENMP
#include <omp.h>
#endif

#include "common/cpu_features.h"
#include "common/strided.h"

namespace py = pybind11;

namespace mimo_fast {
namespace mpnn {

// All tensors contiguous; H1, H2 are the padded sizes H1p, H2p.
struct FwdArgs {
  const void* node;   // (B, N, F)
  const void* edge;   // (B, N, N, E)
  const void* waT;    // (F, H1) receiver part of w1, transposed
  const void* wbT;    // (F, H1) sender part
  const void* b1;     // (H1)
  const void* weT;    // (E, H1) edge part
  const void* w2t;    // (H1, H2)
  const void* b2;     // (H2)
  const void* w3;     // (Fo, H2)
  const void* b3;     // (Fo)
  const unsigned char* mask;  // (B, N) or null
  void* out;          // (B, N, Fo)
  long B, N, F, E, H1, H2, Fo;
};

struct BwdArgs {
  const void* recv;
  const void* send;
  const void* edge;
  const void* weT;
  const void* w2t;    // (H1, H2)
  const void* w2;     // (H2, H1)
  const void* b2;
  const unsigned char* mask;
  const void* gs;     // (B, N, H2) (grad * mask) w3
  void* s;            // (B, N, H2) out, zero on entry (recomputed forward sum, for gW3)
  void* grecv;        // (B, N, H1) out, zero on entry
  void* gsend;        // (T or 1, B, N, H1) out, zero on entry
  void* gedge;        // (B, N, N, E) out, zero on entry (invalid pairs stay zero)
  void* gw2;          // (T, H2, H1) out, zero on entry
  void* gb2;          // (T, H2)
  void* gwe;          // (T, E, H1)
  bool gsend_per_thread;
  long B, N, E, H1, H2;
};

namespace portable {
constexpr int kBytes = 16;
constexpr int kMR1 = 12, kMR2 = 6, kNV2 = 2, kMRw = 4, kNVw = 3;
#include "mpnn_message_sum/mpnn_message_sum_kernel.h"
}  // namespace portable

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MIMO_FAST_MPNN_AVX2 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace avx2 {
constexpr int kBytes = 32;
// 16 ymm registers: 12 accumulators + 2 (or 1) weight vectors + 1 broadcast.
constexpr int kMR1 = 12, kMR2 = 6, kNV2 = 2, kMRw = 4, kNVw = 3;
#include "mpnn_message_sum/mpnn_message_sum_kernel.h"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define MIMO_FAST_MPNN_AVX2 0
#endif

// AVX-512: 64-byte vectors (16 floats / 8 doubles) and 32 zmm registers, so the register
// tiles double in rows against AVX2's at the same share of registers for accumulators.
// Why it pays: the pair x H2 layer is FMA-bound in L1 (each broadcast of an h1 value feeds
// NV vector FMAs, each loaded w2 vector feeds MR FMAs), so twice the lanes per FMA is up
// to twice the flops per cycle for the same loads of A1 and w2^T per pair.
// Compiled with a target pragma (never -march=native): the wheel stays baseline x86-64
// and this code only runs after cpu_has_avx512_core() said yes.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MIMO_FAST_MPNN_AVX512 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#endif
namespace avx512 {
constexpr int kBytes = 64;
// 32 zmm registers. Pair x H2 tiles: kMR1 x 1 vector = 24 accumulators + 1 weight vector
// + 1 broadcast; kMR2 x kNV2 = 6 x 4 = 24 accumulators + 4 weight vectors + 1 broadcast
// (per k: 4 vector loads + 6 broadcasts feed 24 FMAs, below the two load ports' rate).
// 6 x 4 rather than 12 x 2: at H2 = 64 floats (4 vectors) each h1 row is read once
// instead of twice, and w2^T rows are streamed once per 6 pairs from L1; measured on S1
// (H 128/64): forward 0.0245-0.0259 s vs 0.0273 s, forward+backward 0.109-0.112 s vs
// 0.129 s (the backward's gp2 w2, 8 vectors wide, gains the same way).
// Weight gradient (gW2 += gp2^T h1, K = pairs): 8 x 2 = 16 accumulators + 2 + 1; 2
// vectors split H1 = 64/128 floats (4/8 vectors) with no remainder tile, and measured
// on S1 forward+backward 0.105-0.109 s vs 0.109-0.113 s for 8 x 3 (within the noise of
// this shared machine, so no worse). kMR1 must divide the tile size TP
// (a multiple of 24) and kMR2 must divide kMR1; kMRw must divide the H pad (8 doubles).
constexpr int kMR1 = 24, kMR2 = 6, kNV2 = 4, kMRw = 8, kNVw = 2;
#include "mpnn_message_sum/mpnn_message_sum_kernel.h"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#else
#define MIMO_FAST_MPNN_AVX512 0
#endif

namespace {

enum Isa : int { kAuto = 0, kPortable = 1, kAvx2 = 2, kAvx512 = 3 };

// MIMO_FAST_CPU_DISABLE="avx512[,avx2]" makes this op treat the CPU as lacking those
// ISAs (as on an older CPU): lets the tests check auto's fallback and the error for a
// forced, unavailable ISA on any machine. Read per call (a getenv, no cost that matters).
bool disabled(const char* name) {
  const char* env = std::getenv("MIMO_FAST_CPU_DISABLE");
  if (!env) return false;
  const std::string list = std::string(",") + env + ",", key = std::string(",") + name + ",";
  return list.find(key) != std::string::npos;
}
bool have_avx2() { return MIMO_FAST_MPNN_AVX2 && cpu_has_avx2_fma() && !disabled("avx2"); }
bool have_avx512() { return MIMO_FAST_MPNN_AVX512 && cpu_has_avx512_core() && !disabled("avx512"); }

// auto = the best this CPU runs; a forced ISA the CPU (or build) lacks is an error, not a
// silent fallback, so a test that forces it never passes on the wrong code.
int pick_isa(int isa) {
  if (isa == kAuto) return have_avx512() ? kAvx512 : have_avx2() ? kAvx2 : kPortable;
  if (isa == kAvx2 && !have_avx2())
    throw std::invalid_argument("mpnn_message_sum: isa 'avx2' requested but this CPU or build lacks AVX2/FMA");
  if (isa == kAvx512 && !have_avx512())
    throw std::invalid_argument(
        "mpnn_message_sum: isa 'avx512' requested but this CPU or build lacks AVX-512 (F, VL, BW, DQ) + FMA");
  if (isa != kPortable && isa != kAvx2 && isa != kAvx512)
    throw std::invalid_argument("mpnn_message_sum: unknown isa code " + std::to_string(isa));
  return isa;
}

const char* isa_name(int isa) {
  switch (pick_isa(isa)) {
    case kAvx512: return "avx512";
    case kAvx2: return "avx2";
    default: return "portable";
  }
}

// Multiple that H1 and H2 must be padded to for this ISA and dtype: the vector width
// (no column tails in the kernel), and at least 4 (kMRw rows of the weight-gradient tile).
int pad_multiple(int dtype, int isa) {
  const int picked = pick_isa(isa);
  const int bytes = picked == kAvx512 ? 64 : picked == kAvx2 ? 32 : 16;
  const int elem = static_cast<DType>(dtype) == DType::f64 ? 8 : 4;
  return std::max(bytes / elem, 4);
}

// The ISA to run for these hidden sizes (H1, H2 unpadded). A forced ISA is returned as is
// (after pick_isa's check). auto prefers AVX-512, but AVX-512 pads H1, H2 to 16 floats
// (8 doubles) where AVX2 pads to 8 (4): for small layers the pad multiplies the work of
// the pair x H2 layer (S2, H 16/8: H2 8 -> 16, twice the flops; measured 1.2x slower
// forward, 1.35x slower forward+backward than avx2). So auto takes avx2 when the padded
// H1p*H2p grows by more than 1.5x. The threshold lies between the measured points (1x: S1
// and S3 gain 1.5x with avx512; 2x: S2 loses); sizes in between are not measured.
int choose_isa(int dtype, int isa, long H1, long H2) {
  const int picked = pick_isa(isa);
  if (isa != kAuto || picked != kAvx512 || !have_avx2()) return picked;
  auto padded = [&](int i) {
    const long m = pad_multiple(dtype, i);
    return ((H1 + m - 1) / m * m) * ((H2 + m - 1) / m * m);
  };
  return 2 * padded(kAvx512) <= 3 * padded(kAvx2) ? kAvx512 : kAvx2;
}

int thread_id() {
#if MIMO_FAST_HAVE_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Receiver chunks per batch element: 1 unless the batch cannot feed the threads.
long chunks_per_batch(long B, long N, int nthreads, bool allow_split) {
  if (!allow_split || nthreads <= 1 || B >= 2 * nthreads) return 1;
  return std::max(1L, std::min(N, (4L * nthreads + B - 1) / B));
}

// Pairs per tile: the h1 tile (TP x H1p) about 24 KiB, a multiple of 24 rows (kMR1 | 24).
long tile_pairs(long H1, long elem) {
  long tp = 24576 / std::max(1L, H1 * elem);
  tp = std::max(24L, std::min(240L, tp));
  return (tp + 23) / 24 * 24;
}

template <typename T>
void forward_impl(const FwdArgs& a, int nthreads, int isa) {
  using Fn = void (*)(const FwdArgs&, long, long, long, T*, T*, T*, T*, int*, int*, long);
  Fn unit = &portable::fwd_unit<T>;
#if MIMO_FAST_MPNN_AVX2
  if (isa == kAvx2) unit = &avx2::fwd_unit<T>;
#endif
#if MIMO_FAST_MPNN_AVX512
  if (isa == kAvx512) unit = &avx512::fwd_unit<T>;
#endif
  const long chunks = chunks_per_batch(a.B, a.N, nthreads, true);
  const long units = a.B * chunks;
  const long TP = tile_pairs(a.H1, sizeof(T));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && units > 1)
  {
    std::vector<T> A1(TP * a.H1), recv(a.N * a.H1), send(a.N * a.H1), S(a.N * a.H2);
    std::vector<int> dst(TP), src(TP);
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < units; ++u) {
      const long b = u / chunks, c = u % chunks;
      unit(a, b, c * a.N / chunks, (c + 1) * a.N / chunks, A1.data(), recv.data(), send.data(),
           S.data(), dst.data(), src.data(), TP);
    }
  }
}

template <typename T>
void backward_impl(const BwdArgs& a, int nthreads, int isa) {
  using Fn = void (*)(const BwdArgs&, long, long, long, T*, T*, T*, int*, int*, long, T*, T*, T*, T*);
  Fn unit = &portable::bwd_unit<T>;
#if MIMO_FAST_MPNN_AVX2
  if (isa == kAvx2) unit = &avx2::bwd_unit<T>;
#endif
#if MIMO_FAST_MPNN_AVX512
  if (isa == kAvx512) unit = &avx512::bwd_unit<T>;
#endif
  const long chunks = chunks_per_batch(a.B, a.N, nthreads, a.gsend_per_thread);
  const long units = a.B * chunks;
  const long TP = tile_pairs(a.H1, sizeof(T));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && units > 1)
  {
    const long t = thread_id();
    std::vector<T> A1(TP * a.H1), G2(TP * a.H2), G1(TP * a.H1);
    std::vector<int> dst(TP), src(TP);
    T* gw2 = static_cast<T*>(a.gw2) + t * a.H2 * a.H1;
    T* gb2 = static_cast<T*>(a.gb2) + t * a.H2;
    T* gwe = static_cast<T*>(a.gwe) + t * a.E * a.H1;
    T* gsend = static_cast<T*>(a.gsend) + (a.gsend_per_thread ? t * a.B * a.N * a.H1 : 0);
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < units; ++u) {
      const long b = u / chunks, c = u % chunks;
      unit(a, b, c * a.N / chunks, (c + 1) * a.N / chunks, A1.data(), G2.data(), G1.data(),
           dst.data(), src.data(), TP, gw2, gb2, gwe, gsend);
    }
  }
}

void check_sizes(long B, long N, long E, long H1, long H2, int dtype, int isa, int nthreads) {
  if (B < 0 || N < 1 || E < 0 || H1 < 1 || H2 < 1)
    throw std::invalid_argument("mpnn_message_sum: bad sizes");
  const long m = pad_multiple(dtype, isa);
  if (H1 % m || H2 % m)
    throw std::invalid_argument("mpnn_message_sum: H1 and H2 must be padded to a multiple of " + std::to_string(m));
  if (N > (1L << 30) / std::max(1L, N)) throw std::invalid_argument("mpnn_message_sum: N too large");
  if (nthreads < 1) throw std::invalid_argument("mpnn_message_sum: nthreads must be >= 1");
}

void forward(int dtype, std::uintptr_t node, std::uintptr_t edge, std::uintptr_t waT,
             std::uintptr_t wbT, std::uintptr_t b1, std::uintptr_t weT, std::uintptr_t w2t,
             std::uintptr_t b2, std::uintptr_t w3, std::uintptr_t b3, std::uintptr_t mask,
             std::uintptr_t out, long B, long N, long F, long E, long H1, long H2, long Fo,
             int nthreads, int isa) {
  check_sizes(B, N, E, H1, H2, dtype, isa, nthreads);
  if (F < 1 || Fo < 1) throw std::invalid_argument("mpnn_message_sum: bad sizes");
  isa = pick_isa(isa);
  auto c = [](std::uintptr_t p) { return reinterpret_cast<const void*>(p); };
  FwdArgs a{c(node), c(edge), c(waT), c(wbT), c(b1), c(weT), c(w2t), c(b2), c(w3), c(b3),
            reinterpret_cast<const unsigned char*>(mask), reinterpret_cast<void*>(out),
            B, N, F, E, H1, H2, Fo};
  if (B == 0) return;
  py::gil_scoped_release release;
  switch (static_cast<DType>(dtype)) {
    case DType::f32: return forward_impl<float>(a, nthreads, isa);
    case DType::f64: return forward_impl<double>(a, nthreads, isa);
  }
  throw std::invalid_argument("mpnn_message_sum: unsupported dtype code " + std::to_string(dtype));
}

void backward(int dtype, std::uintptr_t recv, std::uintptr_t send, std::uintptr_t edge,
              std::uintptr_t weT, std::uintptr_t w2t, std::uintptr_t w2, std::uintptr_t b2,
              std::uintptr_t mask, std::uintptr_t gs, std::uintptr_t s, std::uintptr_t grecv,
              std::uintptr_t gsend, bool gsend_per_thread, std::uintptr_t gedge,
              std::uintptr_t gw2, std::uintptr_t gb2, std::uintptr_t gwe, long B, long N, long E,
              long H1, long H2, int nthreads, int isa) {
  check_sizes(B, N, E, H1, H2, dtype, isa, nthreads);
  isa = pick_isa(isa);
  auto c = [](std::uintptr_t p) { return reinterpret_cast<const void*>(p); };
  auto w = [](std::uintptr_t p) { return reinterpret_cast<void*>(p); };
  BwdArgs a{c(recv), c(send), c(edge), c(weT), c(w2t), c(w2), c(b2),
            reinterpret_cast<const unsigned char*>(mask), c(gs), w(s), w(grecv), w(gsend),
            w(gedge), w(gw2), w(gb2), w(gwe), gsend_per_thread, B, N, E, H1, H2};
  if (B == 0) return;
  py::gil_scoped_release release;
  switch (static_cast<DType>(dtype)) {
    case DType::f32: return backward_impl<float>(a, nthreads, isa);
    case DType::f64: return backward_impl<double>(a, nthreads, isa);
  }
  throw std::invalid_argument("mpnn_message_sum: unsupported dtype code " + std::to_string(dtype));
}

}  // namespace
}  // namespace mpnn

void bind_mpnn_message_sum(py::module_& m) {
  using namespace py::literals;
  m.def("mpnn_message_sum_pad", &mpnn::pad_multiple, "dtype"_a, "isa"_a = 0,
        "Multiple that H1 and H2 must be zero-padded to (isa: 0 auto, 1 portable, 2 avx2, 3 avx512).");
  m.def("mpnn_message_sum_choose_isa", &mpnn::choose_isa, "dtype"_a, "isa"_a, "H1"_a, "H2"_a,
        "Concrete isa code to run for these (unpadded) hidden sizes: a forced isa as is, auto "
        "-> avx512 unless its padding inflates H1*H2 by more than 1.5x over avx2's.");
  m.def("mpnn_message_sum_isa", &mpnn::isa_name,
        "isa"_a = 0, "The instruction set the kernels run with for this isa code.");
  m.def("mpnn_message_sum_forward", &mpnn::forward, "dtype"_a, "node"_a, "edge"_a, "waT"_a,
        "wbT"_a, "b1"_a, "weT"_a, "w2t"_a, "b2"_a, "w3"_a, "b3"_a, "mask"_a, "out"_a, "B"_a, "N"_a,
        "F"_a, "E"_a, "H1"_a, "H2"_a, "Fo"_a, "nthreads"_a, "isa"_a = 0,
        "out = the whole op (mimo_fast.ops.mpnn_message_sum). Pointers to contiguous buffers; "
        "H1/H2 zero-padded (mpnn_message_sum_pad); w1 split into waT, wbT (F, H1) and weT (E, H1).");
  m.def("mpnn_message_sum_backward", &mpnn::backward, "dtype"_a, "recv"_a, "send"_a, "edge"_a,
        "weT"_a, "w2t"_a, "w2"_a, "b2"_a, "mask"_a, "gs"_a, "s"_a, "grecv"_a, "gsend"_a,
        "gsend_per_thread"_a, "gedge"_a, "gw2"_a, "gb2"_a, "gwe"_a, "B"_a, "N"_a, "E"_a, "H1"_a,
        "H2"_a, "nthreads"_a, "isa"_a = 0,
        "Gradients of the fused message sum (see mimo_fast/ops/cpu/mpnn_message_sum.py).");
}

}  // namespace mimo_fast
