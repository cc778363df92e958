"""Maximum-likelihood detectors: exhaustive ML, Schnorr-Euchner sphere decoding, K-best.

All three minimise ``||y - H x||^2`` over the constellation; their logits are max-log:
``logit[n, q] = -min_{x : x_n = s_q} ||y - H x||^2 / sigma^2`` over the candidates each
one visits (all of them for ML, the survivors for K-best). ``noise_var`` is floored at
``MIN_NOISE_VAR`` for the logits only (the decisions do not depend on it).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mimo_fast.detect.base import Detector, require_tall

MIN_NOISE_VAR = 1e-9
#: logits of points no candidate covers (K-best): this far below the best, in units of sigma^2
MISSING_GAP = 1e3


def _maxlog_logits(dist: Tensor, cand: Tensor, Q: int, noise_var: Tensor) -> Tensor:
    """``dist (B, C)``, ``cand (B, C, Nt)`` indices -> ``(B, Nt, Q)`` max-log logits."""
    B, C, Nt = cand.shape
    s2 = noise_var.clamp_min(MIN_NOISE_VAR)[:, None, None]
    fill = dist.amax(-1) + MISSING_GAP * s2[:, 0, 0]
    best = fill[:, None, None].expand(B, Nt, Q).clone()
    best = best.scatter_reduce(-1, cand.transpose(1, 2), dist[:, None, :].expand(B, Nt, C),
                               reduce="amin", include_self=True)
    return -best / s2


class ML(Detector):
    """Exhaustive ML over all ``Q^Nt`` candidates (refuses more than ``max_candidates``,
    default 2^16). ``soft="maxlog"`` (default) gives max-log logits whose argmax is the ML
    vector; ``soft="app"`` gives the exact symbol marginals ``log sum exp(-d / sigma^2)``
    (then ``hard`` is still the joint ML vector). Works in chunks of ``chunk`` vectors."""
    name = "ml"

    def __init__(self, constellation, *, max_candidates: int = 2 ** 16, soft: str = "maxlog",
                 chunk: int = 64, **kw):
        super().__init__(constellation, **kw)
        if soft not in ("maxlog", "app"):
            raise ValueError(f"ml: soft must be 'maxlog' or 'app', got {soft!r}")
        self.max_candidates, self.soft, self.chunk = max_candidates, soft, chunk

    def _detect(self, y, H, noise_var):
        B, Nr, Nt = H.shape
        Q = self.constellation.order
        if Q ** Nt > self.max_candidates:
            raise ValueError(f"ml: H has Nt={Nt} users, so Q^Nt = {Q}^{Nt} = {Q ** Nt} candidates, above "
                             f"max_candidates={self.max_candidates}; use sphere or kbest, or raise max_candidates")
        pts = self.points(H)
        cand = torch.cartesian_prod(*[torch.arange(Q, device=H.device)] * Nt).reshape(-1, Nt)
        X = pts[cand]                                                  # (C, Nt)
        s2 = noise_var.clamp_min(MIN_NOISE_VAR)
        logits, hard = [], []
        for i in range(0, B, self.chunk):
            sl = slice(i, i + self.chunk)
            HX = H[sl] @ X.T                                           # (b, Nr, C)
            d = (y[sl][..., None] - HX).abs().square().sum(-2)         # (b, C)
            hard.append(cand[d.argmin(-1)])
            if self.soft == "maxlog":
                c = cand.expand(d.shape[0], *cand.shape)
                logits.append(_maxlog_logits(d, c, Q, noise_var[sl]))
            else:
                e = -d / s2[sl, None]
                oh = torch.nn.functional.one_hot(cand, Q).bool()     # (C, Nt, Q)
                lg = torch.where(oh[None], e[:, :, None, None], torch.tensor(float("-inf"), dtype=e.dtype))
                logits.append(torch.logsumexp(lg, 1))
        return torch.cat(logits), torch.cat(hard)


class KBest(Detector):
    """K-best breadth-first tree search on the QR decomposition of the complex channel
    (one tree level per user, Q branches each), keeping the ``k`` (default 16) smallest
    partial distances per level. With ``k = Q^Nt`` nothing is pruned and it is exact ML.
    Batched over vectors. Needs Nr >= Nt."""
    name = "kbest"

    def __init__(self, constellation, *, k: int = 16, **kw):
        super().__init__(constellation, **kw)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"kbest: k must be a positive int, got {k!r}")
        self.k = k

    def _detect(self, y, H, noise_var):
        require_tall(self, H)
        B, Nr, Nt = H.shape
        pts = self.points(H)
        Q = pts.numel()
        Qm, R = torch.linalg.qr(H)                                    # R (B, Nt, Nt)
        z = (Qm.mH @ y[..., None])[..., 0]
        # residual outside the column space adds the same constant to every candidate
        const = (y.abs().square().sum(-1) - z.abs().square().sum(-1)).clamp_min(0)
        dist = torch.zeros(B, 1, dtype=H.dtype.to_real(), device=H.device)
        paths = torch.zeros(B, 1, 0, dtype=torch.long, device=H.device)  # users Nt-1 down to k
        for k in range(Nt - 1, -1, -1):
            xs = pts[paths.flip(-1)]                                   # users k+1..Nt-1, (B, S, Nt-1-k)
            inter = (R[:, k, k + 1:][:, None, :] * xs).sum(-1)         # (B, S)
            e = z[:, k, None, None] - inter[..., None] - R[:, k, k, None, None] * pts  # (B, S, Q)
            d = (dist[..., None] + e.abs().square()).reshape(B, -1)
            S = paths.shape[1]
            new = torch.cat([paths[:, :, None, :].expand(B, S, Q, paths.shape[2]),
                             torch.arange(Q, device=H.device).view(1, 1, Q, 1).expand(B, S, Q, 1)], -1)
            new = new.reshape(B, S * Q, -1)
            keep = min(self.k, S * Q)
            dist, idx = d.topk(keep, -1, largest=False)
            paths = new.gather(1, idx[..., None].expand(B, keep, new.shape[-1]))
        cand = paths.flip(-1)                                          # user order 0..Nt-1
        dist = dist + const[:, None]
        return _maxlog_logits(dist, cand, Q, noise_var), cand[:, 0]


class Sphere(Detector):
    """Schnorr-Euchner sphere decoder: depth-first search on the QR decomposition of the
    real-equivalent channel (one PAM level per tree level, children visited in order of
    distance from the centre), the radius shrinking to each leaf found; returns the ML
    vector. Runs per vector on the CPU in float64 NumPy -- for verification and small
    systems, not for speed. Needs a QAM-like (separable) constellation and Nr >= Nt.
    Hard-output: logits are max-log over {ML vector} (``-d_ML/sigma^2`` at the decided
    point, ``MISSING_GAP`` lower elsewhere)."""
    name = "sphere"
    needs_separable = True

    def _detect(self, y, H, noise_var):
        require_tall(self, H)
        B, Nr, Nt = H.shape
        c = self.constellation
        if not torch.equal(c.real_levels, c.imag_levels):
            raise ValueError("sphere: the real and imaginary levels of the constellation must be equal")
        levels = c.real_levels.numpy()
        Hr = torch.cat([torch.cat([H.real, -H.imag], -1), torch.cat([H.imag, H.real], -1)], -2)
        Hr = Hr.detach().double().cpu().numpy()
        yr = torch.cat([y.real, y.imag], -1).detach().double().cpu().numpy()
        lev_idx = np.zeros((B, 2 * Nt), dtype=np.int64)
        dists = np.zeros(B)
        for b in range(B):
            Qm, R = np.linalg.qr(Hr[b])
            zb = Qm.T @ yr[b]
            lev_idx[b], d = _se_search(R, zb, levels)
            dists[b] = d + max(float(yr[b] @ yr[b] - zb @ zb), 0.0)
        li = torch.from_numpy(lev_idx).to(H.device)
        # point whose (real level, imag level) matches
        table = torch.full((levels.size, levels.size), -1, dtype=torch.long)
        table[c.real_index, c.imag_index] = torch.arange(c.order)
        hard = table.to(H.device)[li[:, :Nt], li[:, Nt:]]
        d = torch.from_numpy(dists).to(device=H.device, dtype=H.dtype.to_real())
        return _maxlog_logits(d[:, None], hard[:, None, :], c.order, noise_var), hard


def _se_search(R: np.ndarray, z: np.ndarray, levels: np.ndarray):
    """Schnorr-Euchner enumeration of min ||z - R a|| over a in levels^n (R upper
    triangular). Returns (level indices, squared distance)."""
    n = R.shape[0]
    diag = R.diagonal()
    x = np.zeros(n)
    xi = np.zeros(n, dtype=np.int64)
    best_i, best = None, np.inf
    pd = np.zeros(n + 1)                          # pd[k]: distance of levels k+1..n-1
    order = [None] * n
    ptr = np.zeros(n, dtype=np.int64)

    def enter(k):
        centre = (z[k] - R[k, k + 1:] @ x[k + 1:]) / diag[k]
        order[k] = (np.argsort(np.abs(levels - centre), kind="stable"), centre)
        ptr[k] = 0

    k = n - 1
    enter(k)
    while k < n:
        ords, centre = order[k]
        if ptr[k] >= levels.size:
            k += 1
            continue
        j = ords[ptr[k]]
        ptr[k] += 1
        d = pd[k + 1] + (diag[k] * (centre - levels[j])) ** 2
        if d >= best:
            k += 1                                # siblings are farther: go up
            continue
        x[k], xi[k] = levels[j], j
        if k == 0:
            best, best_i = d, xi.copy()
            k += 1
        else:
            pd[k] = d
            k -= 1
            enter(k)
    return best_i, best
