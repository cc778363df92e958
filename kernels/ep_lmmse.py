"""Triton kernels for ``ep_lmmse`` (formula: :func:`mimo_fast.ops.ep_lmmse`).

    A = (G + G^T)/2 + diag(lam),  A = L L^T,  W = L^{-1},  S = A^{-1} = W^T W
    mean = W^T (W c),  c = rhs + gam;   var_i = sum_k W[k, i]^2
    info = order of the first non-positive pivot (0 on success); NaN rows when info != 0

Backward (the reference's formulas, :func:`mimo_fast.ops.reference.ep_lmmse.backward`):

    u = S g_mean,  g_rhs = g_gam = u,  g_A = -(u m^T + S diag(g_var) S)
    g_gram = (g_A + g_A^T)/2,  g_lam = diag(g_A) = -(u*m + (S*S) g_var)

One program per matrix. The K x K matrix and its inverse factor W stay in registers the
whole time (KP x KP tiles, KP = K padded to a power of two >= 16; padding is the identity):
each of the K Cholesky steps extracts row k (= column k) with a masked reduction, does the rank-1
Schur update of A and the matching row operation on W (W starts as I, so the forward
solve L W = I runs in the same loop). Memory traffic: gram read twice (it and its
transpose, from L2 the second time), the K-vectors once, outputs written once; the
backward reads the same and writes g_gram (K*K) once. O(K^3) flops, none of them to HBM.
"""
import triton
import triton.language as tl

# tl.sum is itself a @triton.jit function, and the interpreter re-patches triton.language
# on every device-function call (milliseconds each); tl.reduce with the standard sum
# combiner is the same reduction on the GPU and one numpy call in the interpreter.
_SUM = getattr(tl.standard, "_sum_combine", None)
if _SUM is None:  # a Triton without that private name: same reduction, slower interpreted
    @triton.jit
    def _SUM(a, b):
        return a + b


@triton.jit
def _inverse_factor(gram, lam, s_gr, s_gc, K, KP: tl.constexpr):
    """(W = L^{-1}, info) for A = sym(gram) + diag(lam), all in registers."""
    r = tl.arange(0, KP)
    row, col = r[:, None], r[None, :]
    inside = (row < K) & (col < K)
    G = tl.load(gram + row * s_gr + col * s_gc, mask=inside, other=0.0)
    GT = tl.load(gram + col * s_gr + row * s_gc, mask=inside, other=0.0)
    lam_v = tl.load(lam + r, mask=r < K, other=1.0)
    diag = row == col
    A = 0.5 * (G + GT) + tl.where(diag, lam_v[:, None], 0.0)
    W = tl.where(diag, 1.0, 0.0).to(A.dtype)
    info = tl.full([], 2**30, tl.int32)                              # no failure yet
    for k in range(0, K):
        on_k = r == k
        a_k = tl.reduce(tl.where(on_k[:, None], A, 0.0), 0, _SUM)    # row k = column k (symmetric)
        w_k = tl.reduce(tl.where(on_k[:, None], W, 0.0), 0, _SUM)    # row k of W, final but for 1/L[k, k]
        d = tl.reduce(tl.where(on_k, a_k, 0.0), 0, _SUM)            # pivot L[k, k]^2 (NaN fails too)
        ok = d > 0.0
        info = tl.minimum(info, tl.where(ok, 2**30, k + 1))
        inv_lkk = 1.0 / tl.sqrt(tl.where(ok, d, 1.0))              # failed: keep going, NaN'd later
        l_k = tl.where(r > k, a_k * inv_lkk, 0.0)                   # column k of L below the diagonal
        w_k = w_k * inv_lkk
        A = A - l_k[:, None] * l_k[None, :]                         # Schur update (rows/cols > k)
        W = tl.where(on_k[:, None], w_k[None, :], W - l_k[:, None] * w_k[None, :])
    info = tl.where(info == 2**30, 0, info)
    return W, info


@triton.jit
def ep_lmmse_fwd_kernel(gram, rhs, lam, gam, mean, var, info_out,
                        s_gb, s_gr, s_gc, K, KP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, KP)
    inb = r < K
    vec = b * K + r                                                  # K-vectors are contiguous
    W, info = _inverse_factor(gram + b * s_gb, lam + b * K, s_gr, s_gc, K, KP)
    c = tl.load(rhs + vec, mask=inb, other=0.0) + tl.load(gam + vec, mask=inb, other=0.0)
    y = tl.reduce(W * c[None, :], 1, _SUM)                               # L^{-1} c
    m = tl.reduce(W * y[:, None], 0, _SUM)                               # L^{-T} L^{-1} c
    v = tl.reduce(W * W, 0, _SUM)                                        # diag(W^T W)
    ok = info == 0
    tl.store(mean + vec, tl.where(ok, m, float("nan")), mask=inb)
    tl.store(var + vec, tl.where(ok, v, float("nan")), mask=inb)
    tl.store(info_out + b, info)


@triton.jit
def ep_lmmse_bwd_kernel(g_mean, g_var, gram, rhs, lam, gam,
                        g_gram, g_rhs, g_lam, g_gam,
                        s_gb, s_gr, s_gc, K, KP: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    r = tl.arange(0, KP)
    row, col = r[:, None], r[None, :]
    inb = r < K
    vec = b * K + r
    W, info = _inverse_factor(gram + b * s_gb, lam + b * K, s_gr, s_gc, K, KP)
    S = tl.dot(tl.trans(W), W, input_precision="ieee")               # A^{-1}; padding rows are e_i
    S = tl.where((row < K) & (col < K), S, 0.0)
    c = tl.load(rhs + vec, mask=inb, other=0.0) + tl.load(gam + vec, mask=inb, other=0.0)
    gm = tl.load(g_mean + vec, mask=inb, other=0.0)
    gv = tl.load(g_var + vec, mask=inb, other=0.0)
    m = tl.reduce(S * c[None, :], 1, _SUM)
    u = tl.reduce(S * gm[None, :], 1, _SUM)
    SGS = tl.dot(S * gv[None, :], S, input_precision="ieee")         # S diag(g_var) S
    gA = -(u[:, None] * m[None, :] + SGS)
    g_sym = 0.5 * (gA + tl.trans(gA))
    g_l = -(u * m + tl.reduce(S * S * gv[None, :], 1, _SUM))
    ok = info == 0
    nan = float("nan")
    tl.store(g_gram + b * K * K + row * K + col, tl.where(ok, g_sym, nan), mask=(row < K) & (col < K))
    tl.store(g_rhs + vec, tl.where(ok, u, nan), mask=inb)
    tl.store(g_gam + vec, tl.where(ok, u, nan), mask=inb)
    tl.store(g_lam + vec, tl.where(ok, g_l, nan), mask=inb)
