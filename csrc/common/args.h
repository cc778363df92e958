// The argument block: the one way Python hands tensors and scalars to a compiled kernel.
// mimo_fast/ops/native.py (Signature.call) checks every tensor (dtype, device, layout) and
// packs ONE `bytes` object per call; every binding, CPU and CUDA, reads it through ArgView
// by fixed slot. No libtorch: a tensor is a raw pointer, a dtype code and an element count
// (plus sizes and strides for the strided views that carry them).
//
// Layout, version 1: little-endian 8-byte slots
//   [0] kArgsMagic (the text "mfargs", then the version)
//   [1] FNV-1a 64 hash of "name(tensor names;scalar names)": the binding's Layout
//   [2] number of tensor records        [3] number of scalars
//   tensor record: ptr, dtype code | (ndims << 8), numel, then ndims sizes and ndims strides
//                  (ndims > 0 only for strided views; code kNone and ptr 0 for a None)
//   scalars: int64, or the bits of a double
// The hash makes Python and C++ agree on the names and their order, not only on the count:
// a block built for another layout (an old wheel, a renamed argument) is refused by name.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace mimo_fast {

// dtype codes: the C++ side of mimo_fast.ops.native.DTYPE_CODES (tests/test_native.py
// compares the two through args_abi()).
enum class DType : int { f32 = 0, f64 = 1, c64 = 2, c128 = 3, i32 = 4, u8 = 5, b8 = 6, none = 255 };

template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <> struct DTypeOf<unsigned char> { static constexpr DType value = DType::u8; };

constexpr int kArgsVersion = 1;
constexpr int64_t kArgsMagic = 0x6d66617267730000LL | kArgsVersion;  // "mfargs" v1
constexpr int kMaxDims = 8;
constexpr int kMaxTensors = 48;

constexpr uint64_t fnv1a(const char* s, uint64_t h = 0xcbf29ce484222325ULL) {
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001b3ULL;
  return h;
}

constexpr int count_words(const char* s) {
  int n = 0;
  bool in_word = false;
  for (; *s; ++s) {
    const bool space = *s == ' ';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

constexpr bool ends_with_star(const char* s) {
  const char* last = nullptr;
  for (; *s; ++s)
    if (*s != ' ') last = s;
  return last && *last == '*';
}

// A binding's argument names, in block order. The last tensor name may end in '*': a
// variadic tail of up to kMaxTensors - (count - 1) tensors.
struct Layout {
  const char* name;
  const char* tensors;
  const char* scalars;

  constexpr uint64_t hash() const {
    uint64_t h = fnv1a(name);
    h = fnv1a("(", h);
    h = fnv1a(tensors, h);
    h = fnv1a(";", h);
    h = fnv1a(scalars, h);
    return fnv1a(")", h);
  }
  constexpr int tensor_count() const { return count_words(tensors); }
  constexpr int scalar_count() const { return count_words(scalars); }
  constexpr bool variadic() const { return ends_with_star(tensors); }
};

struct TensorArg {
  std::uintptr_t ptr;
  DType dtype;
  int ndim;             // carried dims (0 unless a strided view)
  int64_t numel;
  const char* dims;     // ndim sizes then ndim strides, inside the block
};

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::c64: return "complex64";
    case DType::c128: return "complex128";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::b8: return "bool";
    case DType::none: return "None";
  }
  return "unknown";
}

// The word `index` of a space-separated list (for error messages only).
inline std::string word(const char* s, int index) {
  std::string w;
  int n = -1;
  bool in_word = false;
  for (; *s; ++s) {
    const bool space = *s == ' ';
    if (!space && !in_word) ++n;
    in_word = !space;
    if (!space && n == index) w += *s;
    if (n > index) break;
  }
  return w;
}

// Read-only view of one argument block, valid while the bytes object lives (the call).
// Constructed with the GIL held; the accessors only read memory and may run without it.
class ArgView {
 public:
  ArgView(const pybind11::bytes& block, const Layout& layout) : layout_(layout) {
    char* data = nullptr;
    Py_ssize_t len = 0;
    if (PyBytes_AsStringAndSize(block.ptr(), &data, &len) != 0) throw pybind11::error_already_set();
    parse(data, static_cast<int64_t>(len));
  }

