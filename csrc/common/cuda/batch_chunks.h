// Batch chunking shared by the CUDA ops whose batch may need more blocks than one grid
// holds (csrc/amp_step/cuda/amp_step.cu, csrc/ep_lmmse/cuda/ep_lmmse.cu): each launch gets
// a copy of the op's Args with every pointer moved to the chunk's first batch element.
#pragma once

#include <cstdint>

namespace mimo_fast {
namespace cuda {

// Moves each pointer n elements on; null pointers (buffers one direction does not use)
// stay null. Callers group an Args' pointers by their per-batch-element length.
template <typename... P>
void advance_each(int64_t n, P*&... p) {
  ((p = p ? p + n : nullptr), ...);
}

}  // namespace cuda
}  // namespace mimo_fast
