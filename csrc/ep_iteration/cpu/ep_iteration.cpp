// ep_cavity CPU kernels (formulas: mimo_fast/ops/ep_iteration.py; backward formulas:
// mimo_fast/ops/reference/ep_iteration.py). ep_update's are in ep_update.cpp, the lane
// helpers both use (exp, softmax, (7), (8)-(10) on W nodes) in ep_lanes.h.
//
// ep_cavity_forward: EP's loop for W vectors at a time, one per SIMD lane (the lane-major
// packed triangles of csrc/ep_lmmse/cpu/lane_cholesky.h). A group's sym(gram) is transposed
// into lane-major scratch once and stays there, with the precisions, the cavity and the
// alphabet, for all `updates + 1` iterations: per iteration A = G + diag(lam) is copied,
// factorised, solved and inverted (diagonal only), the cavity (7) taken, and (8)-(10)
// applied, all without leaving L1/L2 (K = 16: ~9 KB a group in float64; K = 64: ~140 KB).
// Memory traffic is one read of gram, rhs, lam, gam and one write of x_obs, v_obs, mu,
// Sigma, whatever the number of iterations (the per-op form re-read gram every iteration
// and made ~10 passes over (B, K, L) temporaries).
//
// ep_cavity_backward_local: the gradient of (7) alone (the LMMSE part is ep_lmmse_backward).
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/args.h"
#include "common/cpu/cpu_features.h"
#include "common/cpu/lanes.h"
#include "common/cpu/parallel.h"
#include "ep_iteration/cpu/ep_lanes.h"
#include "ep_lmmse/cpu/lane_cholesky.h"

namespace py = pybind11;

namespace mimo_fast {
void bind_ep_update(py::module_& m);

namespace {

using ep::cavity_lanes;
using ep::cholesky;
using ep::inverse_var;
using ep::solve;
using ep::tri;
using ep::update_lanes;

// ------------------------------------------------------------------ ep_cavity forward
template <typename T>
struct CavityArgs {
  const T *gram, *rhs, *lam, *gam, *levels, *log_prior;
  T *x, *v, *mu, *Sigma;
  int32_t* info;
  int64_t B;
  int K, L, updates;
  T eta, v_min;
};

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void cavity_range(const CavityArgs<T>& a, int64_t b_begin, int64_t b_end) {
  const int K = a.K, L = a.L;
  const bool upd = a.updates > 0;
  LaneBuf<V> G(upd ? tri(K) : 0), A(tri(K)), dinv(K), col(ep::inverse_var_scratch<V>(K));
  LaneBuf<V> lam(K), gam(K), rhs(K), m(K), S(K), x(K), v(K);
  LaneBuf<V> lev(upd ? static_cast<size_t>(K) * L : 0), lp(upd ? static_cast<size_t>(K) * L : 0), z(upd ? L : 0);
  for (int64_t i = 0; upd && i < static_cast<int64_t>(K) * L; ++i) {
    lev[i] = V{} + a.levels[i];
    lp[i] = V{} + a.log_prior[i];
  }
  for (int64_t b0 = b_begin; b0 < b_end; b0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, b_end - b0));
    // sym(gram) lane-major (idle lanes: I, lam 1, gam 0, rhs 0); A = it + diag(lam).
    V* dst = upd ? G.data() : A.data();
    for (int l = 0; l < W; ++l) {
      const T* g = a.gram + (b0 + std::min(l, nl - 1)) * K * K;
      for (int i = 0; i < K; ++i) {
        V* row = dst + tri(i);
        for (int j = 0; j <= i; ++j) row[j][l] = l < nl ? T(0.5) * (g[i * K + j] + g[j * K + i]) : T(i == j);
        const int64_t o = (b0 + l) * K + i;
        lam[i][l] = l < nl ? a.lam[o] : T(1);
        gam[i][l] = l < nl ? a.gam[o] : T(0);
        rhs[i][l] = l < nl ? a.rhs[o] : T(0);
      }
    }
    int32_t info[W] = {};
    for (int it = 0;; ++it) {
      if (upd) std::copy(G.data(), G.data() + tri(K), A.data());
      for (int i = 0; i < K; ++i) A[tri(i) + i] += lam[i];
      cholesky<T, W>(A.data(), dinv.data(), K, info);                       // (6)
      for (int i = 0; i < K; ++i) m[i] = rhs[i] + gam[i];
      solve<T, W>(A.data(), dinv.data(), K, m.data());
      inverse_var<T, W>(A.data(), dinv.data(), K, col.data(), S.data());
      for (int i = 0; i < K; ++i) cavity_lanes<T, W>(m[i], S[i], lam[i], gam[i], a.v_min, x[i], v[i]);  // (7)
      if (it == a.updates) break;
      for (int i = 0; i < K; ++i) {                                         // (8)-(10)
        const V* li = lev.data() + static_cast<size_t>(i) * L;
        const V* pi = lp.data() + static_cast<size_t>(i) * L;
        const V half = T(0.5) / v[i];
        for (int j = 0; j < L; ++j) {
          const V d = li[j] - x[i];
          z[j] = pi[j] - d * d * half;
        }
        update_lanes<T, W>(x[i], v[i], lam[i], gam[i], z.data(), li, L, decltype(V{} > V{}){}, a.eta, a.v_min);
      }
    }
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int l = 0; l < nl; ++l) {
      const int64_t o = (b0 + l) * K;
      a.info[b0 + l] = info[l];
      for (int i = 0; i < K; ++i) {
        a.x[o + i] = info[l] ? nan : x[i][l];
        a.v[o + i] = info[l] ? nan : v[i][l];
        a.mu[o + i] = info[l] ? nan : m[i][l];
        a.Sigma[o + i] = info[l] ? nan : S[i][l];
      }
    }
  }
}