  // Scalars by slot.
  int64_t i(int slot) const { return slot_i(scalar_at_ + slot); }
  double f(int slot) const {
    double v;
    std::memcpy(&v, data_ + 8 * (scalar_at_ + slot), 8);
    return v;
  }

  int tensors() const { return ntensors_; }
  const TensorArg& tensor(int slot) const { return t_[slot]; }
  DType dtype(int slot) const { return t_[slot].dtype; }
  int64_t numel(int slot) const { return t_[slot].numel; }
  bool present(int slot) const { return t_[slot].dtype != DType::none; }
  int64_t size(int slot, int d) const { return dim(slot, d); }
  int64_t stride(int slot, int d) const { return dim(slot, t_[slot].ndim + d); }

  // Typed pointers: the tensor's dtype must be T's (bool reads as unsigned char). in/out
  // refuse a None; *_opt return nullptr for it. cx<T>: a complex tensor of T (complex64 for
  // float) as its interleaved (re, im) memory; cx_in is its read-only form.
  template <typename T> const T* in(int slot) const { return typed<T>(slot, false); }
  template <typename T> T* out(int slot) const { return typed<T>(slot, false); }
  template <typename T> const T* in_opt(int slot) const { return typed<T>(slot, true); }
  template <typename T> T* out_opt(int slot) const { return typed<T>(slot, true); }
  template <typename T> T* cx(int slot) const {
    const DType want = std::is_same<T, float>::value ? DType::c64 : DType::c128;
    static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "complex of float or double");
    if (t_[slot].dtype != want)
      fail(tname(slot) + " has dtype " + dtype_name(t_[slot].dtype) + ", the kernel reads " + dtype_name(want));
    return reinterpret_cast<T*>(t_[slot].ptr);
  }
  template <typename T> const T* cx_in(int slot) const { return cx<T>(slot); }

  // The kernel's own sizes must match what the block carries (a wrong buffer would be read
  // or written out of bounds). A None slot passes.
  void expect_numel(int slot, int64_t n) const {
    if (present(slot) && t_[slot].numel != n)
      fail(tname(slot) + " has " + std::to_string(t_[slot].numel) + " elements, the kernel's sizes need " +
           std::to_string(n));
  }
  void expect_numel(std::initializer_list<int> slots, int64_t n) const {
    for (int s : slots) expect_numel(s, n);
  }
  void expect_dtype(int slot, DType d) const {
    if (t_[slot].dtype != d) fail(tname(slot) + " has dtype " + dtype_name(t_[slot].dtype) + ", expected " + dtype_name(d));
  }

  [[noreturn]] void fail(const std::string& what) const { throw std::invalid_argument(std::string(layout_.name) + ": " + what); }
  std::string tname(int slot) const {
    const int fixed = layout_.tensor_count();
    if (layout_.variadic() && slot >= fixed - 1) {
      std::string w = word(layout_.tensors, fixed - 1);
      w.pop_back();
      return w + "[" + std::to_string(slot - (fixed - 1)) + "]";
    }
    return word(layout_.tensors, slot);
  }

 private:
  int64_t slot_i(int64_t k) const {
    int64_t v;
    std::memcpy(&v, data_ + 8 * k, 8);
    return v;
  }
  int64_t dim(int slot, int k) const {
    int64_t v;
    std::memcpy(&v, t_[slot].dims + 8 * k, 8);
    return v;
  }

  template <typename T>
  T* typed(int slot, bool optional) const {
    const TensorArg& a = t_[slot];
    if (a.dtype == DType::none) {
      if (optional) return nullptr;
      fail(tname(slot) + " is required (got None)");
    }
    const DType want = DTypeOf<T>::value;
    if (a.dtype != want && !(want == DType::u8 && a.dtype == DType::b8))
      fail(tname(slot) + " has dtype " + dtype_name(a.dtype) + ", the kernel reads " + dtype_name(want));
    return reinterpret_cast<T*>(a.ptr);
  }

  void parse(const char* data, int64_t len) {
    data_ = data;
    if (len % 8 != 0 || len < 32) fail("the argument block is " + std::to_string(len) + " bytes, not a v1 block");
    const int64_t slots = len / 8;
    const int64_t magic = slot_i(0);
    if ((magic & ~int64_t(0xffff)) != (kArgsMagic & ~int64_t(0xffff)))
      fail("not an argument block (bad magic): build it with mimo_fast.ops.native.Signature");
    if (magic != kArgsMagic)
      fail("argument block layout version " + std::to_string(magic & 0xffff) + ", this module reads version " +
           std::to_string(kArgsVersion) + " (the Python package and the compiled module are from different builds)");
    const int64_t nt = slot_i(2), ns = slot_i(3);
    const int want_t = layout_.tensor_count(), want_s = layout_.scalar_count();
    const bool var = layout_.variadic();
    if (var ? (nt < want_t - 1 || nt > kMaxTensors) : nt != want_t)
      fail("the block has " + std::to_string(nt) + " tensors, the layout '" + layout_.tensors + "' has " +
           std::to_string(want_t) + (var ? " (the last one variadic)" : ""));
    if (ns != want_s)
      fail("the block has " + std::to_string(ns) + " scalars, the layout '" + layout_.scalars + "' has " +
           std::to_string(want_s));
    if (static_cast<uint64_t>(slot_i(1)) != layout_.hash())
      fail(std::string("the block was built for another layout than ") + layout_.name + "(" + layout_.tensors + ";" +
           layout_.scalars + "): the Python package and the compiled module disagree on the arguments");
    ntensors_ = static_cast<int>(nt);
    int64_t k = 4;
    for (int j = 0; j < ntensors_; ++j) {
      if (k + 3 > slots) fail("the argument block is truncated in tensor " + tname(j));
      TensorArg& a = t_[j];
      a.ptr = static_cast<std::uintptr_t>(slot_i(k));
      const int64_t code = slot_i(k + 1);
      a.numel = slot_i(k + 2);
      const int64_t c = code & 0xff, nd = code >> 8;
      if (!((c >= 0 && c <= 6) || c == 255)) fail(tname(j) + " has unknown dtype code " + std::to_string(c));
      if (nd < 0 || nd > kMaxDims) fail(tname(j) + " carries " + std::to_string(nd) + " dims (at most " + std::to_string(kMaxDims) + ")");
      if (a.numel < 0) fail(tname(j) + " has a negative element count");
      a.dtype = static_cast<DType>(c);
      a.ndim = static_cast<int>(nd);
      if (a.dtype == DType::none ? a.ptr != 0 : (a.ptr == 0 && a.numel > 0))
        fail(tname(j) + ": null pointer with elements, or a None with a pointer");
      a.dims = data + 8 * (k + 3);
      k += 3 + 2 * nd;
    }
    scalar_at_ = k;
    if (k + ns != slots)
      fail("the argument block has " + std::to_string(slots) + " slots, its records need " + std::to_string(k + ns));
  }

  const Layout& layout_;
  const char* data_ = nullptr;
  int ntensors_ = 0;
  int64_t scalar_at_ = 0;
  TensorArg t_[kMaxTensors];
};

// args_abi(): the block version, magic and dtype codes this module was built with, so
// Python can check it agrees (mimo_fast.ops.native, tests/test_native.py).
inline void bind_args_abi(pybind11::module_& m) {
  m.def("args_abi", [] {
    pybind11::dict codes;
    for (DType d : {DType::f32, DType::f64, DType::c64, DType::c128, DType::i32, DType::u8, DType::b8, DType::none})
      codes[dtype_name(d)] = static_cast<int>(d);
    pybind11::dict abi;
    abi["version"] = kArgsVersion;
    abi["magic"] = kArgsMagic;
    abi["max_dims"] = kMaxDims;
    abi["max_tensors"] = kMaxTensors;
    abi["dtypes"] = codes;
    return abi;
  }, "The argument-block version, magic, limits and dtype codes of this module (csrc/common/args.h).");
}

}  // namespace mimo_fast
