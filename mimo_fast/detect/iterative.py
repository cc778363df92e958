"""Message-passing detectors: complex AMP, OAMP and EP.

* ``amp``: AMP-GNN paper Algorithm 1 -- the linear module (8a)-(8d) is
  :func:`mimo_fast.ops.amp_step`, the denoiser (8e)-(8f) the QAM posterior (eqs. 9-10).
* ``oamp``: OAMP as unfolded in OAMP-Net (He et al.): de-correlated LMMSE linear module
  with the residual-based variance estimate, same QAM denoiser.
* ``ep``: E2E paper eqs. (6)-(10) in the real-equivalent model: the LMMSE step (6) is
  :func:`mimo_fast.ops.ep_lmmse`, cavity (7), moment matching onto the PAM alphabet (8),
  precision update (9) with the negative-precision rule, damping (10).

All take ``iterations`` and iterate a fixed number of times; the noise variance is
floored at ``min_noise_var`` (default 1e-6) because each divides by it.
"""
from __future__ import annotations

import os

import torch

from mimo_fast import ops
from mimo_fast.ops.threads import num_threads
from mimo_fast.detect.base import Detector, gaussian_logits, pam_moments, qam_denoiser


def _check_common(name, iterations, damping):
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{name}: iterations must be a positive int, got {iterations!r}")
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"{name}: damping must be in [0, 1), got {damping!r}")


class AMP(Detector):
    """Complex AMP (AMP-GNN paper, Algorithm 1). Starts from ``x = 0`` with ``v = Es`` (the
    prior variance; Algorithm 1 writes N/M for its own channel scaling) and ``z_prev = y``.
    ``damping`` mixes the new (x, v) with the old: ``x = (1-d) x_new + d x_old``."""
    name = "amp"

    def __init__(self, constellation, *, iterations: int = 10, damping: float = 0.0,
                 min_noise_var: float = 1e-6, **kw):
        super().__init__(constellation, **kw)
        _check_common(self.name, iterations, damping)
        self.iterations, self.damping, self.min_noise_var = iterations, damping, min_noise_var

    def _detect(self, y, H, noise_var):
        B, Nr, Nt = H.shape
        pts = self.points(H)
        s2 = noise_var.clamp_min(self.min_noise_var)
        x = torch.zeros(B, Nt, dtype=H.dtype, device=H.device)
        v = torch.full((B, Nt), self.constellation.energy, dtype=s2.dtype, device=H.device)
        z_prev, V_prev = y, torch.zeros(B, Nr, dtype=s2.dtype, device=H.device)
        for _ in range(self.iterations):
            r, Sigma, z, V = ops.amp_step(H, y, x, v, z_prev, V_prev, s2, backend=self.backend)  # (8a)-(8d)
            x_new, v_new, logits = qam_denoiser(r, Sigma, pts)                               # (8e)-(8f)
            d = self.damping
            x, v = (1 - d) * x_new + d * x, (1 - d) * v_new + d * v
            z_prev, V_prev = z, V
        return logits, None


class OAMP(Detector):
    """OAMP (Ma & Ping; the OAMP-Net paper's form):

        v2  = max((||y - H x||^2 - Nr sigma^2) / tr(H^H H), eps)
        W^  = (H^H H + sigma^2/v2 I)^{-1} H^H,   W = Nt / tr(W^ H) W^
        r   = x + W (y - H x)
        tau2 = (tr(B B^H) v2 + tr(W W^H) sigma^2) / Nt,   B = I - W H
        x   = E[x | r, tau2]  (QAM posterior mean)
    """
    name = "oamp"

    def __init__(self, constellation, *, iterations: int = 10, min_noise_var: float = 1e-6,
                 eps: float = 1e-9, **kw):
        super().__init__(constellation, **kw)
        _check_common(self.name, iterations, 0.0)
        self.iterations, self.min_noise_var, self.eps = iterations, min_noise_var, eps

    def _detect(self, y, H, noise_var):
        B, Nr, Nt = H.shape
        pts = self.points(H)
        s2 = noise_var.clamp_min(self.min_noise_var)
        G = H.mH @ H
        trG = G.diagonal(dim1=-2, dim2=-1).real.sum(-1)
        eye = torch.eye(Nt, dtype=H.dtype, device=H.device)
        x = torch.zeros(B, Nt, dtype=H.dtype, device=H.device)
        for _ in range(self.iterations):
            res = y - (H @ x[..., None])[..., 0]
            v2 = ((res.abs().square().sum(-1) - Nr * s2) / trG).clamp_min(self.eps)
            What = torch.linalg.solve(G + (s2 / v2)[:, None, None] * eye, H.mH)
            W = What * (Nt / (What @ H).diagonal(dim1=-2, dim2=-1).sum(-1).real)[:, None, None]
            r = x + (W @ res[..., None])[..., 0]
            Bm = eye - W @ H
            tau2 = (Bm.abs().square().sum((-2, -1)) * v2
                    + W.abs().square().sum((-2, -1)) * s2) / Nt
            x, _, logits = qam_denoiser(r, tau2[:, None].expand(B, Nt), pts)
        return logits, None


