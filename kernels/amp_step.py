"""Triton kernels for ``amp_step`` (formula: :func:`mimo_fast.ops.amp_step`, eqs. 8a-8d).

Complex tensors arrive as ``torch.view_as_real`` float views: element (b, m, n) of H is
the pair ``H[b*s_b + m*s_m + n*s_n + {0, 1}]`` (real, imaginary); the small vectors are
contiguous ``(B, len, 2)`` or ``(B, len)``.

Forward, two passes over H (each reads H once, nothing else of size M*N):

    rows  (program per (b, row tile), streams column tiles):
          V = |H|^2 v,  Hx;  z = Hx - V (y - z_prev)/(s2 + V_prev);  w = 1/(s2 + V);  t = (y - z) w
    cols  (program per (b, column tile), streams row tiles):
          q = |H|^2^T w,  u = H^H t;  Sigma = 1/q;  r = x + Sigma u

Backward (reference formulas, :func:`mimo_fast.ops.reference.amp_step.backward`), four
passes, H read once in each and g_H written once in the last:

    rows  as above (recomputes V, z, w, t)
    cols  q, u -> Sigma;  g_u = Sigma g_r;  g_q = -Sigma^2 (g_Sigma + Re(conj(u) g_r))
    rows  g_t = H g_u,  |H|^2 g_q  ->  g_w, g_z', g_V', g_e, g_d1, g_y, g_z_prev, g_V_prev,
          the per-row share of g_noise (g_d2 + g_d1)
    cols  g_H = t conj(g_u)^T + g_z' conj(x)^T + 2 H (w g_q^T + g_V' v^T);
          g_x = g_r + H^H g_z';  g_v = |H|^2^T g_V'
"""
import triton
import triton.language as tl

# tl.sum is itself a @triton.jit function, which the interpreter handles slowly (it
# re-patches triton.language on every device-function call); tl.reduce with the standard
# sum combiner is the same reduction on the GPU and one numpy call in the interpreter.
_SUM = getattr(tl.standard, "_sum_combine", None)
if _SUM is None:  # a Triton without that private name: same reduction, slower interpreted
    @triton.jit
    def _SUM(a, b):
        return a + b


# Helpers the four passes share (inlined on the GPU; each call costs one re-patch in the
# interpreter, so none is called per element, only per tile or per program).
@triton.jit
def _h_tile(Hb, s_m, s_n, rm, rn, in_m, in_n):
    """The (rm, rn) tile of one batch element's H as (re, im, mask), zero outside M x N."""
    off = rm[:, None] * s_m + rn[None, :] * s_n
    inside = in_m[:, None] & in_n[None, :]
    h_re = tl.load(Hb + off, mask=inside, other=0.0)
    h_im = tl.load(Hb + off + 1, mask=inside, other=0.0)
    return h_re, h_im, inside


@triton.jit
def _rows_matvec(Hb, s_m, s_n, rm, in_m, c, r, b, N, BM: tl.constexpr, BN: tl.constexpr):
    """Both row passes' sweep over column tiles: (H c, |H|^2 r) on rows rm, for batch
    element b's length-N vectors c (complex, interleaved) and r (real).
    Forward: c = x, r = v (Hx of 8b, V of 8a); backward: c = g_u, r = g_q (g_t and a)."""
    hc_re = tl.zeros([BM], dtype=Hb.dtype.element_ty)
    hc_im = tl.zeros([BM], dtype=Hb.dtype.element_ty)
    hr = tl.zeros([BM], dtype=Hb.dtype.element_ty)
    for n0 in range(0, N, BN):
        rn = n0 + tl.arange(0, BN)
        in_n = rn < N
        h_re, h_im, inside = _h_tile(Hb, s_m, s_n, rm, rn, in_m, in_n)
        nv = b * N + rn
        c_re = tl.load(c + nv * 2, mask=in_n, other=0.0)[None, :]
        c_im = tl.load(c + nv * 2 + 1, mask=in_n, other=0.0)[None, :]
        rr = tl.load(r + nv, mask=in_n, other=0.0)[None, :]
        hr += tl.reduce((h_re * h_re + h_im * h_im) * rr, 1, _SUM)
        hc_re += tl.reduce(h_re * c_re - h_im * c_im, 1, _SUM)
        hc_im += tl.reduce(h_re * c_im + h_im * c_re, 1, _SUM)
    return hc_re, hc_im, hr


