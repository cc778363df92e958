"""Plain-PyTorch forms of the three ops that the kernels are measured against.

* ``mpnn_naive``: what published GNN-detector code does — gather every (n, j) pair into
  one ``(B, N, N, 2F+E)`` tensor, run the MLP on it, mask, sum.
* ``mpnn_careful``: the best plain form — first layer split into per-node projections,
  sum over senders before the last layer (still ``(B, N, N, H)`` activations).
* ``mpnn_naive_relu`` / ``mpnn_careful_relu``: the same for ``out_act="relu"`` (a ReLU
  after the last layer, before the sum): the last layer must run per pair, so careful
  keeps the first-layer split and runs W2, W3 as 2-D addmm on ``(B*N*N, H)`` rows with
  in-place ReLUs (still ``(B, N, N, H)`` and ``(B, N, N, Fo)`` activations).
* ``ep_linalg``: ``torch.linalg.cholesky`` + ``cholesky_solve`` + ``cholesky_inverse``;
  ``ep_inv``: an explicit ``torch.linalg.inv`` (what published EP code does);
  ``ep_triangular``: Cholesky + one triangular inverse ``W = L^{-1}``, ``var = sum W^2``.
* ``amp_eager``: eqs. (8a)-(8d) as tensor expressions (einsum, ``|H|^2`` from re/im);
  ``amp_naive``: the same through ``H.abs() ** 2`` and batched matmuls.
"""
from __future__ import annotations

import torch


def _valid(mask, B, N, device, dtype):
    valid = ~torch.eye(N, dtype=torch.bool, device=device).expand(B, N, N)
    if mask is not None:
        valid = valid & mask[:, None, :]
    return valid.to(dtype)


def mpnn_naive(node, edge, w1, b1, w2, b2, w3, b3, mask=None):
    B, N, F = node.shape
    pairs = torch.cat([node[:, :, None, :].expand(B, N, N, F), node[:, None, :, :].expand(B, N, N, F), edge], -1)
    msg = torch.relu(torch.relu(pairs @ w1.T + b1) @ w2.T + b2) @ w3.T + b3     # (B, N, N, Fo)
    out = (msg * _valid(mask, B, N, node.device, node.dtype)[..., None]).sum(2)
    return out if mask is None else out * mask[:, :, None].to(out.dtype)


def mpnn_careful(node, edge, w1, b1, w2, b2, w3, b3, mask=None):
    B, N, F = node.shape
    recv = node @ w1[:, :F].T + b1
    send = node @ w1[:, F:2 * F].T
    h1 = torch.relu(recv[:, :, None, :] + send[:, None, :, :] + edge @ w1[:, 2 * F:].T)
    h2 = torch.relu(h1 @ w2.T + b2)
    valid = _valid(mask, B, N, node.device, node.dtype)
    s = torch.einsum("bnjh,bnj->bnh", h2, valid)
    out = s @ w3.T + valid.sum(-1, keepdim=True) * b3
    return out if mask is None else out * mask[:, :, None].to(out.dtype)


def mpnn_naive_relu(node, edge, w1, b1, w2, b2, w3, b3, mask=None):
    B, N, F = node.shape
    pairs = torch.cat([node[:, :, None, :].expand(B, N, N, F), node[:, None, :, :].expand(B, N, N, F), edge], -1)
    msg = torch.relu(torch.relu(torch.relu(pairs @ w1.T + b1) @ w2.T + b2) @ w3.T + b3)   # (B, N, N, Fo)
    out = (msg * _valid(mask, B, N, node.device, node.dtype)[..., None]).sum(2)
    return out if mask is None else out * mask[:, :, None].to(out.dtype)


def mpnn_careful_relu(node, edge, w1, b1, w2, b2, w3, b3, mask=None):
    B, N, F = node.shape
    H1, H2, Fo = w1.shape[0], w2.shape[0], w3.shape[0]
    x = node.reshape(B * N, F)
    recv = torch.addmm(b1, x, w1[:, :F].T).reshape(B, N, 1, H1)
    send = torch.mm(x, w1[:, F:2 * F].T).reshape(B, 1, N, H1)
    h1 = torch.relu_(edge @ w1[:, 2 * F:].T + recv + send).reshape(-1, H1)
    h2 = torch.relu_(torch.addmm(b2, h1, w2.T))
    msg = torch.relu_(torch.addmm(b3, h2, w3.T)).reshape(B, N, N, Fo)
    out = torch.einsum("bnjo,bnj->bno", msg, _valid(mask, B, N, node.device, node.dtype))
    return out if mask is None else out * mask[:, :, None].to(out.dtype)


def ep_linalg(gram, rhs, lam, gam):
    L = torch.linalg.cholesky(gram + torch.diag_embed(lam))
    mean = torch.cholesky_solve((rhs + gam)[..., None], L)[..., 0]
    var = torch.cholesky_inverse(L).diagonal(dim1=-2, dim2=-1)
    return mean, var


def _A(gram, lam):
    return 0.5 * (gram + gram.mT) + torch.diag_embed(lam)


def ep_inv(gram, rhs, lam, gam):
    Ainv = torch.linalg.inv(_A(gram, lam))
    return (Ainv @ (rhs + gam)[..., None])[..., 0], Ainv.diagonal(dim1=-2, dim2=-1)


def ep_triangular(gram, rhs, lam, gam):
    L = torch.linalg.cholesky(_A(gram, lam))
    eye = torch.eye(L.shape[-1], device=L.device, dtype=L.dtype).expand_as(L)
    W = torch.linalg.solve_triangular(L, eye, upper=False)             # L^{-1}
    mean = W.mT @ (W @ (rhs + gam)[..., None])
    return mean[..., 0], W.square().sum(-2)


def amp_naive(H, y, x, v, z_prev, V_prev, noise_var):
    s2 = noise_var[:, None]
    V = (H.abs() ** 2 @ v[..., None])[..., 0]
    z = (H @ x[..., None])[..., 0] - V * (y - z_prev) / (s2 + V_prev)
    w = 1 / (s2 + V)
    Sigma = 1 / ((H.abs() ** 2).mT @ w[..., None])[..., 0]
    r = x + Sigma * (H.mH @ ((y - z) * w)[..., None])[..., 0]
    return r, Sigma, z, V


def amp_eager(H, y, x, v, z_prev, V_prev, noise_var):
    H2 = H.real.square() + H.imag.square()
    V = torch.einsum("bmn,bn->bm", H2, v)
    s2 = noise_var[:, None]
    z = torch.einsum("bmn,bn->bm", H, x) - V * (y - z_prev) / (s2 + V_prev)
    w = 1.0 / (s2 + V)
    Sigma = 1.0 / torch.einsum("bmn,bm->bn", H2, w)
    r = x + Sigma * torch.einsum("bmn,bm->bn", H.conj(), (y - z) * w)
    return r, Sigma, z, V


def mpnn_flops(B, N, F, E, H1, H2, Fo, out_act="none") -> float:
    """Forward multiply-adds x2 of the split form: per-node projections, the per-pair
    edge term and H1 x H2 layer, and the last layer once per node ("none") or once per
    pair ("relu")."""
    last = B * N * N * H2 * Fo if out_act == "relu" else B * N * H2 * Fo
    return 2.0 * (B * N * 2 * F * H1 + B * N * N * (E * H1 + H1 * H2) + last)
