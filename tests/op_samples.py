"""One list of sample inputs per op (the extension-cpp habit), reused by the value,
gradient, opcheck, compile and backend tests, plus an independent implementation of
each op's formula written as plainly as possible (explicit loops, ``torch.linalg.inv``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

import mimo_fast.ops as ops
from mimo_fast.ops import registry


@dataclasses.dataclass
class Sample:
    name: str
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)

    def __repr__(self):
        return self.name


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _noncontig(t: torch.Tensor) -> torch.Tensor:
    """Same values, non-contiguous memory (a strided view of a larger buffer)."""
    big = torch.empty(*t.shape, 2, dtype=t.dtype, device=t.device)
    big[..., 0] = t
    out = big[..., 0]
    assert not out.is_contiguous() or t.numel() <= 1
    return out


def _to_cuda(t):
    if not isinstance(t, torch.Tensor):
        return t
    moved = t.to("cuda")
    return moved if t.is_contiguous() or t.numel() <= 1 else _noncontig(moved)


def with_cuda(samples: list) -> list:
    """The CPU samples, plus (when a GPU is present) copies of each on CUDA, same values
    and the same memory layouts, named ``<name>-cuda``: the GPU backends (triton, cuda) and
    the reference on CUDA tensors are then checked by the same generic tests."""
    if not torch.cuda.is_available():
        return samples
    return samples + [Sample(f"{s.name}-cuda", tuple(_to_cuda(a) for a in s.args), dict(s.kwargs))
                      for s in samples]


def opcheck_samples(samples: list) -> list:
    """The first three CPU samples and, with a GPU, the first CUDA one (opcheck is slow)."""
    return samples[:3] + [s for s in samples if s.name.endswith("-cuda")][:1]


# ----------------------------------------------------------------- mpnn_message_sum
def mpnn_sample(name, B, N, F, E, H1, H2, Fo, dtype, seed=0, mask=None, noncontig=False, out_act="none"):
    g = _gen(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    node, edge = r(B, N, F), r(B, N, N, E)
    w1, b1 = r(H1, 2 * F + E, scale=(2 * F + E + 1) ** -0.5), r(H1, scale=0.3)
    w2, b2 = r(H2, H1, scale=H1 ** -0.5), r(H2, scale=0.3)
    w3, b3 = r(Fo, H2, scale=H2 ** -0.5), r(Fo, scale=0.3)
    tensors = [node, edge, w1, b1, w2, b2, w3, b3]
    if noncontig:
        tensors = [_noncontig(t) for t in tensors]
    prefix = "" if out_act == "none" else f"{out_act}-"
    return Sample(f"{prefix}{name}-{str(dtype)[6:]}", (*tensors, mask), {"out_act": out_act})


def mpnn_samples(dtype):
    return with_cuda(_mpnn_samples(dtype))


def _mpnn_samples(dtype):
    """Each sample twice: the message MLP's last layer linear ("none") and with ReLU."""
    return [s for act in ("none", "relu") for s in _mpnn_samples_act(dtype, act)]


def _mpnn_samples_act(dtype, out_act):
    fully_masked = torch.tensor([[True, False, True, True, False],
                                 [False, False, False, False, False],
                                 [True, True, True, True, True]])
    return [
        mpnn_sample("basic", 2, 4, 3, 2, 5, 6, 7, dtype, out_act=out_act),
        mpnn_sample("masked", 3, 5, 2, 3, 8, 4, 3, dtype, seed=1, mask=fully_masked, out_act=out_act),
        mpnn_sample("B1", 1, 3, 2, 1, 4, 4, 2, dtype, seed=2, out_act=out_act),
        mpnn_sample("N1", 2, 1, 3, 2, 4, 3, 2, dtype, seed=3, out_act=out_act),
        mpnn_sample("E0", 2, 3, 2, 0, 4, 3, 2, dtype, seed=4, out_act=out_act),
        mpnn_sample("noncontig", 2, 4, 3, 2, 5, 6, 7, dtype, seed=5, noncontig=True, out_act=out_act),
        mpnn_sample("wide", 1, 9, 4, 2, 17, 9, 5, dtype, seed=6,
                    mask=torch.tensor([[True] * 7 + [False, True]]), out_act=out_act),
    ]


def mpnn_oracle(node, edge, w1, b1, w2, b2, w3, b3, mask=None, out_act="none"):
    """The op's formula with explicit loops over (b, n, j) on concatenated inputs."""
    B, N, _ = node.shape
    out = node.new_zeros(B, N, w3.shape[0])
    rows = []
    for b in range(B):
        row = []
        for n in range(N):
            acc = node.new_zeros(w3.shape[0])
            if mask is None or mask[b, n]:
                for j in range(N):
                    if j == n or (mask is not None and not mask[b, j]):
                        continue
                    inp = torch.cat([node[b, n], node[b, j], edge[b, n, j]])
                    h = torch.relu(w1 @ inp + b1)
                    h = torch.relu(w2 @ h + b2)
                    msg = w3 @ h + b3
                    acc = acc + (torch.relu(msg) if out_act == "relu" else msg)
            row.append(acc)
        rows.append(torch.stack(row) if row else out[b])
    return torch.stack(rows) if rows else out


