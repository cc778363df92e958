// mpnn_message_sum: fused CPU pair kernels (float32, float64) behind the cpu backend of
// mimo_fast/ops/mpnn_message_sum.py (PairKernels): the op module makes recv/send with
// torch GEMMs; forward streams over all (receiver, sender) pairs and returns per-receiver
// sums (of h2, or of relu(W3 h2 + b3)); backward recomputes each tile of pairs and returns
// per-node sums and the weight gradients. Nothing of size N*N*H is ever held. Kernel body:
// mpnn_message_sum_kernel.h, compiled three times (portable baseline, AVX2/FMA, AVX-512),
// chosen at run time by cpu_has_avx512_core() / cpu_has_avx2_fma().
//
// Work split: OpenMP over units = (batch element, range of receivers).
// * Forward: receivers are split only when the batch cannot feed the threads; every
//   output row is summed by one unit in sender order, so the result does not depend on
//   the split or the thread count.
// * Backward is bitwise deterministic and independent of the thread count: the receiver
//   split depends only on (B, N); the units are cut into a fixed number of contiguous
//   groups (from the sizes only), each group runs sequentially on one thread and owns one
//   partial buffer for the weight gradients; the partials (and a split batch element's
//   sender gradients, one per receiver chunk) are summed afterwards in a fixed order.
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

#include "common/args.h"
#include "common/cpu/cpu_features.h"

namespace py = pybind11;

