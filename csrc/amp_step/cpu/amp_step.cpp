// amp_step CPU kernels (formula: mimo_fast/ops/amp_step.py, eqs. 8a-8d; backward
// formulas: mimo_fast/ops/reference/amp_step.py).
//
// One matrix per thread task (OpenMP over the batch). H is complex interleaved (re, im),
// row-major, so a row of H is 2N contiguous reals. Every per-column vector the row
// loops need (v, x, the accumulators of q and u, ...) is kept "duplicated" in the same
// interleaved layout (2N reals), which turns every complex product into plain FMAs over
// the row; even/odd lanes are combined once per row (dots) or once per matrix (axpys).
//
// Forward: ONE sweep over H. For row m: dots give V_m = |H_m|^2 . v and (Hx)_m, hence
// z_m, w_m = 1/(noise+V_m) and t_m = (y_m - z_m) w_m; the same row, still in L1, is then
// accumulated into q += |H_m|^2 w_m and u += conj(H_m) t_m. |H|^2 is never stored.
// Memory traffic: H read once; O(M + N) scratch per thread.
// Backward: the forward sweep again (recompute, nothing cached), then a second sweep
// that per row takes two dots (H g_u, |H|^2 g_q), writes the g_H row, and accumulates
// H^H g_z' and |H|^2^T g_V'. Traffic: H read twice, g_H written once.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/cpu/cpu_features.h"
#include "common/cpu/lanes.h"
#include "common/cpu/parallel.h"

namespace py = pybind11;

