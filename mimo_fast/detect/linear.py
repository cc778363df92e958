"""Linear detectors (MF, ZF, LMMSE) and ordered MMSE-SIC (V-BLAST).

A linear detector applies ``W (Nt, Nr)`` to y and treats each output as an AWGN
observation of its symbol: with ``D = W H`` and ``mu_n = D_nn``,

    z_n = (W y)_n / mu_n,
    nu_n = (Es sum_{j != n} |D_nj|^2 + sigma^2 ||W_n||^2) / |mu_n|^2,

and ``logits = -|z_n - s|^2 / nu_n`` (unbiased; exact for ZF and the proper LMMSE).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mimo_fast.detect.base import Detector, gaussian_logits, require_tall

#: floor on the effective noise variance, so noise-free inputs give finite logits
NU_FLOOR = 1e-12


def unbiased_outputs(W: Tensor, H: Tensor, y: Tensor, noise_var: Tensor, es: float):
    """``(z, nu)`` of the module docstring for filters ``W (B, Nt, Nr)``."""
    D = W @ H
    mu = D.diagonal(dim1=-2, dim2=-1)
    interf = es * (D.abs().square().sum(-1) - mu.abs().square())
    noise = noise_var[:, None] * W.abs().square().sum(-1)
    mu_safe = torch.where(mu.abs() > 0, mu, torch.ones_like(mu))
    z = (W @ y[..., None])[..., 0] / mu_safe
    nu = ((interf + noise) / mu_safe.abs().square()).clamp_min(NU_FLOOR)
    return z, nu


def _solve_hermitian(A: Tensor, B: Tensor) -> Tensor:
    L, info = torch.linalg.cholesky_ex(A)
    if torch.compiler.is_compiling():
        # The same branch as a graph conditional (a Python `if` on the values breaks the graph).
        # lstsq's outputs have data-dependent shapes, which a compiled branch cannot hold: the
        # singular case takes the pseudo-inverse there (the same minimum-norm solution, to rounding).
        return torch.cond((info == 0).all(), lambda A, B, L: torch.cholesky_solve(B, L).contiguous(),
                          lambda A, B, L: (torch.linalg.pinv(A, hermitian=True) @ B).contiguous(),
                          (A.resolve_conj(), B.resolve_conj(), L))
    if bool((info == 0).all()):
        return torch.cholesky_solve(B, L)
    return torch.linalg.lstsq(A, B).solution


class Linear(Detector):
    def filters(self, H: Tensor, noise_var: Tensor) -> Tensor:
        raise NotImplementedError

    def _detect(self, y, H, noise_var):
        W = self.filters(H, noise_var)
        z, nu = unbiased_outputs(W, H, y, noise_var, self.constellation.energy)
        return gaussian_logits(z, nu, self.points(H)), None


class MF(Linear):
    """Matched filter: ``W = diag(1 / ||h_n||^2) H^H``."""
    name = "mf"

    def filters(self, H, noise_var):
        norm = H.abs().square().sum(-2).clamp_min(1e-30)
        return H.mH / norm[..., None]


class ZF(Linear):
    """Zero forcing: ``W = (H^H H)^{-1} H^H`` (needs Nr >= Nt)."""
    name = "zf"

    def filters(self, H, noise_var):
        require_tall(self, H)
        return _solve_hermitian(H.mH @ H, H.mH)


class LMMSE(Linear):
    """LMMSE: ``W = (H^H H + (sigma^2 / Es) I)^{-1} H^H`` (the proper one; docs/conventions.md).

    ``regularizer="half"`` uses ``sigma^2 / (2 Es)``, the variant found in some papers'
    real-domain code (real noise variance over complex symbol energy); offered only by
    name for comparisons.
    """
    name = "lmmse"

    def __init__(self, constellation, *, regularizer: str = "proper", **kw):
        super().__init__(constellation, **kw)
        if regularizer not in ("proper", "half"):
            raise ValueError(f"lmmse: regularizer must be 'proper' or 'half', got {regularizer!r}")
        self.regularizer = regularizer

    def filters(self, H, noise_var):
        reg = noise_var / self.constellation.energy
        if self.regularizer == "half":
            reg = reg / 2
        Nt = H.shape[-1]
        A = H.mH @ H + reg[:, None, None] * torch.eye(Nt, dtype=H.dtype, device=H.device)
        return _solve_hermitian(A, H.mH)


class VBLAST(Detector):
    """Ordered MMSE-SIC (V-BLAST with MMSE nulling): at each of Nt stages compute the
    MMSE filter for the users not yet detected, detect the one with the smallest MSE
    (largest SINR) by the nearest point, and cancel it from y. Its logits are those of
    its unbiased MMSE output at that stage (interference from undetected users only)."""
    name = "vblast"

    def _detect(self, y, H, noise_var):
        B, Nr, Nt = H.shape
        es = self.constellation.energy
        pts = self.points(H)
        eye = torch.eye(Nt, dtype=H.dtype, device=H.device)
        reg = (noise_var / es)[:, None, None] * eye
        done = torch.zeros(B, Nt, dtype=torch.bool, device=H.device)
        logits = torch.zeros(B, Nt, pts.numel(), dtype=H.dtype.to_real(), device=H.device)
        hard = torch.zeros(B, Nt, dtype=torch.long, device=H.device)
        y_res = y.clone()
        ar = torch.arange(B, device=H.device)
        for _ in range(Nt):
            Hk = H * (~done)[:, None, :]
            # detected users get a unit diagonal instead of a column: decoupled, never singular
            A = Hk.mH @ Hk + reg + torch.diag_embed(done.to(H.dtype))
            Ainv = torch.linalg.inv(A)
            mse = Ainv.diagonal(dim1=-2, dim2=-1).real.masked_fill(done, float("inf"))
            k = mse.argmin(-1)
            W = Ainv @ Hk.mH
            z, nu = unbiased_outputs(W, Hk, y_res, noise_var, es)
            lg = gaussian_logits(z[ar, k][:, None], nu[ar, k][:, None], pts)[:, 0]
            q = lg.argmax(-1)
            logits[ar, k] = lg
            hard[ar, k] = q
            done[ar, k] = True
            y_res = y_res - H[ar, :, k] * pts[q][:, None]
        return logits, hard
