// The ep_lmmse load loop (rows of 16 float matrices into 16-lane vectors, 16 x 16 blocks)
// three ways, compiled as the op is (no -march; the loops in AVX-512 target functions), timed
// in TSC cycles per 16 x 16 block (best of 9), cycling over `groups` groups of 16 matrices
// (1: L1/L2-resident; 48 at K16: L2; more: L3):
//   pointers: rows_to_lanes_blocks from csrc/common/cpu/lane_transpose.h, as load_system
//             uses it (W row pointers, half-width loads, three cross-slot shuffle stages);
//   strided:  rows a fixed stride apart; each lane vector built from 16-byte pieces (one
//             load plus three vinsertf32x4 from memory, lane by lane), then a 4 x 4
//             transpose inside each 16-byte slot (vunpck{l,h}ps, vunpck{l,h}pd);
//   halves:   the strided loop on 8 lanes at a time (ymm), lanes 0-7 then 8-15, into the two
//             halves of each 64-byte element: a block's lines then fill 8 ways of an L1 set,
//             not 16.
// Each block's columns are stored to a K x K lane buffer; the three results are compared
// element by element. Build and run from the repository root (AVX-512 machines, GCC >= 12):
//   g++ -std=gnu++17 -O3 -fno-math-errno -I csrc experiments/ep_lmmse_load_sets/slot_loads.cpp -o /tmp/slot_loads
//   /tmp/slot_loads K pad [groups]
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>
#include <x86intrin.h>

#include "common/cpu/lane_transpose.h"
#include "common/cpu/lanes.h"

