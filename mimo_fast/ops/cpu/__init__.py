"""The `cpu` backend's op implementations (C++ kernels in csrc/<op>/cpu/, module mimo_fast._C).
Each module registers its op with the `cpu` backend (``registry.get_backend("cpu")``, declared
by :mod:`mimo_fast.ops.backends`) on import."""
from mimo_fast.ops.cpu import amp_step  # noqa: F401
from mimo_fast.ops.cpu import ep_iteration  # noqa: F401
from mimo_fast.ops.cpu import ep_lmmse  # noqa: F401
from mimo_fast.ops.cpu import mpnn_message_sum  # noqa: F401
