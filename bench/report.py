"""Markdown tables from the pytest-benchmark JSON that bench/bench_<op>.py files write: one
report script for every bench file (standard library only: it also runs where torch does not).

    python bench/report.py RESULT.json [MORE.json ...] > RESULT.md     # kind read from the JSON
    python bench/report.py KIND RESULT.json [MORE.json ...] [options]   # kind named

The kind follows from the bench file that wrote the JSON (its tests' names); name it to
override. Several files merge (a later record of the same case wins).

  op                bench_amp_step.py, bench_ep_lmmse.py: median / min per shape and mode,
                    and the speed-up of backend 'cpu' over each implementation
  ep_detector       bench_ep_detector.py: `ep` vs EP with torch.linalg.inv and Sionna (Sionna
                    runs in its own process: after its benchmark ran, the next 2-thread calls
                    in the same process were measured ~40% slower, so it is a second file)
  mpnn_message_sum  bench_mpnn_message_sum.py: both out_act forms (a run of one form prints
                    only its sections), GFLOP/s against SGEMM, S3 peak memory
  learned           bench_learned.py: GEPNet / AMP-GNN inference and training step, default
                    backend vs reference
  gpu               bench_gpu.py's JSON and/or its per-case JSON lines
                    ($MIMO_FAST_GPU_BENCH_RECORDS): per op, shape and pass, the median of each
                    implementation, the fastest round's TFLOP/s and GB/s, the fused backends'
                    speed-ups, the device peaks and the issue's targets. With --phases, --junit,
                    --tests-log, --overhead, --env it is bench/gpu_session.sh's session summary
                    (phases, test counts, targets, per-call overhead from tools/gpu_profile.py):

    python bench/report.py gpu records.jsonl --phases phases.tsv --junit tests.xml \\
        --overhead overhead.json --env env.txt --md summary.md --json summary.json --merged gpu.json

The committed tables under bench/results/<machine>/ start with this output; some have notes
written by hand after it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def load_runs(paths):
    """The pytest-benchmark JSON files, the first one's header with every file's benchmarks."""
    runs = [json.load(open(p)) for p in paths]
    data = dict(runs[0])
    data["benchmarks"] = [b for r in runs for b in r["benchmarks"]]
    return data


# ------------------------------------------------------------------ op (bench_amp_step, bench_ep_lmmse)
def report_op(paths):
    """Median and min per shape and mode, and the speed-up of backend 'cpu' over each implementation."""
    data = load_runs(paths)
    mi = data["machine_info"]
    rows = defaultdict(dict)
    paired = {}   # bench_ep_lmmse.py's test_ep_lmmse_paired: torch and cpu alternately
    for b in data["benchmarks"]:
        e = b["extra_info"]
        if e["impl"] == "paired":
            paired[(e["shape"], e["mode"])] = e
            continue
        rows[(e["shape"], e["mode"])][e["impl"]] = (b["stats"]["median"], b["stats"]["min"], b["stats"]["rounds"])
    op = data["benchmarks"][0]["extra_info"]["op"]
    mf = mi.get("mimo_fast", {})
    L = [f"# {op}: CPU benchmark\n"]
    L.append(f"- machine: {mi.get('cpu_model')} ({mi.get('nproc')} cores), torch threads {mf.get('torch_threads')}, "
             f"AVX2/FMA {mf.get('cpu_avx2_fma')}"
             + (f", AVX-512 {mf['cpu_avx512']}" if mf.get("cpu_avx512") is not None else ""))   # older JSONs lack it
    L.append(f"- versions: python {mi.get('python_version')}, torch {mf.get('torch')}, mimo_fast {mf.get('mimo_fast')}")
    L.append(f"- run: {data.get('datetime')}; cells: median / min in ms, [rounds]; ratios: "
             "median ratio (min ratio). The machine is shared with other jobs: 2-thread runs lose "
             "whole scheduler slices when a core is taken, so medians are noisy and the min shows "
             "the uncontended speed\n")
    impls = sorted({i for r in rows.values() for i in r}, key=lambda i: (i == "cpu", i))
    if rows:   # (none when only the paired test ran)
        L.append("| shape | mode | " + " | ".join(impls) + " | " + " | ".join(f"cpu vs {i}" for i in impls if i != "cpu") + " |")
        L.append("|---" * (2 + 2 * len(impls) - 1) + "|")
    for (shape, mode), r in rows.items():
        cells = [f"{r[i][0] * 1e3:.3g} / {r[i][1] * 1e3:.3g} [{r[i][2]}]" if i in r else "-" for i in impls]
        ratios = [f"{r[i][0] / r['cpu'][0]:.1f}x ({r[i][1] / r['cpu'][1]:.1f}x)" if i in r and "cpu" in r else "-"
                  for i in impls if i != "cpu"]
        L.append(f"| {shape} | {mode} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if paired:
        L.append("\nPaired rounds (torch.linalg and cpu in alternating blocks in one loop, the first call "
                 "after each switch not timed): median call of each side in ms, the ratio of the medians, "
                 "and the quartiles of the per-round ratio (the round's torch call / the median of its cpu "
                 "calls)\n")
        L.append("| shape | mode | rounds | torch | cpu | cpu vs torch | per-round ratio q1 / median / q3 |")
        L.append("|---|---|---|---|---|---|---|")
        for (shape, mode), e in paired.items():
            q = e["round_ratio_quartiles"]
            L.append(f"| {shape} | {mode} | {e['rounds']} | {e['torch_ms']:.3g} | {e['cpu_ms']:.3g} | "
                     f"{e['ratio_of_medians']:.1f}x | {q[0]:.1f}x / {q[1]:.1f}x / {q[2]:.1f}x |")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ ep_detector
def report_ep_detector(paths):
    """Files whose Sionna rows carry a SER (one process, SER in our labels) get a SER
    column for Sionna; older files (Sionna timed in a second process, speed only) keep
    their table as committed."""
    d = load_runs(paths)
    mi = d["machine_info"]
    mf = mi["mimo_fast"]
    rows = {}
    for b in d["benchmarks"]:
        rows.setdefault(b["params"]["case"], {})[b["params"]["impl"]] = (b["stats"]["median"], b["stats"]["rounds"], b["extra_info"])
    one = any("ser" in r["sionna-ep"][2] for r in rows.values() if "sionna-ep" in r)
    L = ["# `ep` detector vs EP with torch.linalg.inv, and Sionna's EPDetector\n"]
    L.append(f"- machine: {mi.get('cpu_model')} ({mi.get('nproc')} cores), torch {mf['torch']}, {mf['torch_threads']} threads, "
             f"mimo_fast {mf['mimo_fast']}, {d['datetime']}")
    if one:
        L.append("- B = 4096 vectors per call, 10 EP iterations, damping 0.7 (Sionna: `EPDetector(l=10)`, its defaults); "
                 "medians after one untimed call; all three in one process: "
                 f"`OMP_NUM_THREADS={mf['torch_threads']} pytest bench/bench_ep_detector.py --benchmark-only`, "
                 "with `sionna-no-rt` 2.2.0")
        L.append("- `torch-inv-ep`: the same EP (E2E paper eqs. 6-10, same moment-matching code) with `torch.linalg.inv` "
                 "for the LMMSE step; `agree`: fraction of decisions equal to it. Sionna's hard symbols are mapped "
                 "through its constellation's points to ours, so its SER counts the same errors.\n")
        L.append("| case | mimo_fast ep (ms) | vectors/s | inv EP (ms) | inv / ep | Sionna (ms) | Sionna / ep | SER (ep) | "
                 "SER (Sionna) | agree | rounds |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        L.append("- B = 4096 vectors per call, 10 EP iterations, damping 0.7; medians after one untimed call; "
                 "`MIMO_BENCH_ROUNDS=<rounds> pytest bench/bench_ep_detector.py --benchmark-only -k 'not sionna'`, then "
                 "`-k sionna` in a second process, in a venv with `sionna-no-rt` 2.2.0")
        L.append("- `torch-inv-ep`: the same EP (E2E paper eqs. 6-10, same moment-matching code) with `torch.linalg.inv` "
                 "for the LMMSE step; `agree`: fraction of decisions equal to it. Sionna: speed only (its bit labelling differs).\n")
        L.append("| case | mimo_fast ep (ms) | vectors/s | inv EP (ms) | inv / ep | Sionna (ms) | Sionna / ep | SER (ep) | agree | rounds |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
    for case, r in rows.items():
        m, n, e = r["mimo_fast-ep"]
        i = r["torch-inv-ep"][0]
        s = r["sionna-ep"][0] if "sionna-ep" in r else float("nan")
        sser = f"{r['sionna-ep'][2]['ser']:.4f} | " if one and "sionna-ep" in r else ("nan | " if one else "")
        L.append(f"| {case} | {m * 1e3:.1f} | {4096 / m:,.0f} | {i * 1e3:.1f} | {i / m:.2f} | {s * 1e3:.1f} | {s / m:.2f} | "
                 f"{e['ser']:.4f} | {sser}{e['agree_with_inv']:.4f} | {n} |")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ mpnn_message_sum
MPNN_IMPLS = ["naive", "careful", "compiled", "reference", "cpu", "cpu-nocheck"]


def report_mpnn_message_sum(paths):
    """Later files (reruns of single tests) override earlier ones."""
    data = load_runs(paths)
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
    L = [f"# mpnn_message_sum ({', '.join(title[a] for a in acts)}) on the CPU: fused `cpu` backend vs plain PyTorch\n"]
    L.append(f"- CPU: {mi.get('cpu_model')} ({mi.get('nproc')} cores, shared with other jobs: noisy), "
             f"torch threads {m.get('torch_threads')}, SGEMM (2048^3 torch.mm, best of 5) {sg} GFLOP/s")
    L.append(f"- torch {m.get('torch')}, mimo_fast {m.get('mimo_fast')}, Python {mi.get('python_version')}, "
             f"AVX2/FMA {m.get('cpu_avx2_fma')}, AVX-512 {m.get('cpu_avx512')}, date {data.get('datetime')}")
    L.append("- float32, no mask; median seconds of >= 3 rounds (pytest-benchmark, max-time 1 s, no warm-up "
             "rounds, one untimed call before for the answer check and compilation)")
    L.append("- `cpu` includes the op's input scans for non-finite values; `cpu-nocheck` sets "
             "MIMO_FAST_SKIP_VALUE_CHECKS=1\n")
    if "relu" in acts:
        L.append("- relu: W3 runs per pair (GFLOP/s count 2 E H1 + 2 H1 H2 + 2 H2 Fo per valid pair plus "
                 "the per-node projections); S1fo8 is S1 with Fo = 8")
    for act in acts:
        for shape in ("S1", "S1fo8", "S2", "S3"):
            for mode in ("fwd", "fwdbwd"):
                have = {i: rows[(act, shape, mode, i)] for i in MPNN_IMPLS if (act, shape, mode, i) in rows}
                if not have:
                    continue
                label = "" if act == "none" else "relu "
                L.append(f"\n## {label}{shape} {'forward' if mode == 'fwd' else 'forward + backward'}\n")
                if shape in isas:
                    L.append(f"`cpu` kernel code path: {isas[shape]}\n")
                L.append("| impl | median s | GFLOP/s | of SGEMM | rounds | naive / impl | best plain PyTorch / impl |")
                L.append("|---|---|---|---|---|---|---|")
                naive = have.get("naive", (None,))[0]
                plain = [v[0] for k, v in have.items() if k in ("naive", "careful", "compiled")]
                best = min(plain) if plain else None
                for i, (t, gf, frac, r) in have.items():
                    rn = f"{naive / t:.2f}" if naive else "-"
                    rb = f"{best / t:.2f}" if best else "-"
                    fr = f"{frac:.2f}" if frac is not None else "-"
                    L.append(f"| {i} | {t:.4f} | {gf} | {fr} | {r} | {rn} | {rb} |")
    if mem:
        L.append("\n## S3 forward: extra peak memory of one call\n")
        L.append("Fresh subprocess per implementation, MALLOC_MMAP_THRESHOLD_=65536 (freed memory leaves "
                 "the RSS), one warm-up call, peak RSS reset through /proc/self/clear_refs, then "
                 "VmHWM - VmRSS around one forward call (inputs excluded).\n")
        L.append("| impl | extra peak MiB | naive / impl |")
        L.append("|---|---|---|")
        for i in MPNN_IMPLS:
            if i in mem:
                ratio = mem.get("naive", 0) / mem[i] if mem[i] else float("inf")
                L.append(f"| {i} | {mem[i]} | {ratio:.0f} |")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ learned
def report_learned(paths):
    """Inference and training step of each model, default backend against reference."""
    d = load_runs(paths)
    mi = d["machine_info"]
    mf = mi.get("mimo_fast", {})
    rows, info = {}, {}
    for b in d["benchmarks"]:
        what = "inference" if b["name"].startswith("test_inference") else "training step"
        case = f"{b['params']['model']} {what}"
        rows.setdefault(case, {})[b["params"]["backend"]] = b["stats"]["median"]
        info[what] = b["extra_info"]
        rounds = b["stats"]["rounds"]
    dev = info.get("inference", info.get("training step", {})).get("device", "cpu")
    L = [f"# Learned detectors on the {'CPU' if dev == 'cpu' else dev}: default backend vs reference "
         "(bench/bench_learned.py)\n"]
    L.append(f"- machine: {mi.get('cpu_model')}, {mi.get('nproc')} cores{', ' + mi['gpu'] if mi.get('gpu') else ''}; "
             f"torch {mf.get('torch')}; run {d.get('datetime')}, {rounds} rounds each")
    L.append("- untrained models of the shipped sizes (GEPNet 8x8 16-QAM at 20 dB, AMP-GNN 32x32 QPSK at 10 dB); "
             f"inference batch {info.get('inference', {}).get('batch')}, training step (loss, backward, Adam) "
             f"batch {info.get('training step', {}).get('batch')}; medians in ms\n")
    L.append("| case | default | reference | speed-up |")
    L.append("|---|---|---|---|")
    for case, r in rows.items():
        de, ref = r.get("default"), r.get("reference")
        cells = [f"{v * 1e3:.0f}" if v is not None else "-" for v in (de, ref)]
        L.append(f"| {case} | {' | '.join(cells)} | {f'{ref / de:.1f}x' if de and ref else '-'} |")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------ gpu (bench_gpu, bench/gpu_session.sh)
IMPLS = ["naive", "careful", "compiled", "linalg", "reference", "triton", "cuda", "triton-checked", "cuda-checked"]
FUSED = ("triton", "cuda")
#: the issue's targets: (name, op, shape, mode, baseline, minimum ratio)
SPEEDUP_TARGETS = [
    ("MPNN S1 fwd vs eager (careful)", "mpnn_message_sum", "S1", "fwd", "careful", 5.0),
    ("MPNN S1 fwd vs torch.compile(max-autotune)", "mpnn_message_sum", "S1", "fwd", "compiled", 2.0),
    ("MPNN S1-relu fwd vs eager (careful)", "mpnn_message_sum", "S1-relu", "fwd", "careful", 5.0),
    ("MPNN S1-relu fwd vs torch.compile(max-autotune)", "mpnn_message_sum", "S1-relu", "fwd", "compiled", 2.0),
    ("EP LMMSE B4096 K16 fwd vs cuSOLVER (torch.linalg)", "ep_lmmse", "B4096-K16", "fwd", "linalg", 5.0),
]
AMP_TARGET = ("AMP step B16 1024x1024 fwd, share of copy bandwidth", "amp_step", "B16-1024x1024", "fwd", 0.8)


# ------------------------------------------------------------------ inputs
def load_records(paths):
    """Benchmark records from pytest-benchmark JSON files or JSON-lines files."""
    recs = {}
    for path in paths:
        p = pathlib.Path(path)
        if not p.exists() or p.stat().st_size == 0:
            continue
        text = p.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "benchmarks" in data:
            rows = []
            for b in data["benchmarks"]:
                s = b.get("stats", {})
                rows.append(dict(b.get("extra_info", {}), name=b.get("name"), median_s=s.get("median"),
                                 min_s=s.get("min"), mean_s=s.get("mean"), stddev_s=s.get("stddev"),
                                 rounds=s.get("rounds"), datetime=data.get("datetime")))
        else:
            rows = []
            for line in text.splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue                      # a line cut by a killed run
        for r in rows:
            if isinstance(r, dict) and r.get("op") and r.get("median_s"):
                recs[(r["op"], r.get("shape"), r.get("impl"), r.get("mode"))] = r
    return list(recs.values())


def load_phases(path):
    """phases.tsv: name, exit status, seconds, time limit, estimate, note (tab-separated)."""
    out = []
    if not path or not pathlib.Path(path).exists():
        return out
    for line in pathlib.Path(path).read_text().splitlines():
        f = line.split("\t")
        if len(f) < 5 or f[0] == "name":
            continue
        rc = int(f[1]) if f[1].lstrip("-").isdigit() else None
        status = ("skipped" if f[1] == "skip" else "dry-run" if f[1] == "dry" else "ok" if rc == 0
                  else "TIMEOUT" if rc in (124, 137) else f"FAILED (exit {rc})")
        out.append(dict(name=f[0], rc=rc, status=status, seconds=_num(f[2]), timeout_s=_num(f[3]),
                        estimate_s=_num(f[4]), note=f[5] if len(f) > 5 else ""))
    return out


def _num(s):
    try:
        v = float(s)
    except ValueError:
        return None
    return int(v) if v.is_integer() else v


def _backend_of(classname, name):
    m = re.search(r"-(triton|cuda|reference|cpu)\]$", name)
    if m:
        return m.group(1)
    if "_cuda" in classname:
        return "cuda"
    return "other"


def load_junit(path):
    """Counts from pytest's JUnit XML: totals, per backend (from the test ids), failures."""
    if not path or not pathlib.Path(path).exists():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable JUnit XML: {exc}"}
    total = defaultdict(int)
    per = defaultdict(lambda: defaultdict(int))
    failed = []
    for tc in root.iter("testcase"):
        cls, name = tc.get("classname", ""), tc.get("name", "")
        kinds = {c.tag for c in tc}
        outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                   else "skipped" if "skipped" in kinds else "passed")
        total[outcome] += 1
        per[_backend_of(cls, name)][outcome] += 1
        if outcome in ("failed", "error"):
            el = tc.find("failure") if "failure" in kinds else tc.find("error")
            msg = (el.get("message") or "").splitlines()[0][:200] if el is not None else ""
            failed.append(f"{cls.split('.')[-1]}::{name}: {msg}")
    t = sum(float(s.get("time", 0) or 0) for s in root.iter("testsuite"))
    return {"total": dict(total), "by_backend": {k: dict(v) for k, v in per.items()}, "failed": failed,
            "seconds": t}