namespace mimo_fast {
namespace mpnn {

// All tensors contiguous. H1, H2, Fo are the op's sizes, H1p, H2p, Fop the padded ones
// (weights arrive padded; recv/send/gin/outputs unpadded).
struct FwdArgs {
  const void* recv;   // (B, N, H1)
  const void* send;   // (B, N, H1)
  const void* edge;   // (B, N, N, E)
  const void* weT;    // (E, H1p) edge part of w1, transposed
  const void* w2t;    // (H1p, H2p)
  const void* b2;     // (H2p)
  const void* w3t;    // (H2p, Fop), relu only
  const void* b3;     // (Fop), relu only
  const unsigned char* mask;  // (B, N) or null
  void* out;          // (B, N, H2) sums of h2, or (B, N, Fo) sums of relu(W3 h2 + b3)
  bool relu;
  long B, N, E, H1, H2, Fo, H1p, H2p, Fop;
};

struct BwdArgs {
  const void* gin;    // (B, N, H2) (grad * mask) w3, or (B, N, Fo) grad * mask (relu)
  const void* recv;
  const void* send;
  const void* edge;
  const void* weT;    // (E, H1p)
  const void* w2t;    // (H1p, H2p)
  const void* w2;     // (H2p, H1p)
  const void* b2;     // (H2p)
  const void* w3t;    // (H2p, Fop), relu only
  const void* w3;     // (Fop, H2p), relu only
  const void* b3;     // (Fop), relu only
  const unsigned char* mask;
  bool relu;
  void* grecv;        // (B, N, H1) out
  void* gsend;        // (B, N, H1) out
  void* gedge;        // (B, N, N, E) out (invalid pairs zero)
  void* gwe;          // (H1, E) out
  void* gw2;          // (H2, H1) out
  void* gb2;          // (H2) out
  void* s;            // (B, N, H2) out (not relu), else null
  void* gw3;          // (Fo, H2) out (relu), else null
  void* gb3;          // (Fo) out (relu), else null
  long B, N, E, H1, H2, Fo, H1p, H2p, Fop;
};

// Per-thread scratch: tiles of TP pairs and N-row buffers (padded widths).
template <typename T>
struct Work {
  T* A1;   // (TP, H1p) h1
  T* H2t;  // (TP, H2p) h2 (relu form)
  T* G3;   // (TP, Fop) go3
  T* G2;   // (TP, H2p) gp2
  T* G1;   // (TP, H1p) gp1
  T* R;    // (N, H1p) padded recv rows
  T* Sd;   // (N, H1p) padded send rows
  T* GI;   // (N, max(H2p, Fop)) padded gin rows
  T* GR;   // (N, H1p) grecv
  T* GS;   // (N, H1p) gsend of this unit
  T* S;    // (N, max(H2p, Fop)) per-receiver sums
  int* dst;
  int* src;
  long TP;
};

// One group's weight-gradient partials (padded layouts).
template <typename T>
struct Part {
  T* gw2;  // (H2p, H1p)
  T* gb2;  // (H2p)
  T* gwe;  // (E, H1p)
  T* gw3;  // (Fop, H2p)
  T* gb3;  // (Fop)
};

namespace portable {
constexpr int kBytes = 16;
constexpr int kMR1 = 12, kMR2 = 6, kNV2 = 2, kMRw = 4, kNVw = 3;
#include "mpnn_message_sum/cpu/mpnn_message_sum_kernel.h"
}  // namespace portable

// The AVX2/FMA and AVX-512 copies exist on x86-64 with GCC/Clang (target pragmas).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MIMO_FAST_MPNN_X86 1
MIMO_FAST_TARGET_BEGIN(MIMO_FAST_ISA_AVX2)
namespace avx2 {
constexpr int kBytes = 32;
// 16 ymm registers: 12 accumulators + 2 (or 1) weight vectors + 1 broadcast.
constexpr int kMR1 = 12, kMR2 = 6, kNV2 = 2, kMRw = 4, kNVw = 3;
#include "mpnn_message_sum/cpu/mpnn_message_sum_kernel.h"
}  // namespace avx2
MIMO_FAST_TARGET_END

// AVX-512: 64-byte vectors (16 floats / 8 doubles) and 32 zmm registers, so the register
// tiles double in rows against AVX2's at the same share of registers for accumulators.
// Why it pays: the pair x H2 layer is FMA-bound in L1 (each broadcast of an h1 value feeds
// NV vector FMAs, each loaded w2 vector feeds MR FMAs), so twice the lanes per FMA is up
// to twice the flops per cycle for the same loads of A1 and w2^T per pair.
// Compiled with a target pragma (never -march=native): the wheel stays baseline x86-64
// and this code only runs after cpu_has_avx512_core() said yes.
MIMO_FAST_TARGET_BEGIN(MIMO_FAST_ISA_AVX512)
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
#include "mpnn_message_sum/cpu/mpnn_message_sum_kernel.h"
}  // namespace avx512
MIMO_FAST_TARGET_END
#else
#define MIMO_FAST_MPNN_X86 0
#endif

namespace {

enum Isa : int { kAuto = 0, kPortable = 1, kAvx2 = 2, kAvx512 = 3 };

bool have_avx2() { return MIMO_FAST_MPNN_X86 && cpu_has_avx2_fma() && !cpu_isa_disabled("avx2"); }
bool have_avx512() { return MIMO_FAST_MPNN_X86 && cpu_has_avx512_core() && !cpu_isa_disabled("avx512"); }

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

// Receiver chunks per batch element in forward: 1 unless the batch cannot feed the
// threads (forward's results do not depend on the split).
long chunks_per_batch(long B, long N, int nthreads) {
  if (nthreads <= 1 || B >= 2 * nthreads) return 1;
  return std::max(1L, std::min(N, (4L * nthreads + B - 1) / B));
}

// Backward's split, from the sizes only (never the thread count), so that its sums run in
// the same order on any machine: receivers are split when B < kMinUnits (enough units for
// up to ~16 threads), and the units form at most kGroups contiguous groups.
constexpr long kMinUnits = 32, kGroups = 32;
long bwd_chunks(long B, long N) { return B >= kMinUnits ? 1 : std::max(1L, std::min(N, (kMinUnits + B - 1) / B)); }
long bwd_groups(long units, long part_elems) {
  const long cap = std::max(1L, (1L << 22) / std::max(1L, part_elems));  // partials <= 4M elements
  return std::max(1L, std::min({units, kGroups, cap}));
}

// Pairs per tile: the h1 tile (TP x H1p) about 24 KiB, a multiple of 24 rows (kMR1 | 24).
long tile_pairs(long H1, long elem) {
  long tp = 24576 / std::max(1L, H1 * elem);
  tp = std::max(24L, std::min(240L, tp));
  return (tp + 23) / 24 * 24;
}

// Per-thread scratch for Work<T>, one allocation.
template <typename T>
struct Scratch {
  std::vector<T> buf;
  std::vector<int> idx;
  Work<T> w;
  Scratch(long TP, long N, long H1, long H2, long Fo) {
    const long D = std::max(H2, Fo);
    const long sizes[11] = {TP * H1, TP * H2, TP * Fo, TP * H2, TP * H1, N * H1, N * H1, N * D, N * H1, N * H1, N * D};
    long total = 0;
    for (long s : sizes) total += s;
    buf.assign(total, T(0));
    idx.assign(2 * TP, 0);
    T* p[11];
    long off = 0;
    for (int i = 0; i < 11; ++i) { p[i] = buf.data() + off; off += sizes[i]; }
    w = Work<T>{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], idx.data(), idx.data() + TP, TP};
  }
};

template <typename T>
void forward_impl(const FwdArgs& a, int nthreads, int isa) {
  using Fn = void (*)(const FwdArgs&, long, long, long, const Work<T>&);
  Fn unit = &portable::fwd_unit<T>;
#if MIMO_FAST_MPNN_X86
  if (isa == kAvx2) unit = &avx2::fwd_unit<T>;
  if (isa == kAvx512) unit = &avx512::fwd_unit<T>;
#endif
  const long chunks = chunks_per_batch(a.B, a.N, nthreads);
  const long units = a.B * chunks;
  const long TP = tile_pairs(a.H1p, sizeof(T));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && units > 1)
  {
    Scratch<T> sc(TP, a.N, a.H1p, a.H2p, a.relu ? a.Fop : 0);
#pragma omp for schedule(dynamic, 1)
    for (long u = 0; u < units; ++u) {
      const long b = u / chunks, c = u % chunks;
      unit(a, b, c * a.N / chunks, (c + 1) * a.N / chunks, sc.w);
    }
  }
}

