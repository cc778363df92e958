"""The CPU extension's sources compile under clang too, where a clang++ is installed.

CI and the wheels build with GCC. Clang checks some things GCC leaves until after inlining:
an inline-asm operand's size against the function the asm is written in. The lane
templates have no target of their own, so a 32- or 64-byte asm operand there is an error
under clang even though it only ever runs inside an AVX2/AVX-512 wrapper (csrc/common/cpu/
lanes.h, lane_transpose.h). Until session 15 the module did not build with clang 14 at all.
This runs clang's front end (-fsyntax-only: parsing, template instantiation, those checks)
over every CPU source with the build's flags; the machine code is not compared.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# what CMakeLists.txt globs for the _C module
SOURCES = sorted({*ROOT.glob("csrc/common/cpu/*.cpp"), *ROOT.glob("csrc/*/cpu/*.cpp")})


@pytest.mark.parametrize("source", SOURCES, ids=[str(p.relative_to(ROOT / "csrc")) for p in SOURCES])
def test_cpu_source_compiles_under_clang(source):
    clang = shutil.which("clang++")
    if clang is None:
        pytest.skip("no clang++ on PATH")
    pybind11 = pytest.importorskip("pybind11")
    defines = ['-DMIMO_FAST_VERSION="0"', '-DMIMO_FAST_COMPILER="clang"', '-DMIMO_FAST_BUILD_TYPE="Release"',
               "-DMIMO_FAST_HAVE_OPENMP=0"]   # CMakeLists.txt's compile definitions
    cmd = [clang, "-fsyntax-only", "-std=gnu++17", "-O3", "-fno-math-errno", "-Wall", "-Wextra",
           "-Wno-psabi", *defines, f"-I{ROOT / 'csrc'}", "-isystem", sysconfig.get_paths()["include"],
           "-isystem", pybind11.get_include(), str(source)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"clang++ rejects {source.relative_to(ROOT)}:\n{res.stderr[-4000:]}"