// Every lane width, AVX-512 included (ep_update's kernels stop at AVX2 width): the `ep`
// detector's whole loop runs here. One core, Zen 4, B4096, AVX-512 against AVX2 lanes in the
// same process, same decisions bit for bit: 32x32 QPSK 245 -> 197 ms, 8x8 16-QAM 17.3 -> 16.6 ms.
MIMO_FAST_LANE_ENTRIES(cav, CavityArgs, cavity_range)

constexpr Layout kCavity{"ep_cavity_forward", "gram rhs lam gam levels log_prior x_obs v_obs mu Sigma info",
                         "B K L updates damping v_min nthreads"};
namespace cav { enum : int { gram, rhs, lam, gam, levels, log_prior, x, v, mu, Sigma, info, kTensors }; }
namespace cs { enum : int { B, K, L, updates, damping, v_min, nthreads }; }
static_assert(kCavity.tensor_count() == cav::kTensors, "layout");

void cavity_forward(const py::bytes& block) {
  const ArgView a(block, kCavity);
  const int64_t B = a.i(cs::B), K = a.i(cs::K), L = a.i(cs::L), updates = a.i(cs::updates);
  if (B < 0 || K < 1 || updates < 0 || (updates > 0 && L < 1))
    a.fail("need B >= 0, K >= 1, updates >= 0 and L >= 1 with updates");
  if (updates > 0 && (!a.present(cav::levels) || !a.present(cav::log_prior)))
    a.fail("updates need levels and log_prior");
  a.expect_numel(cav::gram, B * K * K);
  a.expect_numel({cav::rhs, cav::lam, cav::gam, cav::x, cav::v, cav::mu, cav::Sigma}, B * K);
  a.expect_numel({cav::levels, cav::log_prior}, K * L);
  a.expect_numel(cav::info, B);
  const int nthreads = static_cast<int>(a.i(cs::nthreads));
  const LaneIsa isa = lane_isa();
  auto go = [&](auto zero) {
    using T = decltype(zero);
    CavityArgs<T> c{a.in<T>(cav::gram), a.in<T>(cav::rhs), a.in<T>(cav::lam), a.in<T>(cav::gam),
                    a.in_opt<T>(cav::levels), a.in_opt<T>(cav::log_prior), a.out<T>(cav::x), a.out<T>(cav::v),
                    a.out<T>(cav::mu), a.out<T>(cav::Sigma), a.out<int32_t>(cav::info), B, static_cast<int>(K),
                    static_cast<int>(L), static_cast<int>(updates), static_cast<T>(a.f(cs::damping)),
                    static_cast<T>(a.f(cs::v_min))};
    void (*fn)(const CavityArgs<T>&, int64_t, int64_t) = cav_for<T>(isa);
    py::gil_scoped_release release;
    // Whole groups of 16 vectors a chunk (the widest lane group); below ~2M lane-flops one
    // thread is faster.
    parallel_batches(B, 16, static_cast<double>(B) * K * K * K * (updates + 1), 1 << 21, nthreads,
                     [&](int64_t b, int64_t e) { fn(c, b, e); });
  };
  if (a.dtype(cav::gram) == DType::f32) go(float(0));
  else go(double(0));
}

