// screen_values: the GPU side of the ops' value checks (mimo_fast/ops/validate.py).
// One launch screens every tensor of an op call -- finite, and optionally > 0 or >= 0 --
// and writes one flag per tensor; Python then pays a single device-to-host copy. Per-tensor
// torch reductions cost a launch each plus their Python overhead (measured on an H100: the
// whole screen of an ep_lmmse call ~0.2 ms that way). Flags only say *which* tensor failed;
// the exact index for the error message is found afterwards by the slow path, which only
// runs when something is wrong.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "common/args.h"
#include "common/cuda/cuda_utils.cuh"

namespace py = pybind11;

namespace mimo_fast {
namespace {

constexpr int kMaxScreened = 16;   // an op has at most 8 inputs (mpnn_message_sum)

struct ScreenArgs {
  const void* ptr[kMaxScreened];
  long long numel[kMaxScreened];
  int kind[kMaxScreened];          // 0: finite, 1: finite and > 0, 2: finite and >= 0
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

// Block (mimo_fast/ops/validate.py builds it): flags (device int32 [count], zeroed by the
// caller), then the values (contiguous, real, one dtype); scalars kinds (2 bits per value
// tensor, value i at bits 2i..2i+1) and the stream. Returns nothing: the caller reads the flags.
constexpr Layout kScreen{"screen_values", "flags values*", "kinds stream"};

void screen_values(const py::bytes& block) {
  const ArgView a(block, kScreen);
  const int count = a.tensors() - 1;
  if (count == 0) return;
  if (count > kMaxScreened) a.fail("up to 16 value tensors");
  a.expect_numel(0, count);
  int* f = a.out<int32_t>(0);
  const DType dt = a.dtype(1);
  if (dt != DType::f32 && dt != DType::f64) a.expect_dtype(1, DType::f32);
  const int64_t kinds = a.i(0);
  ScreenArgs args{};
  long long longest = 0;
  for (int i = 0; i < count; ++i) {
    a.expect_dtype(1 + i, dt);
    args.ptr[i] = reinterpret_cast<const void*>(a.tensor(1 + i).ptr);
    args.numel[i] = a.numel(1 + i);
    args.kind[i] = static_cast<int>((kinds >> (2 * i)) & 3);
    if (args.kind[i] == 3) a.fail("kind 3 is not a screen (0: finite, 1: > 0, 2: >= 0)");
    longest = args.numel[i] > longest ? args.numel[i] : longest;
  }
  args.count = count;
  const int threads = 256;
  // enough blocks to stream the longest tensor at full bandwidth, capped (grid-stride loop)
  long long blocks = (longest + threads * 8 - 1) / (threads * 8);
  blocks = blocks < 1 ? 1 : (blocks > 1024 ? 1024 : blocks);
  dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(count));
  auto s = cuda::as_stream(static_cast<std::uintptr_t>(a.i(1)));
  if (dt == DType::f32)
    screen_kernel<float><<<grid, threads, 0, s>>>(args, f);
  else
    screen_kernel<double><<<grid, threads, 0, s>>>(args, f);
  cuda::check_launch("screen_values");
}

}  // namespace

void bind_screen_values_cuda(py::module_& m) {
  m.def("screen_values", &screen_values, py::arg("block"),
        "Set flags[i] = 1 where value tensor i (contiguous, real) has a non-finite value, or one that breaks "
        "its kind (1: > 0, 2: >= 0). One launch for all tensors. Block (mimo_fast.ops.native): flags (int32), "
        "values*; scalars kinds (2 bits each), stream.");
}

}  // namespace mimo_fast
