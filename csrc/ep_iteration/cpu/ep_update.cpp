// ep_update CPU kernels: (8)-(10) and its gradient on (B, K) nodes, W consecutive nodes a
// lane group (their levels gathered per lane), for GEPNet's logits and EP under autograd
// (formulas: mimo_fast/ops/ep_iteration.py; backward: mimo_fast/ops/reference/ep_iteration.py).
// Each node's inputs are read once and its outputs written once; the (K, L) levels and prior
// stay in L1.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>

#include "common/args.h"
#include "common/cpu/cpu_features.h"
#include "common/cpu/lanes.h"
#include "common/cpu/parallel.h"
#include "ep_iteration/cpu/ep_lanes.h"

namespace py = pybind11;

namespace mimo_fast {
namespace {

using ep::softmax_weights;
using ep::update_lanes;
using ep::vmax;

// ------------------------------------------------------------------ ep_update
template <typename T>
struct UpdateArgs {
  const T *x, *v, *lam, *gam, *levels, *log_prior, *logits, *g_lam, *g_gam;
  const unsigned char* keep;
  T *lam_out, *gam_out, *g_x, *g_v, *g_lam0, *g_gam0, *g_z, *g_lev;
  int64_t B;
  int K, L;
  T eta, v_min;
};

// Nodes n0..n0+nl-1 (flat b * K + k) into lanes: x, v, lam, gam, the exponents z (EP's
// Gaussian ones or the given logits), the levels, and the keep mask. Idle lanes get a
// harmless node (x 0, v 1, one level at 0).
template <typename T, int W, typename V = typename Lanes<T, W>::type, typename M = decltype(V{} > V{})>
MIMO_FAST_INLINE void gather_nodes(const UpdateArgs<T>& a, int64_t n0, int nl, V& x, V& v, V& lam, V& gam,
                                   V* z, V* lev, M& kept) {
  const int K = a.K, L = a.L;
  if (nl == W) {   // the (B, K) inputs are contiguous over consecutive nodes
    x = load_u<V>(a.x + n0), v = load_u<V>(a.v + n0), lam = load_u<V>(a.lam + n0), gam = load_u<V>(a.gam + n0);
  } else {
    x = V{}, v = V{} + T(1), lam = V{} + T(1), gam = V{};
    for (int l = 0; l < nl; ++l) x[l] = a.x[n0 + l], v[l] = a.v[n0 + l], lam[l] = a.lam[n0 + l], gam[l] = a.gam[n0 + l];
  }
  kept = M{};
  if (a.keep)
    for (int l = 0; l < nl; ++l) kept[l] = a.keep[n0 + l] ? -1 : 0;
  for (int j = 0; j < L; ++j) z[j] = lev[j] = V{};
  // per lane: its node's levels and either its logits or its node's log-prior
  int64_t k = n0 % K;
  for (int l = 0; l < nl; ++l) {
    const T* lv = a.levels + k * L;
    const T* zs = a.logits ? a.logits + (n0 + l) * L : a.log_prior + k * L;
    for (int j = 0; j < L; ++j) lev[j][l] = lv[j], z[j][l] = zs[j];
    if (++k == K) k = 0;
  }
  if (!a.logits) {  // EP's Gaussian cavity: z = log p - (s - x)^2 / (2 v)
    const V half = T(0.5) / v;
    for (int j = 0; j < L; ++j) {
      const V d = lev[j] - x;
      z[j] -= d * d * half;
    }
  }
}

template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void update_range(const UpdateArgs<T>& a, int64_t n_begin, int64_t n_end) {
  LaneBuf<V> z(a.L), lev(a.L);
  for (int64_t n0 = n_begin; n0 < n_end; n0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, n_end - n0));
    V x, v, lam, gam;
    decltype(V{} > V{}) kept;
    gather_nodes<T, W>(a, n0, nl, x, v, lam, gam, z.data(), lev.data(), kept);
    update_lanes<T, W>(x, v, lam, gam, z.data(), lev.data(), a.L, kept, a.eta, a.v_min);
    for (int l = 0; l < nl; ++l) {
      a.lam_out[n0 + l] = lam[l];
      a.gam_out[n0 + l] = gam[l];
    }
  }
}