namespace mimo_fast {
namespace {

template <typename T>
struct AmpArgs {
  const T *H, *y, *x, *v, *zp, *Vp, *s2;                 // forward inputs
  const T *gr, *gS, *gz, *gV;                            // backward: output grads
  T *r, *Sigma, *z, *V;                                  // forward outputs
  T *gH, *gy, *gx, *gv, *gzp, *gVp, *gs2;                // backward: input grads
  int64_t B, M, N;
};

template <typename T>
struct Cx {
  T re, im;
};

// Row dots over 2N interleaved reals: a = sum h*p, b = sum h*q, c = sum h*h*s.
// Returns complex (even(a) - odd(b), even(b) + odd(a)) = sum_n H_n (p_n + i q_n) when
// p, q hold p_n, q_n duplicated, and c = sum |H_n|^2 s_n. Two accumulator sets hide FMA latency.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void row_dots(const T* h, int64_t n2, const T* p, const T* q, const T* s,
                               Cx<T>& hp, T& hhs) {
  V a0{}, a1{}, b0{}, b1{}, c0{}, c1{};
  int64_t e = 0;
  for (; e + 2 * W <= n2; e += 2 * W) {
    const V h0 = load_u<V>(h + e), h1 = load_u<V>(h + e + W);
    a0 += h0 * load_u<V>(p + e);
    a1 += h1 * load_u<V>(p + e + W);
    b0 += h0 * load_u<V>(q + e);
    b1 += h1 * load_u<V>(q + e + W);
    c0 += h0 * h0 * load_u<V>(s + e);
    c1 += h1 * h1 * load_u<V>(s + e + W);
  }
  for (; e + W <= n2; e += W) {
    const V h0 = load_u<V>(h + e);
    a0 += h0 * load_u<V>(p + e);
    b0 += h0 * load_u<V>(q + e);
    c0 += h0 * h0 * load_u<V>(s + e);
  }
  const V a = a0 + a1, b = b0 + b1, c = c0 + c1;
  T ae = 0, ao = 0, be = 0, bo = 0, cs = 0;
  for (int l = 0; l < W; l += 2) {
    ae += a[l];
    ao += a[l + 1];
    be += b[l];
    bo += b[l + 1];
    cs += c[l] + c[l + 1];
  }
  for (; e < n2; e += 2) {  // tail: whole complex numbers (n2 and W are even)
    ae += h[e] * p[e];
    ao += h[e + 1] * p[e + 1];
    be += h[e] * q[e];
    bo += h[e + 1] * q[e + 1];
    cs += h[e] * h[e] * s[e] + h[e + 1] * h[e + 1] * s[e + 1];
  }
  hp = {ae - bo, be + ao};
  hhs = cs;
}

// Row axpys: qd += |h|^2-per-real * wq, ua += h * ta, ub += h * tb (all 2N interleaved).
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void row_axpy(const T* h, int64_t n2, T wq, T ta, T tb, T* qd, T* ua, T* ub) {
  int64_t e = 0;
  for (; e + W <= n2; e += W) {
    const V h0 = load_u<V>(h + e);
    store_u(qd + e, load_u<V>(qd + e) + h0 * h0 * wq);
    store_u(ua + e, load_u<V>(ua + e) + h0 * ta);
    store_u(ub + e, load_u<V>(ub + e) + h0 * tb);
  }
  for (; e < n2; ++e) {
    qd[e] += h[e] * h[e] * wq;
    ua[e] += h[e] * ta;
    ub[e] += h[e] * tb;
  }
}

// Per-thread scratch, 2N reals each unless noted.
template <typename T>
struct AmpScratch {
  std::vector<T> vd, xr, xi, qd, ua, ub;             // forward
  std::vector<T> gur, gui, gqd, GU, GUi, XC, XCi;    // backward
  std::vector<T> rowV, rowW, rowd1;                  // M
  std::vector<Cx<T>> rowz, rowt, rowk, rowe;         // M
  std::vector<T> Sig;                                // N
  std::vector<Cx<T>> u;                              // N
  AmpScratch(int64_t M, int64_t N, bool backward)
      : vd(2 * N), xr(2 * N), xi(2 * N), qd(2 * N), ua(2 * N), ub(2 * N) {
    if (backward) {
      for (auto* p : {&gur, &gui, &gqd, &GU, &GUi, &XC, &XCi}) p->resize(2 * N);
      for (auto* p : {&rowV, &rowW, &rowd1}) p->resize(M);
      for (auto* p : {&rowz, &rowt, &rowk, &rowe}) p->resize(M);
      Sig.resize(N);
      u.resize(N);
    }
  }
};

// Forward for batch element b; with keep, the per-row quantities the backward needs are
// saved in the scratch. Fills Sig and u (N) in the scratch; writes outputs when out.
template <typename T, int W>
MIMO_FAST_INLINE void forward_one(const AmpArgs<T>& a, int64_t b, AmpScratch<T>& s, bool keep,
                                  bool out) {
  const int64_t M = a.M, N = a.N, n2 = 2 * N;
  const T* H = a.H + b * M * n2;
  const T* x = a.x + b * n2;
  const T* v = a.v + b * N;
  const T s2 = a.s2[b];
  for (int64_t n = 0; n < N; ++n) {
    s.vd[2 * n] = s.vd[2 * n + 1] = v[n];
    s.xr[2 * n] = s.xr[2 * n + 1] = x[2 * n];
    s.xi[2 * n] = s.xi[2 * n + 1] = x[2 * n + 1];
  }
  std::fill(s.qd.begin(), s.qd.end(), T(0));
  std::fill(s.ua.begin(), s.ua.end(), T(0));
  std::fill(s.ub.begin(), s.ub.end(), T(0));
  for (int64_t m = 0; m < M; ++m) {
    const T* h = H + m * n2;
    Cx<T> hx;
    T Vm;
    row_dots<T, W>(h, n2, s.xr.data(), s.xi.data(), s.vd.data(), hx, Vm);   // (8a), H x
    const int64_t i = b * M + m;
    const Cx<T> y{a.y[2 * i], a.y[2 * i + 1]};
    const Cx<T> e{y.re - a.zp[2 * i], y.im - a.zp[2 * i + 1]};
    const T d1 = s2 + a.Vp[i];
    const Cx<T> k{e.re / d1, e.im / d1};
    const Cx<T> z{hx.re - Vm * e.re / d1, hx.im - Vm * e.im / d1};           // (8b)
    const T w = T(1) / (s2 + Vm);
    const Cx<T> t{(y.re - z.re) * w, (y.im - z.im) * w};
    row_axpy<T, W>(h, n2, w, t.re, t.im, s.qd.data(), s.ua.data(), s.ub.data());
    if (out) {
      a.z[2 * i] = z.re;
      a.z[2 * i + 1] = z.im;
      a.V[i] = Vm;
    }
    if (keep) {
      s.rowV[m] = Vm;
      s.rowW[m] = w;
      s.rowd1[m] = d1;
      s.rowz[m] = z;
      s.rowt[m] = t;
      s.rowk[m] = k;
      s.rowe[m] = e;
    }
  }
  for (int64_t n = 0; n < N; ++n) {
    const T Sigma = T(1) / (s.qd[2 * n] + s.qd[2 * n + 1]);                  // (8c)
    const Cx<T> u{s.ua[2 * n] + s.ub[2 * n + 1], s.ub[2 * n] - s.ua[2 * n + 1]};
    if (out) {
      const int64_t j = b * N + n;
      a.Sigma[j] = Sigma;
      a.r[2 * j] = x[2 * n] + Sigma * u.re;                                  // (8d)
      a.r[2 * j + 1] = x[2 * n + 1] + Sigma * u.im;
    }
    if (keep) {
      s.Sig[n] = Sigma;
      s.u[n] = u;
    }
  }
}

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void forward_range(const AmpArgs<T>& a, int64_t b0, int64_t b1) {
  AmpScratch<T> s(a.M, a.N, false);
  for (int64_t b = b0; b < b1; ++b) forward_one<T, W>(a, b, s, false, true);
}

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void backward_range(const AmpArgs<T>& a, int64_t b0, int64_t b1) {
  const int64_t M = a.M, N = a.N, n2 = 2 * N;
  AmpScratch<T> s(M, N, true);
  for (int64_t b = b0; b < b1; ++b) {
    forward_one<T, W>(a, b, s, true, false);
    const T* H = a.H + b * M * n2;
    const T* x = a.x + b * n2;
    const T* v = a.v + b * N;
    T* gH = a.gH + b * M * n2;
    // Per column: g_u = Sigma g_r, g_Sigma' = g_Sigma + Re(conj(u) g_r), g_q = -Sigma^2 g_Sigma'.
    for (int64_t n = 0; n < N; ++n) {
      const int64_t j = b * N + n;
      const Cx<T> gr{a.gr[2 * j], a.gr[2 * j + 1]};
      const T Sg = s.Sig[n];
      const Cx<T> gu{Sg * gr.re, Sg * gr.im};
      const T gSig = a.gS[j] + (s.u[n].re * gr.re + s.u[n].im * gr.im);
      const T gq = -Sg * Sg * gSig;
      s.gur[2 * n] = s.gur[2 * n + 1] = gu.re;
      s.gui[2 * n] = s.gui[2 * n + 1] = gu.im;
      s.gqd[2 * n] = s.gqd[2 * n + 1] = gq;
      s.GU[2 * n] = gu.re;                     // conj(g_u)
      s.GU[2 * n + 1] = -gu.im;
      s.GUi[2 * n] = gu.im;                    // i conj(g_u)
      s.GUi[2 * n + 1] = gu.re;
      s.XC[2 * n] = x[2 * n];                  // conj(x)
      s.XC[2 * n + 1] = -x[2 * n + 1];
      s.XCi[2 * n] = x[2 * n + 1];             // i conj(x)
      s.XCi[2 * n + 1] = x[2 * n];
    }
    std::fill(s.qd.begin(), s.qd.end(), T(0));  // reused: |H|^2^T g_V'
    std::fill(s.ua.begin(), s.ua.end(), T(0));  // reused: H^H g_z'
    std::fill(s.ub.begin(), s.ub.end(), T(0));
    T g_noise = 0;
    for (int64_t m = 0; m < M; ++m) {
      const T* h = H + m * n2;
      Cx<T> gt;
      T hq;
      row_dots<T, W>(h, n2, s.gur.data(), s.gui.data(), s.gqd.data(), gt, hq);
      const int64_t i = b * M + m;
      const T w = s.rowW[m], Vm = s.rowV[m], d1 = s.rowd1[m];
      const Cx<T> z = s.rowz[m], t = s.rowt[m], k = s.rowk[m], e = s.rowe[m];
      const Cx<T> ymz{a.y[2 * i] - z.re, a.y[2 * i + 1] - z.im};
      const T gw = (ymz.re * gt.re + ymz.im * gt.im) + hq;
      const T gd2 = -w * w * gw;
      const Cx<T> gz{a.gz[2 * i] - w * gt.re, a.gz[2 * i + 1] - w * gt.im};
      const T gVt = a.gV[i] + gd2 - (k.re * gz.re + k.im * gz.im);
      const Cx<T> gk{-Vm * gz.re, -Vm * gz.im};
      const Cx<T> ge{gk.re / d1, gk.im / d1};
      const T gd1 = -(e.re * gk.re + e.im * gk.im) / (d1 * d1);
      a.gy[2 * i] = w * gt.re + ge.re;
      a.gy[2 * i + 1] = w * gt.im + ge.im;
      a.gzp[2 * i] = -ge.re;
      a.gzp[2 * i + 1] = -ge.im;
      a.gVp[i] = gd1;
      g_noise += gd2 + gd1;
      // g_H row = t conj(g_u) + g_z' conj(x) + 2 H (w g_q + g_V' v)
      T* o = gH + m * n2;
      const T cw = 2 * w, cv = 2 * gVt;
      int64_t el = 0;
      for (; el + W <= n2; el += W) {
        const V h0 = load_u<V>(h + el);
        V r = t.re * load_u<V>(s.GU.data() + el) + t.im * load_u<V>(s.GUi.data() + el);
        r += gz.re * load_u<V>(s.XC.data() + el) + gz.im * load_u<V>(s.XCi.data() + el);
        r += h0 * (cw * load_u<V>(s.gqd.data() + el) + cv * load_u<V>(s.vd.data() + el));
        store_u(o + el, r);
      }
      for (; el < n2; ++el)
        o[el] = t.re * s.GU[el] + t.im * s.GUi[el] + gz.re * s.XC[el] + gz.im * s.XCi[el] +
                h[el] * (cw * s.gqd[el] + cv * s.vd[el]);
      row_axpy<T, W>(h, n2, gVt, gz.re, gz.im, s.qd.data(), s.ua.data(), s.ub.data());
    }
    a.gs2[b] = g_noise;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t j = b * N + n;
      a.gv[j] = s.qd[2 * n] + s.qd[2 * n + 1];
      a.gx[2 * j] = a.gr[2 * j] + s.ua[2 * n] + s.ub[2 * n + 1];
      a.gx[2 * j + 1] = a.gr[2 * j + 1] + s.ub[2 * n] - s.ua[2 * n + 1];
    }
    (void)v;
  }
}

