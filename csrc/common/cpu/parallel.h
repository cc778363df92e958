// parallel_batches: the batch loop shared by the CPU kernels that split work over batch
// elements. Dynamic chunks (~8 per thread, aligned to `group` elements, e.g. a SIMD lane
// group of matrices) rather than one static range per thread: on a shared machine a
// descheduled thread then delays the call by one chunk, not by half the batch. Calls whose
// `work` is below `serial_below` run on one thread (a parallel region would cost more).
#pragma once
#include <algorithm>
#include <cstdint>

#if MIMO_FAST_HAVE_OPENMP
#include <omp.h>
#endif

namespace mimo_fast {

template <typename Fn>
void parallel_batches(int64_t B, int64_t group, double work, double serial_below, int nthreads, Fn&& fn) {
  const int64_t units = (B + group - 1) / group;
  const int nt = work < serial_below ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, units)));
  const int64_t chunk = std::max<int64_t>(1, units / (8 * nt));
  const int64_t nchunks = (units + chunk - 1) / chunk;
#if MIMO_FAST_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
#endif
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t b = std::min(B, c * chunk * group), e = std::min(B, (c + 1) * chunk * group);
    if (b < e) fn(b, e);
  }
}

}  // namespace mimo_fast
