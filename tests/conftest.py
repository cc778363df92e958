"""Test-session setup. The tests run against the *installed* package (the compiled
extensions live there), so refuse to run on an uninstalled source tree by mistake."""
import os
import pathlib

import pytest
import torch

import mimo_fast

_SRC = pathlib.Path(__file__).resolve().parent.parent / "mimo_fast"
if pathlib.Path(mimo_fast.__file__).resolve().parent == _SRC and not os.environ.get("MIMO_FAST_ALLOW_SOURCE_TREE"):
    raise pytest.UsageError(
        "mimo_fast was imported from the source tree, not the installed package: run `pip install .` "
        "and start pytest as `pytest` (not `python -m pytest`) so the repository root is not on sys.path")

torch.manual_seed(0)
