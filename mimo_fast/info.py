"""``mimo-fast info`` / ``python -m mimo_fast.info``: versions, build metadata and, for
each backend, whether it is available here or why not."""
from __future__ import annotations

import platform
import sys

import torch

from mimo_fast import __version__
from mimo_fast.ops import registry
from mimo_fast.ops.native import extension_info
from mimo_fast.ops.registry import OP_NAMES


def collect() -> dict:
    """Everything `info` prints, as a dict (also used by the benchmarks' metadata)."""
    data = {
        "mimo_fast": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "backends": {},
    }
    data.update(extension_info())
    for name, b in sorted(registry.backends().items(), key=lambda kv: -kv[1].priority):
        entry = {"priority": b.priority, "devices": list(b.devices),
                 "unavailable": b.unavailable(), "ops": {}}
        for op in OP_NAMES:
            impl = b.ops.get(op)
            entry["ops"][op] = "implemented" if impl is not None else b.missing_reason
        data["backends"][name] = entry
    return data


def format_info(data: dict) -> str:
    lines = [f"mimo_fast {data['mimo_fast']}  (python {data['python']}, torch {data['torch']}, "
             f"{data['platform']})"]
    if data["extension_cpu"]:
        e = data["extension_cpu"]
        lines.append(f"CPU extension: built by {e['compiler']} ({e['build_type']}), baseline {e['baseline_isa']}, "
                     f"OpenMP {'on' if e['openmp'] else 'off'}; this CPU runs "
                     f"{'AVX-512' if data.get('cpu_avx512') else 'AVX2/FMA' if data.get('cpu_avx2_fma') else 'portable'} paths, "
                     f"{data.get('openmp_threads')} OpenMP threads")
    else:
        lines.append(f"CPU extension: missing: {data['extension_cpu_reason']}")
    if data["extension_cuda"]:
        e = data["extension_cuda"]
        lines.append(f"CUDA extension: nvcc {e['nvcc']}, architectures {e['architectures']}")
    else:
        lines.append(f"CUDA extension: missing: {data['extension_cuda_reason']}")
    lines.append("backends (automatic choice tries them top to bottom for the inputs' device):")
    for name, b in data["backends"].items():
        state = "available" if not b["unavailable"] else f"unavailable: {b['unavailable']}"
        lines.append(f"  {name:<10} [{', '.join(b['devices'])}] {state}")
        if not b["unavailable"]:
            for op, status in b["ops"].items():
                lines.append(f"      {op:<18} {status}")
    return "\n".join(lines)


def main() -> int:
    print(format_info(collect()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
