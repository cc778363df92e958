"""The `cuda` backend's op implementations: launch glue around the CUDA kernels in
csrc/<op>/cuda/ (module mimo_fast._C_cuda). Each glue module registers its op with the
`cuda` backend (declared by :mod:`mimo_fast.ops.backends`) on import; the kernels get
torch's current stream as an integer handle, so they order with the caller's other work
on that stream.

Imported by :mod:`mimo_fast.ops.backends` whenever the extension was built (also on a
machine without a GPU, where the backend reports itself unavailable with the reason).
"""
from mimo_fast.ops.cuda import amp_step  # noqa: F401
from mimo_fast.ops.cuda import ep_lmmse  # noqa: F401
from mimo_fast.ops.cuda import mpnn_message_sum  # noqa: F401