@triton.jit
def _row_prior(y, z_prev, V_prev, noise_var, b, mv, in_m):
    """Both row passes' per-row inputs of 8b: (s2, y, e = y - z_prev, d1 = s2 + V_prev),
    complex ones as (re, im); padding rows get d1 = s2 + 1 (finite, never stored)."""
    s2 = tl.load(noise_var + b)
    y_re = tl.load(y + mv * 2, mask=in_m, other=0.0)
    y_im = tl.load(y + mv * 2 + 1, mask=in_m, other=0.0)
    e_re = y_re - tl.load(z_prev + mv * 2, mask=in_m, other=0.0)
    e_im = y_im - tl.load(z_prev + mv * 2 + 1, mask=in_m, other=0.0)
    d1 = s2 + tl.load(V_prev + mv, mask=in_m, other=1.0)
    return s2, y_re, y_im, e_re, e_im, d1


@triton.jit
def amp_rows_kernel(H, s_b, s_m, s_n, x, v, y, z_prev, V_prev, noise_var,
                    V_out, z_out, w_out, t_out, M, N,
                    BM: tl.constexpr, BN: tl.constexpr):
    """Pass over rows: V, z (eqs. 8a-8b) and w = 1/(s2 + V), t = (y - z) w."""
    b = tl.program_id(0).to(tl.int64)
    rm = tl.program_id(1) * BM + tl.arange(0, BM)
    in_m = rm < M
    hx_re, hx_im, V = _rows_matvec(H + b * s_b, s_m, s_n, rm, in_m, x, v, b, N, BM, BN)   # Hx; V (8a)
    mv = b * M + rm
    s2, y_re, y_im, e_re, e_im, d1 = _row_prior(y, z_prev, V_prev, noise_var, b, mv, in_m)
    k_re = e_re / d1
    k_im = e_im / d1
    z_re = hx_re - V * k_re                                   # (8b), Onsager term
    z_im = hx_im - V * k_im
    w = 1.0 / (s2 + V)
    tl.store(V_out + mv, V, mask=in_m)
    tl.store(z_out + mv * 2, z_re, mask=in_m)
    tl.store(z_out + mv * 2 + 1, z_im, mask=in_m)
    tl.store(w_out + mv, w, mask=in_m)
    tl.store(t_out + mv * 2, (y_re - z_re) * w, mask=in_m)
    tl.store(t_out + mv * 2 + 1, (y_im - z_im) * w, mask=in_m)


