// LinePrefetch: a byte range (the next lane group's input) brought into the caches a few
// 64-byte lines per step(), with step() called from inside a compute-bound loop, so the
// lines arrive while that loop runs instead of stalling the loads that read them next.
// prefetcht1 (locality 2): into L2, leaving L1 to the loop's own working set; on the AVX-512
// ep_lmmse factor at K 64, hints 3 and 1 measured the same (Zen 4, session 13).
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/cpu/lanes.h"

namespace mimo_fast {

// Locality: __builtin_prefetch's hint (2 = prefetcht1, into L2; 3 = prefetcht0, into L1).
template <int Locality = 2>
struct LinePrefetch {
  const char* p = nullptr;
  int64_t left = 0;  // lines not yet requested
  int64_t per = 0;   // lines per step

  LinePrefetch() = default;
  // `bytes` from `begin`, over `steps` calls of step() (fewer calls leave the rest unfetched).
  LinePrefetch(const void* begin, size_t bytes, int64_t steps)
      : p(static_cast<const char*>(begin)),
        left(static_cast<int64_t>((bytes + 63) / 64)),
        per(steps > 0 ? (left + steps - 1) / steps : 0) {}

  MIMO_FAST_INLINE void step() {
    const int64_t n = per < left ? per : left;
    for (int64_t c = 0; c < n; ++c) __builtin_prefetch(p + 64 * c, 0, Locality);
    p += 64 * n;
    left -= n;
  }
};

}  // namespace mimo_fast