def _real_gram(H, y, s2):
    """``H_r^T H_r / s2`` and ``H_r^T y_r / s2`` of the real-equivalent model without forming
    ``H_r``: with ``P = [Re H, Im H]`` (Nr x 2Nt) one real product ``P^T P`` holds
    ``A^T A, A^T B, B^T A, B^T B`` (A = Re H, B = Im H), and
    ``H_r^T H_r = [[A^T A + B^T B, B^T A - A^T B], [A^T B - B^T A, A^T A + B^T B]]``,
    ``H_r^T y_r = [A^T y_re + B^T y_im; A^T y_im - B^T y_re]`` (half the flops of the
    2Nr x 2Nt product, no concatenated copy of H_r)."""
    B, Nr, Nt = H.shape
    # view_as_real: (B, Nr, Nt, 2); swapping the last two dims and flattening gives each
    # row as [A(r, :), B(r, :)].
    P = torch.view_as_real(H).transpose(-1, -2).reshape(B, Nr, 2 * Nt)
    PtP = P.mT @ P / s2[:, None, None]
    AA, AB = PtP[:, :Nt, :Nt], PtP[:, :Nt, Nt:]
    BA, BB = PtP[:, Nt:, :Nt], PtP[:, Nt:, Nt:]
    gram = PtP.new_empty(B, 2 * Nt, 2 * Nt)
    torch.add(AA, BB, out=gram[:, :Nt, :Nt])
    gram[:, Nt:, Nt:] = gram[:, :Nt, :Nt]
    torch.sub(BA, AB, out=gram[:, :Nt, Nt:])
    torch.sub(AB, BA, out=gram[:, Nt:, :Nt])
    Py = P.mT @ torch.view_as_real(y) / s2[:, None, None]                 # (B, 2Nt, 2): [re, im]
    rhs = torch.cat([Py[:, :Nt, 0] + Py[:, Nt:, 1], Py[:, :Nt, 1] - Py[:, Nt:, 0]], -1)
    return gram, rhs


def _cavity(mu, Sigma, lam, gam, v_min):
    """The cavity (7b)-(7c): ``v = Sigma / (1 - Sigma lam)``, ``x = v (mu / Sigma - gam)``,
    written ``x = (mu - Sigma gam) / (1 - Sigma lam)``.

    The mean comes from the *unfloored* variance; only the returned variance is floored at
    ``v_min``. (Flooring first, ``x = max(v, v_min) (mu / Sigma - gam)``, scales the mean by
    ``v_min / v`` whenever the true cavity variance is below the floor: at high SNR on small
    systems, e.g. 1x1 16-QAM at 60 dB where Sigma ~ 2e-7 < 5e-7, x_obs came out ~2.2x the
    LMMSE mean, past the outer level -- EP's error floor of issue 18.) Where the cavity is
    not a proper Gaussian (``1 - Sigma lam <= 0`` by rounding) the LMMSE posterior
    ``(mu, Sigma)`` stands in for it. Same rule as ``cavity_impl`` in
    csrc/ep_detector/ep_iteration.cpp."""
    den = 1 - Sigma * lam
    ok = den > 0
    den = torch.where(ok, den, torch.ones_like(den))
    x_obs = torch.where(ok, (mu - Sigma * gam) / den, mu)
    v_obs = torch.where(ok, Sigma / den, Sigma).clamp_min(v_min)
    return x_obs, v_obs


