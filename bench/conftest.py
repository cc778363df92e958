"""Shared pytest-benchmark setup: every benchmark run records the machine and versions
with its numbers (``--benchmark-json`` writes them into ``machine_info``), and helpers
for the comparisons the bench files make.

Run:  pytest bench/bench_<op>.py --benchmark-only --benchmark-json bench/results/<machine>/<name>.json
      python bench/report.py bench/results/<machine>/<name>.json > bench/results/<machine>/<name>.md
<machine> is one folder per machine (xeon-2core-avx512, epyc-2core-avx512, h100, ...): numbers
from different machines never share a folder. Each bench file's docstring gives its <name>;
bench/README.md lists them. (Benchmarks are not part of the test run: ``testpaths`` in
pyproject.toml is tests/.)
"""
from __future__ import annotations

import os
import time

import pytest
import torch


def pytest_collect_file(file_path, parent):
    """``pytest bench/`` collects the bench_<op>.py files too (pytest's own pattern is
    test_*.py; a file named on the command line is collected by pytest itself).
    bench_precode.py is a script (``python bench/bench_precode.py``), not a pytest file."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_") and file_path.name != "bench_precode.py"
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_benchmark_update_machine_info(config, machine_info):
    from mimo_fast import info

    data = info.collect()
    # .get: the CPU-feature keys exist only when the extension imported (a source-tree run
    # of `python -m pytest bench/` does not have it)
    machine_info["mimo_fast"] = {k: data.get(k) for k in ("mimo_fast", "torch", "torch_threads",
                                                       "extension_cpu", "cpu_avx2_fma", "cpu_avx512",
                                                       "openmp_threads")}
    machine_info["mimo_fast"]["backends"] = {n: b["unavailable"] or "available" for n, b in data["backends"].items()}
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        model = "?"
    machine_info["cpu_model"] = model
    machine_info["nproc"] = os.cpu_count()
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()


def sgemm_gflops(n: int = 2048, repeat: int = 5) -> float:
    """This machine's measured float32 matmul rate (best of ``repeat``), for GFLOP/s context."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


@pytest.fixture(scope="session")
def sgemm_rate():
    return sgemm_gflops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
