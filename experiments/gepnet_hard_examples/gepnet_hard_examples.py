"""Fine-tune a GEPNet file on batches enriched in the vectors classical EP gets wrong.

An experiment, not part of the library: at 20-28 dB only about 1% of 8x8 16-QAM vectors carry
an EP error, so a plain batch of 256 holds two or three of the cases GEPNet has to fix. Here
each step draws ``--candidates`` vectors, runs EP on them (no gradient), and builds the batch
from up to ``--hard-fraction`` x batch vectors EP got wrong, filled with ones it got right.

``--weighting importance`` reweights the two groups back to their share among the candidates
(w = p / q per group), so the gradient estimates the ordinary loss with less variance;
``none`` trains on the enriched distribution as it is. ``--loss mean`` is the model's own
training loss (the cross-entropy averaged over the iterations); ``last`` uses the last
iteration only. ``--freeze-gate`` keeps a ``cavity_gate`` model's gate fixed.

Every ``--val-every`` steps it prints and logs the SER on a fixed validation set (24 x 512
vectors, 20-28 dB, its own seed) with EP's SER on the same set at the top; the best step's
weights go to ``OUT_best.safetensors``. Results of the runs made with it:
``gepnet_hard_examples.md`` beside this script (README.md there).

    OMP_NUM_THREADS=1 python experiments/gepnet_hard_examples/gepnet_hard_examples.py --init shipped --out runs/C \
        --weighting importance
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from mimo_fast import comm, detect
from mimo_fast.detect.learned import weights
from mimo_fast.detect.learned.gnn import pam_targets
from mimo_fast.train.data import VAL_STREAM, Batch, BatchGenerator, DataConfig


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="a gepnet weights file (pam readout), or 'shipped'")
    p.add_argument("--out", required=True, help="prefix of the log (OUT.jsonl) and best weights")
    p.add_argument("--hard-fraction", type=float, default=0.5)
    p.add_argument("--candidates", type=int, default=16384)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--weighting", choices=("none", "importance"), default="none")
    p.add_argument("--loss", choices=("mean", "last"), default="mean")
    p.add_argument("--freeze-gate", action="store_true")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--clip-grad", type=float, default=0.1)
    p.add_argument("--snr-min", type=float, default=20.0)
    p.add_argument("--snr-max", type=float, default=28.0)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    if not 0 < a.hard_fraction <= 1:
        p.error(f"--hard-fraction must be in (0, 1], got {a.hard_fraction}")
    for name in ("candidates", "batch", "steps", "val_every"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return a


def ser(model, val, learned=True) -> float:
    err = n = 0
    with torch.no_grad():
        for b in val:
            out = model(b.y, b.H, b.noise_var, b.mask) if learned else model(b.y, b.H, b.noise_var)
            err += int((out.hard != b.x_idx).sum())
            n += b.x_idx.numel()
    return err / n


def main(argv=None) -> None:
    a = parse(argv)
    torch.manual_seed(a.seed)
    qam16 = comm.from_name("qam16")
    path = weights.find_shipped("gepnet", 8, 8, qam16) if a.init == "shipped" else a.init
    model = weights.load(path, expect="gepnet")
    if model.readout != "pam":
        raise SystemExit("--init: this script trains the pam readout (the loss uses its targets)")
    ep = detect.make("ep", qam16)
    if a.freeze_gate:
        if not model.cavity_gate:
            raise SystemExit("--freeze-gate: the model has no cavity_gate")
        model.gate.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=a.lr)
    gen = BatchGenerator(DataConfig(nr=8, nt=8, mod="qam16", snr_min=a.snr_min, snr_max=a.snr_max), a.seed)
    vgen = BatchGenerator(DataConfig(nr=8, nt=8, mod="qam16", snr_min=20.0, snr_max=28.0), 99, 0, VAL_STREAM)
    val = [vgen(512) for _ in range(24)]
    model.eval()
    best = ser(model, val)
    head = {"args": vars(a), "init_file": str(path), "ep_val_ser": ser(ep, val, learned=False),
            "init_val_ser": best}
    print(head, flush=True)
    log = open(f"{a.out}.jsonl", "w")
    log.write(json.dumps(head) + "\n")
    n_hard, t0 = int(round(a.hard_fraction * a.batch)), time.time()
    for step in range(1, a.steps + 1):
        c = gen(a.candidates)
        with torch.no_grad():
            wrong = (ep(c.y, c.H, c.noise_var).hard != c.x_idx).any(-1)
        hard = wrong.nonzero()[:, 0][:n_hard]
        easy = (~wrong).nonzero()[:, 0][: a.batch - hard.numel()]
        b = Batch(*(t[torch.cat([hard, easy])] for t in c))
        p_hard = float(wrong.float().mean())
        if a.weighting == "importance":   # w = (share among candidates) / (share in the batch)
            w = torch.cat([torch.full((hard.numel(),), p_hard * a.batch / max(hard.numel(), 1)),
                           torch.full((easy.numel(),), (1 - p_hard) * a.batch / max(easy.numel(), 1))])
        else:
            w = torch.ones(b.y.shape[0])
        model.train()
        noise_var, mask = model.checked(b.y, b.H, b.noise_var, b.mask)
        outs = model._run(b.y, b.H, noise_var, mask)
        outs = outs[-1:] if a.loss == "last" else outs
        target = pam_targets(b.x_idx, model)
        loss = 0.0
        for lg in outs:   # all users present: the mean over a vector's 2 Nt real nodes
            ce = F.cross_entropy(lg.flatten(0, -2), target.flatten(), reduction="none")
            loss = loss + (w * ce.view(lg.shape[0], -1).mean(-1)).mean() / len(outs)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, a.clip_grad)
        opt.step()
        if step % a.val_every == 0:
            model.eval()
            s = ser(model, val)
            rec = {"step": step, "loss": float(loss.detach()), "hard": int(hard.numel()), "val_ser": s,
                   "wall": round(time.time() - t0, 1)}
            print(rec, flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if s < best:
                best = s
                weights.save(model, f"{a.out}_best.safetensors", {"note": "experiments/gepnet_hard_examples/gepnet_hard_examples.py",
                                                                  "args": vars(a), "step": step})


if __name__ == "__main__":
    main()
