"""mimo_fast: fused kernels, learned and classical MIMO detectors and precoders.

The ops live in :mod:`mimo_fast.ops`; ``mimo-fast info`` shows which backends
this installation can run and why the others are off.
"""
from mimo_fast._version import __version__
from mimo_fast import ops

__all__ = ["__version__", "ops"]
