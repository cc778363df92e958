"""Reports of a GPU run (standard library only: it also runs where torch does not).

Tables: per op, shape and pass, the median time of each implementation, the best (min)
time's TFLOP/s and GB/s, and the speed-up of the fused backends over eager, compiled and
(EP) torch.linalg; plus the device peaks measured in the same run (copy bandwidth, fp32
matmul). Inputs: bench/bench_gpu.py's pytest-benchmark JSON and/or its per-case JSON lines
($MIMO_FAST_GPU_BENCH_RECORDS), any number, merged (a later record of the same case wins).

    python bench/report_gpu.py bench/results/gpu_h100.json > bench/results/gpu_h100.md

The session summary (bench/gpu_session.sh): the same tables plus the phases (time, exit
status, time limit, estimate), the test counts (JUnit XML, split by backend), the issue's
targets with the measured ratios, and the per-call overhead (bench/gpu_profile.py --json):

    python bench/report_gpu.py records.jsonl --phases phases.tsv --junit tests.xml \\
        --overhead overhead.json --env env.txt --md summary.md --json summary.json --merged gpu.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(main())
