// Helpers for kernels that receive raw tensor memory from Python: a data pointer as an
// integer, the sizes and the strides in elements (torch's convention). No libtorch.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/args.h"  // DType

namespace mimo_fast {

struct StridedView {
  std::uintptr_t ptr;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;

  int64_t numel() const {
    int64_t n = 1;
    for (auto s : sizes) n *= s;
    return n;
  }
  // Offset (in elements) of the element with row-major linear index `linear`.
  int64_t offset_of(int64_t linear) const {
    int64_t off = 0;
    for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
      const int64_t s = sizes[d];
      off += (linear % s) * strides[d];
      linear /= s;
    }
    return off;
  }
};

inline StridedView make_view(std::uintptr_t ptr, std::vector<int64_t> sizes,
                             std::vector<int64_t> strides, const char* name) {
  if (sizes.size() != strides.size())
    throw std::invalid_argument(std::string(name) + ": sizes and strides differ in length");
  for (auto s : sizes)
    if (s < 0) throw std::invalid_argument(std::string(name) + ": negative size");
  return StridedView{ptr, std::move(sizes), std::move(strides)};
}

}  // namespace mimo_fast
