// How close do ep_lmmse's CPU kernels run to this core's limits? (README.md beside this file.)
//   peak    independent zmm / ymm FMA chains: FMAs per second (the compute roofline)
//   bw KB   streaming read bandwidth over a KB-kilobyte buffer (L2, L3, DRAM)
//   phases  the lane factor (with and without the forward sweep) and the var inverse of one
//           L2-resident group of 16 float matrices, at K 16, 32, 64: TSC cycles (median of
//           2000 calls) and the share of one zmm FMA per core cycle they reach
// Build from the repository root (AVX-512 machine, GCC >= 12), compiled like the op:
//   g++ -std=gnu++17 -O3 -fno-math-errno -I csrc experiments/ep_lmmse_roofline/roofline.cpp -o /tmp/roofline
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ep_lmmse/cpu/lane_cholesky.h"

using namespace mimo_fast;
typedef Lanes<float, 16>::type V;

static double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// 12 independent chains of vfmadd (latency 4: enough chains to keep every FMA unit busy),
// each from its own start so the compiler cannot merge them.
template <typename U>
MIMO_FAST_AVX512 __attribute__((noinline)) double fma_rate(long n) {
  volatile float seed = 0.1f;
  U a, b;
  for (unsigned l = 0; l < sizeof(U) / 4; ++l) a[l] = b[l] = 0.5f;
  U r0 = a * seed, r1 = r0 + 1, r2 = r0 + 2, r3 = r0 + 3, r4 = r0 + 4, r5 = r0 + 5;
  U r6 = r0 + 6, r7 = r0 + 7, r8 = r0 + 8, r9 = r0 + 9, r10 = r0 + 10, r11 = r0 + 11;
  const double t0 = now();
  for (long i = 0; i < n; ++i) {
#define MIMO_FAST_FMA(r) r = a * r + b;
    MIMO_FAST_FMA(r0) MIMO_FAST_FMA(r1) MIMO_FAST_FMA(r2) MIMO_FAST_FMA(r3) MIMO_FAST_FMA(r4) MIMO_FAST_FMA(r5)
    MIMO_FAST_FMA(r6) MIMO_FAST_FMA(r7) MIMO_FAST_FMA(r8) MIMO_FAST_FMA(r9) MIMO_FAST_FMA(r10) MIMO_FAST_FMA(r11)
#undef MIMO_FAST_FMA
  }
  const double t = now() - t0;
  const U sum = r0 + r1 + r2 + r3 + r4 + r5 + r6 + r7 + r8 + r9 + r10 + r11;
  return sum[0] == -1 ? 0 : 12.0 * n / t;
}

MIMO_FAST_AVX512 __attribute__((noinline)) double read_bw(size_t kb, int reps) {
  const size_t n = kb * 256;
  float* a = static_cast<float*>(std::aligned_alloc(64, n * 4));
  for (size_t i = 0; i < n; ++i) a[i] = float(i & 7);
  V s0{}, s1{}, s2{}, s3{};
  const double t0 = now();
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < n; i += 64) {
      s0 += *reinterpret_cast<const V*>(a + i);
      s1 += *reinterpret_cast<const V*>(a + i + 16);
      s2 += *reinterpret_cast<const V*>(a + i + 32);
      s3 += *reinterpret_cast<const V*>(a + i + 48);
    }
  const double t = now() - t0;
  const V s = s0 + s1 + s2 + s3;
  std::free(a);
  return s[0] == -1 ? 0 : double(n) * 4 * reps / t;
}

static double tsc_per_ns() {
  const double t0 = now();
  const unsigned long long c0 = __rdtsc();
  while (now() - t0 < 0.2) {
  }
  return (__rdtsc() - c0) / ((now() - t0) * 1e9);
}

