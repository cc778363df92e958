"""The standard benchmark shapes (the foundation issue's list) and their input makers.
Every maker takes a ``torch.Generator`` so benchmarks are reproducible."""
from __future__ import annotations

import torch

#: name -> (B, N, F, E, H1, H2, Fo). E = 2 edge attributes ([h_n^T h_j, sigma^2]); node
#: features F = Fo = 16 (GEPNet-size hidden state), 8 for the AMP-GNN-size S2.
MPNN = {"S1": (1024, 16, 16, 2, 128, 64, 16), "S2": (256, 64, 8, 2, 16, 8, 8), "S3": (32, 256, 16, 2, 64, 32, 16)}
#: variants only the CPU benchmark times (bench/bench_mpnn_message_sum.py): S1 with Fo = 8,
#: where the "relu" form's per-pair W3 (2 H2 Fo flops a pair) costs half as much
MPNN_VARIANTS = {"S1fo8": (1024, 16, 16, 2, 128, 64, 8)}
#: name -> (B, K)
EP = {"B4096-K16": (4096, 16), "B1024-K64": (1024, 64), "B64-K256": (64, 256)}
#: variants only the CPU benchmark times (bench/bench_ep_lmmse.py): 4x4 and 6x6 complex
#: MIMO, K not a multiple of the 16 AVX-512 float lanes (the transposes' partial blocks)
EP_VARIANTS = {"B16384-K8": (16384, 8), "B8192-K12": (8192, 12)}
#: name -> (B, M, N)
AMP = {"B256-64x64": (256, 64, 64), "B16-1024x1024": (16, 1024, 1024)}
#: small versions for `mimo-fast bench --quick` and smoke tests
QUICK = {"mpnn": {"q": (64, 16, 16, 2, 32, 16, 16)}, "ep": {"q": (256, 16)}, "amp": {"q": (64, 32, 32)}}


def mpnn_inputs(B, N, F, E, H1, H2, Fo, *, dtype=torch.float32, device="cpu", gen=None, masked=True):
    gen = gen or torch.Generator().manual_seed(0)

    def r(*s, scale=1.0):
        return (torch.randn(*s, generator=gen) * scale).to(dtype=dtype, device=device)

    node, edge = r(B, N, F), r(B, N, N, E)
    w = [r(H1, 2 * F + E, scale=(2 * F + E) ** -0.5), r(H1, scale=0.1), r(H2, H1, scale=H1 ** -0.5),
         r(H2, scale=0.1), r(Fo, H2, scale=H2 ** -0.5), r(Fo, scale=0.1)]
    mask = None
    if masked:  # a realistic user mask: the last quarter of the users are absent in half the batch
        mask = torch.ones(B, N, dtype=torch.bool)
        mask[: B // 2, N - N // 4:] = False
        mask = mask.to(device)
    return (node, edge, *w, mask)


def ep_inputs(B, K, *, dtype=torch.float32, device="cpu", gen=None):
    """EP's LMMSE inputs for a real-equivalent K-user system with 1.25K antennas at 10 dB."""
    gen = gen or torch.Generator().manual_seed(0)
    M = K + K // 4
    H = torch.randn(B, M, K, generator=gen) / M ** 0.5
    s2 = 0.1
    gram = H.mT @ H / s2
    rhs = torch.randn(B, K, generator=gen) / s2 ** 0.5
    lam = torch.rand(B, K, generator=gen) * 2 + 0.5
    gam = torch.randn(B, K, generator=gen)
    return tuple(t.to(dtype=dtype, device=device) for t in (gram, rhs, lam, gam))


def amp_inputs(B, M, N, *, dtype=torch.float32, device="cpu", gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
    H = torch.randn(B, M, N, generator=gen, dtype=torch.complex64) / M ** 0.5
    y = torch.randn(B, M, generator=gen, dtype=torch.complex64)
    x = torch.randn(B, N, generator=gen, dtype=torch.complex64) * 0.5
    v = torch.rand(B, N, generator=gen) * 0.5 + 0.1
    z_prev = torch.randn(B, M, generator=gen, dtype=torch.complex64)
    V_prev = torch.rand(B, M, generator=gen)
    noise = torch.rand(B, generator=gen) * 0.2 + 0.05
    out = [t.to(dtype=cdt if t.is_complex() else dtype, device=device) for t in (H, y, x, v, z_prev, V_prev, noise)]
    return tuple(out)
