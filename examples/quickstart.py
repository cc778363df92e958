"""mimo_fast in one page: draw a channel, detect with a classical and a learned detector,
compare their symbol error rates, get bit LLRs and call one op directly.

Run after installing (``pip install .``): ``python examples/quickstart.py``. About 10 s of
CPU time on one thread; docs/conventions.md explains every convention used
here.
"""
import torch

from mimo_fast import comm, detect, ops

nr, nt, batch = 8, 8, 2000          # 8 receive antennas, 8 single-antenna users
qam16 = comm.qam(16)                 # unit average energy, Gray-labelled
g = torch.Generator().manual_seed(0)  # every random draw takes an explicit generator

print(f"{'SNR dB':>6} " + " ".join(f"{name:>8}" for name in ("lmmse", "ep", "gepnet")))
dets = {name: detect.make(name, qam16, nr=nr, nt=nt) for name in ("lmmse", "ep", "gepnet")}
for snr_db in (15.0, 20.0, 25.0):
    H = comm.rayleigh(batch, nr, nt, g)                      # (B, Nr, Nt), entries CN(0, 1/Nr)
    idx = qam16.random_indices((batch, nt), g)               # transmitted point indices
    x = qam16.indices_to_points(idx, H.dtype)                # (B, Nt) complex symbols
    noise_var = comm.noise_var_from_snr(snr_db, nr, nt)      # SNR = E||Hx||^2 / E||n||^2
    y = comm.awgn((H @ x[..., None])[..., 0], noise_var, g)  # (B, Nr)
    with torch.no_grad():                                    # gepnet loads the shipped weights
        sers = [(det(y, H, noise_var).hard != idx).double().mean().item() for det in dets.values()]
    print(f"{snr_db:6.1f} " + " ".join(f"{s:8.2e}" for s in sers))

# Bit LLRs: log P(b=1)/P(b=0) per user and bit, bits MSB first (the index's binary digits)
out = dets["ep"](y, H, noise_var, llr="maxlog")
print(f"ep LLRs {tuple(out.llrs.shape)}; hard bits agree with the LLR signs:",
      bool(((out.llrs > 0).long() == out.hard_bits()).all()))

# One op call: the LMMSE step of EP on the real-equivalent system, on the fastest backend
Hr, yr = comm.real_equivalent(H, y)                          # (B, 2Nr, 2Nt), (B, 2Nr)
s2 = noise_var / 2                                           # real noise variance: half the complex one
lam = torch.full((batch, 2 * nt), 2.0)                       # prior precision 1 / E[x_r^2]
mean, var = ops.ep_lmmse(Hr.mT @ Hr / s2, (Hr.mT @ yr[..., None])[..., 0] / s2, lam, torch.zeros_like(lam))
print(f"ep_lmmse: mean {tuple(mean.shape)}, var in [{var.min():.2e}, {var.max():.2e}], "
      f"backend {ops.registry.resolve('ep_lmmse', '', (Hr,)).name}")
