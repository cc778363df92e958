"""`mimo-fast info`, the CLI entry point, and the build rules (no libtorch link, the
Triton sources installed as mimo_fast.kernels)."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

import mimo_fast
from mimo_fast import _ext, info
from mimo_fast.cli import main


def test_info_lists_every_backend_and_reason(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "cpu", "triton", "cuda"):
        assert f"  {name}" in out
    assert "torch" in out and mimo_fast.__version__ in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"]["reference"]["unavailable"] is None
    from mimo_fast.ops import registry

    assert set(data["backends"]["reference"]["ops"]) == set(registry.OP_NAMES)


def test_python_dash_m_info():
    res = subprocess.run([sys.executable, "-m", "mimo_fast.info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "backends" in res.stdout


def test_console_script_installed():
    exe = shutil.which("mimo-fast", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "the mimo-fast console script is not installed next to this Python"
    res = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_cpu_extension_built_and_reports_metadata():
    assert _ext.C is not None, _ext.C_REASON
    data = info.collect()
    assert data["extension_cpu"]["version"] == mimo_fast.__version__
    assert data["extension_cpu"]["baseline_isa"] in ("x86-64", "aarch64", "unknown")  # never -march=native


def _linked_libraries(path: str) -> str:
    if shutil.which("ldd") is None:
        pytest.skip("ldd not available")
    return subprocess.run(["ldd", path], capture_output=True, text=True).stdout


@pytest.mark.parametrize("module", ["C", "C_CUDA"])
def test_compiled_modules_do_not_link_libtorch(module):
    mod = getattr(_ext, module)
    if mod is None:
        pytest.skip(f"{module} not built here")
    libs = _linked_libraries(mod.__file__)
    assert "libtorch" not in libs and "libc10" not in libs, libs


def test_kernels_package_ships_inside_mimo_fast():
    import mimo_fast.kernels as k

    assert pathlib.Path(k.__file__).parent.name == "kernels"
    assert pathlib.Path(k.__file__).parent.parent == pathlib.Path(mimo_fast.__file__).parent


def test_first_nonfinite_helper_handles_strides():
    import torch

    from mimo_fast.ops.validate import FIRST_NONFINITE

    def first(t):
        return FIRST_NONFINITE.call(_ext.C.first_nonfinite, t)

    t = torch.zeros(4, 6, dtype=torch.float64)[:, ::2]
    assert first(t) == -1
    base = torch.zeros(4, 6)
    base[2, 4] = float("inf")
    base[3, 1] = float("nan")  # not in the strided view
    v = base[:, ::2]
    assert first(v) == 2 * 3 + 2
    assert first(base.T) == 1 * 4 + 3       # (6, 4) transposed view: row-major index of base[3, 1]