_LOG_LINE = re.compile(r"(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) (\S+?\.py)::(\S+)")


def load_testlog(path):
    """The same counts from a ``pytest -v`` log (xdist prints one line per finished test):
    the fallback when pytest was killed before writing its JUnit XML."""
    if not path or not pathlib.Path(path).exists():
        return None
    total = defaultdict(int)
    per = defaultdict(lambda: defaultdict(int))
    failed, seen = [], set()
    names = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "ERROR": "error",
             "XFAIL": "skipped", "XPASS": "passed"}
    for m in _LOG_LINE.finditer(pathlib.Path(path).read_text(errors="replace")):
        word, file, name = m.groups()
        if (file, name) in seen:          # the short summary (-rfE) repeats failures
            continue
        seen.add((file, name))
        outcome = names[word]
        total[outcome] += 1
        per[_backend_of(file[:-3], name)][outcome] += 1
        if outcome in ("failed", "error"):
            failed.append(f"{file[:-3]}::{name}")
    if not seen:
        return None
    return {"total": dict(total), "by_backend": {k: dict(v) for k, v in per.items()}, "failed": failed,
            "seconds": 0.0, "source": "pytest -v log (no JUnit XML: pytest did not finish)"}


# ------------------------------------------------------------------ analysis
def _index(recs):
    return {(r["op"], r.get("shape"), r.get("impl"), r.get("mode")): r for r in recs}