# ----------------------------------------------------------------- ep_lmmse
def ep_sample(name, B, K, dtype, seed=0, cond=None, noncontig=False, M=None):
    g = _gen(seed)
    M = M or K + 2
    Hm = torch.randn(B, M, K, generator=g, dtype=torch.float64) / M ** 0.5
    if cond is not None:  # scale the columns to make gram ill-conditioned
        Hm = Hm * torch.logspace(0, -cond, K, dtype=torch.float64)
    gram = Hm.mT @ Hm
    rhs = torch.randn(B, K, generator=g, dtype=torch.float64)
    lam = torch.rand(B, K, generator=g, dtype=torch.float64) + 0.2
    gam = torch.randn(B, K, generator=g, dtype=torch.float64)
    tensors = [t.to(dtype) for t in (gram, rhs, lam, gam)]
    if noncontig:
        tensors = [_noncontig(t) for t in tensors]
    return Sample(f"{name}-{str(dtype)[6:]}", tuple(tensors))


def ep_samples(dtype):
    return with_cuda(_ep_samples(dtype))


def _ep_samples(dtype):
    return [
        ep_sample("basic", 3, 5, dtype),
        ep_sample("B1", 1, 4, dtype, seed=1),
        ep_sample("K1", 4, 1, dtype, seed=2),
        ep_sample("rank-deficient-gram", 2, 6, dtype, seed=3, M=3),  # lam keeps A PD
        ep_sample("noncontig", 3, 5, dtype, seed=4, noncontig=True),
        ep_sample("K17", 2, 17, dtype, seed=5),
    ]


def ep_oracle(gram, rhs, lam, gam):
    A = 0.5 * (gram + gram.mT) + torch.diag_embed(lam)
    Ainv = _inv(A)
    return (Ainv @ (rhs + gam)[..., None])[..., 0], torch.diagonal(Ainv, dim1=-2, dim2=-1)


def _inv(A):
    """torch.linalg.inv one matrix at a time: torch 2.13's batched LU runs MKL's getrf on
    several threads at once for K > ~14, which can fail or hang inside MKL."""
    return torch.stack([torch.linalg.inv(a) for a in A.reshape(-1, *A.shape[-2:])]).reshape(A.shape)