// Gradient of (8)-(10); the formulas are mimo_fast.ops.reference.ep_iteration.update_backward's.
template <typename T, int W, typename V = typename Lanes<T, W>::type>
MIMO_FAST_INLINE void update_backward_range(const UpdateArgs<T>& a, int64_t n_begin, int64_t n_end) {
  const int L = a.L;
  LaneBuf<V> z(L), lev(L), d(L), gp(L);
  const T eta = a.eta;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += W) {
    const int nl = static_cast<int>(std::min<int64_t>(W, n_end - n0));
    V x, v, lam, gam, Gl = V{}, Gg = V{};
    decltype(V{} > V{}) kept;
    gather_nodes<T, W>(a, n0, nl, x, v, lam, gam, z.data(), lev.data(), kept);
    for (int l = 0; l < nl; ++l) Gl[l] = a.g_lam[n0 + l], Gg[l] = a.g_gam[n0 + l];
    const V s0 = softmax_weights<T, W>(z.data(), L);
    V* p = z.data();
    V x_hat = V{};
    for (int j = 0; j < L; ++j) {
      p[j] = p[j] / s0;
      x_hat += p[j] * lev[j];
    }
    V v_raw = V{}, pd = V{};
    for (int j = 0; j < L; ++j) {
      d[j] = lev[j] - x_hat;
      v_raw += p[j] * d[j] * d[j];
      pd += p[j] * d[j];
    }
    const V v_hat = vmax(v_raw, V{} + a.v_min);
    const V l1 = T(1) / v_hat - T(1) / v;
    const auto take = (l1 > T(0)) & ~kept;
    const V g_l1 = take ? (T(1) - eta) * Gl : V{};
    const V g_g1 = take ? (T(1) - eta) * Gg : V{};
    const V g_lam0 = eta * Gl + (take ? V{} : (T(1) - eta) * Gl);
    const V g_gam0 = eta * Gg + (take ? V{} : (T(1) - eta) * Gg);
    const V g_vhat = -(g_l1 + g_g1 * x_hat) / (v_hat * v_hat);
    V g_xhat = g_g1 / v_hat;
    V g_x = -g_g1 / v;
    V g_v = (g_l1 + g_g1 * x) / (v * v);
    const V g_vr = v_raw >= a.v_min ? g_vhat : V{};
    g_xhat -= T(2) * g_vr * pd;
    V sp = V{};
    for (int j = 0; j < L; ++j) {
      gp[j] = g_xhat * lev[j] + g_vr * d[j] * d[j];
      sp += p[j] * gp[j];
    }
    const bool ep = a.logits == nullptr;
    for (int j = 0; j < L; ++j) {
      const V g_z = p[j] * (gp[j] - sp);
      V g_lev = p[j] * (g_xhat + T(2) * g_vr * d[j]);
      if (ep) {
        const V r = lev[j] - x;
        g_x += g_z * r / v;
        g_v += g_z * r * r / (T(2) * v * v);
        g_lev -= g_z * r / v;
      }
      for (int l = 0; l < nl; ++l) {
        a.g_z[(n0 + l) * L + j] = g_z[l];
        if (a.g_lev) a.g_lev[(n0 + l) * L + j] = g_lev[l];
      }
    }
    for (int l = 0; l < nl; ++l) {
      const int64_t n = n0 + l;
      a.g_x[n] = g_x[l], a.g_v[n] = g_v[l], a.g_lam0[n] = g_lam0[l], a.g_gam0[n] = g_gam0[l];
    }
  }
}