static double median(std::vector<double> t) {
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// TSC cycles of each of `reps` factorisations of A (copied into L first, untimed).
MIMO_FAST_AVX512 __attribute__((noinline)) double time_factor(const V* A, V* L, V* dinv, V* y, int K, bool sweep, int reps) {
  std::vector<double> t(reps);
  int32_t info[16];
  for (int r = 0; r < reps; ++r) {
    std::memcpy(L, A, sizeof(V) * ep::tri(K));
    for (int i = 0; i < K; ++i) y[i] = V{} + 1.0f;
    const unsigned long long t0 = __rdtsc();
    ep::cholesky<float, 16>(L, dinv, K, info, sweep ? y : nullptr);
    t[r] = double(__rdtsc() - t0);
  }
  return median(t);
}

MIMO_FAST_AVX512 __attribute__((noinline)) double time_inverse(const V* L, const V* dinv, V* X, V* var, int K, int reps) {
  std::vector<double> t(reps);
  for (int r = 0; r < reps; ++r) {
    const unsigned long long t0 = __rdtsc();
    ep::inverse_var<float, 16>(L, dinv, K, X, var);
    t[r] = double(__rdtsc() - t0);
  }
  return median(t);
}

void phases(int K, double core_per_tsc) {
  using ep::tri;
  LaneBuf<V> A(tri(K)), L(tri(K)), dinv(K), X(tri(K)), var(K), y(K);
  unsigned s = 1;
  for (int i = 0; i < K; ++i)
    for (int j = 0; j <= i; ++j)
      for (int l = 0; l < 16; ++l) {
        s = s * 1103515245u + 12345u;
        A[tri(i) + j][l] = (i == j ? K : 0) + ((s >> 8) & 0xffff) / 65536.0f - 0.5f;
      }
  const double f_sweep = time_factor(A.data(), L.data(), dinv.data(), y.data(), K, true, 2000);
  const double f_plain = time_factor(A.data(), L.data(), dinv.data(), y.data(), K, false, 2000);
  const double inv = time_inverse(L.data(), dinv.data(), X.data(), var.data(), K, 2000);
  // lane FMAs: the factor's dots and pivots' squares, the sweep, X = L^{-1} and the squares
  double n_factor = 0, n_sweep = 0, n_inv = 0;
  for (int i = 0; i < K; ++i) n_factor += i * (i - 1) / 2.0 + i, n_sweep += i;
  for (int c = 0; c < K; ++c)
    for (int i = c + 1; i < K; ++i) n_inv += i - c;
  n_inv += tri(K);
  auto share = [&](double fmas, double tsc) { return 100.0 * fmas / (tsc * core_per_tsc); };
  std::printf("K%d: factor %.0f TSC (%.0f%% of 1 FMA/cycle), factor + sweep %.0f (%.0f%%), inverse %.0f (%.0f%%)\n", K,
              f_plain, share(n_factor, f_plain), f_sweep, share(n_factor + n_sweep, f_sweep), inv, share(n_inv, inv));
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (!std::strcmp(mode, "peak")) {
    typedef float Y __attribute__((vector_size(32)));
    std::printf("zmm FMA: %.2f G/s; ymm FMA: %.2f G/s\n", fma_rate<V>(100000000) * 1e-9, fma_rate<Y>(100000000) * 1e-9);
  } else if (!std::strcmp(mode, "bw") && argc > 2) {
    const size_t kb = std::atol(argv[2]);
    std::printf("%zu KB: %.1f GB/s\n", kb, read_bw(kb, int(std::max<size_t>(1, (1u << 20) / kb))) * 1e-9);
  } else if (!std::strcmp(mode, "phases")) {
    // core cycles per TSC cycle from the zmm FMA rate (one zmm FMA per core cycle on Zen 4)
    const double core_ghz = fma_rate<V>(100000000) * 1e-9, tsc_ghz = tsc_per_ns();
    std::printf("core %.2f GHz (from the zmm FMA rate), TSC %.2f GHz\n", core_ghz, tsc_ghz);
    for (int K : {16, 32, 64}) phases(K, core_ghz / tsc_ghz);
  } else {
    std::fprintf(stderr, "usage: %s peak | bw KB | phases\n", argv[0]);
    return 2;
  }
  return 0;
}
