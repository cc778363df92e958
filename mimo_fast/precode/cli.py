"""Deprecated: ``mimo-fast precode`` is :mod:`mimo_fast.cli.precode`; the names here
forward to it with a ``DeprecationWarning``."""
from mimo_fast._deprecated import forward

__getattr__ = forward(__name__, {name: f"mimo_fast.cli.precode:{name}"
                                 for name in ("add_parser", "run", "METHODS", "LEARNED", "_fail")})
