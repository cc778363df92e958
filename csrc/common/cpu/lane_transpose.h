// Moving W rows of memory (one per SIMD lane, e.g. row i of W matrices) into lane
// vectors and back, W x W blocks transposed in registers. A scalar element-by-element
// copy costs about two cycles per element and dominated the lane kernels' time at
// K >= 16 (ep_lmmse: 3.5 of 6.5 ms at B1024 K64); this is one vector load or store per
// W elements plus W log2(W) two-input shuffles per W x W block (loading: two half-width
// loads per vector and W (log2(W) - 1) shuffles).
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "common/cpu/lanes.h"

namespace mimo_fast {
namespace lane_detail {

// One stage of the in-register transpose: swap the off-diagonal H x H blocks inside
// every 2H x 2H block. With r[i] the rows of a W x W matrix, for each pair (i, i + H),
// i & H == 0:  r[i]' = lanes p of r[i] where p & H == 0, else lane p - H of r[i + H];
//              r[i + H]' = lane p + H of r[i] where p & H == 0, else lane p of r[i + H].
// The stages H = W/2, ..., 1 each swap one bit of the row index with the same bit of the
// column index, so after all of them r holds the transpose.
// GCC has __builtin_shufflevector from version 12; older GCCs take __builtin_shuffle with an
// integer mask vector of the same size (MIMO_FAST_FORCE_BUILTIN_SHUFFLE tests that path).
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && !defined(MIMO_FAST_FORCE_BUILTIN_SHUFFLE)
#define MIMO_FAST_SHUFFLE(V, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define MIMO_FAST_HALF_LOADS 1  // see rows_to_lanes_blocks
// The W-lane vector (a, b) of two W/2-lane halves (__builtin_shuffle cannot widen, and a
// memcpy join measured slower than the plain loads: without it the half loads are off).
template <typename V, typename H, int... P>
MIMO_FAST_INLINE V concat(H a, H b, std::integer_sequence<int, P...>) {
  return __builtin_shufflevector(a, b, P...);
}
#else
#define MIMO_FAST_HALF_LOADS 0
template <typename V> struct ShuffleMask {
  typedef decltype(+V{}[0]) T;
  typedef typename std::conditional<sizeof(T) == 4, int, long long>::type I;
  typedef I type __attribute__((vector_size(sizeof(V))));
};
#define MIMO_FAST_SHUFFLE(V, a, b, ...) __builtin_shuffle(a, b, typename ShuffleMask<V>::type{__VA_ARGS__})
#endif

template <int W, int H, typename V, int... P>
MIMO_FAST_INLINE void swap_blocks(V* r, std::integer_sequence<int, P...>) {
  for (int i = 0; i < W; ++i) {
    if (i & H) continue;
    const V a = r[i], b = r[i + H];
    r[i] = MIMO_FAST_SHUFFLE(V, a, b, ((P & H) ? W + P - H : P)...);
    r[i + H] = MIMO_FAST_SHUFFLE(V, a, b, ((P & H) ? W + P : P + H)...);
  }
}

template <int W, int H, typename V>
MIMO_FAST_INLINE void transpose_stages(V* r) {
  if constexpr (H >= 1) {
    swap_blocks<W, H>(r, std::make_integer_sequence<int, W>{});
    transpose_stages<W, H / 2>(r);
  }
}

// The first m (0 < m < W) elements at p as a W-lane vector, zeros after, reading nothing past
// p[m - 1]; store_first writes them back, touching nothing past p[m - 1]. On x86 with GCC
// these are masked loads and stores (AVX-512: vmovups under a mask register; AVX2 loads:
// vmaskmovps); otherwise (other CPUs, clang: see lane_sqrt in lanes.h), and for AVX2 stores
// (microcoded on some AMD cores), a copy.
// A copy into a zeroed vector read back whole stalls on store forwarding (one wide load
// over narrower stores): at K 8, where every row is one such remainder block, the AVX-512
// float forward took 1.54 ms against 0.94 ms with AVX2 lanes (8 x 8 blocks, none left over),
// B16384, one core, Zen 4. The asm operands name the whole vector's bytes so that the
// compiler orders them with other accesses; only the first m are read or written.
struct VectorBytes {  // sizeof(V) bytes, for asm memory operands
  template <typename V>
  using of = char[sizeof(V)];
};
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE V load_first(const T* p, int m) {
  V r;
#if MIMO_FAST_LANE_ASM
  // Masks count 32-bit elements whatever T is (a double is two), so one instruction serves both.
  const int words = m * static_cast<int>(sizeof(T) / 4);
  const auto& mem = *reinterpret_cast<const VectorBytes::of<V>*>(p);
  if constexpr (sizeof(V) == 64) {
    const unsigned short k = static_cast<unsigned short>((1u << words) - 1);
    asm("vmovups %1, %0%{%2%}%{z%}" : "=v"(r) : "m"(mem), "Yk"(k));
    return r;
  } else if constexpr (sizeof(V) == 32) {
    typedef int32_t IV __attribute__((vector_size(32)));
    const IV word{0, 1, 2, 3, 4, 5, 6, 7};
    const IV mask = word < words;
    asm("vmaskmovps %1, %2, %0" : "=x"(r) : "m"(mem), "x"(mask));
    return r;
  }
#endif
  r = V{};
  std::memcpy(&r, p, sizeof(T) * m);
  return r;
}
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void store_first(T* p, const V& v, int m) {
#if MIMO_FAST_LANE_ASM
  if constexpr (sizeof(V) == 64) {
    const unsigned short k = static_cast<unsigned short>((1u << (m * static_cast<int>(sizeof(T) / 4))) - 1);
    asm("vmovups %1, %0%{%2%}" : "+m"(*reinterpret_cast<VectorBytes::of<V>*>(p)) : "v"(v), "Yk"(k));
    return;
  }
#endif
  std::memcpy(p, &v, sizeof(T) * m);
}

}  // namespace lane_detail

// r[0..W-1]: rows of a W x W block -> its columns, in place.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void transpose_block(V* r) {
  lane_detail::transpose_stages<W, W / 2>(r);
}