MIMO_FAST_AVX2 void upd_avx2_f32(const UpdateArgs<float>& a, int64_t b, int64_t e) { update_range<float, 8>(a, b, e); }
MIMO_FAST_AVX2 void upd_avx2_f64(const UpdateArgs<double>& a, int64_t b, int64_t e) {
  update_range<double, 4>(a, b, e);
}
void upd_sse_f32(const UpdateArgs<float>& a, int64_t b, int64_t e) { update_range<float, 4>(a, b, e); }
void upd_sse_f64(const UpdateArgs<double>& a, int64_t b, int64_t e) { update_range<double, 2>(a, b, e); }
MIMO_FAST_AVX2 void ubw_avx2_f32(const UpdateArgs<float>& a, int64_t b, int64_t e) {
  update_backward_range<float, 8>(a, b, e);
}
MIMO_FAST_AVX2 void ubw_avx2_f64(const UpdateArgs<double>& a, int64_t b, int64_t e) {
  update_backward_range<double, 4>(a, b, e);
}
void ubw_sse_f32(const UpdateArgs<float>& a, int64_t b, int64_t e) { update_backward_range<float, 4>(a, b, e); }
void ubw_sse_f64(const UpdateArgs<double>& a, int64_t b, int64_t e) { update_backward_range<double, 2>(a, b, e); }

constexpr Layout kUpdate{"ep_update_forward", "x_obs v_obs lam gam levels log_prior logits keep lam_out gam_out",
                         "B K L damping v_min nthreads"};
constexpr Layout kUpdateBackward{"ep_update_backward",
                                 "g_lam g_gam x_obs v_obs lam gam levels log_prior logits keep g_x g_v g_lam0 g_gam0 "
                                 "g_z g_lev",
                                 "B K L damping v_min nthreads"};
namespace uf { enum : int { x, v, lam, gam, levels, log_prior, logits, keep, lam_out, gam_out, kTensors }; }
namespace ub {
enum : int {
  g_lam, g_gam, x, v, lam, gam, levels, log_prior, logits, keep, g_x, g_v, g_lam0, g_gam0, g_z, g_lev, kTensors
};
}
namespace us { enum : int { B, K, L, damping, v_min, nthreads }; }
static_assert(kUpdate.tensor_count() == uf::kTensors && kUpdateBackward.tensor_count() == ub::kTensors, "layouts");

template <typename T>
UpdateArgs<T> update_args(const ArgView& a, int o, int64_t B, int64_t K, int64_t L) {
  UpdateArgs<T> u{};
  u.x = a.in<T>(o), u.v = a.in<T>(o + 1), u.lam = a.in<T>(o + 2), u.gam = a.in<T>(o + 3);
  u.levels = a.in<T>(o + 4), u.log_prior = a.in_opt<T>(o + 5), u.logits = a.in_opt<T>(o + 6);
  u.keep = a.in_opt<unsigned char>(o + 7);
  u.B = B, u.K = static_cast<int>(K), u.L = static_cast<int>(L);
  return u;
}

template <typename Fn>
void run_nodes(int64_t B, int64_t K, int64_t L, int nthreads, Fn&& fn) {
  // Groups of 8 nodes (the widest lane group); below ~64k node-levels one thread is faster.
  parallel_batches(B * K, 8, static_cast<double>(B) * K * L, 1 << 16, nthreads, fn);
}