@triton.jit
def amp_cols_kernel(H, s_b, s_m, s_n, x, w, t, g_r, g_Sigma,
                    r_out, Sigma_out, M, N,
                    BM: tl.constexpr, BN: tl.constexpr, BACKWARD: tl.constexpr):
    """Pass over columns: Sigma, r (eqs. 8c-8d). With BACKWARD, writes instead
    g_u = Sigma g_r into ``r_out`` and g_q = -Sigma^2 (g_Sigma + Re(conj(u) g_r)) into ``Sigma_out``."""
    b = tl.program_id(0).to(tl.int64)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    in_n = rn < N
    Hb = H + b * s_b
    q = tl.zeros([BN], dtype=H.dtype.element_ty)
    u_re = tl.zeros([BN], dtype=H.dtype.element_ty)
    u_im = tl.zeros([BN], dtype=H.dtype.element_ty)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        in_m = rm < M
        h_re, h_im, inside = _h_tile(Hb, s_m, s_n, rm, rn, in_m, in_n)
        mv = b * M + rm
        ww = tl.load(w + mv, mask=in_m, other=0.0)[:, None]
        t_re = tl.load(t + mv * 2, mask=in_m, other=0.0)[:, None]
        t_im = tl.load(t + mv * 2 + 1, mask=in_m, other=0.0)[:, None]
        q += tl.reduce((h_re * h_re + h_im * h_im) * ww, 0, _SUM)
        u_re += tl.reduce(h_re * t_re + h_im * t_im, 0, _SUM)      # conj(H) t
        u_im += tl.reduce(h_re * t_im - h_im * t_re, 0, _SUM)
    Sigma = 1.0 / tl.where(in_n, q, 1.0)                             # (8c); padding lanes stay finite
    nv = b * N + rn
    if BACKWARD:
        gr_re = tl.load(g_r + nv * 2, mask=in_n, other=0.0)
        gr_im = tl.load(g_r + nv * 2 + 1, mask=in_n, other=0.0)
        g_S = tl.load(g_Sigma + nv, mask=in_n, other=0.0) + u_re * gr_re + u_im * gr_im
        tl.store(r_out + nv * 2, Sigma * gr_re, mask=in_n)
        tl.store(r_out + nv * 2 + 1, Sigma * gr_im, mask=in_n)
        tl.store(Sigma_out + nv, -Sigma * Sigma * g_S, mask=in_n)
    else:
        tl.store(r_out + nv * 2, tl.load(x + nv * 2, mask=in_n, other=0.0) + Sigma * u_re, mask=in_n)
        tl.store(r_out + nv * 2 + 1, tl.load(x + nv * 2 + 1, mask=in_n, other=0.0) + Sigma * u_im, mask=in_n)
        tl.store(Sigma_out + nv, Sigma, mask=in_n)


@triton.jit
def amp_rows_bwd_kernel(H, s_b, s_m, s_n, g_u, g_q, y, z_prev, V_prev, noise_var,
                        V, z, w, g_z, g_V,
                        g_zt_out, g_Vt_out, g_y_out, g_zprev_out, g_Vprev_out, g_noise_rows, M, N,
                        BM: tl.constexpr, BN: tl.constexpr):
    """Backward pass over rows: g_t = H g_u, |H|^2 g_q, then the chain rule through 8b."""
    b = tl.program_id(0).to(tl.int64)
    rm = tl.program_id(1) * BM + tl.arange(0, BM)
    in_m = rm < M
    gt_re, gt_im, a = _rows_matvec(H + b * s_b, s_m, s_n, rm, in_m, g_u, g_q, b, N, BM, BN)
    mv = b * M + rm
    s2, y_re, y_im, e_re, e_im, d1 = _row_prior(y, z_prev, V_prev, noise_var, b, mv, in_m)
    Vv = tl.load(V + mv, mask=in_m, other=0.0)
    ww = tl.load(w + mv, mask=in_m, other=0.0)
    r_re = y_re - tl.load(z + mv * 2, mask=in_m, other=0.0)     # y - z
    r_im = y_im - tl.load(z + mv * 2 + 1, mask=in_m, other=0.0)
    g_w = r_re * gt_re + r_im * gt_im + a
    g_d2 = -ww * ww * g_w
    gz_re = tl.load(g_z + mv * 2, mask=in_m, other=0.0) - ww * gt_re
    gz_im = tl.load(g_z + mv * 2 + 1, mask=in_m, other=0.0) - ww * gt_im
    g_Vt = tl.load(g_V + mv, mask=in_m, other=0.0) + g_d2 - (e_re * gz_re + e_im * gz_im) / d1
    ge_re = -Vv * gz_re / d1                                     # g_e = g_k / d1, g_k = -V g_z'
    ge_im = -Vv * gz_im / d1
    g_d1 = -(e_re * ge_re + e_im * ge_im) / d1
    tl.store(g_zt_out + mv * 2, gz_re, mask=in_m)
    tl.store(g_zt_out + mv * 2 + 1, gz_im, mask=in_m)
    tl.store(g_Vt_out + mv, g_Vt, mask=in_m)
    tl.store(g_y_out + mv * 2, ww * gt_re + ge_re, mask=in_m)
    tl.store(g_y_out + mv * 2 + 1, ww * gt_im + ge_im, mask=in_m)
    tl.store(g_zprev_out + mv * 2, -ge_re, mask=in_m)
    tl.store(g_zprev_out + mv * 2 + 1, -ge_im, mask=in_m)
    tl.store(g_Vprev_out + mv, g_d1, mask=in_m)
    tl.store(g_noise_rows + mv, g_d2 + g_d1, mask=in_m)


