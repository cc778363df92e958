// Does reading one row from each of 16 matrices that lie a multiple of 4 KB apart cost the
// ep_lmmse load phase its speed? Times the load loop's core (rows_to_lanes_blocks on 16
// float matrices of K x K, every row i, every 16 x 16 block) on one L2-resident group, with
// the matrices back to back (as the op gets them) or `pad` floats further apart, in TSC
// cycles per block (the best of 7 repeats). Modes: sum (the block's columns are summed: the
// reads and transposes only), store (written to a K x K lane buffer, as load_system does),
// copy-store (each matrix first copied whole, in address order, to a stride one line
// longer; then as store). AVX-512 only. Build and run (from the repository root):
//   g++ -std=gnu++17 -O3 -fno-math-errno -I csrc experiments/ep_lmmse_load_sets/load_sets.cpp -o /tmp/load_sets
//   /tmp/load_sets K pad mode
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <x86intrin.h>

#include "common/cpu/lane_transpose.h"
#include "common/cpu/lanes.h"

using namespace mimo_fast;
typedef Lanes<float, 16>::type V;

__attribute__((target(MIMO_FAST_ISA_AVX512), noinline)) double cycles_per_block(
    const float* g, long stride, int K, int reps, int mode, V* L, float* copy) {
  const float* src[16];
  V acc0{}, acc1{};
  const unsigned long long t0 = __rdtsc();
  for (int rep = 0; rep < reps; ++rep) {
    const float* m = g;
    long s = stride;
    if (mode == 2) {
      s = long(K) * K + 16;
      for (int l = 0; l < 16; ++l)
        for (long c = 0; c < long(K) * K; c += 16) store_u(copy + l * s + c, load_u<V>(g + l * stride + c));
      m = copy;
    }
    for (int i = 0; i < K; ++i) {
      for (int l = 0; l < 16; ++l) src[l] = m + l * s + i * K;
      rows_to_lanes_blocks<float, 16>(src, K, [&](int j0, const V* r, int) __attribute__((always_inline)) {
        if (mode == 0) {
#pragma GCC unroll 16
          for (int q = 0; q < 16; q += 2) {
            acc0 += r[q];
            acc1 += r[q + 1];
          }
        } else {
#pragma GCC unroll 16
          for (int q = 0; q < 16; ++q) L[i * K + j0 + q] = r[q];
        }
      });
    }
  }
  const unsigned long long t1 = __rdtsc();
  float sum = 0;
  for (int l = 0; l < 16; ++l) sum += acc0[l] + acc1[l];
  if (sum == 12345.f) std::printf(" ");  // keeps the sums alive
  return double(t1 - t0) / reps / (K * (K / 16));
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s K pad sum|store|copy-store  (K a multiple of 16)\n", argv[0]);
    return 2;
  }
  const int K = std::atoi(argv[1]);
  const long pad = std::atol(argv[2]);
  const int mode = !std::strcmp(argv[3], "sum") ? 0 : !std::strcmp(argv[3], "store") ? 1 : 2;
  const long stride = long(K) * K + pad;
  std::vector<float> g(16 * stride + 64, 1.0f);
  V* L = static_cast<V*>(std::aligned_alloc(64, sizeof(V) * K * K));
  float* copy = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * 16 * (long(K) * K + 16)));
  double best = 1e30;
  for (int t = 0; t < 7; ++t) {
    const double c = cycles_per_block(g.data(), stride, K, 32000 / K, mode, L, copy);
    best = c < best ? c : best;
  }
  std::printf("K%d pad %ld %s: %.1f TSC cycles per 16 x 16 block\n", K, pad, argv[3], best);
}
