"""Triton kernels, one file per op; installed as ``mimo_fast.kernels``.

Importing this package never imports Triton: each kernel module does, and the
``triton`` backend in :mod:`mimo_fast.ops.registry` probes for it and records why it is
off when it is missing.
"""
