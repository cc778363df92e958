// mimo_fast._C: the CPU extension. Build metadata and CPU feature queries live here;
// each op folder (csrc/<op>/cpu/) adds its kernels through a bind_<op>() function.
#include <pybind11/pybind11.h>

#include "common/args.h"
#include "common/cpu/cpu_features.h"

#if MIMO_FAST_HAVE_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace mimo_fast {
void bind_common(py::module_& m);
void bind_ep_iteration(py::module_& m);
void bind_mpnn_message_sum(py::module_& m);
void bind_ep_lmmse(py::module_& m);
void bind_amp_step(py::module_& m);
}  // namespace mimo_fast

PYBIND11_MODULE(_C, m) {
  m.doc() = "mimo_fast CPU kernels (no libtorch; raw pointers, sizes and strides)";
  py::dict info;
  info["version"] = MIMO_FAST_VERSION;
  info["compiler"] = MIMO_FAST_COMPILER;
  info["build_type"] = MIMO_FAST_BUILD_TYPE;
  info["openmp"] = static_cast<bool>(MIMO_FAST_HAVE_OPENMP);
  // The ISA the wheel was compiled for (its baseline); faster paths are chosen at run time.
#if defined(__AVX2__)
  info["baseline_isa"] = "x86-64 + AVX2";
#elif defined(__x86_64__)
  info["baseline_isa"] = "x86-64";
#elif defined(__aarch64__)
  info["baseline_isa"] = "aarch64";
#else
  info["baseline_isa"] = "unknown";
#endif
  info["runtime_dispatch"] = py::make_tuple("avx2+fma", "portable");
  m.attr("build_info") = info;
  m.def("cpu_has_avx2_fma", &mimo_fast::cpu_has_avx2_fma,
        "True when this CPU runs the AVX2/FMA kernel paths.");
  m.def("cpu_has_avx512f", &mimo_fast::cpu_has_avx512f);
  m.def("cpu_has_avx512_core", &mimo_fast::cpu_has_avx512_core,
        "True when this CPU runs the AVX-512 (F/VL/BW/DQ + FMA) kernel paths (mpnn_message_sum).");
  m.def("openmp_max_threads", [] {
#if MIMO_FAST_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  });
  mimo_fast::bind_args_abi(m);
  mimo_fast::bind_common(m);
  mimo_fast::bind_ep_iteration(m);
  mimo_fast::bind_mpnn_message_sum(m);
  mimo_fast::bind_ep_lmmse(m);
  mimo_fast::bind_amp_step(m);
}
