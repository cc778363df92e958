// Shared by the CUDA kernels (csrc/<op>/cuda/*.cu): stream handles, launch checks, dtype codes.
// Nothing here needs a GPU at import time; errors surface as Python RuntimeErrors.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/args.h"  // DType

namespace mimo_fast {
namespace cuda {

// torch.cuda.current_stream().cuda_stream is an integer; 0 is the legacy default stream.
inline cudaStream_t as_stream(std::uintptr_t handle) {
  return reinterpret_cast<cudaStream_t>(handle);
}

// Throw (-> RuntimeError in Python) on a launch or runtime error, naming where it happened.
inline void check(cudaError_t err, const char* where) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so the next launch starts clean
    throw std::runtime_error(std::string(where) + ": " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

// After a <<<...>>> launch: configuration errors (too many threads, too much shared
// memory) are reported here, not by the launch statement itself.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// The dtype codes of csrc/common/args.h as the ints the launch-configuration functions take.
constexpr int kFloat32 = static_cast<int>(DType::f32);
constexpr int kFloat64 = static_cast<int>(DType::f64);

// CUDA's grid limits: blocks along x, and along y or z.
constexpr long long kMaxGridX = 2147483647LL;
constexpr long long kMaxGridYZ = 65535LL;

}  // namespace cuda
}  // namespace mimo_fast