def targets(recs):
    """The issue's targets against the measured medians (``met`` is None when a number is missing)."""
    idx = _index(recs)
    out = []
    for name, op, shape, mode, base, need in SPEEDUP_TARGETS:
        b = idx.get((op, shape, base, mode))
        for f in FUSED:
            r = idx.get((op, shape, f, mode))
            ratio = b["median_s"] / r["median_s"] if (b and r) else None
            out.append(dict(target=f"{name} [{f}]", backend=f, value=ratio, need=need, unit="x",
                            met=None if ratio is None else ratio >= need,
                            detail=(f"{base} {b['median_s'] * 1e3:.3g} ms / {f} {r['median_s'] * 1e3:.3g} ms"
                                    if b and r else "missing: " + ", ".join(x for x, have in ((base, b), (f, r))
                                                                            if not have))))
    name, op, shape, mode, need = AMP_TARGET
    copy = next((r for r in recs if r["op"] == "peak" and r.get("impl") == "copy"), None)
    for f in FUSED:
        r = idx.get((op, shape, f, mode))
        share = None
        if copy and r and r.get("bytes") and copy.get("bytes"):
            share = (r["bytes"] / r["median_s"]) / (copy["bytes"] / copy["median_s"])
        out.append(dict(target=f"{name} [{f}]", backend=f, value=share, need=need, unit="of copy",
                        met=None if share is None else share >= need,
                        detail=(f"{r['bytes'] / r['median_s'] / 1e9:.0f} GB/s of "
                                f"{copy['bytes'] / copy['median_s'] / 1e9:.0f} GB/s (medians)"
                                if share is not None else "missing")))
    return out


