"""Neural-network blocks of the learned detectors: :class:`MLP` and the :class:`MPNN`
(message passing through :func:`mimo_fast.ops.mpnn_message_sum`, GRU aggregation, readout)."""
from mimo_fast.nn.mlp import MLP
from mimo_fast.nn.mpnn import MPNN

__all__ = ["MLP", "MPNN"]
