// screen_values: the GPU side of the ops' value checks (mimo_fast/ops/validate.py).
// One launch screens every tensor of an op call -- finite, and optionally > 0 or >= 0 --
// and writes one flag per tensor; Python then pays a single device-to-host copy. Per-tensor
// torch reductions cost a launch each plus their Python overhead (measured on an H100: the
// whole screen of an ep_lmmse call ~0.2 ms that way). Flags only say *which* tensor failed;
// the exact index for the error message is found afterwards by the slow path, which only
// runs when something is wrong.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "common/cuda_utils.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace {

constexpr int kMaxTensors = 16;   // an op has at most 8 inputs (mpnn_message_sum)

struct ScreenArgs {
  const void* ptr[kMaxTensors];
  long long numel[kMaxTensors];
  int kind[kMaxTensors];          // 0: finite, 1: finite and > 0, 2: finite and >= 0
  int count;
};

template <typename T>
__device__ bool bad_value(T x, int kind) {
  if (!isfinite(x)) return true;
  if (kind == 1) return !(x > T(0));
  if (kind == 2) return !(x >= T(0));
  return false;
}

// grid (blocks_per_tensor, count): block (bx, t) strides over tensor t; any bad value sets
// flags[t] = 1 (a benign race: every writer writes the same 1).
template <typename T>
__global__ void screen_kernel(ScreenArgs args, int* flags) {
  const int t = blockIdx.y;
  const T* p = static_cast<const T*>(args.ptr[t]);
  const long long n = args.numel[t];
  const int kind = args.kind[t];
  bool bad = false;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    bad |= bad_value(p[i], kind);
  if (__syncthreads_or(bad) && threadIdx.x == 0) flags[t] = 1;
}

// ptrs/numels/kinds: one entry per (contiguous, real) tensor; flags: device int32 [count],
// zeroed by the caller. Returns nothing: the caller reads the flags.
void screen_values(const std::vector<std::uintptr_t>& ptrs, const std::vector<long long>& numels,
                   const std::vector<int>& kinds, int dtype, std::uintptr_t flags,
                   std::uintptr_t stream) {
  const size_t count = ptrs.size();
  if (count == 0) return;
  if (count > kMaxTensors || numels.size() != count || kinds.size() != count)
    throw std::invalid_argument("screen_values: up to 16 tensors, with one numel and kind each");
  ScreenArgs args{};
  long long longest = 0;
  for (size_t i = 0; i < count; ++i) {
    args.ptr[i] = reinterpret_cast<const void*>(ptrs[i]);
    args.numel[i] = numels[i];
    args.kind[i] = kinds[i];
    longest = numels[i] > longest ? numels[i] : longest;
  }
  args.count = static_cast<int>(count);
  const int threads = 256;
  // enough blocks to stream the longest tensor at full bandwidth, capped (grid-stride loop)
  long long blocks = (longest + threads * 8 - 1) / (threads * 8);
  blocks = blocks < 1 ? 1 : (blocks > 1024 ? 1024 : blocks);
  dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(count));
  auto s = cuda::as_stream(stream);
  int* f = reinterpret_cast<int*>(flags);
  if (dtype == cuda::kFloat32)
    screen_kernel<float><<<grid, threads, 0, s>>>(args, f);
  else if (dtype == cuda::kFloat64)
    screen_kernel<double><<<grid, threads, 0, s>>>(args, f);
  else
    throw std::invalid_argument("screen_values: dtype code must be 0 (float32) or 1 (float64)");
  cuda::check_launch("screen_values");
}

}  // namespace

void bind_screen_values_cuda(py::module_& m) {
  m.def("screen_values", &screen_values, py::arg("ptrs"), py::arg("numels"), py::arg("kinds"),
        py::arg("dtype"), py::arg("flags"), py::arg("stream"),
        "Set flags[i] = 1 where tensor i (contiguous, real) has a non-finite value, or one "
        "that breaks its kind (1: > 0, 2: >= 0). One launch for all tensors.");
}

}  // namespace mimo_fast