def overhead_summary(ov):
    """One row per (op, shape, backend): microseconds per call of each variant."""
    rows = defaultdict(dict)
    for r in (ov or {}).get("overhead", []):
        k = (r["op"], r["shape"], r["backend"])
        if "us_pipelined" in r:
            rows[k][r["variant"]] = (r["us_pipelined"], r["us_synced"])
        elif r.get("error") or r.get("skipped"):
            rows[k][r["variant"]] = r.get("error") or r.get("skipped")
    return rows


# ------------------------------------------------------------------ markdown
def _fmt_us(v):
    if isinstance(v, tuple):
        return f"{v[0]:.0f} / {v[1]:.0f}"
    return "fail" if v else "-"


def tables(recs, lines):
    rows = defaultdict(dict)
    peaks = {}
    for r in recs:
        if r["op"] == "peak":
            peaks[r["impl"]] = r
            continue
        rows[(r["op"], r["shape"], r["mode"])][r["impl"]] = r
    if "copy" in peaks:
        lines.append(f"- measured copy bandwidth: {peaks['copy']['gbps']:.0f} GB/s (read + write, fastest round)")
    if "matmul-fp32" in peaks:
        lines.append(f"- measured fp32 matmul (TF32 off): {peaks['matmul-fp32']['tflops']:.1f} TFLOP/s")
    lines.append("- cells: median ms; rate: TFLOP/s and GB/s of the fastest round (useful flops, "
                 "minimum traffic: each input read once, each output written once)\n")
    for op in sorted({k[0] for k in rows}):
        keys = [k for k in rows if k[0] == op]
        present = [i for i in IMPLS if any(i in rows[k] for k in keys)]
        fused = [i for i in FUSED if i in present]
        base = [i for i in ("naive", "careful", "compiled", "linalg") if i in present]
        lines.append(f"## {op}\n")
        lines.append("| shape | pass | " + " | ".join(present) + " | " + " | ".join(f"{f} rate" for f in fused) + " | "
                     + " | ".join(f"{f} vs {b}" for f in fused for b in base) + " |")
        lines.append("|---" * (2 + len(present) + len(fused) + len(fused) * len(base)) + "|")
        for k in sorted(keys):
            r = rows[k]
            cells = [f"{r[i]['median_s'] * 1e3:.3g}" if i in r else "-" for i in present]
            rates = [f"{r[f].get('tflops', 0):.2f} TF/s, {r[f].get('gbps', 0):.0f} GB/s" if f in r else "-"
                     for f in fused]
            ratios = [f"{r[b]['median_s'] / r[f]['median_s']:.1f}x" if f in r and b in r else "-"
                      for f in fused for b in base]
            lines.append(f"| {k[1]} | {k[2]} | " + " | ".join(cells) + " | " + " | ".join(rates) + " | "
                         + " | ".join(ratios) + " |")
        lines.append("")