namespace mimo_fast {
namespace slot_detail {
// Output lane p of an unpack of a and b inside slots of E elements (16 bytes), G elements at a
// time: the low (or high) halves of a's and b's chunks in each slot, alternating (G = 1:
// unpcklps / unpckhps; G = 2 with floats: unpcklpd / unpckhpd).
constexpr int unpack_index(int p, int W, int E, int G, bool hi) {
  const int k = p % E, chunk = k / G;
  return (chunk & 1 ? W : 0) + p / E * E + (chunk / 2 + (hi ? E / (2 * G) : 0)) * G + k % G;
}
template <int W, int E, int G, bool hi, typename V, int... P>
MIMO_FAST_INLINE V unpack(const V& a, const V& b, std::integer_sequence<int, P...>) {
  return __builtin_shufflevector(a, b, unpack_index(P, W, E, G, hi)...);
}

// x's bits as a vector of another element type.
template <typename To, typename From>
MIMO_FAST_INLINE To bits(const From& x) {
  static_assert(sizeof(To) == sizeof(From), "same size");
  To r;
  __builtin_memcpy(&r, &x, sizeof(To));
  return r;
}
// Slot A (16 bytes) of r from the 16 bytes at p + D (slot 0: the rest of r zeroed). On x86 an
// insert from memory (vinsertf128 / vinsertf32x4: the operand comes straight from the load
// unit), with the address one base register plus a displacement: written as vector
// concatenations, GCC 12 loaded each piece into a register and joined them with cross-slot
// shuffles (twice as slow), and with W row pointers it spilled them and bumped each in memory
// per block. The asm reads memory the compiler is not told about: only inputs that nothing
// writes during a kernel may be read this way.
template <int A, int D, typename V>
MIMO_FAST_INLINE void load_slot(V& r, const char* p) {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (sizeof(V) == 16) __builtin_memcpy(&r, p + D, 16);
  else if constexpr (A == 0) asm("vmovups %c[d](%[p]), %x[r]" : [r] "=v"(r) : [p] "r"(p), [d] "i"(D));
  else if constexpr (sizeof(V) == 32) asm("vinsertf128 $%c[a], %c[d](%[p]), %[r], %[r]" : [r] "+v"(r) : [p] "r"(p), [d] "i"(D), [a] "i"(A));
  else asm("vinsertf32x4 $%c[a], %c[d](%[p]), %[r], %[r]" : [r] "+v"(r) : [p] "r"(p), [d] "i"(D), [a] "i"(A));
#else
  if (A == 0) r = V{};
  __builtin_memcpy(reinterpret_cast<char*>(&r) + 16 * A, p + D, 16);
#endif
}
// Row l = E a + b (E elements per slot): its C-th 16 bytes into slot a of v[C E + b], each C.
template <int E, int Lane, typename V, int... C>
MIMO_FAST_INLINE void load_lane_slots(V* v, const char* p, std::integer_sequence<int, C...>) {
  (load_slot<Lane / E, 16 * C>(v[C * E + Lane % E], p), ...);
}
template <int E, int S, typename V, int... Lane>
MIMO_FAST_INLINE void load_block_slots(V* v, const char* p, std::ptrdiff_t step, std::integer_sequence<int, Lane...>) {
  ((load_lane_slots<E, Lane>(v, p, std::make_integer_sequence<int, S>{}), p += step), ...);
}

}  // namespace slot_detail

template <typename T, int W, typename F, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void strided_rows_to_lanes_blocks(const T* base, std::ptrdiff_t stride, int n, F&& f) {
  constexpr int E = 16 / sizeof(T), S = W / E;  // elements per slot, slots per vector
  static_assert(W >= E, "one 16-byte slot at least");
  const std::ptrdiff_t step = stride * sizeof(T);  // bytes
  for (int j0 = 0; j0 + W <= n; j0 += W) {
    V v[S * E];  // v[c E + b], slot a: row E a + b, columns j0 + E c ..
    const char* p = reinterpret_cast<const char*>(base + j0);
    asm("" : "+r"(p));  // opaque: the W row addresses come from p by adds, not W induction variables
    slot_detail::load_block_slots<E, S>(v, p, step,
                                        std::make_integer_sequence<int, W>{});
    V r[W];
    constexpr auto seq = std::make_integer_sequence<int, W>{};
    using slot_detail::unpack;
#pragma GCC unroll 4
    for (int c = 0; c < S; ++c) {  // slot a of v[E c + b] lane d = row E a + b, column j0 + E c + d
      if constexpr (E == 4) {
        const V t0 = unpack<W, 4, 1, false>(v[E * c], v[E * c + 1], seq), t1 = unpack<W, 4, 1, true>(v[E * c], v[E * c + 1], seq);
        const V t2 = unpack<W, 4, 1, false>(v[E * c + 2], v[E * c + 3], seq), t3 = unpack<W, 4, 1, true>(v[E * c + 2], v[E * c + 3], seq);
        // the 64-bit pairs as doubles: GCC then emits vunpck{l,h}pd, not vshufps (Zen 4:
        // the block's loop 78 -> 48 TSC cycles at K16)
        typedef double D __attribute__((vector_size(sizeof(V))));
        constexpr auto half = std::make_integer_sequence<int, W / 2>{};
        using slot_detail::bits;
        auto pd = [](const V& x) __attribute__((always_inline)) { return bits<D>(x); };
        auto ps = [](const D& x) __attribute__((always_inline)) { return bits<V>(x); };
        r[4 * c] = ps(unpack<W / 2, 2, 1, false>(pd(t0), pd(t2), half));
        r[4 * c + 1] = ps(unpack<W / 2, 2, 1, true>(pd(t0), pd(t2), half));
        r[4 * c + 2] = ps(unpack<W / 2, 2, 1, false>(pd(t1), pd(t3), half));
        r[4 * c + 3] = ps(unpack<W / 2, 2, 1, true>(pd(t1), pd(t3), half));
      } else {
        r[2 * c] = unpack<W, 2, 1, false>(v[E * c], v[E * c + 1], seq);
        r[2 * c + 1] = unpack<W, 2, 1, true>(v[E * c], v[E * c + 1], seq);
      }
    }
    f(j0, static_cast<const V*>(r), W);
  }
  if (n % W) {  // the last n % W columns, zero-padded
    const int j0 = n - n % W;
    V r[W];
    for (int l = 0; l < W; ++l) {
      r[l] = V{};
      std::memcpy(&r[l], base + l * stride + j0, sizeof(T) * (n - j0));
    }
    transpose_block<T, W>(r);
    f(j0, static_cast<const V*>(r), n - j0);
  }
}
}  // namespace mimo_fast

using namespace mimo_fast;
typedef Lanes<float, 16>::type V;

