// first_nonfinite: the validation helper shared by every CPU backend. Scans a strided
// float32/float64 buffer for NaN or +-inf and returns the row-major linear index of the
// first one (or -1), so an error message can say *where* the bad value is.
// Memory traffic: one read of the tensor; nothing allocated. OpenMP splits the index
// range; each thread keeps the smallest bad index it saw.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/strided.h"

namespace py = pybind11;

namespace mimo_fast {
namespace {

// Contiguous fast path: x * 0 is 0 for finite x and NaN for NaN/inf, so one vectorised
// sum per chunk tells whether the chunk is clean; only a dirty chunk is searched.
template <typename T>
int64_t first_nonfinite_flat(const T* x, int64_t n) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  int64_t best = std::numeric_limits<int64_t>::max();
#pragma omp parallel for schedule(static) reduction(min : best) if (n > (1 << 18))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = lo; i < hi; ++i) acc += x[i] * T(0);
    if (acc == acc) continue;
    for (int64_t i = lo; i < hi; ++i)
      if (!std::isfinite(x[i])) { best = std::min(best, i); break; }
  }
  return best;
}

template <typename T>
int64_t first_nonfinite_impl(const StridedView& v) {
  const T* base = reinterpret_cast<const T*>(v.ptr);
  const int64_t n = v.numel();
  int64_t best = std::numeric_limits<int64_t>::max();
  if (v.is_contiguous()) {
    best = first_nonfinite_flat(base, n);
    return best == std::numeric_limits<int64_t>::max() ? -1 : best;
  }
  const int64_t inner = v.sizes.empty() ? 1 : v.sizes.back();
  const int64_t step = v.sizes.empty() ? 1 : v.strides.back();
  const int64_t rows = inner == 0 ? 0 : n / inner;
#pragma omp parallel for schedule(static) reduction(min : best) if (n > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row_off = v.offset_of(r * inner);
    for (int64_t i = 0; i < inner; ++i) {
      if (!std::isfinite(base[row_off + i * step])) {
        best = std::min(best, r * inner + i);
        break;
      }
    }
  }
  return best == std::numeric_limits<int64_t>::max() ? -1 : best;
}

int64_t first_nonfinite(std::uintptr_t ptr, std::vector<int64_t> sizes,
                        std::vector<int64_t> strides, int dtype) {
  StridedView v = make_view(ptr, std::move(sizes), std::move(strides), "tensor");
  if (v.numel() == 0) return -1;
  py::gil_scoped_release release;
  switch (static_cast<DType>(dtype)) {
    case DType::f32: return first_nonfinite_impl<float>(v);
    case DType::f64: return first_nonfinite_impl<double>(v);
  }
  throw std::invalid_argument("first_nonfinite: unsupported dtype code " + std::to_string(dtype));
}

}  // namespace

void bind_common(py::module_& m) {
  m.def("first_nonfinite", &first_nonfinite, py::arg("ptr"), py::arg("sizes"),
        py::arg("strides"), py::arg("dtype"),
        "Row-major linear index of the first NaN/inf in a strided float32 (dtype 0) or "
        "float64 (dtype 1) buffer, or -1 if every value is finite.");
}

}  // namespace mimo_fast
