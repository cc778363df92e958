// ep_iteration: everything one iteration of the EP detector does after its LMMSE step,
// fused into one pass over (B, K) (E2E paper eqs. 7-10; the torch form, which this must
// match to rounding, is EP._iteration_torch in mimo_fast/detect/iterative.py):
//
//   v_obs = max(Sigma / (1 - Sigma lam), v_min)                      (7b)
//   x_obs = v_obs (mu / Sigma - gam)                                 (7c)
//   p_l   ~ prior_l exp(-(s_l - x_obs)^2 / (2 v_obs))  over the K-th real alphabet s_l
//   x_hat = sum p_l s_l,  v_hat = max(sum p_l (s_l - x_hat)^2, v_min)   (8)
//   lam'  = 1/v_hat - 1/v_obs,  gam' = x_hat/v_hat - x_obs/v_obs       (9)
//   where lam' <= 0 keep (lam, gam); then damp: lam = (1-eta) lam' + eta lam  (10)
//
// Why: at 8x8 16-QAM, B 4096, these ~30 elementwise torch ops on (B, K, L) tensors cost
// ~2 ms an iteration, twice the LMMSE step itself. Here each (b, k) reads mu, Sigma, lam,
// gam and its alphabet (L <= 16 levels, in L1) once and writes x_obs, v_obs, lam, gam once.
// The softmax exponent is clamped at -80 like mimo_fast.detect.base.softmax_last, so exp
// never enters the denormal range and both forms agree. No gradients: the detector uses
// this only when autograd is not recording.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#if MIMO_FAST_HAVE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace mimo_fast {
namespace {

constexpr int kMaxLevels = 64;  // 4096-QAM; QAM up to 256 uses 16

template <typename T>
void ep_iteration_impl(const T* mu, const T* Sigma, T* lam, T* gam, const T* levels,
                       const T* log_prior, T* x_obs_out, T* v_obs_out, int64_t B, int64_t K,
                       int64_t L, T eta, T v_min, bool update, int nthreads) {
  const int64_t n = B * K;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1 && n > 4096)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i % K;
    const T S = Sigma[i], l0 = lam[i], g0 = gam[i];
    const T v_obs = std::max(S / (T(1) - S * l0), v_min);
    const T x_obs = v_obs * (mu[i] / S - g0);
    x_obs_out[i] = x_obs;
    v_obs_out[i] = v_obs;
    if (!update) continue;
    const T* lev = levels + k * L;
    const T* lp = log_prior + k * L;
    T lg[kMaxLevels];
    T mx = -INFINITY;
    const T half_prec = T(0.5) / v_obs;
    for (int64_t j = 0; j < L; ++j) {
      const T d = lev[j] - x_obs;
      lg[j] = lp[j] - d * d * half_prec;
      mx = std::max(mx, lg[j]);
    }
    T sum = 0, sx = 0;
    for (int64_t j = 0; j < L; ++j) {
      lg[j] = std::exp(std::max(lg[j] - mx, T(-80)));
      sum += lg[j];
      sx += lg[j] * lev[j];
    }
    const T x_hat = sx / sum;
    T sv = 0;
    for (int64_t j = 0; j < L; ++j) {
      const T d = lev[j] - x_hat;
      sv += lg[j] * d * d;
    }
    const T v_hat = std::max(sv / sum, v_min);
    T l1 = T(1) / v_hat - T(1) / v_obs;
    T g1 = x_hat / v_hat - x_obs / v_obs;
    if (!(l1 > T(0))) {  // not a precision (or NaN): keep the previous pair
      l1 = l0;
      g1 = g0;
    }
    lam[i] = (T(1) - eta) * l1 + eta * l0;
    gam[i] = (T(1) - eta) * g1 + eta * g0;
  }
}

void ep_iteration(std::uintptr_t mu, std::uintptr_t Sigma, std::uintptr_t lam, std::uintptr_t gam,
                  std::uintptr_t levels, std::uintptr_t log_prior, std::uintptr_t x_obs,
                  std::uintptr_t v_obs, int64_t B, int64_t K, int64_t L, double eta,
                  double v_min, bool update, int dtype, int nthreads) {
  if (L < 1 || L > kMaxLevels)
    throw std::invalid_argument("ep_iteration: the alphabet must have 1.." + std::to_string(kMaxLevels) +
                                " levels, got " + std::to_string(L));
  py::gil_scoped_release release;
#define MIMO_EP_CALL(T)                                                                        \
  ep_iteration_impl<T>(reinterpret_cast<const T*>(mu), reinterpret_cast<const T*>(Sigma),      \
                       reinterpret_cast<T*>(lam), reinterpret_cast<T*>(gam),                   \
                       reinterpret_cast<const T*>(levels), reinterpret_cast<const T*>(log_prior), \
                       reinterpret_cast<T*>(x_obs), reinterpret_cast<T*>(v_obs), B, K, L,      \
                       static_cast<T>(eta), static_cast<T>(v_min), update, std::max(1, nthreads))
  if (dtype == 0) {
    MIMO_EP_CALL(float);
  } else if (dtype == 1) {
    MIMO_EP_CALL(double);
  } else {
    throw std::invalid_argument("ep_iteration: unsupported dtype code " + std::to_string(dtype));
  }
#undef MIMO_EP_CALL
}

}  // namespace

void bind_ep_detector(py::module_& m) {
  m.def("ep_iteration", &ep_iteration, py::arg("mu"), py::arg("Sigma"), py::arg("lam"),
        py::arg("gam"), py::arg("levels"), py::arg("log_prior"), py::arg("x_obs"), py::arg("v_obs"),
        py::arg("B"), py::arg("K"), py::arg("L"), py::arg("eta"), py::arg("v_min"),
        py::arg("update"), py::arg("dtype"), py::arg("nthreads"),
        "EP detector iteration after the LMMSE step (cavity, moment matching, precision "
        "update, damping), in place on lam/gam; contiguous (B, K) buffers, (K, L) alphabet.");
}

}  // namespace mimo_fast
