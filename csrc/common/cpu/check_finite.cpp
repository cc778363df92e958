// first_nonfinite: the validation helper shared by every CPU backend. Scans a strided
// float32/float64 buffer for NaN or +-inf and returns the row-major linear index of the
// first one (or -1), so an error message can say *where* the bad value is.
// Memory traffic: one read of the tensor; nothing allocated. Dimensions laid out back to
// back are merged first, so a contiguous tensor is scanned as one vectorised run per 16K
// elements; OpenMP splits the runs, each thread keeps the smallest bad index it saw.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/cpu/strided.h"

namespace py = pybind11;

namespace mimo_fast {
namespace {

// Merge dimensions that are laid out back to back (stride[d] == stride[d+1] * size[d+1]),
// which keeps the row-major linear index: a contiguous tensor becomes one long row, a
// complex tensor viewed as real loses its size-2 last dimension.
StridedView coalesce(const StridedView& v) {
  StridedView c{v.ptr, {}, {}};
  for (size_t d = 0; d < v.sizes.size(); ++d) {
    if (v.sizes[d] == 1) continue;
    if (!c.sizes.empty() && c.strides.back() == v.strides[d] * v.sizes[d]) {
      c.sizes.back() *= v.sizes[d];
      c.strides.back() = v.strides[d];
    } else {
      c.sizes.push_back(v.sizes[d]);
      c.strides.push_back(v.strides[d]);
    }
  }
  return c;
}

// Non-finite <=> all exponent bits set; tested on the integer bits so the scan vectorises
// at any ISA level (no early exit in the first pass, which only says whether to look).
template <typename T> struct Bits;
template <> struct Bits<float> { using U = uint32_t; static constexpr U exp = 0x7f800000u; };
template <> struct Bits<double> { using U = uint64_t; static constexpr U exp = 0x7ff0000000000000ull; };

template <typename T>
int64_t first_in_run(const T* p, int64_t n, int64_t step) {
  using U = typename Bits<T>::U;
  constexpr U E = Bits<T>::exp;
  U bad = 0;
  if (step == 1) {
    for (int64_t i = 0; i < n; ++i) {
      U b;
      std::memcpy(&b, p + i, sizeof b);
      bad |= static_cast<U>((b & E) == E);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<U>(!std::isfinite(p[i * step]));
  }
  if (!bad) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i * step])) return i;
  return -1;
}

template <typename T>
int64_t first_nonfinite_impl(const StridedView& view) {
  const StridedView v = coalesce(view);
  const T* base = reinterpret_cast<const T*>(v.ptr);
  const int64_t n = v.numel();
  int64_t best = std::numeric_limits<int64_t>::max();
  // Scan in runs of at most 16K elements along the (coalesced) last dimension.
  const int64_t last = v.sizes.empty() ? 1 : v.sizes.back();
  const int64_t step = v.sizes.empty() ? 1 : v.strides.back();
  const int64_t run = std::min<int64_t>(last, 1 << 14);
  const int64_t runs_per_row = (last + run - 1) / run;
  const int64_t rows = last == 0 ? 0 : n / last;
  const int64_t tasks = rows * runs_per_row;
#pragma omp parallel for schedule(static) reduction(min : best) if (n > (1 << 18))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r = t / runs_per_row, i0 = (t % runs_per_row) * run;
    const int64_t len = std::min(run, last - i0);
    const int64_t off = (v.sizes.size() > 1 ? v.offset_of(r * last) : 0) + i0 * step;
    const int64_t i = first_in_run(base + off, len, step);
    if (i >= 0) best = std::min(best, r * last + i0 + i);
  }
  return best == std::numeric_limits<int64_t>::max() ? -1 : best;
}

// Block (mimo_fast/ops/validate.py builds it): one strided view, with its sizes and strides.
constexpr Layout kFirstNonfinite{"first_nonfinite", "tensor", ""};

int64_t first_nonfinite(const py::bytes& block) {
  const ArgView a(block, kFirstNonfinite);
  const TensorArg& t = a.tensor(0);
  std::vector<int64_t> sizes(t.ndim), strides(t.ndim);
  for (int d = 0; d < t.ndim; ++d) {
    sizes[d] = a.size(0, d);
    strides[d] = a.stride(0, d);
  }
  const StridedView v = make_view(t.ptr, std::move(sizes), std::move(strides), "first_nonfinite: tensor");
  if (v.numel() != t.numel) a.fail("tensor: its sizes disagree with its element count");
  if (t.dtype != DType::f32 && t.dtype != DType::f64) a.expect_dtype(0, DType::f32);
  if (v.numel() == 0) return -1;
  py::gil_scoped_release release;
  return t.dtype == DType::f32 ? first_nonfinite_impl<float>(v) : first_nonfinite_impl<double>(v);
}

}  // namespace

void bind_common(py::module_& m) {
  m.def("first_nonfinite", &first_nonfinite, py::arg("block"),
        "Row-major linear index of the first NaN/inf in a strided float32/float64 tensor, or -1 if every "
        "value is finite. Block (mimo_fast.ops.native): one strided view 'tensor', no scalars.");
}

}  // namespace mimo_fast
