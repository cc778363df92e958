// A stand-in for <cuda_runtime.h> that lets the CUDA sources of this package compile as
// plain C++ and run on the CPU, for tests on machines without a GPU
// (tests/test_mpnn_message_sum_cuda_emulation.py builds it; tests/cuda_emulation/module.cpp
// holds the runtime). Each block runs on kThreads std::threads: __syncthreads is a barrier of
// all of them, warp shuffles a barrier of 32, shared memory one buffer filled with NaN bytes
// before every block (a read of a value never written shows up as NaN). Blocks run one after
// another. It checks the kernels' index arithmetic, barriers and reductions; it cannot show
// GPU timing, occupancy or register limits.
#pragma once

#define MIMO_FAST_CUDA_EMULATION 1

#include <algorithm>
#include <cstdint>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline double2 make_double2(double a, double b) { return {a, b}; }

struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

namespace emu {
constexpr long kSmemBytes = 232448;  // an H100's opt-in shared memory per block
}

inline const char* cudaGetErrorName(cudaError_t e) { return e ? "cudaErrorInvalidValue" : "cudaSuccess"; }
inline const char* cudaGetErrorString(cudaError_t e) { return e ? "invalid argument (emulation)" : "no error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
template <typename K>
cudaError_t cudaFuncSetAttribute(K, cudaFuncAttribute, int bytes) {
  return bytes <= emu::kSmemBytes ? cudaSuccess : cudaErrorInvalidValue;
}
// An H100 SXM: 132 SMs, 227 KiB per block (opt-in), 228 KiB per SM.
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 132 : a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 233472;
  return cudaSuccess;
}

// A GPU faults on a misaligned vector access; x86 does not, so the emulation checks them.
[[noreturn]] void emulation_fail(const char* what, const char* file, int line);
inline void emulation_check_aligned(const void* p, int bytes, const char* file, int line) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0) emulation_fail("misaligned vector access", file, line);
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

extern thread_local dim3 threadIdx;
extern dim3 blockIdx, gridDim, blockDim;
void __syncthreads();
int __syncthreads_count(int predicate);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);
double __shfl_xor_sync(unsigned mask, double v, int lane_mask);

// Runs body() once per thread of every block of the grid (module.cpp).
void emulation_run(dim3 grid, int threads, long smem, const std::function<void()>& body);

template <typename K, typename... A>
void emulation_launch(K kernel, dim3 grid, int threads, long smem, A... args) {
  emulation_run(grid, threads, smem, [&] { kernel(args...); });
}
