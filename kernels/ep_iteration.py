"""Triton kernels for ``ep_cavity``'s cavity (7) and ``ep_update`` (8)-(10) (formulas:
:mod:`mimo_fast.ops.ep_iteration`; backward formulas:
:mod:`mimo_fast.ops.reference.ep_iteration`). The LMMSE step (6) is the ``ep_lmmse``
kernel's.

All are elementwise over the ``n = B * K`` nodes, ``BLOCK`` nodes a program; the update
kernels hold a ``BLOCK x LP`` tile of exponents (``LP`` = L padded to a power of two,
padding at -inf so it takes no weight) in registers: every node's inputs are read once,
its outputs written once, and the levels (K x L, shared by the batch) come from L1/L2.
"""
import triton
import triton.language as tl

#: exponents more than this below a node's maximum are clamped (the reference's rule)
EXP_FLOOR: tl.constexpr = -80.0


@triton.jit
def ep_cavity_fwd_kernel(mu, Sigma, lam, gam, x_out, v_out, n, v_min, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    u = tl.load(mu + i, mask=m, other=0.0)
    S = tl.load(Sigma + i, mask=m, other=1.0)
    lm = tl.load(lam + i, mask=m, other=0.0)
    g = tl.load(gam + i, mask=m, other=0.0)
    den = 1.0 - S * lm
    ok = den > 0.0
    d = tl.where(ok, den, 1.0)
    tl.store(x_out + i, tl.where(ok, (u - S * g) / d, u), mask=m)
    tl.store(v_out + i, tl.maximum(tl.where(ok, S / d, S), v_min), mask=m)


@triton.jit
def ep_cavity_bwd_kernel(g_x, g_v, mu, Sigma, lam, gam, g_mu, g_Sigma, g_lam, g_gam, n, v_min,
                         BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    gx = tl.load(g_x + i, mask=m, other=0.0)
    gv = tl.load(g_v + i, mask=m, other=0.0)
    u = tl.load(mu + i, mask=m, other=0.0)
    S = tl.load(Sigma + i, mask=m, other=1.0)
    lm = tl.load(lam + i, mask=m, other=0.0)
    g = tl.load(gam + i, mask=m, other=0.0)
    den = 1.0 - S * lm
    ok = den > 0.0
    d = tl.where(ok, den, 1.0)
    x = (u - S * g) / d
    vr = S / d
    gvr = tl.where(tl.where(ok, vr, S) >= v_min, gv, 0.0)
    gden = -(gx * x + gvr * vr) / d
    tl.store(g_mu + i, tl.where(ok, gx / d, gx), mask=m)
    tl.store(g_Sigma + i, tl.where(ok, (gvr - gx * g) / d - gden * lm, gvr), mask=m)
    tl.store(g_lam + i, tl.where(ok, -gden * S, 0.0), mask=m)
    tl.store(g_gam + i, tl.where(ok, -gx * S / d, 0.0), mask=m)


@triton.jit
def _node_tile(x, v, levels, log_prior, logits, i, m, K, L, HAS_LOGITS: tl.constexpr, LP: tl.constexpr):
    """(xo, vo, lev, z, inl): the nodes' cavity, levels and exponents as BLOCK x LP tiles."""
    j = tl.arange(0, LP)
    inl = m[:, None] & (j[None, :] < L)
    k = i % K
    xo = tl.load(x + i, mask=m, other=0.0)
    vo = tl.load(v + i, mask=m, other=1.0)
    lev = tl.load(levels + k[:, None] * L + j[None, :], mask=inl, other=0.0)
    if HAS_LOGITS:
        z = tl.load(logits + i[:, None] * L + j[None, :], mask=inl, other=0.0)
    else:
        lp = tl.load(log_prior + k[:, None] * L + j[None, :], mask=inl, other=0.0)
        r = lev - xo[:, None]
        z = lp - r * r / (2.0 * vo[:, None])
    # padding levels take no weight; rows past n get finite dummies (never stored) so no
    # lane computes inf - inf or 0 / 0
    z = tl.where(inl, z, tl.where(m[:, None], float("-inf"), 0.0))
    return xo, vo, lev, z, inl


@triton.jit
def _posterior(z, inl, m):
    mx = tl.max(z, 1)
    e = tl.exp(tl.maximum(z - mx[:, None], EXP_FLOOR))
    e = tl.where(inl | (m[:, None] == 0), e, 0.0)
    return e / tl.sum(e, 1)[:, None]


@triton.jit
def ep_update_fwd_kernel(x, v, lam, gam, levels, log_prior, logits, keep, lam_out, gam_out,
                         n, K, L, eta, v_min, HAS_LOGITS: tl.constexpr, HAS_KEEP: tl.constexpr,
                         BLOCK: tl.constexpr, LP: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    xo, vo, lev, z, inl = _node_tile(x, v, levels, log_prior, logits, i, m, K, L, HAS_LOGITS, LP)
    p = _posterior(z, inl, m)
    x_hat = tl.sum(p * lev, 1)                                          # (8a)
    d = tl.where(inl, lev - x_hat[:, None], 0.0)
    v_hat = tl.maximum(tl.sum(p * d * d, 1), v_min)                    # (8b)
    l1 = 1.0 / v_hat - 1.0 / vo                                        # (9a)
    g1 = x_hat / v_hat - xo / vo                                       # (9b)
    take = l1 > 0.0
    if HAS_KEEP:
        take = take & (tl.load(keep + i, mask=m, other=1) == 0)
    l0 = tl.load(lam + i, mask=m, other=1.0)
    g0 = tl.load(gam + i, mask=m, other=0.0)
    tl.store(lam_out + i, (1.0 - eta) * tl.where(take, l1, l0) + eta * l0, mask=m)   # (10)
    tl.store(gam_out + i, (1.0 - eta) * tl.where(take, g1, g0) + eta * g0, mask=m)


@triton.jit
def ep_update_bwd_kernel(g_lam, g_gam, x, v, lam, gam, levels, log_prior, logits, keep,
                         g_x, g_v, g_lam0, g_gam0, g_z, g_lev, n, K, L, eta, v_min,
                         HAS_LOGITS: tl.constexpr, HAS_KEEP: tl.constexpr, BLOCK: tl.constexpr,
                         LP: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    xo, vo, lev, z, inl = _node_tile(x, v, levels, log_prior, logits, i, m, K, L, HAS_LOGITS, LP)
    p = _posterior(z, inl, m)
    x_hat = tl.sum(p * lev, 1)
    d = tl.where(inl, lev - x_hat[:, None], 0.0)
    v_raw = tl.sum(p * d * d, 1)
    v_hat = tl.maximum(v_raw, v_min)
    l1 = 1.0 / v_hat - 1.0 / vo
    take = l1 > 0.0
    if HAS_KEEP:
        take = take & (tl.load(keep + i, mask=m, other=1) == 0)
    Gl = tl.load(g_lam + i, mask=m, other=0.0)
    Gg = tl.load(g_gam + i, mask=m, other=0.0)
    g_l1 = tl.where(take, (1.0 - eta) * Gl, 0.0)
    g_g1 = tl.where(take, (1.0 - eta) * Gg, 0.0)
    tl.store(g_lam0 + i, eta * Gl + tl.where(take, 0.0, (1.0 - eta) * Gl), mask=m)
    tl.store(g_gam0 + i, eta * Gg + tl.where(take, 0.0, (1.0 - eta) * Gg), mask=m)
    g_vhat = -(g_l1 + g_g1 * x_hat) / (v_hat * v_hat)
    g_xhat = g_g1 / v_hat
    gx = -g_g1 / vo
    gv = (g_l1 + g_g1 * xo) / (vo * vo)
    g_vr = tl.where(v_raw >= v_min, g_vhat, 0.0)
    g_xhat = g_xhat - 2.0 * g_vr * tl.sum(p * d, 1)
    gp = g_xhat[:, None] * lev + g_vr[:, None] * d * d
    gz = p * (gp - tl.sum(p * gp, 1)[:, None])
    glev = p * (g_xhat[:, None] + 2.0 * g_vr[:, None] * d)
    if not HAS_LOGITS:
        r = tl.where(inl, lev - xo[:, None], 0.0)
        gx += tl.sum(gz * r, 1) / vo
        gv += tl.sum(gz * r * r, 1) / (2.0 * vo * vo)
        glev -= gz * r / vo[:, None]
    j = tl.arange(0, LP)
    tile = i[:, None] * L + j[None, :]
    tl.store(g_z + tile, gz, mask=inl)
    tl.store(g_lev + tile, glev, mask=inl)
    tl.store(g_x + i, gx, mask=m)
    tl.store(g_v + i, gv, mask=m)