// ------------------------------------------------------------------ (7) backward
constexpr Layout kCavityBackward{"ep_cavity_backward_local", "g_x g_v mu Sigma lam gam g_mu g_Sigma g_lam g_gam",
                                 "n v_min"};
namespace cb { enum : int { g_x, g_v, mu, Sigma, lam, gam, g_mu, g_Sigma, g_lam, g_gam, kTensors }; }
static_assert(kCavityBackward.tensor_count() == cb::kTensors, "layout");

template <typename T>
void cavity_backward_impl(const ArgView& a, int64_t n) {
  const T *gx = a.in<T>(cb::g_x), *gv = a.in<T>(cb::g_v), *mu = a.in<T>(cb::mu), *S = a.in<T>(cb::Sigma);
  const T *lam = a.in<T>(cb::lam), *gam = a.in<T>(cb::gam);
  T *g_mu = a.out<T>(cb::g_mu), *g_S = a.out<T>(cb::g_Sigma);
  T *g_lam = a.out<T>(cb::g_lam), *g_gam = a.out<T>(cb::g_gam);
  const T v_min = static_cast<T>(a.f(1));
  for (int64_t i = 0; i < n; ++i) {
    const T den = T(1) - S[i] * lam[i];
    if (den > T(0)) {
      const T x = (mu[i] - S[i] * gam[i]) / den, vr = S[i] / den;
      const T gvr = vr >= v_min ? gv[i] : T(0);
      const T gden = -(gx[i] * x + gvr * vr) / den;
      g_mu[i] = gx[i] / den;
      g_S[i] = (gvr - gx[i] * gam[i]) / den - gden * lam[i];
      g_lam[i] = -gden * S[i];
      g_gam[i] = -gx[i] * S[i] / den;
    } else {
      g_mu[i] = gx[i];
      g_S[i] = S[i] >= v_min ? gv[i] : T(0);
      g_lam[i] = g_gam[i] = T(0);
    }
  }
}

void cavity_backward_local(const py::bytes& block) {
  const ArgView a(block, kCavityBackward);
  const int64_t n = a.i(0);
  if (n < 0) a.fail("need n >= 0");
  for (int s = 0; s < cb::kTensors; ++s) a.expect_numel(s, n);
  py::gil_scoped_release release;
  if (a.dtype(cb::g_x) == DType::f32) cavity_backward_impl<float>(a, n);
  else cavity_backward_impl<double>(a, n);
}

}  // namespace

void bind_ep_iteration(py::module_& m) {
  m.def("ep_cavity_forward", &cavity_forward, py::arg("block"),
        "EP's loop (6)-(10) `updates` times, then (6)-(7): x_obs, v_obs, mu, Sigma (B, K) and "
        "int32 info (B,).");
  m.def("ep_cavity_backward_local", &cavity_backward_local, py::arg("block"),
        "Gradient of the cavity (7) alone: g_mu, g_Sigma and the cavity's own g_lam, g_gam.");
  bind_ep_update(m);  // ep_update.cpp
}

}  // namespace mimo_fast
