// Runtime CPU feature detection. The wheel is compiled for baseline x86-64; kernels
// compile their AVX2/FMA variants with target attributes and pick one through these
// queries at run time, so one binary runs on any x86-64 and is fast on modern ones.
#pragma once
#include <cstdlib>
#include <cstring>

// Target strings of the two accelerated ISA levels, and pragmas that compile a region of
// code (e.g. a kernel header included into a namespace) for one of them. AVX-512 is the
// Skylake-server set (see cpu_has_avx512_core).
#define MIMO_FAST_ISA_AVX2 "avx2,fma"
#define MIMO_FAST_ISA_AVX512 "avx512f,avx512vl,avx512bw,avx512dq,fma"
#define MIMO_FAST_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define MIMO_FAST_TARGET_BEGIN(isa) MIMO_FAST_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define MIMO_FAST_TARGET_END MIMO_FAST_PRAGMA(clang attribute pop)
#else
#define MIMO_FAST_TARGET_BEGIN(isa) MIMO_FAST_PRAGMA(GCC push_options) MIMO_FAST_PRAGMA(GCC target(isa))
#define MIMO_FAST_TARGET_END MIMO_FAST_PRAGMA(GCC pop_options)
#endif

namespace mimo_fast {

// MIMO_FAST_CPU_DISABLE="avx512[,avx2]" makes the kernels treat the CPU as lacking those
// ISAs (as on an older CPU): lets the tests cover every dispatch path, auto's fallback and
// the error for a forced, unavailable ISA on any machine. Read per call (a getenv).
inline bool cpu_isa_disabled(const char* name) {
  const char* env = std::getenv("MIMO_FAST_CPU_DISABLE");
  if (!env) return false;
  const size_t n = std::strlen(name);
  for (const char* p = env; *p;) {
    const char* end = std::strchr(p, ',');
    const size_t len = end ? static_cast<size_t>(end - p) : std::strlen(p);
    if (len == n && std::strncmp(p, name, n) == 0) return true;
    if (!end) break;
    p = end + 1;
  }
  return false;
}

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

inline bool cpu_has_avx512f() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
  }();
  return has;
#else
  return false;
#endif
}

// AVX-512 with the Skylake-server subsets (F, VL, BW, DQ): what code compiled under
// target("avx512f,avx512vl,avx512bw,avx512dq,fma") may use. Checking F alone would let
// that code run on a CPU with F but not VL/BW/DQ (Xeon Phi). libgcc's cpu model also
// requires the OS to save the zmm/opmask state (XCR0) before it reports these.
inline bool cpu_has_avx512_core() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

}  // namespace mimo_fast
