"""bench/report.py's op tables (bench_ep_lmmse.py, bench_amp_step.py): the per-implementation
table and the paired-rounds table of test_ep_lmmse_paired, from a pytest-benchmark JSON."""
import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_report():
    # imported under another name: a bare `report` could be another package's
    spec = importlib.util.spec_from_file_location("bench_report_op", ROOT / "bench" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_json(tmp_path, benchmarks):
    data = {"machine_info": {"cpu_model": "test cpu", "nproc": 2, "python_version": "3.11",
                             "mimo_fast": {"torch_threads": 1, "cpu_avx2_fma": True, "torch": "2.x", "mimo_fast": "0"}},
            "datetime": "2026-12-07T00:00:00", "benchmarks": benchmarks}
    p = tmp_path / "ep.json"
    p.write_text(json.dumps(data))
    return p


def cell(impl, median, name="test_ep_lmmse"):
    return {"fullname": f"bench/bench_ep_lmmse.py::{name}", "stats": {"median": median, "min": median * 0.9, "rounds": 10},
            "extra_info": {"op": "ep_lmmse", "shape": "B4096 K16", "impl": impl, "mode": "fwd"}}


def paired(torch_ms, cpu_ms):
    b = cell("paired", 0.02, "test_ep_lmmse_paired")
    b["extra_info"].update(torch_ms=torch_ms, cpu_ms=cpu_ms, ratio_of_medians=torch_ms / cpu_ms,
                           round_ratio_quartiles=[19.0, 20.0, 21.0], rounds=40)
    return b


def test_paired_rounds_get_their_own_table(tmp_path):
    report = load_report()
    path = bench_json(tmp_path, [cell("torch", 0.011), cell("cpu", 0.0005), paired(11.0, 0.5)])
    assert report.detect_kind(path) == "op"
    md = report.report_op([path])
    assert "| B4096 K16 | fwd | 11 / 9.9 [10] | 0.5 / 0.45 [10] | 22.0x (22.0x) |" in md
    assert "| B4096 K16 | fwd | 40 | 11 | 0.5 | 22.0x | 19.0x / 20.0x / 21.0x |" in md
    assert "paired" not in md.split("Paired rounds")[0]   # not a column of the main table


def test_paired_rounds_alone(tmp_path):
    md = load_report().report_op([bench_json(tmp_path, [paired(50.0, 2.5)])])
    assert "| shape | mode | rounds |" in md and "| shape | mode | cpu" not in md
    assert "| 20.0x |" in md
