"""The `cpu` backend's op implementations (C++ kernels in csrc/<op>/, module mimo_fast._C).
Each module registers its op with :data:`mimo_fast.ops.backends.CPU` on import."""
from mimo_fast.ops.cpu import amp_step  # noqa: F401
from mimo_fast.ops.cpu import ep_lmmse  # noqa: F401
from mimo_fast.ops.cpu import mpnn_message_sum  # noqa: F401
