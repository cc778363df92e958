"""Triton kernels for ``mpnn_message_sum`` (formula: :func:`mimo_fast.ops.mpnn_message_sum`).

The op module splits the first layer into per-node projections (two GEMMs):
recv = node Wa^T + b1, send = node Wb^T (w1 = [Wa | Wb | We]). The kernels stream pairs:

    p1[n, j] = recv[n] + send[j] + edge[n, j] We^T      (edge term skipped when E = 0)
    p2[n, j] = relu(p1[n, j]) W2^T + b2;  h2 = relu(p2)
    RELU_OUT False ("none"):  s[n]   = sum_{j valid for n} h2[n, j]
    RELU_OUT True  ("relu"):  p3[n, j] = h2[n, j] W3^T + b3
                              out[n] = sum_{j valid for n} relu(p3[n, j])
    valid: j != n, mask[j], mask[n]

For "none" the op module finishes with out = s W3^T + count b3 (count = number of valid
senders); for "relu" the last layer runs per pair here, W3 (Fo x H2, Fo padded to BFO)
held on chip next to W2.

A program owns BN receivers of one batch element and streams the senders BJ at a time:
its BN*BJ pair rows form one (BN*BJ, H1) tile, so the H1 x H2 layer (and H2 x Fo) is one
tl.dot per step. On chip: recv rows, W2, We, b2 (W3, b3), the pair tiles and the (BN, H2)
or (BN, Fo) sum. HBM traffic per program: recv/send rows, edge[b, n-tile, :, :] once, the
sum once: never B*N*N*H.

Backward (reference formulas, :func:`mimo_fast.ops.reference.mpnn_message_sum.backward`),
given gin from the op module ((grad * mask) W3 (B, N, H2) for "none", grad * mask
(B, N, Fo) for "relu"); recomputes the tiles and accumulates

    "relu": go3 = valid * gin[n] * (p3 > 0);  gW3 += go3^T h2;  gb3 += sum go3
            gp2 = (go3 W3) * (p2 > 0)
    "none": gp2 = valid * gin[n] * (p2 > 0);  and writes s again (for gW3)
    gW2 += gp2^T h1;  gb2 += sum gp2
    gp1 = (gp2 W2) * (p1 > 0);  gedge[n, j] = gp1 We;  gWe += gp1^T edge
    grecv[n] = sum_j gp1[n, j] (program-owned);  gsend[j] += sum_n gp1[n, j] (atomic add)

Weight gradients (gW2, gb2, gWe, gW3, gb3) are per-program partials, summed by the glue:
programs are persistent (a few per SM, each looping over tiles), so the partials are a
few MiB at most. The op module turns grecv/gsend into gnode, gWa, gWb, gb1.
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
def mpnn_fwd_kernel(recv, send, edge, we, w2, b2, w3, b3, mask, sum_out,
                    N, H1, H2, E, Fo, s_eb, s_en, s_ej, s_ee, s_wh, s_we, s_2o, s_2i, s_3o, s_3i,
                    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, RELU_OUT: tl.constexpr,
                    BN: tl.constexpr, BJ: tl.constexpr, BH1: tl.constexpr, BH2: tl.constexpr,
                    BE: tl.constexpr, BFO: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr):
    """sum_out: s (B, N, H2) without RELU_OUT, out (B, N, Fo) with it (w3, b3 unused without)."""
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
    if RELU_OUT:
        fo = tl.arange(0, BFO)
        in_fo = fo < Fo
        w3t = tl.load(w3 + h2[:, None] * s_3i + fo[None, :] * s_3o, mask=in_h2[:, None] & in_fo[None, :], other=0.0)
        b3v = tl.load(b3 + fo, mask=in_fo, other=0.0)
        acc = tl.zeros([BN, BFO], dtype=r1.dtype)
    else:
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
        if RELU_OUT:
            p3 = _dot(tl.maximum(p2, 0.0), w3t, PREC, FMA) + b3v[None, :]
            m3 = tl.where(valid[:, None], tl.maximum(p3, 0.0), 0.0)
            acc += tl.reduce(tl.reshape(m3, [BN, BJ, BFO]), 1, _SUM)
        else:
            m2 = tl.where(valid[:, None], tl.maximum(p2, 0.0), 0.0)
            acc += tl.reduce(tl.reshape(m2, [BN, BJ, BH2]), 1, _SUM)
    nn = n0 + tl.arange(0, BN)
    if RELU_OUT:
        tl.store(sum_out + (b * N + nn)[:, None] * Fo + fo[None, :], acc, mask=(nn < N)[:, None] & in_fo[None, :])
    else:
        tl.store(sum_out + (b * N + nn)[:, None] * H2 + h2[None, :], acc, mask=(nn < N)[:, None] & in_h2[None, :])


@triton.jit
def mpnn_bwd_kernel(recv, send, edge, we, w2, b2, w3, b3, mask, gin,
                    sum_out, grecv, gsend, gedge, gw2_part, gb2_part, gwe_part, gw3_part, gb3_part,
                    N, H1, H2, E, Fo, TILES, NT, s_eb, s_en, s_ej, s_ee, s_wh, s_we, s_2o, s_2i, s_3o, s_3i,
                    HAS_EDGE: tl.constexpr, HAS_MASK: tl.constexpr, RELU_OUT: tl.constexpr,
                    BN: tl.constexpr, BJ: tl.constexpr, BH1: tl.constexpr, BH2: tl.constexpr,
                    BE: tl.constexpr, BFO: tl.constexpr, PREC: tl.constexpr, FMA: tl.constexpr):
    """gin (B, N, H2) without RELU_OUT (then s goes to sum_out; w3, b3, gw3_part, gb3_part
    unused), (B, N, Fo) with it (then sum_out is unused)."""
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
    if RELU_OUT:
        fo = tl.arange(0, BFO)
        in_fo = fo < Fo
        w3m = tl.load(w3 + fo[:, None] * s_3o + h2[None, :] * s_3i, mask=in_fo[:, None] & in_h2[None, :], other=0.0)
        w3t = tl.load(w3 + h2[:, None] * s_3i + fo[None, :] * s_3o, mask=in_h2[:, None] & in_fo[None, :], other=0.0)
        b3v = tl.load(b3 + fo, mask=in_fo, other=0.0)
        acc_w3 = tl.zeros([BFO, BH2], dtype=w2m.dtype)
        acc_b3 = tl.zeros([BFO], dtype=w2m.dtype)
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
        if RELU_OUT:
            g3 = tl.load(gin + (b * N + n)[:, None] * Fo + fo[None, :], mask=recv_ok[:, None] & in_fo[None, :], other=0.0)
        else:
            g2 = tl.load(gin + (b * N + n)[:, None] * H2 + h2[None, :], mask=recv_ok[:, None] & in_h2[None, :], other=0.0)
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
            if RELU_OUT:
                a2 = tl.maximum(p2, 0.0)
                p3 = _dot(a2, w3t, PREC, FMA) + b3v[None, :]
                go3 = tl.where(valid[:, None] & (p3 > 0.0), g3, 0.0)
                acc_w3 += _dot(tl.trans(go3), a2, PREC, FMA)
                acc_b3 += tl.reduce(go3, 0, _SUM)
                gp2 = tl.where(p2 > 0.0, _dot(go3, w3m, PREC, FMA), 0.0)   # rows of invalid pairs: go3 = 0
            else:
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
        if not RELU_OUT:
            tl.store(sum_out + out * H2 + h2[None, :], acc_s, mask=(nn < N)[:, None] & in_h2[None, :])
        tl.store(grecv + out * H1 + h1[None, :], acc_r, mask=(nn < N)[:, None] & in_h1[None, :])
    tl.store(gw2_part + pid * H2 * H1 + h2[:, None] * H1 + h1[None, :], acc_w2, mask=in_h2[:, None] & in_h1[None, :])
    tl.store(gb2_part + pid * H2 + h2, acc_b2, mask=in_h2)
    if HAS_EDGE:
        tl.store(gwe_part + pid * H1 * E + h1[:, None] * E + e[None, :], acc_we, mask=in_h1[:, None] & in_e[None, :])
    if RELU_OUT:
        tl.store(gw3_part + pid * Fo * H2 + fo[:, None] * H2 + h2[None, :], acc_w3, mask=in_fo[:, None] & in_h2[None, :])
        tl.store(gb3_part + pid * Fo + fo, acc_b3, mask=in_fo)
