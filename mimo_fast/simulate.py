"""Deprecated: ``mimo-fast simulate`` is :mod:`mimo_fast.cli.simulate`; the names here
forward to it with a ``DeprecationWarning``."""
from mimo_fast._deprecated import forward

__getattr__ = forward(__name__, {
    "add_parser": "mimo_fast.cli.simulate:add_parser",
    "run": "mimo_fast.cli.simulate:run",
    "_rho": "mimo_fast.cli._args:rho",
    **{name: f"mimo_fast.cli.simulate:{name}"
       for name in ("_init_distributed", "_learned_constellation", "_check_outputs", "_jsonish", "_previous")},
})
