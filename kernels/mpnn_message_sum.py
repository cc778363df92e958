"""Triton kernels for ``mpnn_message_sum`` (formula: :func:`mimo_fast.ops.mpnn_message_sum`).

The first layer splits into per-node projections, computed by the glue as two GEMMs:
recv = node Wa^T + b1, send = node Wb^T (w1 = [Wa | Wb | We]). The kernels stream pairs:

    p1[n, j] = recv[n] + send[j] + edge[n, j] We^T      (edge term skipped when E = 0)
    p2[n, j] = relu(p1[n, j]) W2^T + b2
    s[n]     = sum_{j valid for n} relu(p2[n, j])      valid: j != n, mask[j], mask[n]

and the glue finishes with out = s W3^T + count b3 (count = number of valid senders).

A program owns BN receivers of one batch element and streams the senders BJ at a time:
its BN*BJ pair rows form one (BN*BJ, H1) tile, so the H1 x H2 layer is one tl.dot per
step. On chip: recv rows, W2, We, b2, the pair tiles and the (BN, H2) sum. HBM traffic per
program: recv/send rows, edge[b, n-tile, :, :] once, s once: never B*N*N*H.

Backward (reference formulas, :func:`mimo_fast.ops.reference.mpnn_message_sum.backward`),
given gs = (grad * mask) W3 from the glue; recomputes the tiles and accumulates

    gp2 = valid * gs[n] * (p2 > 0);  gW2 += gp2^T h1;  gb2 += sum gp2
    gp1 = (gp2 W2) * (p1 > 0);  gedge[n, j] = gp1 We;  gWe += gp1^T edge
    grecv[n] = sum_j gp1[n, j] (program-owned);  gsend[j] += sum_n gp1[n, j] (atomic add)

and writes s again (for gW3). Weight gradients are per-program partials, summed by the
glue: programs are persistent (a few per SM, each looping over tiles), so the partials
are a few MiB at most. The glue turns grecv/gsend into gnode, gWa, gWb, gb1.
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


@triton.jit
def _dot(a, b, PREC: tl.constexpr, FMA: tl.constexpr):
    """a @ b: tl.dot on tensor cores, or (FMA, float64) a broadcast multiply and sum:
    Triton's float64 MMA path rejects the wider K tiles (an assertion in its MMAv2
    lowering, seen on sm_90 with Triton 3.6), and float64 is for checks, not speed."""
    if FMA:
        return tl.reduce(a[:, :, None] * b[None, :, :], 1, _SUM)
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def mpnn_fwd_kernel(recv, send, edge, we, w2, b2, mask, sum_out,
                    N, H1, H2, E, s_eb, s_en, s_ej, s_ee, s_wh, s_we, s_2o, s_2i,
                    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, BN: tl.constexpr,
                    BJ: tl.constexpr, BH1: tl.constexpr, BH2: tl.constexpr, BE: tl.constexpr,
                    PREC: tl.constexpr, FMA: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    n0 = tl.program_id(1) * BN
    row = tl.arange(0, BN * BJ)
    n = n0 + row // BJ                                      # receiver of each pair row
    h1 = tl.arange(0, BH1)
    h2 = tl.arange(0, BH2)
    e = tl.arange(0, BE)
    in_h1, in_h2 = h1 < H1, h2 < H2
    recv_ok = n < N
    if HAS_MASK:
        recv_ok = recv_ok & (tl.load(mask + b * N + n, mask=n < N, other=0) != 0)
    r1 = tl.load(recv + (b * N + n)[:, None] * H1 + h1[None, :], mask=recv_ok[:, None] & in_h1[None, :], other=0.0)
    w2t = tl.load(w2 + h1[:, None] * s_2i + h2[None, :] * s_2o, mask=in_h1[:, None] & in_h2[None, :], other=0.0)
    b2v = tl.load(b2 + h2, mask=in_h2, other=0.0)
    if HAS_EDGE:
        wet = tl.load(we + e[:, None] * s_we + h1[None, :] * s_wh, mask=(e < E)[:, None] & in_h1[None, :], other=0.0)
    acc = tl.zeros([BN, BH2], dtype=r1.dtype)
    for j0 in range(0, N, BJ):
        j = j0 + row % BJ
        valid = recv_ok & (j < N) & (j != n)
        if HAS_MASK:
            valid = valid & (tl.load(mask + b * N + j, mask=j < N, other=0) != 0)
        p1 = r1 + tl.load(send + (b * N + j)[:, None] * H1 + h1[None, :], mask=valid[:, None] & in_h1[None, :], other=0.0)
        if HAS_EDGE:
            ed = tl.load(edge + b * s_eb + n[:, None] * s_en + j[:, None] * s_ej + e[None, :] * s_ee,
                         mask=valid[:, None] & (e < E)[None, :], other=0.0)
            p1 += _dot(ed, wet, PREC, FMA)
        p2 = _dot(tl.maximum(p1, 0.0), w2t, PREC, FMA) + b2v[None, :]
        m2 = tl.where(valid[:, None], tl.maximum(p2, 0.0), 0.0)
        acc += tl.reduce(tl.reshape(m2, [BN, BJ, BH2]), 1, _SUM)
    nn = n0 + tl.arange(0, BN)
    tl.store(sum_out + (b * N + nn)[:, None] * H2 + h2[None, :], acc, mask=(nn < N)[:, None] & in_h2[None, :])


@triton.jit
def mpnn_bwd_kernel(recv, send, edge, we, w2, b2, mask, gs,
                    sum_out, grecv, gsend, gedge, gw2_part, gb2_part, gwe_part,
                    N, H1, H2, E, TILES, NT, s_eb, s_en, s_ej, s_ee, s_wh, s_we, s_2o, s_2i,
                    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, BN: tl.constexpr,
                    BJ: tl.constexpr, BH1: tl.constexpr, BH2: tl.constexpr, BE: tl.constexpr,
                    PREC: tl.constexpr, FMA: tl.constexpr):
    pid = tl.program_id(0)
    row = tl.arange(0, BN * BJ)
    h1 = tl.arange(0, BH1)
    h2 = tl.arange(0, BH2)
    e = tl.arange(0, BE)
    in_h1, in_h2, in_e = h1 < H1, h2 < H2, e < E
    w2m = tl.load(w2 + h2[:, None] * s_2o + h1[None, :] * s_2i, mask=in_h2[:, None] & in_h1[None, :], other=0.0)
    w2t = tl.load(w2 + h1[:, None] * s_2i + h2[None, :] * s_2o, mask=in_h1[:, None] & in_h2[None, :], other=0.0)
    b2v = tl.load(b2 + h2, mask=in_h2, other=0.0)
    if HAS_EDGE:
        wem = tl.load(we + h1[:, None] * s_wh + e[None, :] * s_we, mask=in_h1[:, None] & in_e[None, :], other=0.0)
        wet = tl.load(we + e[:, None] * s_we + h1[None, :] * s_wh, mask=in_e[:, None] & in_h1[None, :], other=0.0)
    acc_w2 = tl.zeros([BH2, BH1], dtype=w2m.dtype)
    acc_b2 = tl.zeros([BH2], dtype=w2m.dtype)
    acc_we = tl.zeros([BH1, BE], dtype=w2m.dtype)
    for tile in range(pid, TILES, tl.num_programs(0)):        # persistent: partial sums stay on chip
        b = (tile // NT).to(tl.int64)
        n0 = (tile % NT) * BN
        n = n0 + row // BJ
        recv_ok = n < N
        if HAS_MASK:
            recv_ok = recv_ok & (tl.load(mask + b * N + n, mask=n < N, other=0) != 0)
        r1 = tl.load(recv + (b * N + n)[:, None] * H1 + h1[None, :], mask=recv_ok[:, None] & in_h1[None, :], other=0.0)
        g2 = tl.load(gs + (b * N + n)[:, None] * H2 + h2[None, :], mask=recv_ok[:, None] & in_h2[None, :], other=0.0)
        acc_s = tl.zeros([BN, BH2], dtype=w2m.dtype)
        acc_r = tl.zeros([BN, BH1], dtype=w2m.dtype)
        for j0 in range(0, N, BJ):
            j = j0 + row % BJ
            valid = recv_ok & (j < N) & (j != n)
            if HAS_MASK:
                valid = valid & (tl.load(mask + b * N + j, mask=j < N, other=0) != 0)
            p1 = r1 + tl.load(send + (b * N + j)[:, None] * H1 + h1[None, :], mask=valid[:, None] & in_h1[None, :], other=0.0)
            if HAS_EDGE:
                ed = tl.load(edge + b * s_eb + n[:, None] * s_en + j[:, None] * s_ej + e[None, :] * s_ee,
                             mask=valid[:, None] & in_e[None, :], other=0.0)
                p1 += _dot(ed, wet, PREC, FMA)
            a1 = tl.maximum(p1, 0.0)
            p2 = _dot(a1, w2t, PREC, FMA) + b2v[None, :]
            live = valid[:, None] & (p2 > 0.0)
            acc_s += tl.reduce(tl.reshape(tl.where(live, p2, 0.0), [BN, BJ, BH2]), 1, _SUM)
            gp2 = tl.where(live, g2, 0.0)
            acc_w2 += _dot(tl.trans(gp2), a1, PREC, FMA)
            acc_b2 += tl.reduce(gp2, 0, _SUM)
            gp1 = tl.where(p1 > 0.0, _dot(gp2, w2m, PREC, FMA), 0.0)
            acc_r += tl.reduce(tl.reshape(gp1, [BN, BJ, BH1]), 1, _SUM)
            jj = j0 + tl.arange(0, BJ)
            tl.atomic_add(gsend + (b * N + jj)[:, None] * H1 + h1[None, :],
                          tl.reduce(tl.reshape(gp1, [BN, BJ, BH1]), 0, _SUM),
                          mask=(jj < N)[:, None] & in_h1[None, :])
            if HAS_EDGE:
                pair = (n < N) & (j < N)                     # every pair is written (zeros if not valid)
                tl.store(gedge + ((b * N + n) * N + j)[:, None] * E + e[None, :],
                         _dot(gp1, wem, PREC, FMA), mask=pair[:, None] & in_e[None, :])
                acc_we += _dot(tl.trans(gp1), ed, PREC, FMA)
        nn = n0 + tl.arange(0, BN)
        out = (b * N + nn)[:, None]
        tl.store(sum_out + out * H2 + h2[None, :], acc_s, mask=(nn < N)[:, None] & in_h2[None, :])
        tl.store(grecv + out * H1 + h1[None, :], acc_r, mask=(nn < N)[:, None] & in_h1[None, :])
    tl.store(gw2_part + pid * H2 * H1 + h2[:, None] * H1 + h1[None, :], acc_w2, mask=in_h2[:, None] & in_h1[None, :])
    tl.store(gb2_part + pid * H2 + h2, acc_b2, mask=in_h2)
    if HAS_EDGE:
        tl.store(gwe_part + pid * H1 * E + h1[:, None] * E + e[None, :], acc_we, mask=in_h1[:, None] & in_e[None, :])
