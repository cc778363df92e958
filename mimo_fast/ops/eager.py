"""When an op call may run its implementation directly instead of through torch's dispatcher.

Every op is a ``torch.library.custom_op``, so autograd, ``torch.compile``, ``vmap``, fake
tensors, modes and the profiler all see it. That routing costs time on every call: on the
2-core Xeon VM, after a kernel has streamed a batch through the caches, the custom op's
dispatch into and out of the Python implementation took 73 us of a B4096 K16 ``ep_lmmse``
call (0.74 -> 0.67 ms, medians of six interleaved runs) and 56 us at B1024 K64 (2.94 ->
2.86 ms).

A call needs none of that routing when nothing is watching: no autograd graph to record, no
tracing (``torch.jit.trace``) or compiling, no mode, transform (``vmap``, ``torch.func``) or
profiler, and plain CPU tensors. Then each op's public function calls the same function the
custom op wraps (same checks, same kernels, same outputs); in every other case it goes
through the custom op as before. Forward-mode AD (``torch.autograd.forward_ad``) is refused
before either path (:func:`pick`): the ops define no forward derivative.
"""
from __future__ import annotations

import torch
import torch.autograd.profiler as _profiler
from torch import Tensor

from mimo_fast.ops import validate as V

try:  # private torch hooks; without them (another torch) every call takes the dispatcher
    _dispatch_modes = torch._C._len_torch_dispatch_stack
    _function_modes = torch._C._is_torch_function_mode_enabled
    _transforms = torch._C._functorch.peek_interpreter_stack
    _profiler._is_profiler_enabled  # noqa: B018 (checked to exist)
    AVAILABLE = True
except AttributeError:  # pragma: no cover - depends on the torch version
    AVAILABLE = False

_PLAIN = (Tensor, torch.nn.Parameter)  # subclasses (fake, functional, DTensor...) take the op

#: switch for tests and debugging: False sends every call through the dispatcher.
enabled = True


def direct(*tensors: Tensor | None) -> bool:
    """True when a call on ``tensors`` (None entries skipped) may bypass the dispatcher."""
    if not (enabled and AVAILABLE) or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if _dispatch_modes() or _function_modes() or _transforms() is not None or _profiler._is_profiler_enabled:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _PLAIN or not t.is_cpu or (grad and t.requires_grad):
            return False
    return True


def pick(op: str, forward, custom_op, *tensors: Tensor | None):
    """What an op's public function calls: ``forward`` (the function ``custom_op`` wraps)
    when :func:`direct`, else ``custom_op``. Dual tensors of forward-mode AD are refused first
    (:func:`~mimo_fast.ops.validate.no_forward_ad`): neither path has a forward derivative."""
    V.no_forward_ad(op, *tensors)
    return forward if direct(*tensors) else custom_op