void update_forward(const py::bytes& block) {
  const ArgView a(block, kUpdate);
  const int64_t B = a.i(us::B), K = a.i(us::K), L = a.i(us::L);
  if (B < 0 || K < 1 || L < 1) a.fail("need B >= 0, K >= 1 and L >= 1");
  if (a.present(uf::log_prior) == a.present(uf::logits)) a.fail("pass exactly one of log_prior and logits");
  a.expect_numel({uf::x, uf::v, uf::lam, uf::gam, uf::keep, uf::lam_out, uf::gam_out}, B * K);
  a.expect_numel({uf::levels, uf::log_prior}, K * L);
  a.expect_numel(uf::logits, B * K * L);
  const int nthreads = static_cast<int>(a.i(us::nthreads));
  const bool avx2 = lane_isa() != LaneIsa::portable;  // these kernels stop at AVX2 width
  auto go = [&](auto zero) {
    using T = decltype(zero);
    UpdateArgs<T> u = update_args<T>(a, uf::x, B, K, L);
    u.lam_out = a.out<T>(uf::lam_out), u.gam_out = a.out<T>(uf::gam_out);
    u.eta = static_cast<T>(a.f(us::damping)), u.v_min = static_cast<T>(a.f(us::v_min));
    void (*fn)(const UpdateArgs<T>&, int64_t, int64_t);
    if constexpr (sizeof(T) == 4) fn = avx2 ? upd_avx2_f32 : upd_sse_f32;
    else fn = avx2 ? upd_avx2_f64 : upd_sse_f64;
    py::gil_scoped_release release;
    run_nodes(B, K, L, nthreads, [&](int64_t b, int64_t e) { fn(u, b, e); });
  };
  if (a.dtype(uf::x) == DType::f32) go(float(0));
  else go(double(0));
}

void update_backward(const py::bytes& block) {
  const ArgView a(block, kUpdateBackward);
  const int64_t B = a.i(us::B), K = a.i(us::K), L = a.i(us::L);
  if (B < 0 || K < 1 || L < 1) a.fail("need B >= 0, K >= 1 and L >= 1");
  if (a.present(ub::log_prior) == a.present(ub::logits)) a.fail("pass exactly one of log_prior and logits");
  a.expect_numel({ub::g_lam, ub::g_gam, ub::x, ub::v, ub::lam, ub::gam, ub::keep, ub::g_x, ub::g_v, ub::g_lam0,
                  ub::g_gam0}, B * K);
  a.expect_numel({ub::levels, ub::log_prior}, K * L);
  a.expect_numel({ub::logits, ub::g_z, ub::g_lev}, B * K * L);
  const int nthreads = static_cast<int>(a.i(us::nthreads));
  const bool avx2 = lane_isa() != LaneIsa::portable;  // these kernels stop at AVX2 width
  auto go = [&](auto zero) {
    using T = decltype(zero);
    UpdateArgs<T> u = update_args<T>(a, ub::x, B, K, L);
    u.g_lam = a.in<T>(ub::g_lam), u.g_gam = a.in<T>(ub::g_gam);
    u.g_x = a.out<T>(ub::g_x), u.g_v = a.out<T>(ub::g_v), u.g_lam0 = a.out<T>(ub::g_lam0);
    u.g_gam0 = a.out<T>(ub::g_gam0), u.g_z = a.out<T>(ub::g_z), u.g_lev = a.out_opt<T>(ub::g_lev);
    u.eta = static_cast<T>(a.f(us::damping)), u.v_min = static_cast<T>(a.f(us::v_min));
    void (*fn)(const UpdateArgs<T>&, int64_t, int64_t);
    if constexpr (sizeof(T) == 4) fn = avx2 ? ubw_avx2_f32 : ubw_sse_f32;
    else fn = avx2 ? ubw_avx2_f64 : ubw_sse_f64;
    py::gil_scoped_release release;
    run_nodes(B, K, L, nthreads, [&](int64_t b, int64_t e) { fn(u, b, e); });
  };
  if (a.dtype(ub::x) == DType::f32) go(float(0));
  else go(double(0));
}

}  // namespace

void bind_ep_update(py::module_& m) {
  m.def("ep_update_forward", &update_forward, py::arg("block"),
        "(8)-(10) on (B, K) nodes: the new lam, gam.");
  m.def("ep_update_backward", &update_backward, py::arg("block"),
        "Gradient of (8)-(10): g_x, g_v, g_lam, g_gam (B, K), g_z and g_levels per node (B, K, L).");
}

}  // namespace mimo_fast