class EP(Detector):
    """Expectation propagation (E2E paper eqs. 6-10), real-equivalent model.

    Options (defaults are the paper's: T = 10, eta = 0.7, lam^(0) = 1, gam^(0) = 0):
    ``iterations`` T, ``damping`` eta of (10) (the kept fraction of the previous
    lam, gam), ``lam0`` the initial precision (a float, or ``"prior"`` = 1 / E[x_K^2] so
    iteration 1 is the LMMSE estimate -- measured ~1.3x worse SER at 8x8 16-QAM 20 dB),
    ``v_min`` floor on the posterior variance (5e-7, as in Cespedes et al.; it floors the cavity
    and moment-matched variances, never the cavity mean: :func:`_cavity`). Logits come from the cavity (7) of the last
    iteration: ``-(Re s - x_obs)^2 / (2 v_obs) - (Im s - x_obs')^2 / (2 v_obs')``.
    """
    name = "ep"
    needs_separable = True

    def __init__(self, constellation, *, iterations: int = 10, damping: float = 0.7,
                 lam0=1.0, v_min: float = 5e-7, min_noise_var: float = 1e-6, **kw):
        super().__init__(constellation, **kw)
        _check_common(self.name, iterations, damping)
        if not (lam0 == "prior" or (isinstance(lam0, (int, float)) and lam0 > 0)):
            raise ValueError(f"ep: lam0 must be 'prior' or a positive float, got {lam0!r}")
        self.iterations, self.damping, self.lam0 = iterations, damping, lam0
        self.v_min, self.min_noise_var = v_min, min_noise_var

    def _alphabet(self, Nt, dtype, device):
        c = self.constellation
        lv = torch.stack([c.real_levels, c.imag_levels]).to(dtype=dtype, device=device)       # (2, L)
        lp = torch.stack([c.real_prior, c.imag_prior]).log().to(dtype=dtype, device=device)
        side = torch.arange(2, device=device).repeat_interleave(Nt)                          # K -> re/im
        return lv[side], lp[side]                                                            # (2Nt, L)

    def _iteration_torch(self, mu, Sigma, lam, gam, levels, log_prior, update: bool):
        """Eqs. (7)-(10) after the LMMSE step; returns (x_obs, v_obs, lam, gam)."""
        x_obs, v_obs = _cavity(mu, Sigma, lam, gam, self.v_min)                        # (7b), (7c)
        if not update:
            return x_obs, v_obs, lam, gam
        x_hat, v_hat = pam_moments(x_obs, v_obs, levels, log_prior)                   # (8)
        v_hat = v_hat.clamp_min(self.v_min)
        lam_new = 1 / v_hat - 1 / v_obs                                                # (9a)
        gam_new = x_hat / v_hat - x_obs / v_obs                                        # (9b)
        neg = ~(lam_new > 0)                       # not a precision: keep the previous pair
        lam_new = torch.where(neg, lam, lam_new)
        gam_new = torch.where(neg, gam, gam_new)
        eta = self.damping
        return x_obs, v_obs, (1 - eta) * lam_new + eta * lam, (1 - eta) * gam_new + eta * gam  # (10)

    def _use_fused(self, gram, lam, levels) -> bool:
        """The C++ iteration (csrc/ep_detector/) serves CPU float32/64 when autograd is not
        recording and the backend is not forced to 'reference' (which stays pure PyTorch)."""
        from mimo_fast import _ext

        forced = self.backend or os.environ.get("MIMO_FAST_BACKEND", "")
        return (_ext.C is not None and gram.device.type == "cpu" and forced != "reference"
                and not (torch.is_grad_enabled() and (gram.requires_grad or lam.requires_grad))
                and levels.shape[-1] >= 1)

    def _iteration_fused(self, mu, Sigma, lam, gam, levels, log_prior, update: bool):
        """Same as :meth:`_iteration_torch` in two C++ passes (csrc/ep_detector/) around one
        vectorised torch exp; updates lam and gam in place."""
        from mimo_fast import _ext

        mu, Sigma = mu.contiguous(), Sigma.contiguous()
        levels, log_prior = levels.contiguous(), log_prior.contiguous()
        (B, K), L = mu.shape, levels.shape[-1]
        code, nt = _ext.DTYPE_CODES[str(mu.dtype).removeprefix("torch.")], num_threads()
        x_obs, v_obs = torch.empty_like(mu), torch.empty_like(mu)
        w = mu.new_empty(B, K, L) if update else None
        _ext.C.ep_cavity(mu.data_ptr(), Sigma.data_ptr(), lam.data_ptr(), gam.data_ptr(),
                         levels.data_ptr(), log_prior.data_ptr(), x_obs.data_ptr(), v_obs.data_ptr(),
                         0 if w is None else w.data_ptr(), B, K, L, self.v_min, code, nt)
        if update:
            w.exp_()
            _ext.C.ep_update(x_obs.data_ptr(), v_obs.data_ptr(), w.data_ptr(), levels.data_ptr(),
                             lam.data_ptr(), gam.data_ptr(), B, K, L, self.damping, self.v_min, code, nt)
        return x_obs, v_obs

    def _detect(self, y, H, noise_var):
        B, Nr, Nt = H.shape
        real = H.dtype.to_real()
        s2 = (noise_var / 2).clamp_min(self.min_noise_var)            # real noise variance
        gram, rhs = _real_gram(H, y, s2)
        levels, log_prior = self._alphabet(Nt, real, H.device)
        e_real = (levels.square() * log_prior.exp()).sum(-1)           # prior E[x_K^2]
        lam = (1.0 / e_real if self.lam0 == "prior" else torch.full_like(e_real, float(self.lam0)))
        lam = lam.expand(B, 2 * Nt).clone()
        gam = torch.zeros(B, 2 * Nt, dtype=real, device=H.device)
        fused = self._use_fused(gram, lam, levels)
        for t in range(self.iterations):
            mu, Sigma = ops.ep_lmmse(gram, rhs, lam, gam, backend=self.backend)          # (6)
            last = t == self.iterations - 1
            if fused:
                x_obs, v_obs = self._iteration_fused(mu, Sigma, lam, gam, levels, log_prior, not last)
            else:
                x_obs, v_obs, lam, gam = self._iteration_torch(mu, Sigma, lam, gam, levels, log_prior, not last)
        pts = self.points(H)
        xo = torch.complex(x_obs[:, :Nt], x_obs[:, Nt:])
        # separable Gaussian over (Re, Im): write as two real terms
        lg = (-(pts.real - xo.real[..., None]).square() / (2 * v_obs[:, :Nt, None])
              - (pts.imag - xo.imag[..., None]).square() / (2 * v_obs[:, Nt:, None]))
        return lg, None