# ----------------------------------------------------------------- amp_step
def amp_sample(name, B, M, N, dtype, seed=0, first=False, noncontig=False, noise=0.3):
    g = _gen(seed)
    cdt = torch.complex64 if dtype == torch.float32 else torch.complex128

    def c(*shape, scale=1.0):
        re = torch.randn(*shape, generator=g, dtype=torch.float64)
        im = torch.randn(*shape, generator=g, dtype=torch.float64)
        return (torch.complex(re, im) * scale).to(cdt)

    H = c(B, M, N, scale=(2 * M) ** -0.5)
    y, x = c(B, M), c(B, N, scale=0.7)
    v = (torch.rand(B, N, generator=g, dtype=torch.float64) * 0.5 + 0.05).to(dtype)
    z_prev = y.clone() if first else c(B, M)
    V_prev = (torch.rand(B, M, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    noise_var = (torch.rand(B, generator=g, dtype=torch.float64) * noise + 0.05).to(dtype)
    tensors = [H, y, x, v, z_prev, V_prev, noise_var]
    if noncontig:
        tensors = [_noncontig(t) for t in tensors]
    return Sample(f"{name}-{str(dtype)[6:]}", tuple(tensors))


def amp_samples(dtype):
    return with_cuda(_amp_samples(dtype))


def _amp_samples(dtype):
    return [
        amp_sample("basic", 2, 6, 4, dtype),
        amp_sample("first-iteration", 2, 5, 3, dtype, seed=1, first=True),
        amp_sample("B1-N1", 1, 4, 1, dtype, seed=2),
        amp_sample("M1", 3, 1, 2, dtype, seed=3),
        amp_sample("noncontig", 2, 6, 4, dtype, seed=4, noncontig=True),
        amp_sample("tall", 2, 13, 5, dtype, seed=5),
    ]


def amp_oracle(H, y, x, v, z_prev, V_prev, noise_var):
    """Eqs. (8a)-(8d) with explicit sums over the antenna and user indices."""
    B, M, N = H.shape
    absH2 = (H * H.conj()).real
    V = torch.stack([torch.stack([sum(absH2[b, m, n] * v[b, n] for n in range(N)) for m in range(M)])
                     for b in range(B)])
    Hx = torch.einsum("bmn,bn->bm", H, x)
    z = Hx - V * (y - z_prev) / (noise_var[:, None] + V_prev)
    inv = 1 / (noise_var[:, None] + V)
    Sigma = 1 / torch.einsum("bmn,bm->bn", absH2, inv)
    r = x + Sigma * torch.einsum("bmn,bm->bn", H.conj(), (y - z) * inv)
    return r, Sigma, z, V


# ----------------------------------------------------------------- ep_cavity / ep_update
def _pam(L, dtype):
    lv = torch.arange(L, dtype=torch.float64) * 2 - (L - 1)
    return (lv / lv.square().mean().sqrt().clamp_min(1.0)).to(dtype)


def ep_cavity_sample(name, B, K, L, updates, dtype, seed=0, noncontig=False, prior=True):
    """A well-posed EP problem: gram = H^T H / s2 of a tall H, rhs from PAM symbols plus
    noise, lam near the prior precision; the levels per node are a PAM grid, the prior
    non-uniform (so its gradient is exercised)."""
    g = _gen(seed)
    M = K + 3
    s2 = 0.3
    Hm = torch.randn(B, M, K, generator=g, dtype=torch.float64) / M ** 0.5
    lv = _pam(L, torch.float64)
    x = lv[torch.randint(0, L, (B, K), generator=g)]
    y = (Hm @ x[..., None])[..., 0] + torch.randn(B, M, generator=g, dtype=torch.float64) * s2 ** 0.5
    gram, rhs = Hm.mT @ Hm / s2, (Hm.mT @ y[..., None])[..., 0] / s2
    lam = torch.rand(B, K, generator=g, dtype=torch.float64) + 0.5
    gam = torch.randn(B, K, generator=g, dtype=torch.float64) * 0.3
    levels = lv.expand(K, L) + 0.05 * torch.randn(K, L, generator=g, dtype=torch.float64)
    log_prior = torch.log_softmax(torch.randn(K, L, generator=g, dtype=torch.float64) * 0.3, -1)
    tensors = [t.to(dtype) for t in (gram, rhs, lam, gam, levels, log_prior)]
    if noncontig:
        tensors = [_noncontig(t) for t in tensors]
    if not prior:
        tensors[4:] = [None, None]
    return Sample(f"cavity-{name}-{str(dtype)[6:]}", tuple(tensors),
                  {"updates": updates, "damping": 0.7, "v_min": 1e-9})


def ep_cavity_samples(dtype):
    return with_cuda(_ep_cavity_samples(dtype))


def _ep_cavity_samples(dtype):
    return [
        # (seed 0 draws a near-degenerate posterior whose float32 level gradient is off by
        # ~3x the tolerance in every backend, the reference included: a property of the draw)
        ep_cavity_sample("basic", 3, 5, 4, 2, dtype, seed=21),
        ep_cavity_sample("no-updates", 3, 5, 4, 0, dtype, seed=1, prior=False),
        ep_cavity_sample("B1", 1, 4, 2, 1, dtype, seed=2),
        ep_cavity_sample("K1", 4, 1, 3, 3, dtype, seed=3),
        ep_cavity_sample("noncontig", 3, 5, 4, 2, dtype, seed=4, noncontig=True),
        ep_cavity_sample("K17", 2, 17, 8, 1, dtype, seed=5),
        ep_cavity_sample("prior-unused", 2, 3, 4, 0, dtype, seed=6),
    ]


def ep_cavity_fn(gram, rhs, lam, gam, levels, log_prior, *, updates, damping, v_min, backend=None):
    """:func:`mimo_fast.ops.ep_cavity` with the prior positional (so the generic checks
    take its gradients too)."""
    return ops.ep_cavity(gram, rhs, lam, gam, v_min=v_min, updates=updates, levels=levels,
                         log_prior=log_prior, damping=damping, backend=backend)


def _update_oracle(x, v, lam, gam, levels, q, keep, damping, v_min):
    x_hat = (q * levels).sum(-1)
    v_hat = (q * (levels - x_hat[..., None]) ** 2).sum(-1).clamp_min(v_min)
    lam_new, gam_new = 1 / v_hat - 1 / v, x_hat / v_hat - x / v
    ok = lam_new > 0
    if keep is not None:
        ok = ok & ~keep
    lam_new, gam_new = torch.where(ok, lam_new, lam), torch.where(ok, gam_new, gam)
    return (1 - damping) * lam_new + damping * lam, (1 - damping) * gam_new + damping * gam


def ep_cavity_oracle(gram, rhs, lam, gam, levels, log_prior, *, updates, damping, v_min):
    """EP's loop with torch.linalg.inv and torch.softmax (no cavity fallback: the samples
    keep 1 - Sigma lam well above 0)."""
    for t in range(updates + 1):
        Ainv = _inv(0.5 * (gram + gram.mT) + torch.diag_embed(lam))
        Sigma = torch.diagonal(Ainv, dim1=-2, dim2=-1)
        mu = (Ainv @ (rhs + gam)[..., None])[..., 0]
        v = (Sigma / (1 - Sigma * lam)).clamp_min(v_min)
        x = (mu - Sigma * gam) / (1 - Sigma * lam)
        if t == updates:
            return x, v
        q = torch.softmax(log_prior - (levels - x[..., None]) ** 2 / (2 * v[..., None]), -1)
        lam, gam = _update_oracle(x, v, lam, gam, levels, q, None, damping, v_min)


def ep_update_sample(name, B, K, L, dtype, seed=0, logits=False, keep=False, noncontig=False,
                     v_scale=0.5, v_min=1e-9, logit_scale=2.0):
    g = _gen(seed)
    x = torch.randn(B, K, generator=g, dtype=torch.float64) * 0.7
    v = torch.rand(B, K, generator=g, dtype=torch.float64) * v_scale + 0.05
    lam = torch.rand(B, K, generator=g, dtype=torch.float64) + 0.5
    gam = torch.randn(B, K, generator=g, dtype=torch.float64)
    levels = _pam(L, torch.float64).expand(K, L) + 0.05 * torch.randn(K, L, generator=g, dtype=torch.float64)
    lp = torch.log_softmax(torch.randn(K, L, generator=g, dtype=torch.float64) * 0.3, -1)
    lg = torch.randn(B, K, L, generator=g, dtype=torch.float64) * logit_scale
    tensors = [t.to(dtype) for t in (x, v, lam, gam, levels, lp, lg)]
    if noncontig:
        tensors = [_noncontig(t) for t in tensors]
    tensors[5 if logits else 6] = None
    kept = torch.rand(B, K, generator=g) < 0.3 if keep else None
    return Sample(f"update-{name}-{str(dtype)[6:]}", (*tensors, kept), {"damping": 0.6, "v_min": v_min})


def ep_update_samples(dtype):
    return with_cuda(_ep_update_samples(dtype))


def _ep_update_samples(dtype):
    return [
        ep_update_sample("prior", 3, 5, 4, dtype),
        ep_update_sample("logits", 3, 5, 4, dtype, seed=1, logits=True),
        ep_update_sample("logits-keep", 3, 5, 4, dtype, seed=2, logits=True, keep=True),
        ep_update_sample("B1-K1", 1, 1, 2, dtype, seed=3),
        ep_update_sample("L1", 2, 3, 1, dtype, seed=4, logits=True, v_min=0.2),
        ep_update_sample("noncontig", 3, 5, 4, dtype, seed=5, noncontig=True, keep=True),
        ep_update_sample("wide", 2, 9, 16, dtype, seed=6, v_scale=20.0),
        # confident posteriors: v_hat floored at v_min on most nodes
        ep_update_sample("floored", 4, 3, 8, dtype, seed=7, logits=True, v_min=0.02, logit_scale=12.0),
    ]


def ep_update_fn(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, *, damping, v_min, backend=None):
    """:func:`mimo_fast.ops.ep_update` with every tensor positional."""
    return ops.ep_update(x_obs, v_obs, lam, gam, levels, log_prior=log_prior, logits=logits, keep=keep,
                         damping=damping, v_min=v_min, backend=backend)


def ep_update_oracle(x, v, lam, gam, levels, log_prior, logits, keep, *, damping, v_min):
    z = log_prior - (levels - x[..., None]) ** 2 / (2 * v[..., None]) if logits is None else logits
    return _update_oracle(x, v, lam, gam, levels, torch.softmax(z, -1), keep, damping, v_min)


# ----------------------------------------------------------------- shared
OPS = {
    "mpnn_message_sum": (ops.mpnn_message_sum, mpnn_samples, mpnn_oracle),
    "ep_lmmse": (ops.ep_lmmse, ep_samples, ep_oracle),
    "amp_step": (ops.amp_step, amp_samples, amp_oracle),
    "ep_cavity": (ep_cavity_fn, ep_cavity_samples, ep_cavity_oracle),
    "ep_update": (ep_update_fn, ep_update_samples, ep_update_oracle),
}


def backends_for(op: str, sample: Sample) -> list[str]:
    """Every registered backend that can run ``op`` on this sample here."""
    tensors = tuple(t for t in sample.args if isinstance(t, torch.Tensor))
    return [n for n, why in registry.explain(op, tensors).items() if why is None]


def all_backend_names() -> list[str]:
    return sorted(registry.backends())


def floating(args) -> list[int]:
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and (a.is_floating_point() or a.is_complex())]


def call(fn: Callable, args, backend: Optional[str]):
    return fn(*args, backend=backend)