MIMO_FAST_AVX2 void fwd_avx2_f32(const AmpArgs<float>& a, int64_t b, int64_t e) { forward_range<float, 8>(a, b, e); }
MIMO_FAST_AVX2 void fwd_avx2_f64(const AmpArgs<double>& a, int64_t b, int64_t e) { forward_range<double, 4>(a, b, e); }
MIMO_FAST_AVX2 void bwd_avx2_f32(const AmpArgs<float>& a, int64_t b, int64_t e) { backward_range<float, 8>(a, b, e); }
MIMO_FAST_AVX2 void bwd_avx2_f64(const AmpArgs<double>& a, int64_t b, int64_t e) { backward_range<double, 4>(a, b, e); }
void fwd_sse_f32(const AmpArgs<float>& a, int64_t b, int64_t e) { forward_range<float, 4>(a, b, e); }
void fwd_sse_f64(const AmpArgs<double>& a, int64_t b, int64_t e) { forward_range<double, 2>(a, b, e); }
void bwd_sse_f32(const AmpArgs<float>& a, int64_t b, int64_t e) { backward_range<float, 4>(a, b, e); }
void bwd_sse_f64(const AmpArgs<double>& a, int64_t b, int64_t e) { backward_range<double, 2>(a, b, e); }

template <typename T>
void run(void (*fn)(const AmpArgs<T>&, int64_t, int64_t), const AmpArgs<T>& a, int nthreads) {
  // Below ~128K elements of H (~0.1 ms on one core) one thread is faster.
  parallel_batches(a.B, 1, static_cast<double>(a.B) * a.M * a.N, 1 << 17, nthreads,
                   [&](int64_t b, int64_t e) { fn(a, b, e); });
}

