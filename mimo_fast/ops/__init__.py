"""The ops of mimo_fast, as ``torch.library`` custom ops in the ``mimo_fast``
namespace (``torch.ops.mimo_fast.*``), each with a fake implementation and autograd, so
they work under ``torch.compile(fullgraph=True)``.

Backends are listed in :mod:`mimo_fast.ops.registry`; ``backend=None`` picks the fastest
available for the inputs. ``MIMO_FAST_BACKEND`` forces one for every call.
"""
from mimo_fast.ops import registry
from mimo_fast.ops import reference as _reference  # noqa: F401  (registers 'reference')
from mimo_fast.ops import backends as _backends  # noqa: F401  (registers cpu, triton, cuda)
from mimo_fast.ops.amp_step import amp_step
from mimo_fast.ops.ep_iteration import ep_cavity, ep_update
from mimo_fast.ops.ep_lmmse import NotPositiveDefiniteError, ep_lmmse, ep_lmmse_ex
from mimo_fast.ops.mpnn_message_sum import mpnn_message_sum
from mimo_fast.ops.registry import BackendFallbackWarning, BackendUnavailableError
from mimo_fast.ops.threads import kernel_threads, set_kernel_threads
from mimo_fast.ops.validate import trusted_inputs

__all__ = [
    "amp_step", "ep_cavity", "ep_lmmse", "ep_lmmse_ex", "ep_update", "mpnn_message_sum", "registry",
    "NotPositiveDefiniteError", "BackendUnavailableError", "BackendFallbackWarning",
    "kernel_threads", "set_kernel_threads", "trusted_inputs",
]
