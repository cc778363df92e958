"""Markdown table from bench_mpnn_message_sum's pytest-benchmark JSON (both out_act forms;
a run of only one form prints only its sections).

    python bench/report_mpnn_message_sum.py RESULT.json [RERUN.json ...] > bench/results/mpnn_message_sum_cpu.md
    python bench/report_mpnn_message_sum.py RELU.json > bench/results/mpnn_message_sum_relu_cpu.md
"""
from __future__ import annotations

import json
import sys

IMPLS = ["naive", "careful", "compiled", "reference", "cpu", "cpu-nocheck"]


def main(*paths: str) -> None:
    """Later files (reruns of single tests) override earlier ones."""
    runs = [json.load(open(p)) for p in paths]
    data = runs[0]
    data["benchmarks"] = [b for r in runs for b in r["benchmarks"]]
    mi = data["machine_info"]
    rows, mem, isas = {}, {}, {}
    for b in data["benchmarks"]:
        x = b["extra_info"]
        if "extra_peak_mib" in x:
            mem[x["impl"]] = x["extra_peak_mib"]
        elif "shape" in x:
            act = x.get("out_act", "none")
            rows[(act, x["shape"], x["mode"], x["impl"])] = (b["stats"]["median"], x.get("gflops"),
                                                             x.get("fraction_of_sgemm"), b["stats"]["rounds"])
            if "isa" in x:
                isas[x["shape"]] = x["isa"]
    sg = next((b["extra_info"].get("sgemm_gflops") for b in data["benchmarks"] if "sgemm_gflops" in b["extra_info"]), None)
    m = mi.get("mimo_fast", {})
    acts = sorted({k[0] for k in rows}, key=["none", "relu"].index)
    title = {"none": 'out_act="none"', "relu": 'out_act="relu"'}
    print(f"# mpnn_message_sum ({', '.join(title[a] for a in acts)}) on the CPU: fused `cpu` backend vs plain PyTorch\n")
    print(f"- CPU: {mi.get('cpu_model')} ({mi.get('nproc')} cores, shared with other jobs: noisy), "
          f"torch threads {m.get('torch_threads')}, SGEMM (2048^3 torch.mm, best of 5) {sg} GFLOP/s")
    print(f"- torch {m.get('torch')}, mimo_fast {m.get('mimo_fast')}, Python {mi.get('python_version')}, "
          f"AVX2/FMA {m.get('cpu_avx2_fma')}, AVX-512 {m.get('cpu_avx512')}, date {data.get('datetime')}")
    print("- float32, no mask; median seconds of >= 3 rounds (pytest-benchmark, max-time 1 s, no warm-up "
          "rounds, one untimed call before for the answer check and compilation)")
    print("- `cpu` includes the op's input scans for non-finite values; `cpu-nocheck` sets "
          "MIMO_FAST_SKIP_VALUE_CHECKS=1\n")
    if "relu" in acts:
        print("- relu: W3 runs per pair (GFLOP/s count 2 E H1 + 2 H1 H2 + 2 H2 Fo per valid pair plus "
              "the per-node projections); S1fo8 is S1 with Fo = 8")
    for act in acts:
        for shape in ("S1", "S1fo8", "S2", "S3"):
            for mode in ("fwd", "fwdbwd"):
                have = {i: rows[(act, shape, mode, i)] for i in IMPLS if (act, shape, mode, i) in rows}
                if not have:
                    continue
                label = "" if act == "none" else "relu "
                print(f"\n## {label}{shape} {'forward' if mode == 'fwd' else 'forward + backward'}\n")
                if shape in isas:
                    print(f"`cpu` kernel code path: {isas[shape]}\n")
                print("| impl | median s | GFLOP/s | of SGEMM | rounds | naive / impl | best plain PyTorch / impl |")
                print("|---|---|---|---|---|---|---|")
                naive = have.get("naive", (None,))[0]
                plain = [v[0] for k, v in have.items() if k in ("naive", "careful", "compiled")]
                best = min(plain) if plain else None
                for i, (t, gf, frac, r) in have.items():
                    rn = f"{naive / t:.2f}" if naive else "-"
                    rb = f"{best / t:.2f}" if best else "-"
                    fr = f"{frac:.2f}" if frac is not None else "-"
                    print(f"| {i} | {t:.4f} | {gf} | {fr} | {r} | {rn} | {rb} |")
    if mem:
        print("\n## S3 forward: extra peak memory of one call\n")
        print("Fresh subprocess per implementation, MALLOC_MMAP_THRESHOLD_=65536 (freed memory leaves "
              "the RSS), one warm-up call, peak RSS reset through /proc/self/clear_refs, then "
              "VmHWM - VmRSS around one forward call (inputs excluded).\n")
        print("| impl | extra peak MiB | naive / impl |")
        print("|---|---|---|")
        for i in IMPLS:
            if i in mem:
                ratio = mem.get("naive", 0) / mem[i] if mem[i] else float("inf")
                print(f"| {i} | {mem[i]} | {ratio:.0f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