template <typename T>
void backward_impl(const BwdArgs& a, int nthreads, int isa) {
  using Fn = void (*)(const BwdArgs&, long, long, long, const Work<T>&, const Part<T>&, T*);
  Fn unit = &portable::bwd_unit<T>;
#if MIMO_FAST_MPNN_X86
  if (isa == kAvx2) unit = &avx2::bwd_unit<T>;
  if (isa == kAvx512) unit = &avx512::bwd_unit<T>;
#endif
  const long B = a.B, N = a.N, E = a.E, H1 = a.H1p, H2 = a.H2p, Fo = a.relu ? a.Fop : 0;
  const long chunks = bwd_chunks(B, N);
  const long units = B * chunks;
  const long TP = tile_pairs(H1, sizeof(T));
  // one partial per group: gw2 | gb2 | gwe | gw3 | gb3 (padded layouts)
  const long o_gb2 = H2 * H1, o_gwe = o_gb2 + H2, o_gw3 = o_gwe + E * H1, o_gb3 = o_gw3 + Fo * H2;
  const long P = o_gb3 + Fo;
  const long G = bwd_groups(units, P);
  std::vector<T> parts(G * P, T(0)), total(P, T(0));
  // a split batch element's sender gradients, one (N x H1) slice per unit
  std::vector<T> gsp(chunks > 1 ? units * N * a.H1 : 0);
  T* gsend = static_cast<T*>(a.gsend);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && units > 1)
  {
    {
      Scratch<T> sc(TP, N, H1, H2, Fo);
#pragma omp for schedule(dynamic, 1)
      for (long g = 0; g < G; ++g) {
        T* base = parts.data() + g * P;
        const Part<T> p{base, base + o_gb2, base + o_gwe, base + o_gw3, base + o_gb3};
        for (long u = g * units / G; u < (g + 1) * units / G; ++u) {
          const long b = u / chunks, c = u % chunks;
          T* gs_out = chunks > 1 ? gsp.data() + u * N * a.H1 : gsend + b * N * a.H1;
          unit(a, b, c * N / chunks, (c + 1) * N / chunks, sc.w, p, gs_out);
        }
      }
    }
    // fixed-order sums (each element by one thread, in group / chunk order)
#pragma omp for schedule(static)
    for (long k = 0; k < P; ++k) {
      T acc = parts[k];
      for (long g = 1; g < G; ++g) acc += parts[g * P + k];
      total[k] = acc;
    }
    if (chunks > 1) {
      const long per = N * a.H1;
#pragma omp for schedule(static)
      for (long k = 0; k < B * per; ++k) {
        const long b = k / per, i = k % per;
        const T* sp = gsp.data() + b * chunks * per + i;
        T acc = sp[0];
        for (long c = 1; c < chunks; ++c) acc += sp[c * per];
        gsend[k] = acc;
      }
    }
  }
  // unpadded outputs
  T* gw2 = static_cast<T*>(a.gw2);
  T* gb2 = static_cast<T*>(a.gb2);
  T* gwe = static_cast<T*>(a.gwe);
  for (long i = 0; i < a.H2; ++i) {
    for (long k = 0; k < a.H1; ++k) gw2[i * a.H1 + k] = total[i * H1 + k];
    gb2[i] = total[o_gb2 + i];
  }
  for (long h = 0; h < a.H1; ++h)
    for (long e = 0; e < E; ++e) gwe[h * E + e] = total[o_gwe + e * H1 + h];
  if (a.relu) {
    T* gw3 = static_cast<T*>(a.gw3);
    T* gb3 = static_cast<T*>(a.gb3);
    for (long q = 0; q < a.Fo; ++q) {
      for (long i = 0; i < a.H2; ++i) gw3[q * a.H2 + i] = total[o_gw3 + q * H2 + i];
      gb3[q] = total[o_gb3 + q];
    }
  }
}

