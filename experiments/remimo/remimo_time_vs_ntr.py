"""Inference time against the number of users, RE-MIMO vs OAMP-Net2 (the RE-MIMO paper's
Fig. 14): Nr = 64, 16-QAM, i.i.d. Rayleigh at 13 dB, one batch per Ntr, median of
``--repeat`` timed calls after one warm-up, on this machine's CPU (threads: OMP_NUM_THREADS).

RE-MIMO uses the shipped weights (one model for every Ntr; its nt limit is lifted for Ntr
above 32, the architecture has none). OAMP-Net2's time does not depend on its four scalars
per layer, so an untrained 10-layer model is timed (the paper's 10 layers). The paper's
complexity per block: RE-MIMO O(Nr^2 Ntr + Nr Ntr^2), OAMP-Net2 per layer dominated by Nr^3
in its pseudo-inverse; this library's OAMP-Net2 takes one Ntr x Ntr eigendecomposition per
channel instead (O(Ntr^3 + Nr Ntr^2)), so it grows with Ntr too.

    OMP_NUM_THREADS=1 python experiments/remimo/remimo_time_vs_ntr.py --out experiments/remimo/remimo_time_vs_ntr_cpu
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mimo_fast import comm, detect


def time_call(det, y, H, nv, repeat: int) -> float:
    with torch.no_grad():
        det(y, H, nv)
        ts = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            det(y, H, nv)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ntr", type=int, nargs="+", default=[8, 16, 24, 32, 40])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--weights", default=None, help="RE-MIMO weights (default: the shipped file)")
    p.add_argument("--out", required=True, help="output path without extension (.json, .png)")
    args = p.parse_args(argv)
    c = comm.qam(16)
    remimo = detect.make("remimo", c, nr=64, nt=32, weights=args.weights)
    remimo.nt = None                      # the model has no user limit; the file's is 32
    torch.manual_seed(0)
    dets = {"remimo": remimo, "oampnet2": detect.make("oampnet2", c, nr=64, pretrained=False, layers=10),
            "lmmse": detect.make("lmmse", c)}
    rows = []
    for ntr in args.ntr:
        g = torch.Generator().manual_seed(ntr)
        H = comm.rayleigh(args.batch, 64, ntr, g)
        idx = c.random_indices((args.batch, ntr), g)
        nv = comm.noise_var_from_snr(13.0, 64, ntr, c.energy)
        y = comm.awgn((H @ c.indices_to_points(idx, H.dtype)[..., None])[..., 0], nv, g)
        for name, det in dets.items():
            s = time_call(det, y, H, nv, args.repeat)
            rows.append({"detector": name, "ntr": ntr, "seconds_per_batch": s, "us_per_vector": 1e6 * s / args.batch})
            print(f"Ntr {ntr:3d} {name:9s} {1e6 * s / args.batch:9.1f} us/vector")
    meta = {"batch": args.batch, "repeat": args.repeat, "nr": 64, "mod": "qam16", "snr_db": 13.0,
            "remimo_config": remimo.config(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    with open(args.out + ".json", "w") as f:
        json.dump({"config": meta, "results": rows}, f, indent=2)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in dets:
        pts = [(r["ntr"], r["us_per_vector"]) for r in rows if r["detector"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xlabel("number of users Ntr (Nr = 64)")
    ax.set_ylabel("inference time per received vector (us)")
    ax.set_title(f"CPU, batch {args.batch}, {meta['threads']} thread(s)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
