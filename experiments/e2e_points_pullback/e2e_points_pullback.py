"""Do the learned points leave 16-QAM when GNN-tx gets a larger step? (8x2 e2e, issue 8)

Fine-tunes an 8x2 e2e file (default: the session-3 ``tx_residual`` model, shipped until session
5 and kept in experiments/e2e/) on its own loss (eq. 12) with two Adam groups:
GNN-tx at ``--tx-lr`` and the receiver at ``--rx-lr``. Every ``--every`` steps it prints
how far the points are from 16-QAM (largest move) and their d_min^2 (16-QAM: 0.4). Compare
``experiments/e2e_constellation_headroom/``: there, free points trained on the same loss with an
ideal (ML) receiver drift away from 16-QAM toward a better packing.

    OMP_NUM_THREADS=1 python experiments/e2e_points_pullback/e2e_points_pullback.py --tx-lr 1e-2 --rx-lr 1e-4
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from mimo_fast import comm
from mimo_fast.detect.learned import weights
from mimo_fast.train.data import BatchGenerator, DataConfig


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default=str(pathlib.Path(__file__).resolve().parents[1] / "e2e"
                                         / "e2e_8x2_qam16_txres_session3.safetensors"))
    p.add_argument("--tx-lr", type=float, default=1e-2)
    p.add_argument("--rx-lr", type=float, default=1e-4)
    p.add_argument("--snr", type=float, nargs=2, default=[13.0, 16.0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--log", help="write the lines as JSON here too")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    qam = comm.qam(16)
    model = weights.load(a.init, expect="e2e")
    model.train()
    tx = list(model.tx.parameters())
    tx_ids = {id(q) for q in tx}
    rx = [q for q in model.parameters() if id(q) not in tx_ids]
    opt = torch.optim.Adam([{"params": tx, "lr": a.tx_lr}, {"params": rx, "lr": a.rx_lr}])
    gen = BatchGenerator(DataConfig(nr=8, nt=2, mod="qam16", snr_min=a.snr[0], snr_max=a.snr[1]), a.seed)
    ref = qam.points.to(torch.complex128)
    rows, t0 = [{"args": vars(a), "torch": torch.__version__}], time.time()
    for step in range(1, a.steps + 1):
        b = gen(a.batch)
        loss = model.training_loss(b.y, b.H, b.noise_var, b.x_idx, b.mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.every == 0:
            with torch.no_grad():
                c = model.tx().to(torch.complex128)
            d = (c[:, None] - c[None]).abs() + 9 * torch.eye(16)
            row = {"step": step, "loss": float(loss.detach()), "dmin2": float(d.min() ** 2),
                   "max_move": float((c - ref).abs().max()), "wall": round(time.time() - t0, 1)}
            rows.append(row)
            print(row, flush=True)
    if a.log:
        with open(a.log, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
