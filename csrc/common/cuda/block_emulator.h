// Host emulation of CUDA blocks, so the kernel bodies (templates over a block context,
// block_ctx.cuh) are tested on a machine without a GPU: index math, work partitioning,
// shared-memory carving, batch chunking and the host launch logic all run for real.
//
// The threads of one block are cooperative fibers (ucontext) on the calling thread; a
// barrier parks the fiber, and the scheduler resumes every parked thread once all the
// threads the barrier names (the block, or one warp) have arrived. Each phase between
// barriers runs thread by thread in a fixed order, forward or reverse: running both
// orders exposes a read that races with another thread's write in the same phase. A
// barrier that some thread never reaches (divergent __syncthreads, a warp collective
// after some lanes returned) is reported as an error instead of hanging. Shared memory
// starts as all-ones bytes (NaN in float32/float64), so reading before writing shows up.
// Not emulated: warp-synchronous execution without a barrier (the bodies never rely on it).
#pragma once

#include <ucontext.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cuda/block_ctx.cuh"

namespace mimo_fast {
namespace cuda {

class BlockEmulator {
 public:
  BlockEmulator(int nthreads, bool reverse)
      : n_(nthreads), reverse_(reverse), fibers_(nthreads), slots_(nthreads) {
    if (nthreads < 1 || nthreads % kWarp != 0)
      throw std::invalid_argument("BlockEmulator: threads must be a positive multiple of 32");
    for (auto& f : fibers_) f.stack.reset(new char[kStack]);
  }

  // Runs body(tid) for every thread of one block; returns when all have finished.
  void run(const std::function<void(int)>& body) {
    body_ = &body;
    error_.clear();
    for (auto& f : fibers_) {
      getcontext(&f.uc);
      f.uc.uc_stack.ss_sp = f.stack.get();
      f.uc.uc_stack.ss_size = kStack;
      f.uc.uc_link = &main_;
      makecontext(&f.uc, &BlockEmulator::entry, 0);
      f.state = kReady;
    }
    current() = this;
    for (;;) {
      for (int k = 0; k < n_; ++k) {  // run every ready thread to its next barrier or its end
        const int t = reverse_ ? n_ - 1 - k : k;
        if (fibers_[t].state != kReady) continue;
        cur_ = t;
        swapcontext(&main_, &fibers_[t].uc);
      }
      if (!error_.empty()) throw std::runtime_error("emulated CUDA block: " + error_);
      int done = 0;
      for (auto& f : fibers_) done += f.state == kDone;
      if (done == n_) return;
      if (!release()) throw std::runtime_error("emulated CUDA block: deadlock, " + describe());
    }
  }

  // Park thread tid at a barrier over the block (scope -1) or over warp `scope`.
  void barrier(int tid, int scope) {
    fibers_[tid].state = kWaiting;
    fibers_[tid].scope = scope;
    swapcontext(&fibers_[tid].uc, &main_);
  }

  double& slot(int tid) { return slots_[tid]; }
  int threads() const { return n_; }

 private:
  enum State { kReady, kWaiting, kDone };
  struct Fiber {
    ucontext_t uc;
    std::unique_ptr<char[]> stack;
    State state = kDone;
    int scope = 0;
  };
  static constexpr size_t kStack = 256 * 1024;

  static BlockEmulator*& current() {
    static thread_local BlockEmulator* e = nullptr;
    return e;
  }

  static void entry() {
    BlockEmulator* e = current();
    const int tid = e->cur_;
    try {
      (*e->body_)(tid);
    } catch (const std::exception& ex) {
      if (e->error_.empty()) e->error_ = "thread " + std::to_string(tid) + ": " + ex.what();
    }
    e->fibers_[tid].state = kDone;  // returning resumes main_ (uc_link)
  }

  // Wake the threads of every barrier that all its threads have reached.
  bool release() {
    bool any = false;
    int at_block = 0;
    for (auto& f : fibers_) at_block += f.state == kWaiting && f.scope == -1;
    if (at_block == n_) {
      for (auto& f : fibers_) f.state = kReady;
      return true;
    }
    for (int w = 0; w < n_ / kWarp; ++w) {
      bool all = true;
      for (int l = 0; l < kWarp; ++l) {
        const Fiber& f = fibers_[w * kWarp + l];
        all = all && f.state == kWaiting && f.scope == w;
      }
      if (!all) continue;
      for (int l = 0; l < kWarp; ++l) fibers_[w * kWarp + l].state = kReady;
      any = true;
    }
    return any;
  }

