"""Figures of the e2e results (docs/e2e.md): the shipped learned constellations against
16-QAM, and each setting's SER curves on one plot (the QAM run, which includes e2e, and
the run on the learned constellation, ``--constellation-from e2e``).

    python experiments/e2e/e2e_figures.py

Reads ``mimo_fast/weights/e2e_<nr>x<nt>_qam16.safetensors`` and
``simulate_e2e_<nr>x<nt>_qam16{,_kbest,_learned}.json`` beside this script; writes
``e2e_constellation_<nr>x<nt>_qam16.png`` and ``simulate_e2e_<nr>x<nt>_qam16_all.png`` there.
"""
import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mimo_fast.detect.learned import weights as files  # noqa: E402
from mimo_fast.detect.learned.e2e import plot_constellation  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SETTINGS = ((8, 2), (8, 8))


def constellation_png(nr: int, nt: int) -> None:
    path = files.SHIPPED_DIR / f"e2e_{nr}x{nt}_qam16.safetensors"
    if not path.exists():
        return
    _, meta = files.read(path)
    rec = meta["record"]
    plot_constellation(meta["constellation"], HERE / f"e2e_constellation_{nr}x{nt}_qam16.png", "qam16",
                       f"e2e {nr}x{nt}: learned (red) vs 16-QAM (black), {rec.get('steps')} steps")


def ser_png(nr: int, nt: int) -> None:
    base = HERE / f"simulate_e2e_{nr}x{nt}_qam16.json"
    if not base.exists():
        return
    runs = [(json.loads(base.read_text())["results"], "")]
    extra = HERE / f"simulate_e2e_{nr}x{nt}_qam16_kbest.json"          # 8x8: K-best on 16-QAM (ML is 16^8)
    if extra.exists():
        runs.append((json.loads(extra.read_text())["results"], ""))
    learned = HERE / f"simulate_e2e_{nr}x{nt}_qam16_learned.json"
    if learned.exists():
        runs.append((json.loads(learned.read_text())["results"], " (learned const.)"))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for results, suffix in runs:
        for name in dict.fromkeys(r["detector"] for r in results):
            if suffix and name == "e2e":
                continue
            pts = [(r["snr_db"], r["ser"]) for r in results if r["detector"] == name]
            xs, ys = zip(*pts)
            ax.semilogy(xs, [y if y > 0 else float("nan") for y in ys], marker="o" if not suffix else "s",
                        ls="-" if not suffix else "--", label=name + suffix)
    ax.set_ylim(bottom=1e-5)
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("SER")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{nr}x{nt}, 16 messages per user: e2e vs 16-QAM detectors")
    fig.tight_layout()
    fig.savefig(HERE / f"simulate_e2e_{nr}x{nt}_qam16_all.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    for nr, nt in SETTINGS:
        constellation_png(nr, nt)
        ser_png(nr, nt)
