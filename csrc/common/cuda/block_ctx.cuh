// One CUDA block as seen by a kernel body: thread/warp indices, barriers and warp
// collectives behind a small interface, so the same body runs on the GPU (DeviceBlock)
// and, for tests without a GPU, in the host emulator (HostBlock, block_emulator.h).
//
// Kernel bodies are `MIMO_FAST_HD` templates over the context type. Every barrier a body
// calls must be reached by every thread it names (the whole block for sync()/sync_or(),
// the 32 lanes of the calling warp for warp_sync()/warp_sum()/warp_any()); the emulator
// reports a barrier that some thread never reaches instead of hanging.
#pragma once

#include <cuda_runtime.h>

#include <cuda/std/limits>

#include <cstdint>

#if defined(__CUDACC__)
#define MIMO_FAST_HD __host__ __device__
#else
#define MIMO_FAST_HD
#endif

namespace mimo_fast {
namespace cuda {

constexpr int kWarp = 32;

// A complex number with the memory of torch's complex64/complex128 (re, im interleaved);
// aligned to its size so a load is one 8- or 16-byte transaction.
template <typename T>
struct alignas(2 * sizeof(T)) Cx {
  T re, im;
};

template <typename T>
MIMO_FAST_HD inline Cx<T> cx(T re, T im) { return Cx<T>{re, im}; }
template <typename T>
MIMO_FAST_HD inline Cx<T> operator+(Cx<T> a, Cx<T> b) { return {a.re + b.re, a.im + b.im}; }
template <typename T>
MIMO_FAST_HD inline Cx<T> operator-(Cx<T> a, Cx<T> b) { return {a.re - b.re, a.im - b.im}; }
template <typename T>
MIMO_FAST_HD inline Cx<T> operator*(Cx<T> a, Cx<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <typename T>
MIMO_FAST_HD inline Cx<T> operator*(T s, Cx<T> a) { return {s * a.re, s * a.im}; }
template <typename T>
MIMO_FAST_HD inline Cx<T> conj(Cx<T> a) { return {a.re, -a.im}; }
template <typename T>
MIMO_FAST_HD inline T abs2(Cx<T> a) { return a.re * a.re + a.im * a.im; }
// Re(conj(a) b): the real inner product PyTorch's complex gradients are made of.
template <typename T>
MIMO_FAST_HD inline T re_dot(Cx<T> a, Cx<T> b) { return a.re * b.re + a.im * b.im; }

MIMO_FAST_HD inline float sqrt_t(float x) { return sqrtf(x); }
MIMO_FAST_HD inline double sqrt_t(double x) { return sqrt(x); }

template <typename T>
MIMO_FAST_HD inline T quiet_nan() { return ::cuda::std::numeric_limits<T>::quiet_NaN(); }

// The real thing: one CUDA block. Warp collectives assume the whole warp is converged
// (bodies call them only in warp-uniform control flow). The methods are host-device so
// that bodies instantiated for either context compile cleanly; they only work on a GPU.
struct DeviceBlock {
  int tid, nthreads, warp, lane, nwarps;
#if defined(__CUDA_ARCH__)
  __device__ DeviceBlock()
      : tid(threadIdx.x), nthreads(blockDim.x), warp(threadIdx.x / kWarp),
        lane(threadIdx.x % kWarp), nwarps(blockDim.x / kWarp) {}
  __device__ void sync() const { __syncthreads(); }
  __device__ bool sync_or(bool p) const { return __syncthreads_or(p) != 0; }
  __device__ void warp_sync() const { __syncwarp(); }
  __device__ bool warp_any(bool p) const { return __any_sync(0xffffffffu, p) != 0; }
  // Butterfly sum: every lane ends with the same bits (each step adds a commuted pair).
  template <typename T>
  __device__ T warp_sum(T v) const {
    for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
  }
#else  // host pass of nvcc: declared for overload resolution only, never called
  MIMO_FAST_HD void sync() const {}
  MIMO_FAST_HD bool sync_or(bool p) const { return p; }
  MIMO_FAST_HD void warp_sync() const {}
  MIMO_FAST_HD bool warp_any(bool p) const { return p; }
  template <typename T>
  MIMO_FAST_HD T warp_sum(T v) const { return v; }
#endif
};

}  // namespace cuda
}  // namespace mimo_fast
