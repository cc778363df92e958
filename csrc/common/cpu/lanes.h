// Lane vectors for kernels that run one independent problem per SIMD lane (batched
// small linear algebra): GCC/Clang vector extensions, so one kernel body compiles to
// ymm code inside a target("avx2,fma") wrapper and to SSE2 code in the portable one.
// Kernel bodies are always_inline templates; each wrapper instantiates them under its
// own target, so the ISA is picked once per call with cpu_has_avx2_fma().
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "common/cpu/cpu_features.h"

#define MIMO_FAST_INLINE inline __attribute__((always_inline))
// Vector helpers are always inlined into their ISA wrapper, so no 32-byte vector ever
// crosses a call boundary compiled without AVX: the psabi note does not apply.
// Kernels rely on -std=gnu++17 (CMake's default) for -ffp-contract=fast, i.e. FMAs.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if defined(__x86_64__) || defined(__i386__)
#define MIMO_FAST_AVX2 __attribute__((target(MIMO_FAST_ISA_AVX2)))
#define MIMO_FAST_AVX512 __attribute__((target(MIMO_FAST_ISA_AVX512)))
#else  // other ISAs: the "avx2"/"avx512" wrappers are plain functions and are never selected
#define MIMO_FAST_AVX2
#define MIMO_FAST_AVX512
#endif

namespace mimo_fast {

// MIMO_FAST_CPU_PORTABLE=1 makes the lane kernels take their portable (SSE2) path even on
// an AVX2 machine, so tests can cover it. Read on every call (cheap next to a kernel).
inline bool force_portable() {
  const char* s = std::getenv("MIMO_FAST_CPU_PORTABLE");
  return s && s[0] == '1';
}

// The lane width a kernel call uses: the widest this CPU runs, less what
// MIMO_FAST_CPU_PORTABLE=1 (everything) or MIMO_FAST_CPU_DISABLE (named ISAs) switch off.
enum class LaneIsa { portable, avx2, avx512 };
inline LaneIsa lane_isa() {
  if (force_portable()) return LaneIsa::portable;
  if (cpu_has_avx512_core() && !cpu_isa_disabled("avx512")) return LaneIsa::avx512;
  if (cpu_has_avx2_fma() && !cpu_isa_disabled("avx2")) return LaneIsa::avx2;
  return LaneIsa::portable;
}

// The entry points of one lane kernel, `body<T, W>(const Args<T>&, int64_t begin, int64_t end)`,
// compiled per ISA (16/8/4 float lanes, 8/4/2 double), and name_for<T>(isa) to pick one.
#define MIMO_FAST_LANE_ENTRIES(name, Args, body)                                                           \
  MIMO_FAST_AVX512 void name##_avx512_f32(const Args<float>& a, int64_t b, int64_t e) { body<float, 16>(a, b, e); } \
  MIMO_FAST_AVX512 void name##_avx512_f64(const Args<double>& a, int64_t b, int64_t e) { body<double, 8>(a, b, e); } \
  MIMO_FAST_AVX2 void name##_avx2_f32(const Args<float>& a, int64_t b, int64_t e) { body<float, 8>(a, b, e); }       \
  MIMO_FAST_AVX2 void name##_avx2_f64(const Args<double>& a, int64_t b, int64_t e) { body<double, 4>(a, b, e); }     \
  void name##_sse_f32(const Args<float>& a, int64_t b, int64_t e) { body<float, 4>(a, b, e); }                        \
  void name##_sse_f64(const Args<double>& a, int64_t b, int64_t e) { body<double, 2>(a, b, e); }                      \
  template <typename T>                                                                                    \
  auto name##_for(LaneIsa isa) {                                                                           \
    if constexpr (sizeof(T) == 4)                                                                          \
      return isa == LaneIsa::avx512 ? name##_avx512_f32 : isa == LaneIsa::avx2 ? name##_avx2_f32 : name##_sse_f32; \
    else                                                                                                   \
      return isa == LaneIsa::avx512 ? name##_avx512_f64 : isa == LaneIsa::avx2 ? name##_avx2_f64 : name##_sse_f64; \
  }

template <typename T, int W> struct Lanes;
// 512-bit (AVX-512) lane groups
template <> struct Lanes<float, 16> { typedef float type __attribute__((vector_size(64))); };
template <> struct Lanes<double, 8> { typedef double type __attribute__((vector_size(64))); };
// 256-bit (AVX2) lane groups
template <> struct Lanes<float, 8> { typedef float type __attribute__((vector_size(32))); };
template <> struct Lanes<double, 4> { typedef double type __attribute__((vector_size(32))); };
// 128-bit (SSE2 baseline) lane groups
template <> struct Lanes<float, 4> { typedef float type __attribute__((vector_size(16))); };
template <> struct Lanes<double, 2> { typedef double type __attribute__((vector_size(16))); };

