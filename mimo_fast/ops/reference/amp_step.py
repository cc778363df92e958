"""Reference (pure PyTorch) amp_step: the AMP-GNN paper's eqs. (8a)-(8d), as written in
:func:`mimo_fast.ops.amp_step`."""
from __future__ import annotations

import torch


def forward(H, y, x, v, z_prev, V_prev, noise_var):
    H2 = H.real.square() + H.imag.square()                         # |H|^2, (B, M, N)
    V = (H2 @ v[..., None])[..., 0]                                # (8a)
    s2 = noise_var[:, None]
    z = (H @ x[..., None])[..., 0] - V * (y - z_prev) / (s2 + V_prev)   # (8b): Onsager term
    w = 1.0 / (s2 + V)
    Sigma = 1.0 / (H2.mT @ w[..., None])[..., 0]                   # (8c)
    r = x + Sigma * (H.mH @ ((y - z) * w)[..., None])[..., 0]      # (8d)
    return r, Sigma, z, V


def backward(grad_r, grad_Sigma, grad_z, grad_V, H, y, x, v, z_prev, V_prev, noise_var):
    """Gradients for (H, y, x, v, z_prev, V_prev, noise_var), PyTorch's complex convention
    (grad = dL/dRe + i dL/dIm), by the chain rule backwards through (8d)..(8a):

        g_u = Sigma g_r;  g_Sigma' = g_Sigma + Re(conj(u) g_r);  g_t = H g_u
        g_q = -Sigma^2 g_Sigma';  g_w = Re(conj(y - z) g_t) + |H|^2 g_q;  g_d2 = -w^2 g_w
        g_z' = g_z - w g_t;  g_V' = g_V + g_d2 - Re(conj(k) g_z');  g_k = -V g_z'
        g_e = g_k / d1;  g_d1 = -Re(conj(e) g_k) / d1^2
        g_H = t conj(g_u)^T + g_z' conj(x)^T + 2 H (w g_q^T + g_V' v^T)
    with e = y - z_prev, d1 = noise_var + V_prev, k = e / d1, d2 = noise_var + V, w = 1/d2,
    t = (y - z) w, u = H^H t, q = |H|^2^T w.
    """
    H2 = H.real.square() + H.imag.square()
    s2 = noise_var[:, None]
    V = (H2 @ v[..., None])[..., 0]
    d1 = s2 + V_prev
    e = y - z_prev
    k = e / d1
    z = (H @ x[..., None])[..., 0] - V * k
    w = 1.0 / (s2 + V)
    Sigma = 1.0 / (H2.mT @ w[..., None])[..., 0]
    t = (y - z) * w
    u = (H.mH @ t[..., None])[..., 0]

    g_u = Sigma * grad_r
    g_Sig = grad_Sigma + (u.conj() * grad_r).real
    g_t = (H @ g_u[..., None])[..., 0]
    g_q = -Sigma.square() * g_Sig
    g_w = ((y - z).conj() * g_t).real + (H2 @ g_q[..., None])[..., 0]
    g_d2 = -w.square() * g_w
    g_z = grad_z - w * g_t
    g_Vt = grad_V + g_d2 - (k.conj() * g_z).real
    g_k = -V * g_z
    g_e = g_k / d1
    g_d1 = -(e.conj() * g_k).real / d1.square()

    g_H = (t[:, :, None] * g_u.conj()[:, None, :] + g_z[:, :, None] * x.conj()[:, None, :]
           + 2 * H * (w[:, :, None] * g_q[:, None, :] + g_Vt[:, :, None] * v[:, None, :]))
    g_y = w * g_t + g_e
    g_x = grad_r + (H.mH @ g_z[..., None])[..., 0]
    g_v = (H2.mT @ g_Vt[..., None])[..., 0]
    g_noise = (g_d2 + g_d1).sum(-1)
    return [g_H, g_y, g_x, g_v, -g_e, g_d1, g_noise]