void check_sizes(long B, long N, long E, long H1, long H2, long Fo, long H1p, long H2p, long Fop,
                 bool relu, int dtype, int isa, int nthreads) {
  if (B < 0 || N < 1 || E < 0 || H1 < 1 || H2 < 1 || Fo < 1)
    throw std::invalid_argument("mpnn_message_sum: bad sizes");
  const long m = pad_multiple(dtype, isa);
  auto bad_pad = [&](long h, long hp) { return hp < h || hp % m || hp - h >= m; };
  if (bad_pad(H1, H1p) || bad_pad(H2, H2p) || (relu && bad_pad(Fo, Fop)))
    throw std::invalid_argument("mpnn_message_sum: H1p, H2p (and Fop) must be H1, H2 (Fo) rounded up to a multiple of " +
                                std::to_string(m));
  if (N > (1L << 30) / std::max(1L, N)) throw std::invalid_argument("mpnn_message_sum: N too large");
  if (nthreads < 1) throw std::invalid_argument("mpnn_message_sum: nthreads must be >= 1");
}

// Block layouts (mimo_fast/ops/cpu/mpnn_message_sum.py builds them). w3t, w3, b3 are None
// for relu = false, s for relu = true; mask is None or bool (B, N).
constexpr Layout kForward{"mpnn_message_sum_forward", "recv send edge weT w2t b2 w3t b3 mask out",
                          "relu B N E H1 H2 Fo H1p H2p Fop nthreads isa"};
constexpr Layout kBackward{"mpnn_message_sum_backward",
                           "gin recv send edge weT w2t w2 b2 w3t w3 b3 mask grecv gsend gedge gwe gw2 gb2 s gw3 gb3",
                           "relu B N E H1 H2 Fo H1p H2p Fop nthreads isa"};
namespace fwd { enum : int { recv, send, edge, weT, w2t, b2, w3t, b3, mask, out, kTensors }; }
namespace bwd {
enum : int { gin, recv, send, edge, weT, w2t, w2, b2, w3t, w3, b3, mask, grecv, gsend, gedge, gwe, gw2, gb2, s, gw3,
             gb3, kTensors };
}
namespace sc { enum : int { relu, B, N, E, H1, H2, Fo, H1p, H2p, Fop, nthreads, isa }; }
static_assert(kForward.tensor_count() == fwd::kTensors && kBackward.tensor_count() == bwd::kTensors, "layouts");

