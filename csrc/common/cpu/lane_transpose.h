// Moving W rows of memory (one per SIMD lane, e.g. row i of W matrices) into lane
// vectors and back, W x W blocks transposed in registers. A scalar element-by-element
// copy costs about two cycles per element and dominated the lane kernels' time at
// K >= 16 (ep_lmmse: 3.5 of 6.5 ms at B1024 K64); this is one vector load or store per
// W elements plus W log2(W) two-input shuffles per W x W block.
#pragma once
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
#else
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

}  // namespace lane_detail

// r[0..W-1]: rows of a W x W block -> its columns, in place.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void transpose_block(V* r) {
  lane_detail::transpose_stages<W, W / 2>(r);
}

// f(j, column j) for j < n, where lane l of column j is src[l][j] (src[l]: n elements, any
// alignment): each W x W block is transposed in registers and handed over column by column,
// so a caller that consumes the columns at once (ep_lmmse's load_system) never stores and
// reloads them.
template <typename T, int W, typename F, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void rows_to_lanes_each(const T* const* src, int n, F&& f) {
  V r[W];
  int j0 = 0;
  for (; j0 + W <= n; j0 += W) {
    for (int l = 0; l < W; ++l) r[l] = load_u<V>(src[l] + j0);
    transpose_block<T, W>(r);
    for (int q = 0; q < W; ++q) f(j0 + q, r[q]);
  }
  if (j0 < n) {  // the last n - j0 < W columns, zero-padded
    const int m = n - j0;
    for (int l = 0; l < W; ++l) {
      r[l] = V{};
      std::memcpy(&r[l], src[l] + j0, sizeof(T) * m);
    }
    transpose_block<T, W>(r);
    for (int q = 0; q < m; ++q) f(j0 + q, r[q]);
  }
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
    for (int l = 0; l < W; ++l) std::memcpy(dst[l] + j0, &r[l], sizeof(T) * m);
  }
}

}  // namespace mimo_fast