  std::string describe() const {
    int block = 0, warp = 0, done = 0;
    for (auto& f : fibers_) {
      done += f.state == kDone;
      block += f.state == kWaiting && f.scope == -1;
      warp += f.state == kWaiting && f.scope >= 0;
    }
    return std::to_string(block) + " of " + std::to_string(n_) + " threads wait at a block barrier, " +
           std::to_string(warp) + " at warp barriers, " + std::to_string(done) + " finished";
  }

  int n_;
  bool reverse_;
  std::vector<Fiber> fibers_;
  std::vector<double> slots_;
  ucontext_t main_{};
  const std::function<void(int)>* body_ = nullptr;
  int cur_ = 0;
  std::string error_;
};

// The block context of an emulated thread (same interface as DeviceBlock). Host-device
// only so that nvcc's device pass of a body instantiated with it compiles; it runs on
// the host (the device-pass bodies are empty and never called).
struct HostBlock {
  BlockEmulator* emu;
  int tid, nthreads, warp, lane, nwarps;
  HostBlock(BlockEmulator* e, int t)
      : emu(e), tid(t), nthreads(e->threads()), warp(t / kWarp), lane(t % kWarp),
        nwarps(e->threads() / kWarp) {}
#if !defined(__CUDA_ARCH__)
  void sync() const { emu->barrier(tid, -1); }
  bool sync_or(bool p) const {
    emu->slot(tid) = p ? 1.0 : 0.0;
    sync();
    bool r = false;
    for (int i = 0; i < nthreads; ++i) r = r || emu->slot(i) != 0.0;
    sync();  // nobody overwrites a slot before everyone has read it
    return r;
  }
  void warp_sync() const { emu->barrier(tid, warp); }
  bool warp_any(bool p) const {
    emu->slot(tid) = p ? 1.0 : 0.0;
    warp_sync();
    bool r = false;
    for (int l = 0; l < kWarp; ++l) r = r || emu->slot(warp * kWarp + l) != 0.0;
    warp_sync();
    return r;
  }
  // The same butterfly as DeviceBlock::warp_sum, in T (a float passes through double exactly).
  template <typename T>
  T warp_sum(T v) const {
    emu->slot(tid) = static_cast<double>(v);
    warp_sync();
    T a[kWarp], b[kWarp];
    for (int l = 0; l < kWarp; ++l) a[l] = static_cast<T>(emu->slot(warp * kWarp + l));
    for (int o = kWarp / 2; o > 0; o /= 2) {
      for (int l = 0; l < kWarp; ++l) b[l] = a[l] + a[l ^ o];
      for (int l = 0; l < kWarp; ++l) a[l] = b[l];
    }
    warp_sync();
    return a[lane];
  }
#else
  MIMO_FAST_HD void sync() const {}
  MIMO_FAST_HD bool sync_or(bool p) const { return p; }
  MIMO_FAST_HD void warp_sync() const {}
  MIMO_FAST_HD bool warp_any(bool p) const { return p; }
  template <typename T>
  MIMO_FAST_HD T warp_sum(T v) const { return v; }
#endif
};

// Emulate a grid of `blocks` blocks of `threads` threads with `smem_bytes` of dynamic
// shared memory each: body(ctx, block_index, smem) for every thread of every block.
template <class Body>
void emulate_grid(int64_t blocks, int threads, size_t smem_bytes, bool reverse, Body&& body) {
  BlockEmulator emu(threads, reverse);
  const size_t bytes = (smem_bytes + 63) / 64 * 64 + 64;
  std::unique_ptr<unsigned char, void (*)(void*)> smem(
      static_cast<unsigned char*>(std::aligned_alloc(64, bytes)), std::free);
  if (!smem) throw std::bad_alloc();
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t blk = reverse ? blocks - 1 - k : k;
    std::memset(smem.get(), 0xff, bytes);
    emu.run([&](int tid) {
      HostBlock c(&emu, tid);
      body(c, blk, smem.get());
    });
  }
}

}  // namespace cuda
}  // namespace mimo_fast