struct Sizes {
  bool relu;
  long B, N, E, H1, H2, Fo, H1p, H2p, Fop;
  int nthreads, isa, dtype;
};

Sizes read_sizes(const ArgView& a, int first) {
  Sizes z{a.i(sc::relu) != 0, a.i(sc::B), a.i(sc::N), a.i(sc::E), a.i(sc::H1), a.i(sc::H2), a.i(sc::Fo),
          a.i(sc::H1p), a.i(sc::H2p), a.i(sc::Fop), static_cast<int>(a.i(sc::nthreads)),
          static_cast<int>(a.i(sc::isa)), static_cast<int>(a.dtype(first))};
  if (z.dtype != int(DType::f32) && z.dtype != int(DType::f64)) a.expect_dtype(first, DType::f32);
  check_sizes(z.B, z.N, z.E, z.H1, z.H2, z.Fo, z.H1p, z.H2p, z.Fop, z.relu, z.dtype, z.isa, z.nthreads);
  z.isa = pick_isa(z.isa);
  return z;
}

// Each pointer's dtype and element count checked against the sizes; then cast to void*.
template <typename T>
FwdArgs fwd_args(const ArgView& a, const Sizes& z) {
  const long BN = z.B * z.N;
  a.expect_numel({fwd::recv, fwd::send}, BN * z.H1);
  a.expect_numel(fwd::edge, BN * z.N * z.E);
  a.expect_numel(fwd::weT, z.E * z.H1p);
  a.expect_numel(fwd::w2t, z.H1p * z.H2p);
  a.expect_numel(fwd::b2, z.H2p);
  a.expect_numel(fwd::w3t, z.H2p * z.Fop);
  a.expect_numel(fwd::b3, z.Fop);
  a.expect_numel(fwd::mask, BN);
  a.expect_numel(fwd::out, BN * (z.relu ? z.Fo : z.H2));
  return FwdArgs{a.in<T>(fwd::recv), a.in<T>(fwd::send), a.in<T>(fwd::edge), a.in<T>(fwd::weT),
                 a.in<T>(fwd::w2t), a.in<T>(fwd::b2), z.relu ? a.in<T>(fwd::w3t) : nullptr,
                 z.relu ? a.in<T>(fwd::b3) : nullptr, a.in_opt<unsigned char>(fwd::mask), a.out<T>(fwd::out),
                 z.relu, z.B, z.N, z.E, z.H1, z.H2, z.Fo, z.H1p, z.H2p, z.Fop};
}

template <typename T>
BwdArgs bwd_args(const ArgView& a, const Sizes& z) {
  const long BN = z.B * z.N;
  a.expect_numel(bwd::gin, BN * (z.relu ? z.Fo : z.H2));
  a.expect_numel({bwd::recv, bwd::send, bwd::grecv, bwd::gsend}, BN * z.H1);
  a.expect_numel({bwd::edge, bwd::gedge}, BN * z.N * z.E);
  a.expect_numel(bwd::weT, z.E * z.H1p);
  a.expect_numel({bwd::w2t, bwd::w2}, z.H1p * z.H2p);
  a.expect_numel(bwd::b2, z.H2p);
  a.expect_numel({bwd::w3t, bwd::w3}, z.H2p * z.Fop);
  a.expect_numel(bwd::b3, z.Fop);
  a.expect_numel(bwd::mask, BN);
  a.expect_numel(bwd::gwe, z.H1 * z.E);
  a.expect_numel(bwd::gw2, z.H2 * z.H1);
  a.expect_numel(bwd::gb2, z.H2);
  a.expect_numel(bwd::s, BN * z.H2);
  a.expect_numel(bwd::gw3, z.Fo * z.H2);
  a.expect_numel(bwd::gb3, z.Fo);
  const bool r = z.relu;
  return BwdArgs{a.in<T>(bwd::gin), a.in<T>(bwd::recv), a.in<T>(bwd::send), a.in<T>(bwd::edge),
                 a.in<T>(bwd::weT), a.in<T>(bwd::w2t), a.in<T>(bwd::w2), a.in<T>(bwd::b2),
                 r ? a.in<T>(bwd::w3t) : nullptr, r ? a.in<T>(bwd::w3) : nullptr, r ? a.in<T>(bwd::b3) : nullptr,
                 a.in_opt<unsigned char>(bwd::mask), r, a.out<T>(bwd::grecv), a.out<T>(bwd::gsend),
                 a.out<T>(bwd::gedge), a.out<T>(bwd::gwe), a.out<T>(bwd::gw2), a.out<T>(bwd::gb2),
                 r ? nullptr : a.out<T>(bwd::s), r ? a.out<T>(bwd::gw3) : nullptr, r ? a.out<T>(bwd::gb3) : nullptr,
                 z.B, z.N, z.E, z.H1, z.H2, z.Fo, z.H1p, z.H2p, z.Fop};
}

