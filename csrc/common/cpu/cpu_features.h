// Runtime CPU feature detection. The wheel is compiled for baseline x86-64; kernels
// compile their AVX2/FMA variants with target attributes and pick one through these
// queries at run time, so one binary runs on any x86-64 and is fast on modern ones.
#pragma once

namespace mimo_fast {

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
