"""The `reference` backend: pure PyTorch, every device and dtype, the ground truth the
other backends are tested against and the fallback when none of them can serve."""
import torch

from mimo_fast.ops.registry import Backend, register_backend
from mimo_fast.ops.reference import amp_step, ep_iteration, ep_lmmse, mpnn_message_sum

BACKEND = register_backend(Backend(
    name="reference",
    priority=0,
    devices=("cpu", "cuda", "mps", "xpu"),
    dtypes=(torch.float32, torch.float64),
    # against an exact oracle of the same formula (tests/op_samples.py)
    tolerances={torch.float32: (1e-4, 1e-5), torch.float64: (1e-9, 1e-11)},
))
BACKEND.implement("mpnn_message_sum", mpnn_message_sum.forward, mpnn_message_sum.backward)
BACKEND.implement("ep_lmmse", ep_lmmse.forward, ep_lmmse.backward)
BACKEND.implement("amp_step", amp_step.forward, amp_step.backward)
BACKEND.implement("ep_cavity", ep_iteration.cavity_forward, ep_iteration.cavity_op_backward)
BACKEND.implement("ep_update", ep_iteration.update, ep_iteration.update_backward)