// Block layouts (mimo_fast/ops/cpu/amp_step.py builds them); complex tensors arrive as
// their interleaved (re, im) memory.
constexpr Layout kForward{"amp_step_forward", "H y x v z_prev V_prev noise_var r Sigma z V", "B M N nthreads"};
constexpr Layout kBackward{"amp_step_backward",
                           "grad_r grad_Sigma grad_z grad_V H y x v z_prev V_prev noise_var "
                           "g_H g_y g_x g_v g_z_prev g_V_prev g_noise_var",
                           "B M N nthreads"};
namespace fwd { enum : int { H, y, x, v, z_prev, V_prev, noise_var, r, Sigma, z, V, kTensors }; }
namespace bwd {
enum : int { grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var,
             g_H, g_y, g_x, g_v, g_z_prev, g_V_prev, g_noise_var, kTensors };
}
namespace sc { enum : int { B, M, N, nthreads }; }
static_assert(kForward.tensor_count() == fwd::kTensors && kBackward.tensor_count() == bwd::kTensors, "layouts");

// The inputs of both directions, from slot H on (H, y, x, v, z_prev, V_prev, noise_var are
// consecutive in both layouts), after checking every size the kernel will walk.
template <typename T>
AmpArgs<T> inputs(const ArgView& a, int H) {
  const int64_t B = a.i(sc::B), M = a.i(sc::M), N = a.i(sc::N);
  if (B < 0 || M < 1 || N < 1) a.fail("need B >= 0, M, N >= 1");
  a.expect_numel(H, B * M * N);
  a.expect_numel({H + 1, H + 4, H + 5}, B * M);
  a.expect_numel({H + 2, H + 3}, B * N);
  a.expect_numel(H + 6, B);
  AmpArgs<T> x{};
  x.H = a.cx<T>(H); x.y = a.cx<T>(H + 1); x.x = a.cx<T>(H + 2); x.v = a.in<T>(H + 3);
  x.zp = a.cx<T>(H + 4); x.Vp = a.in<T>(H + 5); x.s2 = a.in<T>(H + 6);
  x.B = B; x.M = M; x.N = N;
  return x;
}

