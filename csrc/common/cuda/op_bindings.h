// The Python-facing part that the CUDA ops with a forward/backward kernel pair share
// (csrc/amp_step/cuda/amp_step.cu, csrc/ep_lmmse/cuda/ep_lmmse.cu): the fields every launch
// Config has, as <op>_launch_config reports them, and the <op>_forward / <op>_backward pair
// of argument-block entry points (mimo_fast.ops.native builds the blocks).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace mimo_fast {
namespace cuda {

// Dynamic shared memory a block may use without the opt-in (cudaFuncSetAttribute).
constexpr int64_t kDefaultSmem = 48 * 1024;

// Adds to an op's launch-configuration dict, after the op's own keys, what every Config
// holds: smem_bytes (dynamic shared memory per block), smem_optin_needed, chunk (batch
// elements per launch), launches, blocks (of the first launch), fits and its reason.
template <class Config>
void add_launch_fields(pybind11::dict& d, const Config& c) {
  d["smem_bytes"] = c.smem_bytes;
  d["smem_optin_needed"] = c.smem_bytes > kDefaultSmem;
  d["chunk"] = c.chunk;
  d["launches"] = c.launches;
  d["blocks"] = c.blocks;
  d["fits"] = c.fits;
  d["reason"] = c.reason;
}

// Binds <op>_forward(block) and <op>_backward(block) to entry(block, false) and
// entry(block, true): one entry serves both, since they share the checks and the dispatch.
inline void bind_forward_backward(pybind11::module_& m, const std::string& op,
                                  void (*entry)(const pybind11::bytes& block, bool backward),
                                  const char* forward_doc, const char* backward_doc) {
  namespace py = pybind11;
  m.def((op + "_forward").c_str(), [entry](const py::bytes& block) { entry(block, false); }, py::arg("block"),
        forward_doc);
  m.def((op + "_backward").c_str(), [entry](const py::bytes& block) { entry(block, true); }, py::arg("block"),
        backward_doc);
}

}  // namespace cuda
}  // namespace mimo_fast
