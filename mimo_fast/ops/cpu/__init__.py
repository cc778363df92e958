"""C++ (``mimo_fast._C``) implementations of the ops, registered on the ``cpu`` backend."""
from mimo_fast.ops.cpu import mpnn_message_sum  # noqa: F401
