"""OAMP-Net and OAMP-Net2: OAMP unfolded into layers with a few learnable scalars each
(H. He, C.-K. Wen, S. Jin, G. Y. Li, "A model-driven deep learning network for MIMO
detection", GlobalSIP 2018 (OAMP-Net), and "Model-driven deep learning for MIMO
detection", IEEE TSP 68, 2020, Sec. III (OAMP-Net2)).

Layer t, in the complex form of the classical :class:`mimo_fast.detect.OAMP` (its parent;
the papers write the real-equivalent model with 2N/4N factors that cancel here):

    v2_t  = max((||y - H x_t||^2 - Nr sigma^2) / tr(H^H H), eps)
    W^_t  = (H^H H + sigma^2 / v2_t I)^{-1} H^H,   W_t = Nt / tr(W^_t H) W^_t
    r_t   = x_t + gamma_t W_t (y - H x_t)                                     (linear step)
    B_t   = I - theta_t W_t H
    tau2_t = (tr(B_t B_t^H) v2_t + theta_t^2 tr(W_t W_t^H) sigma^2) / Nt
    x^_t  = E[x | r_t, tau2_t]                           (QAM posterior mean, uniform prior)
    x_{t+1} = x^_t                                       (OAMP-Net: gamma_t, theta_t)
    x_{t+1} = phi_t (x^_t - xi_t r_t)                    (OAMP-Net2: + phi_t, xi_t)

With gamma = theta = phi = 1 and xi = 0 (the initial values) both are OAMP exactly. The
loss is the papers' l2 loss ``||x - x_{T+1}||^2`` on the last layer's output; the logits
are the last layer's Gaussian posterior ``-|r_T - s|^2 / tau2_T``.

The linear step uses one eigendecomposition ``H^H H = U diag(g) U^H`` per channel: every
layer's ``(H^H H + lam I)^{-1}`` and the traces above are then diagonal in U
(``tr(W^ H) = sum g/(g+lam)``, ``tr(W^ W^H) = sum g/(g+lam)^2``), O(Nt^2) a layer instead
of a solve and two Nt x Nr x Nt products. No custom op applies (the traces need the whole
spectrum, not ``ep_lmmse``'s diagonal), so ``backend`` is accepted for uniformity and the
same torch code runs on every backend and device.

Masks are native: masked users' columns of H are zeroed, which makes ``H^H H + lam I``
block diagonal with the masked block ``lam I``; those users get ``W`` rows of 0, so
``r = x = 0`` for them, and the counts (``Nt`` above, the ``tr(B B^H)`` identity part)
use the number of active users. The active block is then the smaller problem exactly.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mimo_fast.detect.base import gaussian_logits, pam_moments, qam_denoiser, real_dtype
from mimo_fast.detect.learned.base import LearnedDetector


def check_indices(det: LearnedDetector, x_idx: Tensor, H: Tensor, mask: Tensor) -> Tensor:
    """``x_idx`` as (B, Nt) int64 on H's device with masked entries set to 0, or a
    ValueError/TypeError naming it."""
    if not isinstance(x_idx, Tensor) or x_idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{det.name}: x_idx must be an int64 tensor of point indices, got "
                        f"{getattr(x_idx, 'dtype', type(x_idx).__name__)}")
    want = (H.shape[0], H.shape[2])
    if tuple(x_idx.shape) != want:
        raise ValueError(f"{det.name}: x_idx must have shape (B, Nt) = {want}, got {tuple(x_idx.shape)}")
    idx = torch.where(mask, x_idx.to(device=H.device, dtype=torch.int64), 0)
    if bool(((idx < 0) | (idx >= det.constellation.order)).any()):
        raise ValueError(f"{det.name}: x_idx must be in [0, {det.constellation.order}) for present users")
    return idx


class OAMPNet(LearnedDetector):
    """OAMP-Net: ``layers`` OAMP iterations with learnable ``gamma_t`` (step size of the
    linear step) and ``theta_t`` (scales ``W_t`` in the error-variance estimate ``tau2_t``).

    Options: ``layers`` T (default 10, OAMP's iteration count), ``min_noise_var`` floor on
    sigma^2 (1e-6), ``eps`` floor on ``v2_t`` (1e-9, as classical OAMP), ``backend``.
    """

    name = "oampnet"
    #: learnable per-layer scalars and their initial values (OAMP's)
    PARAMS = {"gamma": 1.0, "theta": 1.0}

    def __init__(self, constellation, *, layers: int = 10, min_noise_var: float = 1e-6,
                 eps: float = 1e-9, **kw):
        super().__init__(constellation, **kw)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ValueError(f"{self.name}: layers must be a positive int, got {layers!r}")
        for arg, val in (("min_noise_var", min_noise_var), ("eps", eps)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not val > 0:
                raise ValueError(f"{self.name}: {arg} must be a positive float, got {val!r}")
        self.layers, self.min_noise_var, self.eps = layers, float(min_noise_var), float(eps)
        for pname, init in self.PARAMS.items():
            self.register_parameter(pname, nn.Parameter(torch.full((layers,), init)))

    def config(self) -> dict:
        return {"layers": self.layers, "min_noise_var": self.min_noise_var, "eps": self.eps}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", layers={self.layers}"

    def _nonlinear(self, t: int, x_hat: Tensor, r: Tensor, real) -> Tensor:
        """x_{t+1} from the posterior mean; OAMP-Net passes it through."""
        return x_hat

    def _run(self, y: Tensor, H: Tensor, noise_var: Tensor, mask: Tensor):
        """All layers. Returns ``(x_out, r_T, tau2_T)``: the network output x_{T+1} (B, Nt)
        and the last layer's Gaussian observation of each user."""
        B, Nr, Nt = H.shape
        real = real_dtype(H.dtype)
        pts = self.points(H)
        s2 = noise_var.to(real).clamp_min(self.min_noise_var)
        m = mask.to(real)
        Hm = H * m[:, None, :].to(H.dtype)                      # masked users removed
        n_act = m.sum(-1).clamp_min(1.0)
        n_off = Nt - m.sum(-1)
        G = Hm.mH @ Hm
        g, U = torch.linalg.eigh(G)
        g = g.clamp_min(0.0)                                    # rounding below 0 on singular G
        trG = g.sum(-1).clamp_min(torch.finfo(real).tiny)
        Hy = (Hm.mH @ y[..., None])[..., 0]
        gamma, theta = self.gamma.to(real), self.theta.to(real)
        x = torch.zeros(B, Nt, dtype=H.dtype, device=H.device)
        for t in range(self.layers):
            res = y - (Hm @ x[..., None])[..., 0]
            v2 = ((res.abs().square().sum(-1) - Nr * s2) / trG).clamp_min(self.eps)
            lam = (s2 / v2)[:, None]
            inv = 1.0 / (g + lam)                               # eigenvalues of (G + lam I)^{-1}
            c = n_act / (g * inv).sum(-1).clamp_min(torch.finfo(real).tiny)   # Nt / tr(W^ H)
            # W^ res = U diag(inv) U^H H^H res, with H^H res = H^H y - G x
            Hres = Hy - (G @ x[..., None])[..., 0]
            What_res = (U @ (inv * (U.mH @ Hres[..., None])[..., 0]).to(H.dtype)[..., None])[..., 0]
            r = x + (gamma[t] * c)[:, None] * What_res
            # B = I - theta W H has eigenvalues 1 - theta c g/(g+lam); each masked user adds 1
            trBB = (1.0 - theta[t] * c[:, None] * g * inv).square().sum(-1) - n_off
            trWW = c.square() * (g * inv.square()).sum(-1)
            tau2 = (trBB * v2 + theta[t].square() * trWW * s2) / n_act
            tau2 = tau2.clamp_min(self.eps)[:, None].expand(B, Nt)
            x_hat = self._posterior_mean(r, tau2, pts, real)
            x = self._nonlinear(t, x_hat, r, real) * m.to(H.dtype)
        return x, r, tau2

    def _posterior_mean(self, r: Tensor, tau2: Tensor, pts: Tensor, real) -> Tensor:
        """E[x | r = x + CN(0, tau2)] under the uniform prior. A QAM-like constellation's
        posterior factorises into its real and imaginary PAM parts (each with variance
        tau2 / 2), so this takes 2 x sqrt(Q) real terms per user instead of Q complex ones:
        the same value, ~3x faster forward and backward at 16-QAM."""
        c = self.constellation
        if not c.separable:
            return qam_denoiser(r, tau2, pts)[0]
        half = tau2 / 2
        parts = []
        for comp, levels, prior in ((r.real, c.real_levels, c.real_prior), (r.imag, c.imag_levels, c.imag_prior)):
            lv = levels.to(dtype=real, device=r.device)
            lp = prior.log().to(dtype=real, device=r.device)
            parts.append(pam_moments(comp, half, lv, lp)[0])
        return torch.complex(*parts)

    def _detect_masked(self, y, H, noise_var, mask):
        _, r, tau2 = self._run(y, H, noise_var, mask)
        return gaussian_logits(r, tau2, self.points(H)), None

    def training_loss(self, y: Tensor, H: Tensor, noise_var: Tensor, x_idx: Tensor,
                      mask: Optional[Tensor] = None) -> Tensor:
        """The papers' l2 loss ``||x - x_{T+1}||^2``, averaged over the batch (masked users
        excluded: both sides are 0 there)."""
        nv, mask = self.checked(y, H, noise_var, mask)
        idx = check_indices(self, x_idx, H, mask)
        x_out, _, _ = self._run(y, H, nv, mask)
        x = self.constellation.indices_to_points(idx, H.dtype) * mask.to(H.dtype)
        return (x - x_out).abs().square().sum(-1).mean()


class OAMPNet2(OAMPNet):
    """OAMP-Net2: OAMP-Net plus a learnable divergence-free-style nonlinear estimator
    ``x_{t+1} = phi_t (E[x | r_t, tau2_t] - xi_t r_t)`` (TSP 2020, Sec. III): four
    learnable scalars per layer, ``gamma_t, theta_t, phi_t, xi_t``. Same options."""

    name = "oampnet2"
    PARAMS = {"gamma": 1.0, "theta": 1.0, "phi": 1.0, "xi": 0.0}

    def _nonlinear(self, t, x_hat, r, real):
        return self.phi[t].to(real) * (x_hat - self.xi[t].to(real) * r)


__all__ = ["OAMPNet", "OAMPNet2"]
