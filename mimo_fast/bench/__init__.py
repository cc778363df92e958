"""Kernel comparisons shipped with the package: plain-PyTorch baselines for each op
(:mod:`mimo_fast.bench.baselines`), the standard shapes, and the ``mimo-fast bench``
runner (:mod:`mimo_fast.bench.timing`). The pytest-benchmark files in the repository's
``bench/`` folder use the same baselines and shapes (and keep no copy of their own)."""
