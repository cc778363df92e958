"""Reference (pure PyTorch) ep_lmmse: Cholesky of A = sym(gram) + diag(lam), then
mean = A^{-1}(rhs + gam) and var = diag(A^{-1}). See :func:`mimo_fast.ops.ep_lmmse`."""
from __future__ import annotations

import torch


def system_matrix(gram, lam):
    # gram is read through its symmetric part, so the function (and its gradient) is
    # defined for every square matrix and the gradient of gram comes out symmetric.
    return 0.5 * (gram + gram.mT) + torch.diag_embed(lam)


def _factor(A):
    """Cholesky factor and info; failed matrices get an identity factor so the solves
    stay finite (torch leaves a partial factor behind) and are marked by ``failed``."""
    L, info = torch.linalg.cholesky_ex(A)
    failed = info != 0
    if bool(failed.any()):
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        L = torch.where(failed[:, None, None], eye, L)
    return L, info, failed


def _solve(L, c):
    mean = torch.cholesky_solve(c[..., None], L)[..., 0]
    var = torch.cholesky_inverse(L).diagonal(dim1=-2, dim2=-1)
    return mean, var


def forward(gram, rhs, lam, gam):
    """Returns (mean, var, info); info[b] = 0 on success, else the order of the first
    non-positive leading minor, and that matrix's mean/var are NaN."""
    L, info, failed = _factor(system_matrix(gram, lam))
    mean, var = _solve(L, rhs + gam)
    nan = failed[:, None]
    return mean.masked_fill(nan, float("nan")), var.masked_fill(nan, float("nan")), info.to(torch.int32)


def backward(grad_mean, grad_var, gram, rhs, lam, gam):
    """Gradients for (gram, rhs, lam, gam). With S = A^{-1}, m = mean, u = S g_mean:

        g_rhs = g_gam = u,   g_A = -(u m^T + S diag(g_var) S),
        g_gram = (g_A + g_A^T) / 2,   g_lam = diag(g_A) = -(u*m + (S*S) g_var)

    NaN for matrices that are not positive definite.
    """
    L, _, failed = _factor(system_matrix(gram, lam))
    S = torch.cholesky_inverse(L)
    m = torch.cholesky_solve((rhs + gam)[..., None], L)[..., 0]
    u = (S @ grad_mean[..., None])[..., 0]
    gA = -(u[:, :, None] * m[:, None, :] + (S * grad_var[:, None, :]) @ S)
    g_gram = 0.5 * (gA + gA.mT)
    g_lam = gA.diagonal(dim1=-2, dim2=-1).clone()
    grads = [g_gram, u, g_lam, u.clone()]
    if bool(failed.any()):
        grads = [g.masked_fill(failed.view(-1, *([1] * (g.dim() - 1))), float("nan")) for g in grads]
    return grads