def summary_md(recs, phases, junit, tgts, ov, env_text, total_s):
    gpu = next((r.get("gpu") for r in recs if r.get("gpu")), None) or (ov or {}).get("gpu") or "?"
    L = [f"# GPU session: {gpu}\n"]
    if env_text:
        L += ["```", env_text.strip(), "```", ""]
    if phases:
        L += ["## Phases\n", "| phase | status | seconds | limit s | estimate s | note |", "|---|---|---|---|---|---|"]
        for p in phases:
            sec = "-" if p["seconds"] is None else f"{p['seconds']:.0f}"
            L.append(f"| {p['name']} | {p['status']} | {sec} | {p['timeout_s'] or '-'} | "
                     f"{p['estimate_s'] or '-'} | {p['note']} |")
        L.append(f"\nTotal: {total_s:.0f} s\n" if total_s is not None else "")
    if junit:
        L.append("## Op tests on the GPU\n")
        if "error" in junit:
            L.append(junit["error"] + "\n")
        else:
            t = junit["total"]
            how = (f"counted from the {junit['source']}" if "source" in junit
                   else f"test time {junit['seconds']:.0f} s, summed over workers")
            L.append(f"**{t.get('passed', 0)} passed, {t.get('failed', 0)} failed, {t.get('error', 0)} errors, "
                     f"{t.get('skipped', 0)} skipped** ({how})\n")
            L += ["| backend (from the test id) | passed | failed | errors | skipped |", "|---|---|---|---|---|"]
            for be, c in sorted(junit["by_backend"].items()):
                L.append(f"| {be} | {c.get('passed', 0)} | {c.get('failed', 0)} | {c.get('error', 0)} | "
                         f"{c.get('skipped', 0)} |")
            if junit["failed"]:
                L.append("\nFailures (first 40):\n")
                L += [f"- `{f}`" for f in junit["failed"][:40]]
            L.append("")
    L += ["## Targets (medians; reported, not asserted)\n", "| target | measured | needed | met | detail |",
          "|---|---|---|---|---|"]
    for t in tgts:
        v = "-" if t["value"] is None else (f"{t['value']:.2f}x" if t["unit"] == "x" else f"{t['value']:.0%}")
        need = f"{t['need']:g}x" if t["unit"] == "x" else f"{t['need']:.0%}"
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        L.append(f"| {t['target']} | {v} | {need} | {met} | {t['detail']} |")
    L.append("")
    orows = overhead_summary(ov)
    if orows:
        variants = ["careful", "careful-graph", "op", "op-trusted", "glue", "graph", "graph-fwd+bwd", "kernels"]
        L += ["## Per-call overhead at small shapes (us per call: pipelined / synced)\n",
              "| op | shape | backend | " + " | ".join(variants) + " |", "|---" * (3 + len(variants)) + "|"]
        for (op, shape, be), v in sorted(orows.items()):
            L.append(f"| {op} | {shape} | {be} | " + " | ".join(_fmt_us(v.get(x)) for x in variants) + " |")
        fails = [(k, x, e) for k, v in sorted(orows.items()) for x, e in v.items() if isinstance(e, str)]
        if fails:
            L.append("\nNot measured:\n")
            L += [f"- {k[0]} {k[1]} {k[2]} {x}: {e}" for k, x, e in fails]
        L.append("")
    if recs:
        L.append("## Benchmark (bench/bench_gpu.py)\n")
        tables(recs, L)
    return "\n".join(L) + "\n"


