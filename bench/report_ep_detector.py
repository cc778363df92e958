"""Markdown table from bench_ep_detector's pytest-benchmark JSON.

    python bench/report_ep_detector.py bench/results/ep_detector.json [bench/results/ep_detector_sionna.json] \
        > bench/results/ep_detector.md

Several files merge (Sionna is run in its own process: after its benchmark ran, the next
2-thread calls in the same process were measured ~40% slower, so it gets a process of its own).
"""
import json
import sys


def main(*paths):
    runs = [json.load(open(p)) for p in paths]
    d = runs[0]
    d["benchmarks"] = [b for r in runs for b in r["benchmarks"]]
    mi = d["machine_info"]
    mf = mi["mimo_fast"]
    rows = {}
    for b in d["benchmarks"]:
        rows.setdefault(b["params"]["case"], {})[b["params"]["impl"]] = (b["stats"]["median"], b["stats"]["rounds"], b["extra_info"])
    print("# `ep` detector vs EP with torch.linalg.inv, and Sionna's EPDetector\n")
    print(f"- machine: {mi.get('cpu_model')} ({mi.get('nproc')} cores), torch {mf['torch']}, {mf['torch_threads']} threads, "
          f"mimo_fast {mf['mimo_fast']}, {d['datetime']}")
    print("- B = 4096 vectors per call, 10 EP iterations, damping 0.7; medians after one untimed call; "
          "`MIMO_BENCH_ROUNDS=<rounds> pytest bench/bench_ep_detector.py --benchmark-only -k 'not sionna'`, then "
          "`-k sionna` in a second process, in a venv with `sionna-no-rt` 2.2.0")
    print("- `torch-inv-ep`: the same EP (E2E paper eqs. 6-10, same moment-matching code) with `torch.linalg.inv` "
          "for the LMMSE step; `agree`: fraction of decisions equal to it. Sionna: speed only (its bit labelling differs).\n")
    print("| case | mimo_fast ep (ms) | vectors/s | inv EP (ms) | inv / ep | Sionna (ms) | Sionna / ep | SER (ep) | agree | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, r in rows.items():
        m, n, e = r["mimo_fast-ep"]
        i = r["torch-inv-ep"][0]
        s = r["sionna-ep"][0] if "sionna-ep" in r else float("nan")
        print(f"| {case} | {m * 1e3:.1f} | {4096 / m:,.0f} | {i * 1e3:.1f} | {i / m:.2f} | {s * 1e3:.1f} | {s / m:.2f} | "
              f"{e['ser']:.4f} | {e['agree_with_inv']:.4f} | {n} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
