"""Old import paths kept working: a module that moved leaves a shim whose module-level
``__getattr__`` (PEP 562) fetches each old name from its new home with a
``DeprecationWarning`` naming that home, at the moment the name is used (an import-time
warning would fire once per process, whichever import came first)."""
from __future__ import annotations

import importlib
import warnings


def forward(old: str, targets: dict):
    """The ``__getattr__`` of module ``old``: ``targets`` maps each old name to
    ``"new.module:name"``; any other name is an ``AttributeError``."""
    def __getattr__(name: str):
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        warnings.warn(f"{old}.{name} is deprecated: use {module}.{attr}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    return __getattr__
