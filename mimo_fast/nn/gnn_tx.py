"""Deprecated: GNN-tx, the E2E transmitter, lives beside the E2E detector in
:mod:`mimo_fast.detect.learned.gnn_tx`; the names here forward to it with a
``DeprecationWarning``."""
from mimo_fast._deprecated import forward

__getattr__ = forward(__name__, {name: f"mimo_fast.detect.learned.gnn_tx:{name}"
                                 for name in ("GNNTx", "distance_edges", "NODE_SIZE")})