void forward(const py::bytes& block) {
  const ArgView a(block, kForward);
  const Sizes z = read_sizes(a, fwd::recv);
  if (z.dtype == int(DType::f32)) {
    const FwdArgs x = fwd_args<float>(a, z);
    if (z.B == 0) return;
    py::gil_scoped_release release;
    forward_impl<float>(x, z.nthreads, z.isa);
  } else {
    const FwdArgs x = fwd_args<double>(a, z);
    if (z.B == 0) return;
    py::gil_scoped_release release;
    forward_impl<double>(x, z.nthreads, z.isa);
  }
}

void backward(const py::bytes& block) {
  const ArgView a(block, kBackward);
  const Sizes z = read_sizes(a, bwd::recv);
  if (z.dtype == int(DType::f32)) {
    const BwdArgs x = bwd_args<float>(a, z);
    py::gil_scoped_release release;
    backward_impl<float>(x, z.nthreads, z.isa);
  } else {
    const BwdArgs x = bwd_args<double>(a, z);
    py::gil_scoped_release release;
    backward_impl<double>(x, z.nthreads, z.isa);
  }
}

}  // namespace
}  // namespace mpnn

void bind_mpnn_message_sum(py::module_& m) {
  using namespace py::literals;
  m.def("mpnn_message_sum_pad", &mpnn::pad_multiple, "dtype"_a, "isa"_a = 0,
        "Multiple that H1, H2 (and Fo) must be zero-padded to (isa: 0 auto, 1 portable, 2 avx2, 3 avx512).");
  m.def("mpnn_message_sum_choose_isa", &mpnn::choose_isa, "dtype"_a, "isa"_a, "H1"_a, "H2"_a,
        "Concrete isa code to run for these (unpadded) hidden sizes: a forced isa as is, auto "
        "-> avx512 unless its padding inflates H1*H2 by more than 1.5x over avx2's.");
  m.def("mpnn_message_sum_isa", &mpnn::isa_name,
        "isa"_a = 0, "The instruction set the kernels run with for this isa code.");
  m.def("mpnn_message_sum_forward", &mpnn::forward, "block"_a,
        "Pair-kernel forward (PairKernels.forward of mimo_fast/ops/mpnn_message_sum.py); block "
        "(mimo_fast.ops.native): recv send edge weT w2t b2 w3t b3 mask -> out; scalars relu B N E H1 H2 Fo "
        "H1p H2p Fop nthreads isa. Weights zero-padded to H1p/H2p/Fop (mpnn_message_sum_pad).");
  m.def("mpnn_message_sum_backward", &mpnn::backward, "block"_a,
        "Pair-kernel backward (PairKernels.backward); block: gin recv send edge weT w2t w2 b2 w3t w3 b3 mask "
        "-> grecv gsend gedge gwe gw2 gb2 s gw3 gb3; same scalars. Deterministic, independent of nthreads.");
}

}  // namespace mimo_fast
