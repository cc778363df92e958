"""Markdown tables of bench/bench_gpu.py's pytest-benchmark JSON: per op, shape and pass,
the median time of each implementation, the best (min) time's TFLOP/s and GB/s, and the
speed-up of the fused backends over eager, compiled and (EP) torch.linalg; plus the
device peaks measured in the same run (copy bandwidth, fp32 matmul).

    python bench/report_gpu.py bench/results/gpu_h100.json > bench/results/gpu_h100.md
"""
import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    rows = defaultdict(dict)
    peaks = {}
    gpu = "?"
    for b in data["benchmarks"]:
        e = b["extra_info"]
        gpu = e.get("gpu", gpu)
        if e.get("op") == "peak":
            peaks[e["impl"]] = e
            continue
        rows[(e["op"], e["shape"], e["mode"])][e["impl"]] = (b["stats"]["median"], e)
    mi = data.get("machine_info", {})
    print(f"# GPU benchmark: {gpu}\n")
    print(f"- run: {data.get('datetime')}; python {mi.get('python_version')}; "
          f"torch {mi.get('mimo_fast', {}).get('torch', '?')}")
    if "copy" in peaks:
        print(f"- measured copy bandwidth: {peaks['copy']['gbps']:.0f} GB/s (read + write)")
    if "matmul-fp32" in peaks:
        print(f"- measured fp32 matmul (TF32 off): {peaks['matmul-fp32']['tflops']:.1f} TFLOP/s")
    print("- cells: median ms; rate: TFLOP/s and GB/s of the fastest round (useful flops, "
          "minimum traffic: each input read once, each output written once)\n")
    impls = ["naive", "careful", "compiled", "linalg", "reference", "triton", "cuda", "triton-checked", "cuda-checked"]
    for op in sorted({k[0] for k in rows}):
        keys = [k for k in rows if k[0] == op]
        present = [i for i in impls if any(i in rows[k] for k in keys)]
        fused = [i for i in ("triton", "cuda") if i in present]
        base = [i for i in ("naive", "careful", "compiled", "linalg") if i in present]
        print(f"## {op}\n")
        print("| shape | pass | " + " | ".join(present) + " | "
              + " | ".join(f"{f} rate" for f in fused) + " | "
              + " | ".join(f"{f} vs {b}" for f in fused for b in base) + " |")
        print("|---" * (2 + len(present) + len(fused) + len(fused) * len(base)) + "|")
        for k in sorted(keys):
            r = rows[k]
            cells = [f"{r[i][0] * 1e3:.3g}" if i in r else "-" for i in present]
            rates = [f"{r[f][1].get('tflops', 0):.2f} TF/s, {r[f][1].get('gbps', 0):.0f} GB/s" if f in r else "-"
                     for f in fused]
            ratios = [f"{r[b][0] / r[f][0]:.1f}x" if f in r and b in r else "-" for f in fused for b in base]
            print(f"| {k[1]} | {k[2]} | " + " | ".join(cells) + " | " + " | ".join(rates) + " | "
                  + " | ".join(ratios) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