@triton.jit
def amp_cols_bwd_kernel(H, s_b, s_m, s_n, x, v, t, w, g_zt, g_Vt, g_u, g_q, g_r,
                        g_H, g_x_out, g_v_out, M, N,
                        BM: tl.constexpr, BN: tl.constexpr):
    """Backward pass over columns: g_H (written once, contiguous (B, M, N, 2)), g_x, g_v."""
    b = tl.program_id(0).to(tl.int64)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    in_n = rn < N
    Hb = H + b * s_b
    nv = b * N + rn
    gu_re = tl.load(g_u + nv * 2, mask=in_n, other=0.0)[None, :]
    gu_im = tl.load(g_u + nv * 2 + 1, mask=in_n, other=0.0)[None, :]
    x_re = tl.load(x + nv * 2, mask=in_n, other=0.0)[None, :]
    x_im = tl.load(x + nv * 2 + 1, mask=in_n, other=0.0)[None, :]
    gq = tl.load(g_q + nv, mask=in_n, other=0.0)[None, :]
    vv = tl.load(v + nv, mask=in_n, other=0.0)[None, :]
    gx_re = tl.zeros([BN], dtype=H.dtype.element_ty)
    gx_im = tl.zeros([BN], dtype=H.dtype.element_ty)
    gv = tl.zeros([BN], dtype=H.dtype.element_ty)
    for m0 in range(0, M, BM):
        rm = m0 + tl.arange(0, BM)
        in_m = rm < M
        h_re, h_im, inside = _h_tile(Hb, s_m, s_n, rm, rn, in_m, in_n)
        mv = b * M + rm
        t_re = tl.load(t + mv * 2, mask=in_m, other=0.0)[:, None]
        t_im = tl.load(t + mv * 2 + 1, mask=in_m, other=0.0)[:, None]
        gz_re = tl.load(g_zt + mv * 2, mask=in_m, other=0.0)[:, None]
        gz_im = tl.load(g_zt + mv * 2 + 1, mask=in_m, other=0.0)[:, None]
        ww = tl.load(w + mv, mask=in_m, other=0.0)[:, None]
        gVt = tl.load(g_Vt + mv, mask=in_m, other=0.0)[:, None]
        two_c = 2.0 * (ww * gq + gVt * vv)                      # d/d|H|^2, times 2 for d/dH
        # t conj(g_u) + g_z' conj(x) + 2 H (w g_q + g_V' v)
        gh_re = t_re * gu_re + t_im * gu_im + gz_re * x_re + gz_im * x_im + two_c * h_re
        gh_im = t_im * gu_re - t_re * gu_im + gz_im * x_re - gz_re * x_im + two_c * h_im
        out = (b * M * N + rm[:, None] * N + rn[None, :]) * 2
        tl.store(g_H + out, gh_re, mask=inside)
        tl.store(g_H + out + 1, gh_im, mask=inside)
        gx_re += tl.reduce(h_re * gz_re + h_im * gz_im, 0, _SUM)    # H^H g_z'
        gx_im += tl.reduce(h_re * gz_im - h_im * gz_re, 0, _SUM)
        gv += tl.reduce((h_re * h_re + h_im * h_im) * gVt, 0, _SUM)
    tl.store(g_x_out + nv * 2, tl.load(g_r + nv * 2, mask=in_n, other=0.0) + gx_re, mask=in_n)
    tl.store(g_x_out + nv * 2 + 1, tl.load(g_r + nv * 2 + 1, mask=in_n, other=0.0) + gx_im, mask=in_n)
    tl.store(g_v_out + nv, gv, mask=in_n)