def report_gpu(argv):
    """The `gpu` kind: tables of bench_gpu.py's records, or with the session flags the GPU
    session summary. Returns the exit status."""
    ap = argparse.ArgumentParser(prog="bench/report.py gpu", description="GPU benchmark tables / GPU session summary")
    ap.add_argument("inputs", nargs="*", help="pytest-benchmark JSON or JSON-lines records")
    ap.add_argument("--phases")
    ap.add_argument("--junit")
    ap.add_argument("--tests-log", help="pytest -v output: counts from it when the JUnit XML is missing")
    ap.add_argument("--overhead")
    ap.add_argument("--env", help="a text file shown at the top (GPU, build)")
    ap.add_argument("--total-s", type=float)
    ap.add_argument("--md", help="write the markdown here (default: stdout)")
    ap.add_argument("--json", help="write the summary JSON here")
    ap.add_argument("--merged", help="write the merged benchmark records here (JSON)")
    a = ap.parse_args(argv)
    recs = load_records(a.inputs)
    phases = load_phases(a.phases)
    junit = load_junit(a.junit) or load_testlog(a.tests_log)
    ov = None
    if a.overhead and pathlib.Path(a.overhead).exists():
        try:
            ov = json.loads(pathlib.Path(a.overhead).read_text())
        except json.JSONDecodeError as exc:
            ov = {"error": str(exc)}
    env_text = pathlib.Path(a.env).read_text() if a.env and pathlib.Path(a.env).exists() else ""
    tgts = targets(recs)
    md = summary_md(recs, phases, junit, tgts, ov, env_text, a.total_s)
    if a.md:
        pathlib.Path(a.md).write_text(md)
    else:
        sys.stdout.write(md)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(
            {"phases": phases, "total_s": a.total_s, "tests": junit, "targets": tgts,
             "overhead": (ov or {}).get("overhead", []), "breakdown": (ov or {}).get("breakdown", []),
             "n_benchmarks": len(recs)}, indent=1))
    if a.merged:
        pathlib.Path(a.merged).write_text(json.dumps({"benchmarks": recs}, indent=1))
    return 0



