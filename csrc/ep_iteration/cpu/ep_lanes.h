// Lane helpers of the EP iteration kernels (ep_iteration.cpp, ep_update.cpp): W nodes, one
// per SIMD lane (common/cpu/lanes.h). Formulas: mimo_fast/ops/ep_iteration.py. The exponentials
// use exp_lanes, not libm: a scalar exp per (node, level) cost ~1.2 ms of an EP iteration
// at B = 4096, K = 16, L = 4.
#pragma once
#include <cstdint>

#include "common/cpu/lanes.h"

namespace mimo_fast {
namespace ep {

// Exponents more than 80 below a node's largest are clamped (the reference's rule): their
// weight e^-80 changes no sum, and exp stays in the normal range of float and double.
constexpr double kExpFloor = -80.0;

template <typename T> struct ExpBits;
template <> struct ExpBits<float> {
  typedef int32_t I;
  static constexpr int mant = 23, bias = 127;
  static constexpr float magic = 12582912.0f;  // 1.5 * 2^23
};
template <> struct ExpBits<double> {
  typedef int64_t I;
  static constexpr int mant = 52, bias = 1023;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
};

// exp(x) for every lane, x in [-80, 0]: x = n ln2 + r (Cody-Waite, |r| <= ln2 / 2), exp(r)
// by its Taylor polynomial (degree 7 for float, 13 for double: truncation below half an
// ulp), times 2^n built in the exponent field. Rounding t to n with the 1.5 * 2^mant magic
// leaves n in the low mantissa bits of t + magic, so no float->int conversion is needed
// (AVX2 has none for int64); (bits + bias) << mant then keeps exactly n + bias.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE V exp_lanes(const V& x) {
  typedef typename ExpBits<T>::I I;
  typedef I IV __attribute__((vector_size(sizeof(V))));
  const T magic = ExpBits<T>::magic;
  const V y = x * T(1.4426950408889634) + magic;
  const V n = y - magic;
  const V r = (x - n * T(0.693145751953125)) - n * T(1.42860682030941723212e-6);
  V p;
  if constexpr (sizeof(T) == 4) {
    p = V{} + T(1.0 / 5040);
    p = p * r + T(1.0 / 720);
    p = p * r + T(1.0 / 120);
    p = p * r + T(1.0 / 24);
    p = p * r + T(1.0 / 6);
    p = p * r + T(0.5);
  } else {
    p = V{} + T(1.0 / 6227020800.0);
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
  }
  p = p * r + T(1);
  p = p * r + T(1);
  const IV scale = (IV(y) + I(ExpBits<T>::bias)) << ExpBits<T>::mant;   // vector casts: bit casts
  return p * V(scale);
}

template <typename V>
MIMO_FAST_INLINE V vmax(const V& a, const V& b) { return a > b ? a : b; }

// The softmax weights of exponents z[0..L) (overwritten with e^(z - max), clamped), and
// their sum.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE V softmax_weights(V* z, int L) {
  V mx = z[0];
  for (int j = 1; j < L; ++j) mx = vmax(mx, z[j]);
  V s = V{};
  for (int j = 0; j < L; ++j) {
    z[j] = exp_lanes<T, W>(vmax(z[j] - mx, V{} + T(kExpFloor)));
    s += z[j];
  }
  return s;
}

// (8)-(10) for W nodes: q = softmax(z), z clobbered; `kept` lanes (all bits set) keep
// (lam, gam) as do lanes where lam' is not > 0.
template <typename T, int W, typename V = typename Lanes<T, W>::type,
          typename M = decltype(V{} > V{})>
MIMO_FAST_INLINE void update_lanes(const V& x, const V& v, V& lam, V& gam, V* z, const V* lev, int L, const M& kept,
                                  T eta, T v_min) {
  // reciprocals instead of the six divisions of the formulas (a division costs ~5 FMAs)
  const V r0 = T(1) / softmax_weights<T, W>(z, L);
  V s1 = V{};
  for (int j = 0; j < L; ++j) s1 += z[j] * lev[j];
  const V x_hat = s1 * r0;
  V s2 = V{};
  for (int j = 0; j < L; ++j) {
    const V d = lev[j] - x_hat;
    s2 += z[j] * d * d;
  }
  const V v_hat = vmax(s2 * r0, V{} + v_min);
  const V rh = T(1) / v_hat, ro = T(1) / v;
  const V l1 = rh - ro;
  const V g1 = x_hat * rh - x * ro;
  const M take = (l1 > T(0)) & ~kept;
  lam = (T(1) - eta) * (take ? l1 : lam) + eta * lam;
  gam = (T(1) - eta) * (take ? g1 : gam) + eta * gam;
}

// (7) for W nodes; den <= 0 falls back to (mu, Sigma).
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cavity_lanes(const V& mu, const V& S, const V& lam, const V& gam, T v_min, V& x, V& v) {
  const V den = T(1) - S * lam;
  const auto ok = den > T(0);
  const V d = ok ? den : V{} + T(1);
  x = ok ? (mu - S * gam) / d : mu;
  v = vmax(ok ? S / d : S, V{} + v_min);
}

}  // namespace ep
}  // namespace mimo_fast
