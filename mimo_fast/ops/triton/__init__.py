"""The `triton` backend's kernels: launch and autograd glue around mimo_fast.kernels.<op>.

Imported by :mod:`mimo_fast.ops.backends` only when Triton is installed. Importing this
package does not import Triton itself: each glue module imports its kernel module (and
so Triton) on the first launch, after TRITON_INTERPRET has had its chance to be set.
"""
from mimo_fast.ops.triton import amp_step, ep_iteration, ep_lmmse, mpnn_message_sum  # noqa: F401  (each registers its op)