template <int variant>
MIMO_FAST_AVX512 __attribute__((noinline)) double run(const float* g0, long stride, int K, int reps, V* L, int groups = 1) {
  const unsigned long long t0 = __rdtsc();
  for (int rep = 0; rep < reps; ++rep) {
    const float* g = g0 + (rep % groups) * 16 * stride;
    for (int i = 0; i < K; ++i) {
      auto f = [&](int j0, const V* r, int) __attribute__((always_inline)) {
#pragma GCC unroll 16
        for (int q = 0; q < 16; ++q) L[i * K + j0 + q] = r[q];
      };
      if (variant == 0) {
        const float* src[16];
        for (int l = 0; l < 16; ++l) src[l] = g + l * stride + i * K;
        rows_to_lanes_blocks<float, 16>(src, K, f);
      } else {
        strided_rows_to_lanes_blocks<float, 16>(g + i * K, stride, K, f);
      }
    }
  }
  return double(__rdtsc() - t0) / reps / (K * (K / 16));
}

typedef Lanes<float, 8>::type V8;
// two 8-lane halves: lanes 0-7 then 8-15, each an 8 x 8-column strided transpose (ymm), stored
// into the low / high 32 bytes of L's 64-byte elements.
MIMO_FAST_AVX512 __attribute__((noinline)) double run_halves(const float* g0, long stride, int K, int reps, V* L, int groups) {
  const unsigned long long t0 = __rdtsc();
  for (int rep = 0; rep < reps; ++rep) {
    const float* g = g0 + (rep % groups) * 16 * stride;
    for (int i = 0; i < K; ++i) {
      for (int h = 0; h < 2; ++h) {
        V8* out = reinterpret_cast<V8*>(L + i * K) + h;
        strided_rows_to_lanes_blocks<float, 8>(g + h * 8 * stride + i * K, stride, K, [&](int j0, const V8* r, int) __attribute__((always_inline)) {
#pragma GCC unroll 8
          for (int q = 0; q < 8; ++q) out[2 * (j0 + q)] = r[q];
        });
      }
    }
  }
  return double(__rdtsc() - t0) / reps / (K * (K / 16));
}
int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s K pad [groups]  (K a multiple of 16; groups: cycle over this many groups of 16 matrices)\n", argv[0]);
    return 2;
  }
  const int K = std::atoi(argv[1]);
  const long stride = long(K) * K + std::atol(argv[2]);
  const int groups = argc > 3 ? std::atoi(argv[3]) : 1;
  std::vector<float> g(16 * stride * groups + 64);
  for (size_t i = 0; i < g.size(); ++i) g[i] = float(i % 997);
  V* L = static_cast<V*>(std::aligned_alloc(64, sizeof(V) * K * K));
  V* M = static_cast<V*>(std::aligned_alloc(64, sizeof(V) * K * K));
  run<0>(g.data(), stride, K, 1, L);
  run<1>(g.data(), stride, K, 1, M);
  for (long e = 0; e < long(K) * K; ++e)
    for (int l = 0; l < 16; ++l)
      if (L[e][l] != M[e][l]) {
        std::printf("the two loops disagree at element %ld lane %d\n", e, l);
        return 1;
      }
  {
    V* N = static_cast<V*>(std::aligned_alloc(64, sizeof(V) * K * K));
    run_halves(g.data(), stride, K, 1, N, 1);
    int bad = 0;
    for (long e = 0; e < long(K) * K; ++e) for (int l = 0; l < 16; ++l) bad += L[e][l] != N[e][l];
    double best = 1e30;
    for (int t = 0; t < 9; ++t) { const double c = run_halves(g.data(), stride, K, 64000 / K, N, groups); best = c < best ? c : best; }
    std::printf("K%d pad %s groups %d halves: %.1f TSC cycles per 16 x 16 block\n", K, argv[2], groups, best);
    if (bad) {
      std::printf("halves disagrees with pointers at %d values\n", bad);
      return 1;
    }
  }
  for (int v = 0; v < 2; ++v) {
    double best = 1e30;
    for (int t = 0; t < 9; ++t) {
      const double c = v ? run<1>(g.data(), stride, K, 64000 / K, L, groups) : run<0>(g.data(), stride, K, 64000 / K, L, groups);
      best = c < best ? c : best;
    }
    std::printf("K%d pad %s groups %d %s: %.1f TSC cycles per 16 x 16 block\n", K, argv[2], groups, v ? "strided" : "pointers", best);
  }
}
