"""Reproduce the Model-GNN paper's precoding results on this machine (docs/precoding.md).

    OMP_NUM_THREADS=1 nice python bench/bench_precode.py table2|samples|generalize|table4|table5 [--runs DIR] \
        [--results bench/results/<machine>]

RESULTS is ``--results`` (default ``bench/results/xeon-2core-avx512``, where the committed
results were run; give another machine its own folder).

* ``table2``: SE ratio against WMMSE and CPU inference time of the Model-GNN and Vanilla-GNN
  trained on 1,000 samples, for the (N, K, SNR) points of ``TABLE2`` (reduced epochs, see there),
  on 100 test channels -> ``RESULTS/precode_table2.{json,md}``.
* ``samples``: SE ratio against the training-set size at SNR 10 dB (Table III) with a fixed
  number of Adam steps -> ``RESULTS/precode_samples.{json,md}``.
* ``table5``: multi-cell Model-GNN (P2) trained on 1,000 samples against the multi-cell WMMSE
  for the (M, N, K) of ``TABLE5`` at 10 dB -> ``RESULTS/precode_table5.{json,md}``.
* ``table4``: EE Model-GNN (Lagrangian training) against ZF-Dinkelbach (the EE reference), WMMSE
  and ZF: EE ratio, constraint-satisfaction ratio (CSR) and CPU time at SNR 10 dB for the
  (N, K, R_min) of ``TABLE4`` (reduced: fewer samples and epochs than the paper's 10,000 samples)
  on 100 test channels -> ``RESULTS/precode_table4.{json,md}``.
* ``generalize_ee``: the EE Model-GNN (with its eta_K FNN) trained with K ~ round(Exp(mean 4)) at
  N = 32, R_min = 2 (Fig. 7; reduced: 3,000 samples, 40 epochs) tested at K = 2..30 against
  ZF-Dinkelbach -> ``RESULTS/precode_generalize_ee.{json,png}``.
* ``table5_gain``: as ``table5`` for the (M, N, K) of ``TABLE5_GAIN`` with the inter-cell links
  10 dB weaker than the own-cell links (CN(0, 0.1 I)) -> ``RESULTS/precode_table5_gain0.1.*``.
* ``generalize``: a Model-GNN trained with K ~ round(Exp(mean 4)) at N = 32 tested at
  K = 2..30 (Fig. 6), against MRT/ZF/RZF -> ``RESULTS/precode_generalize.{json,png}``.

Training runs are kept under ``--runs`` (default /work/runs/precode) and reused when present.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time

import torch

from mimo_fast.precode import classical, metrics, weights
from mimo_fast.precode.train import PrecodeTrainConfig, train
from mimo_fast.precode.wmmse import wmmse

#: where the JSON/Markdown/PNG results go (--results)
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "xeon-2core-avx512"
TEST_SEED = 12345
VANILLA_WIDTHS = [32, 32, 32, 32]
# (model, N, K, SNR dB, epochs): reduced from the paper's grid to fit the CPU budget
TABLE2 = [("model-gnn", 8, 4, s, 100) for s in (0, 10, 20)] + \
         [("model-gnn", 32, 16, 10, 120)] + [("model-gnn", 32, 16, s, 60) for s in (0, 20)] + \
         [("model-gnn", 64, 16, 10, 150), ("model-gnn", 64, 32, 10, 150)] + \
         [("vanilla-gnn", 8, 4, s, 100) for s in (0, 10, 20)] + [("vanilla-gnn", 32, 16, 10, 30)]

# (N, K, R_min, samples, epochs): the paper trains on 10,000 samples
EE_WIDTHS = [32, 32, 8]   # ours: the SE widths (Table I gives (32, 32, 32, 8) and lr 0.001 for EE)
TABLE4 = [(8, 4, r, 5000, 60) for r in (3, 5, 7, 9)] + [(32, 16, r, 2000, 40) for r in (3, 9)]
TABLE4_DUAL_LR = {(32, 16, 9): 0.02}   # dual step where 0.1 oscillated (docs/precoding.md); else 0.1
TABLE5 = [(2, 16, 8, 40), (3, 16, 8, 30), (3, 8, 4, 60)]     # (M, N, K, epochs)
TABLE5_GAIN = [(3, 8, 4, 60), (2, 16, 8, 40), (3, 16, 8, 30)]   # with inter-cell links 10 dB weaker


def machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()
            or platform.machine(), "note": "2-core CPU shared with other jobs; OMP_NUM_THREADS=1, nice"}


def run_dir(runs, model, n, k, snr, samples=1000, tag=""):
    return pathlib.Path(runs) / f"{model}_{n}x{k}_{snr:g}db_s{samples}{tag}"


def trained(runs, model, n, k, snr, epochs, samples=1000, batch=100, k_dist="fixed", tag=""):
    out = run_dir(runs, model, n, k, snr, samples, tag)
    if not (out / "best.safetensors").exists():
        widths = VANILLA_WIDTHS if model == "vanilla-gnn" else None
        cfg = PrecodeTrainConfig(model=model, n=n, k=k, snr_db=float(snr), samples=samples, epochs=epochs,
                                 batch=batch, widths=widths, k_dist=k_dist,
                                 record={"command": f"bench/bench_precode.py ({model} {n}x{k} {snr} dB, "
                                                    f"{samples} samples, {epochs} epochs)"})
        train(cfg, out, progress=False)
    return weights.load(out / "best.safetensors")


def timed(f):
    t = time.perf_counter()
    with torch.no_grad():
        v = f()
    return v, time.perf_counter() - t


def test_set(n, k, snr, count=100):
    g = torch.Generator().manual_seed(TEST_SEED + 1000 * n + 10 * k + int(snr))
    return metrics.draw_channels(count, n, k, generator=g)


def table2(runs):
    rows = []
    for model, n, k, snr, epochs in TABLE2:
        H, nv = test_set(n, k, snr), metrics.noise_var(snr)
        (Vw, info), t_w = timed(lambda: wmmse(H, nv))
        se_w = metrics.sum_se(H, Vw, nv)
        net = trained(runs, model, n, k, snr, epochs)
        net(H[:2])                                             # warm-up
        V, t = timed(lambda: net(H))
        row = {"model": model, "n": n, "k": k, "snr_db": snr, "epochs": epochs, "samples": 1000,
               "widths": net.config()["widths"], "se_ratio": metrics.se_ratio(metrics.sum_se(H, V, nv), se_w),
               "seconds_cpu_100": t, "wmmse_seconds_cpu_100": t_w, "wmmse_iterations": info.iterations,
               "train_wall_seconds": net.record.get("wall_seconds"), "best_epoch": net.record.get("epoch")}
        for name, f in (("zf", lambda: classical.zf(H)), ("rzf", lambda: classical.rzf(H, nv)),
                        ("mrt", lambda: classical.mrt(H))):
            row[f"{name}_se_ratio"] = metrics.se_ratio(metrics.sum_se(H, f(), nv), se_w)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write("precode_table2", rows, [
        "| model | (N, K) | SNR dB | epochs | SE ratio % | time CPU (100 ch.) s | WMMSE time s (iters) "
        "| ZF % | RZF % | MRT % | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|"] + [
        f"| {r['model']} {r['widths']} | ({r['n']}, {r['k']}) | {r['snr_db']} | {r['epochs']} | "
        f"{100 * r['se_ratio']:.2f} | {r['seconds_cpu_100']:.4f} | {r['wmmse_seconds_cpu_100']:.3f} "
        f"({r['wmmse_iterations']}) | {100 * r['zf_se_ratio']:.2f} | {100 * r['rzf_se_ratio']:.2f} | "
        f"{100 * r['mrt_se_ratio']:.2f} | {r['train_wall_seconds']} |" for r in rows])


def samples(runs, steps=600):
    rows = []
    for n, k, sizes in ((8, 4, (10, 30, 100, 300, 1000)), (32, 16, (10, 100))):
        H, nv = test_set(n, k, 10), metrics.noise_var(10)
        se_w = metrics.sum_se(H, wmmse(H, nv)[0], nv)
        for s in sizes:
            batch = min(100, s)
            epochs = math.ceil(steps / math.ceil(s / batch))
            net = trained(runs, "model-gnn", n, k, 10, epochs, samples=s, batch=batch, tag=f"_steps{steps}")
            with torch.no_grad():
                r = metrics.se_ratio(metrics.sum_se(H, net(H), nv), se_w)
            rows.append({"n": n, "k": k, "snr_db": 10, "samples": s, "steps": steps, "batch": batch,
                         "se_ratio": r, "train_wall_seconds": net.record.get("wall_seconds")})
            print(json.dumps(rows[-1]), flush=True)
    write("precode_samples", rows, [
        "| (N, K) | training samples | Adam steps | SE ratio % | train s |", "|---|---|---|---|---|"] + [
        f"| ({r['n']}, {r['k']}) | {r['samples']} | {r['steps']} | {100 * r['se_ratio']:.2f} | "
        f"{r['train_wall_seconds']} |" for r in rows])


def generalize(runs, n=32, ks=(2, 4, 6, 8, 10, 14, 18, 22, 26, 30)):
    net = trained(runs, "model-gnn", n, 30, 10, 100, k_dist="exp", tag="_kexp4")
    fixed = run_dir(runs, "model-gnn", 32, 16, 10)
    net16 = weights.load(fixed / "best.safetensors") if (fixed / "best.safetensors").exists() else None
    rows, nv = [], metrics.noise_var(10)
    for k in ks:
        H = test_set(n, k, 10)
        se_w = metrics.sum_se(H, wmmse(H, nv)[0], nv)
        row = {"n": n, "k": k, "snr_db": 10}
        with torch.no_grad():
            cands = {"model-gnn (K~Exp(4))": net(H), "mrt": classical.mrt(H), "zf": classical.zf(H),
                     "rzf": classical.rzf(H, nv)}
            if net16 is not None:
                cands["model-gnn (K=16)"] = net16(H)
            for name, V in cands.items():
                row[name] = metrics.se_ratio(metrics.sum_se(H, V, nv), se_w)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write("precode_generalize", rows, None)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in (c for c in rows[0] if c not in ("n", "k", "snr_db")):
        ax.plot([r["k"] for r in rows], [100 * r[name] for r in rows], marker="o", label=name)
    ax.set_xlabel("K (test)")
    ax.set_ylabel("SE ratio vs WMMSE (%)")
    ax.set_title(f"N = {n}, SNR 10 dB; trained on K ~ round(Exp(4)), 1000 samples")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "precode_generalize.png", dpi=110)


def table5(runs, inter_gain=1.0, table=TABLE5):
    from mimo_fast.precode import multicell
    rows, nv = [], metrics.noise_var(10)
    tag = "" if inter_gain == 1 else f"_gain{inter_gain:g}"
    for m, n, k, epochs in table:
        out = pathlib.Path(runs) / f"model-gnn-mc_{m}x{n}x{k}_10db_s1000{tag}"
        if not (out / "best.safetensors").exists():
            cfg = PrecodeTrainConfig(model="model-gnn", cells=m, n=n, k=k, snr_db=10.0, samples=1000, epochs=epochs,
                                     batch=100, inter_gain=inter_gain,
                                     record={"command": f"bench/bench_precode.py table5 ({m}x{n}x{k}{tag})"})
            train(cfg, out, progress=False)
        net = weights.load(out / "best.safetensors")
        g = torch.Generator().manual_seed(TEST_SEED + 7 * m + 1000 * n + 10 * k)
        G = multicell.draw_channels_mc(100, m, n, k, generator=g, inter_gain=inter_gain)
        (Vw, info), t_w = timed(lambda: multicell.wmmse_mc(G, nv))
        se_w = multicell.sum_se_mc(G, Vw, nv)
        V, t = timed(lambda: net(G))
        row = {"cells": m, "n": n, "k": k, "snr_db": 10, "epochs": epochs, "samples": 1000, "inter_gain": inter_gain,
               "wmmse_users_off": float((multicell.rates_mc(G, Vw, nv) < 0.05).double().mean()),
               "se_ratio": metrics.se_ratio(multicell.sum_se_mc(G, V, nv), se_w), "seconds_cpu_100": t,
               "wmmse_seconds_cpu_100": t_w, "wmmse_iterations": info.iterations,
               "train_wall_seconds": net.record.get("wall_seconds"), "best_epoch": net.record.get("epoch")}
        for name, f in (("rzf_per_cell", lambda: multicell.per_cell(classical.rzf, G, nv)),
                        ("zf_per_cell", lambda: multicell.per_cell(classical.zf, G)),
                        ("rzf_coordinated", lambda: multicell.coordinated_rzf(G, nv))):
            row[f"{name}_se_ratio"] = metrics.se_ratio(multicell.sum_se_mc(G, f(), nv), se_w)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write("precode_table5" + tag, rows, [
        f"inter-cell link gain {inter_gain:g}",
        "",
        "| (M, N, K) | epochs | Model-GNN SE ratio % | coordinated RZF % | per-cell RZF % | per-cell ZF % "
        "| WMMSE users off % | GNN time s | WMMSE time s (iters) | train s to best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|"] + [
        f"| ({r['cells']}, {r['n']}, {r['k']}) | {r['epochs']} | {100 * r['se_ratio']:.2f} | "
        f"{100 * r['rzf_coordinated_se_ratio']:.2f} | "
        f"{100 * r['rzf_per_cell_se_ratio']:.2f} | {100 * r['zf_per_cell_se_ratio']:.2f} | "
        f"{100 * r['wmmse_users_off']:.1f} | "
        f"{r['seconds_cpu_100']:.4f} | "
        f"{r['wmmse_seconds_cpu_100']:.3f} ({r['wmmse_iterations']}) | {r['train_wall_seconds']} |" for r in rows])


def table4(runs):
    from mimo_fast.precode import energy
    rows, nv = [], metrics.noise_var(10)
    for n, k, r_min, count, epochs in TABLE4:
        dual_lr = TABLE4_DUAL_LR.get((n, k, r_min), 0.1)
        tag = "" if dual_lr == 0.1 else f"_d{dual_lr:g}"
        out = pathlib.Path(runs) / f"model-gnn-ee_{n}x{k}_10db_r{r_min:g}_s{count}{tag}"
        if not (out / "best.safetensors").exists() or (out / "log.jsonl").read_text().count("\n") < epochs:
            cfg = PrecodeTrainConfig(model="model-gnn", objective="ee", r_min=float(r_min), n=n, k=k, snr_db=10.0,
                                     samples=count, epochs=epochs, batch=100, widths=EE_WIDTHS, dual_lr=dual_lr,
                                     record={"command": f"bench/bench_precode.py table4 ({n}x{k}, R_min {r_min}, "
                                                        f"{count} samples, {epochs} epochs)"})
            train(cfg, out, progress=False, resume=(out / "last.state.pt").exists())
        net = weights.load(out / "best.safetensors")
        H = test_set(n, k, 10)
        (Vd, info), t_d = timed(lambda: energy.zf_dinkelbach(H, nv, r_min))
        ee_d = metrics.ee(H, Vd, nv)
        row = {"n": n, "k": k, "r_min": r_min, "snr_db": 10, "samples": count, "epochs": epochs, "dual_lr": dual_lr,
               "dinkelbach_seconds_cpu_100": t_d, "dinkelbach_iterations": info.iterations,
               "dinkelbach_ee": float(ee_d.mean()),
               "train_wall_seconds": net.record.get("wall_seconds"), "best_epoch": net.record.get("epoch")}
        for name, f in (("model_gnn", lambda: net(H)), ("wmmse", lambda: wmmse(H, nv)[0]),
                        ("zf", lambda: classical.zf(H))):
            V, t = timed(f)
            e = metrics.ee(H, V, nv)
            row.update({f"{name}_ee_ratio": energy.ee_ratio(e, ee_d), f"{name}_seconds_cpu_100": t,
                        f"{name}_csr": metrics.constraint_satisfaction(metrics.rates(H, V, nv), r_min),
                        f"{name}_power_mean": float(metrics.transmit_power(V).mean())})
        rows.append(row)
        print(json.dumps(row), flush=True)
    write("precode_table4", rows, [
        "| R_min | (N, K) | samples | epochs | Model-GNN EER % | CSR % | time s | WMMSE EER % | CSR % "
        "| ZF EER % | CSR % | ZF-Dinkelbach time s (iters) | train s to best epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + [
        f"| {r['r_min']} | ({r['n']}, {r['k']}) | {r['samples']} | {r['epochs']} | "
        f"{100 * r['model_gnn_ee_ratio']:.2f} | {100 * r['model_gnn_csr']:.2f} | "
        f"{r['model_gnn_seconds_cpu_100']:.4f} | "
        f"{100 * r['wmmse_ee_ratio']:.2f} | "
        f"{100 * r['wmmse_csr']:.2f} | {100 * r['zf_ee_ratio']:.2f} | {100 * r['zf_csr']:.2f} | "
        f"{r['dinkelbach_seconds_cpu_100']:.4f} ({r['dinkelbach_iterations']}) | {r['train_wall_seconds']} |"
        for r in rows])


def generalize_ee(runs, n=32, r_min=2.0, count=3000, epochs=40, ks=(2, 4, 6, 8, 10, 14, 18, 22, 26, 30)):
    from mimo_fast.precode import energy
    out = pathlib.Path(runs) / f"model-gnn-ee_{n}xexp4_10db_r{r_min:g}_s{count}"
    if not (out / "best.safetensors").exists() or (out / "log.jsonl").read_text().count("\n") < epochs:
        cfg = PrecodeTrainConfig(model="model-gnn", objective="ee", r_min=r_min, n=n, k=30, k_dist="exp", k_mean=4.0,
                                 snr_db=10.0, samples=count, epochs=epochs, batch=100, widths=EE_WIDTHS,
                                 record={"command": f"bench/bench_precode.py generalize_ee (N={n}, K~Exp(4) in "
                                                    f"[2, 30], R_min {r_min:g}, {count} samples, {epochs} epochs)"})
        train(cfg, out, progress=False, resume=(out / "last.state.pt").exists())
    net, nv, rows = weights.load(out / "best.safetensors"), metrics.noise_var(10), []
    for k in ks:
        H = test_set(n, k, 10)
        Vd, _ = energy.zf_dinkelbach(H, nv, r_min)
        ee_d = metrics.ee(H, Vd, nv)
        with torch.no_grad():
            V = net(H)
            eta = float(net.eta_k(k))
        row = {"n": n, "k": k, "r_min": r_min, "model_gnn_ee_ratio": energy.ee_ratio(metrics.ee(H, V, nv), ee_d),
               "model_gnn_csr": metrics.constraint_satisfaction(metrics.rates(H, V, nv), r_min), "eta_k": eta,
               "model_gnn_power_mean": float(metrics.transmit_power(V).mean()),
               "dinkelbach_power_mean": float(metrics.transmit_power(Vd).mean()),
               "train_wall_seconds": net.record.get("wall_seconds"), "best_epoch": net.record.get("epoch")}
        for name, f in (("wmmse", lambda: wmmse(H, nv)[0]), ("zf", lambda: classical.zf(H))):
            Vb = f()
            row[f"{name}_ee_ratio"] = energy.ee_ratio(metrics.ee(H, Vb, nv), ee_d)
            row[f"{name}_csr"] = metrics.constraint_satisfaction(metrics.rates(H, Vb, nv), r_min)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write("precode_generalize_ee", rows, [])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("model_gnn_ee_ratio", "Model-GNN EE ratio"), ("model_gnn_csr", "Model-GNN CSR"),
                       ("wmmse_ee_ratio", "WMMSE EE ratio"), ("wmmse_csr", "WMMSE CSR")):
        ax.plot(ks, [100 * r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("K (test)")
    ax.set_ylabel("% (EE ratio vs ZF-Dinkelbach, CSR)")
    ax.set_title(f"EE, trained on K ~ Exp(4), N={n}, R_min={r_min:g}, 10 dB")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "precode_generalize_ee.png", dpi=110)


def write(name, rows, md_lines):
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    if md_lines:
        (RESULTS / f"{name}.md").write_text("\n".join(md_lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("table2", "samples", "generalize", "generalize_ee", "table4",
                                     "table5", "table5_gain"))
    ap.add_argument("--runs", default="/work/runs/precode")
    ap.add_argument("--results", type=pathlib.Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    a = ap.parse_args()
    RESULTS = a.results
    {"table2": table2, "samples": samples, "generalize": generalize, "generalize_ee": generalize_ee, "table4": table4,
     "table5": table5, "table5_gain": lambda r: table5(r, 0.1, TABLE5_GAIN)}[a.what](a.runs)
