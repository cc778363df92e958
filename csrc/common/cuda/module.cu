// mimo_fast._C_cuda: the CUDA extension. Built whenever CMake finds a CUDA compiler.
// It must import on a machine without a GPU (cudart is linked statically); whether a
// GPU can be used is answered by device_status(), which Python's registry reports.
// Kernels in csrc/<op>/cuda/*.cu add themselves through bind_<op>_cuda() functions and
// receive torch's current stream as an integer handle.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "common/args.h"

namespace py = pybind11;

namespace mimo_fast {
void bind_screen_values_cuda(py::module_& m);
void bind_ep_lmmse_cuda(py::module_& m);  // csrc/ep_lmmse/cuda/ep_lmmse.cu
void bind_amp_step_cuda(py::module_& m);  // csrc/amp_step/cuda/amp_step.cu
void bind_mpnn_message_sum_cuda(py::module_& m);  // csrc/mpnn_message_sum/cuda/mpnn_message_sum.cu
}  // namespace mimo_fast

namespace {

// (device_count, driver_version, runtime_version, error message or "").
py::tuple device_status() {
  int count = 0, driver = 0, runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    std::string msg = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return py::make_tuple(0, driver, runtime, msg);
  }
  return py::make_tuple(count, driver, runtime, std::string());
}

py::tuple device_capability(int device) {
  cudaDeviceProp prop{};
  cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(err));
  return py::make_tuple(prop.major, prop.minor, std::string(prop.name));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mimo_fast CUDA kernels (no libtorch; raw pointers and an integer stream handle)";
  py::dict info;
  info["version"] = MIMO_FAST_VERSION;
  info["nvcc"] = MIMO_FAST_NVCC_VERSION;
  info["architectures"] = MIMO_FAST_CUDA_ARCHS;
  info["cudart"] = "static";
  m.attr("build_info") = info;
  m.def("device_status", &device_status,
        "(device_count, driver_version, runtime_version, error) as the CUDA runtime sees them");
  m.def("device_capability", &device_capability, py::arg("device"));
  mimo_fast::bind_args_abi(m);
  mimo_fast::bind_screen_values_cuda(m);
  mimo_fast::bind_ep_lmmse_cuda(m);
  mimo_fast::bind_amp_step_cuda(m);
  mimo_fast::bind_mpnn_message_sum_cuda(m);
}
