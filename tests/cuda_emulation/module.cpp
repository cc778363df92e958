// Runtime of the CPU emulation of the CUDA kernels (see cuda_runtime.h next to this file)
// and the Python module _cuda_emulation, which exposes the same functions as
// mimo_fast._C_cuda's mpnn_message_sum part, running on CPU memory.
#include <pybind11/pybind11.h>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "cuda_runtime.h"

thread_local dim3 threadIdx;
dim3 blockIdx, gridDim, blockDim;

namespace mimo_fast {
namespace mpnn_cuda {
// the kernels' `extern __shared__ unsigned char smem_raw[]` (blocks run one at a time)
alignas(16) unsigned char smem_raw[emu::kSmemBytes];
}  // namespace mpnn_cuda
void bind_mpnn_message_sum_cuda(pybind11::module_& m);
}  // namespace mimo_fast

namespace {

std::unique_ptr<std::barrier<>> block_barrier;
std::unique_ptr<std::barrier<>> warp_barrier[32];
std::atomic<int> sync_count{0};
double shuffle[32][32];

}  // namespace

void emulation_fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "CUDA emulation: %s at %s:%d (block %u, thread %u)\n", what, file, line, blockIdx.x, threadIdx.x);
  std::abort();  // a kernel fault: the test process dies, as the GPU context would
}

void __syncthreads() { block_barrier->arrive_and_wait(); }

int __syncthreads_count(int predicate) {
  sync_count.fetch_add(predicate ? 1 : 0);
  block_barrier->arrive_and_wait();
  const int r = sync_count.load();
  block_barrier->arrive_and_wait();
  if (threadIdx.x == 0) sync_count.store(0);
  block_barrier->arrive_and_wait();
  return r;
}

static double shfl(double v, int lane_mask) {
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  shuffle[w][lane] = v;
  warp_barrier[w]->arrive_and_wait();
  const double r = shuffle[w][lane ^ lane_mask];
  warp_barrier[w]->arrive_and_wait();
  return r;
}

float __shfl_xor_sync(unsigned, float v, int lane_mask) { return float(shfl(v, lane_mask)); }
double __shfl_xor_sync(unsigned, double v, int lane_mask) { return shfl(v, lane_mask); }

void emulation_run(dim3 grid, int threads, long smem, const std::function<void()>& body) {
  if (smem > emu::kSmemBytes) throw std::runtime_error("emulation: too much shared memory");
  if (threads % 32 != 0 || threads > 1024) throw std::runtime_error("emulation: bad block size");
  block_barrier = std::make_unique<std::barrier<>>(threads);
  for (int w = 0; w < threads / 32; ++w) warp_barrier[w] = std::make_unique<std::barrier<>>(32);
  gridDim = grid;
  blockDim = dim3(unsigned(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([t, grid, smem, &body] {
      threadIdx = dim3(unsigned(t));
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          if (t == 0) {
            blockIdx = dim3(x, y);
            std::memset(mimo_fast::mpnn_cuda::smem_raw, 0xff, size_t(smem));  // NaN in every dtype
          }
          block_barrier->arrive_and_wait();
          body();
          block_barrier->arrive_and_wait();
        }
      }
    });
  }
  for (auto& th : pool) th.join();
}

PYBIND11_MODULE(_cuda_emulation, m) {
  m.doc() = "CPU emulation of mimo_fast's CUDA kernels (tests only)";
  mimo_fast::bind_mpnn_message_sum_cuda(m);
}