void amp_forward(const py::bytes& block) {
  const ArgView a(block, kForward);
  const bool avx2 = lane_isa() != LaneIsa::portable;  // these kernels stop at AVX2 width
  const int nthreads = static_cast<int>(a.i(sc::nthreads));
  auto go = [&](auto zero) {
    using T = decltype(zero);
    AmpArgs<T> x = inputs<T>(a, fwd::H);
    a.expect_numel({fwd::r, fwd::Sigma}, x.B * x.N);
    a.expect_numel({fwd::z, fwd::V}, x.B * x.M);
    x.r = a.cx<T>(fwd::r); x.Sigma = a.out<T>(fwd::Sigma); x.z = a.cx<T>(fwd::z); x.V = a.out<T>(fwd::V);
    py::gil_scoped_release release;
    if constexpr (sizeof(T) == 4) run<T>(avx2 ? fwd_avx2_f32 : fwd_sse_f32, x, nthreads);
    else run<T>(avx2 ? fwd_avx2_f64 : fwd_sse_f64, x, nthreads);
  };
  if (a.dtype(fwd::H) == DType::c64) go(float(0));
  else go(double(0));
}

void amp_backward(const py::bytes& block) {
  const ArgView a(block, kBackward);
  const bool avx2 = lane_isa() != LaneIsa::portable;  // these kernels stop at AVX2 width
  const int nthreads = static_cast<int>(a.i(sc::nthreads));
  auto go = [&](auto zero) {
    using T = decltype(zero);
    AmpArgs<T> x = inputs<T>(a, bwd::H);
    const int64_t BM = x.B * x.M, BN = x.B * x.N;
    a.expect_numel({bwd::grad_r, bwd::grad_Sigma, bwd::g_x, bwd::g_v}, BN);
    a.expect_numel({bwd::grad_z, bwd::grad_V, bwd::g_y, bwd::g_z_prev, bwd::g_V_prev}, BM);
    a.expect_numel(bwd::g_H, BM * x.N);
    a.expect_numel(bwd::g_noise_var, x.B);
    x.gr = a.cx<T>(bwd::grad_r); x.gS = a.in<T>(bwd::grad_Sigma); x.gz = a.cx<T>(bwd::grad_z);
    x.gV = a.in<T>(bwd::grad_V);
    x.gH = a.cx<T>(bwd::g_H); x.gy = a.cx<T>(bwd::g_y); x.gx = a.cx<T>(bwd::g_x); x.gv = a.out<T>(bwd::g_v);
    x.gzp = a.cx<T>(bwd::g_z_prev); x.gVp = a.out<T>(bwd::g_V_prev); x.gs2 = a.out<T>(bwd::g_noise_var);
    py::gil_scoped_release release;
    if constexpr (sizeof(T) == 4) run<T>(avx2 ? bwd_avx2_f32 : bwd_sse_f32, x, nthreads);
    else run<T>(avx2 ? bwd_avx2_f64 : bwd_sse_f64, x, nthreads);
  };
  if (a.dtype(bwd::H) == DType::c64) go(float(0));
  else go(double(0));
}

}  // namespace

void bind_amp_step(py::module_& m) {
  m.def("amp_step_forward", &amp_forward, py::arg("block"),
        "amp_step forward; block (mimo_fast.ops.native): H, y, x, v, z_prev, V_prev, noise_var -> r, Sigma, "
        "z, V (complex as interleaved re/im); scalars B, M, N, nthreads.");
  m.def("amp_step_backward", &amp_backward, py::arg("block"),
        "amp_step backward; block: grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var "
        "-> g_H, g_y, g_x, g_v, g_z_prev, g_V_prev, g_noise_var; scalars B, M, N, nthreads.");
}

}  // namespace mimo_fast
