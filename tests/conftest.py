"""Test-session setup. The tests run against the *installed* package (the compiled
extensions live there), so refuse to run on an uninstalled source tree by mistake.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors, so the
generic op tests (every backend that can serve a sample) cover the `triton` backend too.
TRITON_INTERPRET is read when triton is imported, so it is set before anything else.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

import mimo_fast  # noqa: E402

_SRC = pathlib.Path(__file__).resolve().parent.parent / "mimo_fast"
if pathlib.Path(mimo_fast.__file__).resolve().parent == _SRC and not os.environ.get("MIMO_FAST_ALLOW_SOURCE_TREE"):
    raise pytest.UsageError(
        "mimo_fast was imported from the source tree, not the installed package: run `pip install .` "
        "and start pytest as `pytest` (not `python -m pytest`) so the repository root is not on sys.path")

torch.manual_seed(0)