# ------------------------------------------------------------------ dispatch
def _files(kind, argv):
    if not argv or any(a.startswith("-") for a in argv):
        raise SystemExit(f"bench/report.py {kind}: give one or more pytest-benchmark JSON files (no options)")
    return argv


KINDS = {
    "op": lambda argv: report_op(_files("op", argv)),
    "ep_detector": lambda argv: report_ep_detector(_files("ep_detector", argv)),
    "mpnn_message_sum": lambda argv: report_mpnn_message_sum(_files("mpnn_message_sum", argv)),
    "learned": lambda argv: report_learned(_files("learned", argv)),
    "gpu": report_gpu,
}
#: bench file (bench/bench_<name>.py, from the tests' full names) -> kind
BENCH_FILES = {"amp_step": "op", "ep_lmmse": "op", "ep_detector": "ep_detector",
               "mpnn_message_sum": "mpnn_message_sum", "learned": "learned", "gpu": "gpu"}


def detect_kind(path):
    """The kind of a results file: from the bench file its benchmarks ran in; JSON lines
    (bench_gpu.py's records) are `gpu`."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return "gpu"
    for b in data.get("benchmarks", []) if isinstance(data, dict) else []:
        m = re.search(r"bench_(\w+)\.py::", b.get("fullname", ""))
        if m and m[1] in BENCH_FILES:
            return BENCH_FILES[m[1]]
    raise SystemExit(f"bench/report.py: cannot tell which bench file wrote {path}; name the kind first "
                     f"({', '.join(KINDS)})")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] in KINDS:
        kind, argv = argv[0], argv[1:]
    else:
        kind = detect_kind(next((a for a in argv if not a.startswith("-")), argv[0]))
    out = KINDS[kind](argv)
    if isinstance(out, str):      # the table kinds return their markdown; gpu writes its own
        sys.stdout.write(out)
        return 0
    return out


if __name__ == "__main__":
    sys.exit(main())