// Lane-wise square root, one vsqrtps/pd (sqrtps/pd for 16-byte lanes, the SSE2 path). GCC
// has no generic vector sqrt, its intrinsics cannot be inlined through these target-less
// templates, and a lane loop of std::sqrt is vectorised or not depending on unrelated code
// nearby (seen: one edit elsewhere turned the K16 factor's pivots into 16 scalar roots and
// the factor took 2.5x as long), hence the one instruction in asm. The operand's size picks
// xmm/ymm/zmm; a 64-byte lane vector only exists inside the AVX-512 wrappers.
// Clang checks an asm operand's size against the function the asm is written in, and these
// templates have no target of their own: it rejects 32- and 64-byte operands (GCC checks
// after inlining into the ISA wrapper). Clang builds therefore take the lane loop, which its
// vectoriser turns into one vsqrtps / vsqrtpd inside each wrapper (clang 14: as many zmm
// vsqrtps in the module as the GCC build has).
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__)
#define MIMO_FAST_LANE_ASM 1  // the lane helpers' inline asm: x86 with GCC (lane_transpose.h too)
#else
#define MIMO_FAST_LANE_ASM 0
#endif
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE V lane_sqrt(const V& x) {
  V r;
#if MIMO_FAST_LANE_ASM
  if constexpr (sizeof(V) == 16) {
    if constexpr (sizeof(T) == 4) asm("sqrtps %1, %0" : "=x"(r) : "x"(x));
    else asm("sqrtpd %1, %0" : "=x"(r) : "x"(x));
  } else {
    if constexpr (sizeof(T) == 4) asm("vsqrtps %1, %0" : "=v"(r) : "v"(x));
    else asm("vsqrtpd %1, %0" : "=v"(r) : "v"(x));
  }
#else
  for (int l = 0; l < W; ++l) r[l] = std::sqrt(x[l]);
#endif
  return r;
}

// True when every lane of a lane comparison (-1 or 0 per lane, e.g. `d > T(0)`) is set: the
// AND of its halves, halved down to eight bytes. GCC compiled `for (l) all &= m[l] != 0` to
// one extract, test and set per lane (16 for AVX-512 float), at every Cholesky pivot.
// (Overloads, not a recursive template: GCC drops the vector attribute of a typedef used
// as a template argument.)
namespace lane_detail {
typedef int64_t I64x2 __attribute__((vector_size(16)));
typedef int64_t I64x4 __attribute__((vector_size(32)));
typedef int64_t I64x8 __attribute__((vector_size(64)));
template <typename H, typename F>
MIMO_FAST_INLINE H and_halves(const F& v) {
  H lo, hi;
  __builtin_memcpy(&lo, &v, sizeof(H));
  __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(H), sizeof(H));
  return lo & hi;
}
}  // namespace lane_detail
template <typename M>
MIMO_FAST_INLINE bool lane_all(const M& m) {
  using namespace lane_detail;
  I64x2 v;
  if constexpr (sizeof(M) == 64) v = and_halves<I64x2>(and_halves<I64x4>(m));
  else if constexpr (sizeof(M) == 32) v = and_halves<I64x2>(m);
  else __builtin_memcpy(&v, &m, 16);
  static_assert(sizeof(M) == 16 || sizeof(M) == 32 || sizeof(M) == 64, "lane vectors are 16, 32 or 64 bytes");
  return (v[0] & v[1]) == -1;
}

// Unaligned vector load/store from scalar memory.
template <typename V, typename T>
MIMO_FAST_INLINE V load_u(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
MIMO_FAST_INLINE void store_u(T* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// Heap array of lane vectors, 64-byte aligned (std::vector does not promise the
// vector types' 32-byte alignment with every allocator/ABI combination).
template <typename V>
class LaneBuf {
 public:
  LaneBuf() = default;
  explicit LaneBuf(size_t n) { resize(n); }
  LaneBuf(const LaneBuf&) = delete;
  LaneBuf& operator=(const LaneBuf&) = delete;
  ~LaneBuf() { std::free(p_); }
  void resize(size_t n) {
    std::free(p_);
    p_ = nullptr;
    n_ = n;
    if (n && posix_memalign(reinterpret_cast<void**>(&p_), 64, n * sizeof(V))) throw std::bad_alloc();
  }
  bool empty() const { return n_ == 0; }
  V* data() { return p_; }
  const V* data() const { return p_; }
  V& operator[](size_t i) { return p_[i]; }
  const V& operator[](size_t i) const { return p_[i]; }

 private:
  V* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace mimo_fast
