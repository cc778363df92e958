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

}  // namespace mimo_fast