// f(j0, r, m) for each block of columns j0..j0+m-1, with r[q] column j0 + q (lane l of it
// src[l][j0 + q]; src[l]: n elements, any alignment) still in registers: m = W except for a
// last, zero-padded block when W does not divide n. Every full block is loaded, transposed
// and handed over with compile-time indices only, so r never leaves the registers: the
// caller sees the block at once and can pick per block what to do with its columns (see
// ep_lmmse's load_system).
template <typename T, int W, typename F, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void rows_to_lanes_blocks(const T* const* src, int n, F&& f) {
  int j0 = 0;
  for (; j0 + W <= n; j0 += W) {
    V r[W];
#if MIMO_FAST_HALF_LOADS
    if constexpr (W >= 4) {
      // The first stage (H = W/2) done by the loads: r[l] = (low half of row l, low half of
      // row l + W/2), r[l + W/2] = the high halves, each a half-width load plus one insert
      // from memory (which need not use the shuffle port, unlike the stage's two-input
      // shuffles). B1024 K64 float, AVX-512, one core, C++ harness: the load phase
      // (load_system) 0.84-0.89 -> 0.78-0.83 ms; K16 B4096 0.27 -> 0.24 ms.
      typedef T Half __attribute__((vector_size(sizeof(V) / 2)));
      constexpr int h = W / 2;
#pragma GCC unroll 16
      for (int l = 0; l < h; ++l) {
        const Half a0 = load_u<Half>(src[l] + j0), a1 = load_u<Half>(src[l] + j0 + h);
        const Half b0 = load_u<Half>(src[l + h] + j0), b1 = load_u<Half>(src[l + h] + j0 + h);
        r[l] = lane_detail::concat<V>(a0, b0, std::make_integer_sequence<int, W>{});
        r[l + h] = lane_detail::concat<V>(a1, b1, std::make_integer_sequence<int, W>{});
      }
      lane_detail::transpose_stages<W, W / 4>(r);
    } else
#endif
    {
#pragma GCC unroll 16
      for (int l = 0; l < W; ++l) r[l] = load_u<V>(src[l] + j0);
      transpose_block<T, W>(r);
    }
    f(j0, r, W);
  }
  if (j0 < n) {  // the last n - j0 < W columns, zero-padded
    const int m = n - j0;
    V r[W];
    for (int l = 0; l < W; ++l) r[l] = lane_detail::load_first<T, W>(src[l] + j0, m);
    transpose_block<T, W>(r);
    f(j0, r, m);
  }
}

// f(j, column j) for j < n, where lane l of column j is src[l][j] (rows_to_lanes_blocks,
// column by column).
template <typename T, int W, typename F, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void rows_to_lanes_each(const T* const* src, int n, F&& f) {
  rows_to_lanes_blocks<T, W>(src, n, [&f](int j0, const V* r, int m) __attribute__((always_inline)) {
    if (m == W) {
#pragma GCC unroll 16
      for (int q = 0; q < W; ++q) f(j0 + q, r[q]);
    } else {
      for (int q = 0; q < m; ++q) f(j0 + q, r[q]);
    }
  });
}

// out[j][l] = src[l][j] for j < n and every lane l.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void rows_to_lanes(const T* const* src, int n, V* out) {
  rows_to_lanes_each<T, W>(src, n, [out](int j, V v) __attribute__((always_inline)) { out[j] = v; });
}

// dst[l][j] = in[j][l] for j < n and every lane l: the inverse of rows_to_lanes.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void lanes_to_rows(const V* in, int n, T* const* dst) {
  V r[W];
  int j0 = 0;
  for (; j0 + W <= n; j0 += W) {
    for (int q = 0; q < W; ++q) r[q] = in[j0 + q];
    transpose_block<T, W>(r);
    for (int l = 0; l < W; ++l) store_u(dst[l] + j0, r[l]);
  }
  if (j0 < n) {
    const int m = n - j0;
    for (int q = 0; q < W; ++q) r[q] = q < m ? in[j0 + q] : V{};
    transpose_block<T, W>(r);
    for (int l = 0; l < W; ++l) lane_detail::store_first<T, W>(dst[l] + j0, r[l], m);
  }
}

}  // namespace mimo_fast
