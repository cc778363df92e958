"""Markdown table of a pytest-benchmark JSON written by bench/bench_<op>.py: median and min
per shape and mode, and the speed-up of backend 'cpu' over each implementation.

    python bench/report.py bench/results/ep_lmmse_cpu.json > bench/results/ep_lmmse_cpu.md
"""
import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    mi = data["machine_info"]
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        e = b["extra_info"]
        rows[(e["shape"], e["mode"])][e["impl"]] = (b["stats"]["median"], b["stats"]["min"], b["stats"]["rounds"])
    op = data["benchmarks"][0]["extra_info"]["op"]
    mf = mi.get("mimo_fast", {})
    print(f"# {op}: CPU benchmark\n")
    print(f"- machine: {mi.get('cpu_model')} ({mi.get('nproc')} cores), torch threads {mf.get('torch_threads')}, "
          f"AVX2/FMA {mf.get('cpu_avx2_fma')}")
    print(f"- versions: python {mi.get('python_version')}, torch {mf.get('torch')}, mimo_fast {mf.get('mimo_fast')}")
    print(f"- run: {data.get('datetime')}; cells: median / min in ms, [rounds]; ratios: "
          "median ratio (min ratio). The machine is shared with other jobs: 2-thread runs lose "
          "whole scheduler slices when a core is taken, so medians are noisy and the min shows "
          "the uncontended speed\n")
    impls = sorted({i for r in rows.values() for i in r}, key=lambda i: (i == "cpu", i))
    print("| shape | mode | " + " | ".join(impls) + " | " + " | ".join(f"cpu vs {i}" for i in impls if i != "cpu") + " |")
    print("|---" * (2 + 2 * len(impls) - 1) + "|")
    for (shape, mode), r in rows.items():
        cells = [f"{r[i][0] * 1e3:.3g} / {r[i][1] * 1e3:.3g} [{r[i][2]}]" if i in r else "-" for i in impls]
        ratios = [f"{r[i][0] / r['cpu'][0]:.1f}x ({r[i][1] / r['cpu'][1]:.1f}x)" if i in r and "cpu" in r else "-"
                  for i in impls if i != "cpu"]
        print(f"| {shape} | {mode} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
