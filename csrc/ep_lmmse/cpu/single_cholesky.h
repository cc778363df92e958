// One-matrix dense kernels for ep_lmmse (used where a lane group would be mostly idle):
// right-looking Cholesky on the row-major upper factor U = L^T, whose updates, the
// forward solve and the rows of Z = U^{-1} are axpys over contiguous rows (vectorised by
// the compiler under the caller's target); the remaining dot products use W-wide
// accumulators. Used by csrc/ep_lmmse/cpu/ep_lmmse.cpp.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/cpu/lanes.h"

namespace mimo_fast {
namespace ep {

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE T dot(const T* x, const T* y, int n) {
  V s0{}, s1{};
  int k = 0;
  for (; k + 2 * W <= n; k += 2 * W) {
    s0 += load_u<V>(x + k) * load_u<V>(y + k);
    s1 += load_u<V>(x + k + W) * load_u<V>(y + k + W);
  }
  for (; k + W <= n; k += W) s0 += load_u<V>(x + k) * load_u<V>(y + k);
  s0 += s1;
  T s = 0;
  for (int l = 0; l < W; ++l) s += s0[l];
  for (; k < n; ++k) s += x[k] * y[k];
  return s;
}

// U = chol(sym(g) + diag(lm))^T, row-major upper; returns info (first bad pivot -> 1).
template <typename T>
MIMO_FAST_INLINE int32_t factor_single(const T* g, const T* lm, int K, T* U) {
  for (int i = 0; i < K; ++i) {
    for (int j = i + 1; j < K; ++j) U[i * K + j] = T(0.5) * (g[i * K + j] + g[j * K + i]);
    U[i * K + i] = T(0.5) * (g[i * K + i] + g[i * K + i]) + lm[i];
  }
  int32_t info = 0;
  for (int j = 0; j < K; ++j) {
    T* Uj = U + j * K;
    T d = Uj[j];
    if (!(d > T(0))) {
      if (info == 0) info = j + 1;
      d = T(1);
    }
    d = std::sqrt(d);
    Uj[j] = d;
    const T inv = T(1) / d;
    for (int k = j + 1; k < K; ++k) Uj[k] *= inv;
    for (int k = j + 1; k < K; ++k) {
      const T f = Uj[k];
      T* Uk = U + k * K;
      for (int l = k; l < K; ++l) Uk[l] -= f * Uj[l];
    }
  }
  return info;
}

// x <- A^{-1} x = U^{-1} U^{-T} x.
template <typename T, int W>
MIMO_FAST_INLINE void solve_single(const T* U, int K, T* x) {
  for (int j = 0; j < K; ++j) {
    const T* Uj = U + j * K;
    const T yj = x[j] / Uj[j];
    x[j] = yj;
    for (int k = j + 1; k < K; ++k) x[k] -= Uj[k] * yj;
  }
  for (int j = K - 1; j >= 0; --j) {
    const T* Uj = U + j * K;
    x[j] = (x[j] - dot<T, W>(Uj + j + 1, x + j + 1, K - j - 1)) / Uj[j];
  }
}

// Rows of Z = U^{-1} (row i valid from column i); var_i = |Z_i|^2 when var is given.
template <typename T>
MIMO_FAST_INLINE void inverse_single(const T* U, int K, T* Z, T* var) {
  for (int i = K - 1; i >= 0; --i) {
    const T* Ui = U + i * K;
    T* zi = Z + i * K;
    for (int k = i; k < K; ++k) zi[k] = T(0);
    for (int j = i + 1; j < K; ++j) {
      const T f = Ui[j];
      const T* zj = Z + j * K;
      for (int k = j; k < K; ++k) zi[k] += f * zj[k];
    }
    const T inv = T(1) / Ui[i];
    zi[i] = inv;
    T acc = inv * inv;
    for (int k = i + 1; k < K; ++k) {
      zi[k] *= -inv;
      acc += zi[k] * zi[k];
    }
    if (var) var[i] = acc;
  }
}

}  // namespace ep
}  // namespace mimo_fast
