"""Deprecated: the timing of ``mimo-fast bench`` is :mod:`mimo_fast.bench.timing`
(``run`` is now :func:`~mimo_fast.bench.timing.time_ops`) and the command is
:mod:`mimo_fast.cli.bench` (``main`` is now its ``run``); the names here forward there
with a ``DeprecationWarning``."""
from mimo_fast._deprecated import forward

__getattr__ = forward(__name__, {
    "run": "mimo_fast.bench.timing:time_ops",
    "add_parser": "mimo_fast.cli.bench:add_parser",
    "main": "mimo_fast.cli.bench:run",
    **{name: f"mimo_fast.bench.timing:{name}" for name in ("OPS", "time_call", "_check", "_outputs", "_loss")},
})
