"""mimo_fast.detect: classical detectors against closed forms, ML and each other."""
import math

import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.comm import qam

CLASSICAL = ["mf", "zf", "lmmse", "ml", "sphere", "kbest", "vblast", "amp", "oamp", "ep"]


def system(B, nr, nt, order, snr_db, seed=0, dtype=torch.complex64):
    g = torch.Generator().manual_seed(seed)
    c = qam(order)
    H = comm.rayleigh(B, nr, nt, g, dtype)
    idx = c.random_indices((B, nt), g)
    x = c.indices_to_points(idx, dtype)
    nv = comm.noise_var_from_snr(snr_db, nr, nt) if snr_db is not None else 0.0
    clean = (H @ x[..., None])[..., 0]
    y = comm.awgn(clean, nv, g) if nv else clean
    return c, H, y, nv, idx


def test_zf_qpsk_rayleigh_matches_closed_form():
    """ZF over i.i.d. Rayleigh: per-stream SNR g = (Es/sigma^2) G with G ~ Gamma(L, 1/Nr),
    L = Nr - Nt + 1; QPSK SER = E[2 Q(sqrt g) - Q(sqrt g)^2], integrated numerically."""
    scipy = pytest.importorskip("scipy")
    from scipy import integrate, special, stats

    nr, nt, snr_db, B = 4, 2, 8.0, 60000
    c, H, y, nv, idx = system(B, nr, nt, 4, snr_db, seed=11)
    ser = float((detect.make("zf", c)(y, H, nv).hard != idx).float().mean())
    L = nr - nt + 1
    q = lambda t: 0.5 * special.erfc(math.sqrt(t / 2))  # noqa: E731
    dens = stats.gamma(L, scale=1 / nr).pdf
    f = lambda G: (2 * q(G / nv) - q(G / nv) ** 2) * dens(G)  # noqa: E731
    expected = integrate.quad(f, 0, math.inf)[0]
    sd = math.sqrt(expected * (1 - expected) / (B * nt)) * 2  # streams share channels: inflate
    assert abs(ser - expected) < 4 * sd + 1e-4, (ser, expected)


@pytest.mark.parametrize("nr,nt,order,snr", [(4, 4, 4, 6.0), (3, 3, 16, 14.0), (4, 2, 64, 20.0)])
def test_sphere_and_kbest_full_equal_ml(nr, nt, order, snr):
    c, H, y, nv, idx = system(60, nr, nt, order, snr, seed=2, dtype=torch.complex128)
    ml = detect.make("ml", c)(y, H, nv)
    sp = detect.make("sphere", c)(y, H, nv)
    assert torch.equal(sp.hard, ml.hard)
    kb = detect.make("kbest", c, k=order ** nt)(y, H, nv)
    assert torch.equal(kb.hard, ml.hard)
    assert torch.allclose(kb.logits, ml.logits, rtol=1e-6, atol=1e-6 * float(ml.logits.abs().max()))


@pytest.mark.parametrize("name", ["zf", "lmmse", "ml", "sphere", "kbest", "vblast", "amp", "oamp", "ep"])
def test_noise_free_detected_exactly(name):
    c, H, y, _, idx = system(40, 8, 4, 16, None, seed=3)
    nv = 0.0 if name in ("zf", "lmmse", "ml", "sphere", "kbest", "vblast") else 1e-4
    if name == "ml":
        c, H, y, _, idx = system(40, 4, 3, 16, None, seed=3)
    out = detect.make(name, c)(y, H, nv)
    assert out.hard.dtype == torch.int64 and out.logits.shape == (*idx.shape, 16)
    assert torch.equal(out.hard, idx)


@pytest.mark.parametrize("name", CLASSICAL)
def test_permutation_equivariance(name):
    c, H, y, nv, idx = system(30, 6, 3, 16, 12.0, seed=4, dtype=torch.complex128)
    det = detect.make(name, c)
    perm = torch.tensor([2, 0, 1])
    a, b = det(y, H, nv), det(y, H[:, :, perm], nv)
    assert torch.equal(a.hard[:, perm], b.hard)
    if name not in ("kbest", "vblast", "sphere"):   # their logits depend on the tree order
        assert torch.allclose(a.logits[:, perm], b.logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["mf", "zf", "lmmse", "ml", "kbest", "amp", "oamp", "ep"])
def test_llr_signs_agree_with_hard_decisions(name):
    c, H, y, nv, idx = system(50, 6, 3, 16, 10.0, seed=5)
    out = detect.make(name, c)(y, H, nv, llr="maxlog")
    assert out.llrs.shape == (50, 3, 4)
    agree = (out.llrs > 0).long() == out.hard_bits()
    assert bool(agree.all())
    app = out.llr("app")
    assert app.shape == out.llrs.shape and bool(torch.isfinite(app).all())
    assert float(((app > 0).long() == out.hard_bits()).float().mean()) > 0.95


def test_bit_llrs_exact_app_small_case():
    c = qam(4)
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]))
    llr = detect.bit_llrs(logits, c, "app")[0, 0]
    # bit 0 (MSB) = 1 for labels 2, 3; bit 1 = 1 for labels 1, 3
    assert torch.allclose(llr, torch.log(torch.tensor([0.7 / 0.3, 0.6 / 0.4])))


def test_ep_beats_lmmse_8x8_16qam():
    c, H, y, nv, idx = system(3000, 8, 8, 16, 22.0, seed=6)
    ser = {n: float((detect.make(n, c)(y, H, nv).hard != idx).float().mean()) for n in ("lmmse", "ep")}
    assert ser["ep"] < 0.5 * ser["lmmse"], ser


def test_mask_equals_subsystem():
    c, H, y, nv, idx = system(20, 6, 4, 4, 10.0, seed=7)
    mask = torch.ones(20, 4, dtype=torch.bool)
    mask[::2, 1] = False
    keep = torch.tensor([0, 2, 3])
    y2 = y[::2] - H[::2, :, 1] * c.indices_to_points(idx[::2, 1])[:, None]   # user 1 is silent
    y = y.clone()
    y[::2] = y2
    for name in ("lmmse", "ep"):
        det = detect.make(name, c)
        out = det(y, H, nv, mask)
        sub = det(y[::2], H[::2][:, :, keep], nv)
        assert torch.equal(out.hard[::2][:, keep], sub.hard)
        assert torch.equal(out.hard[::2, 1], torch.zeros(10, dtype=torch.long))


def test_lmmse_half_regulariser_is_an_option():
    c, H, y, nv, idx = system(10, 4, 4, 16, 5.0)
    a = detect.make("lmmse", c)(y, H, nv).logits
    b = detect.make("lmmse", c, regularizer="half")(y, H, nv).logits
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="regularizer"):
        detect.make("lmmse", c, regularizer="nope")


def test_make_errors():
    c = qam(4)
    with pytest.raises(ValueError, match="unknown detector"):
        detect.make("zzz", c)
    with pytest.raises(NotImplementedError, match="not available in this version"):
        with pytest.MonkeyPatch.context() as mp:   # every named detector exists now
            mp.setattr(detect, "NOT_YET", ("future",))
            detect.make("future", c)
    with pytest.raises(ValueError, match="weights"):
        detect.make("ep", c, weights="x.pt")
    with pytest.raises(ValueError, match="iterations"):
        detect.make("ep", c, iterations=0)
    with pytest.raises(ValueError, match="constellation"):
        detect.make("ep", comm.Constellation(torch.exp(2j * math.pi * torch.arange(8) / 8)))


def test_bad_inputs_name_the_argument():
    c, H, y, nv, idx = system(4, 4, 3, 4, 10.0)
    det = detect.make("lmmse", c)
    with pytest.raises(ValueError, match="y must have shape"):
        det(y[:, :3], H, nv)
    with pytest.raises(ValueError, match="H must have shape"):
        det(y, H[0], nv)
    with pytest.raises(TypeError, match="y must be complex"):
        det(y.real, H, nv)
    with pytest.raises(TypeError, match="y has dtype"):
        det(y.to(torch.complex128), H, nv)
    with pytest.raises(ValueError, match="noise_var"):
        det(y, H, -1.0)
    with pytest.raises(ValueError, match="noise_var"):
        det(y, H, torch.ones(3))
    with pytest.raises(TypeError, match="noise_var"):
        det(y, H, "0.1")
    with pytest.raises(ValueError, match="mask"):
        det(y, H, nv, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="nr"):
        detect.make("zf", c, nr=8)(y, H, nv)
    with pytest.raises(ValueError, match="Nr >= Nt"):
        detect.make("zf", c)(y[:, :2], H[:, :2], nv)
    big = system(1, 8, 9, 4, 10.0)
    with pytest.raises(ValueError, match="max_candidates"):
        detect.make("ml", c)(big[2], big[1], big[3])


@pytest.mark.parametrize("name", ["lmmse", "ep", "amp"])
def test_non_finite_inputs_are_named(name):
    c, H, y, nv, idx = system(4, 4, 3, 4, 10.0)
    det = detect.make(name, c)
    y_bad = y.clone()
    y_bad[2, 1] = complex(float("nan"), 0.0)
    with pytest.raises(ValueError, match=r"y has a non-finite value .* at index \(2, 1\)"):
        det(y_bad, H, nv)
    H_bad = H.clone()
    H_bad[0, 0, 2] = complex(0.0, float("inf"))
    with pytest.raises(ValueError, match=r"H has a non-finite value"):
        det(y, H_bad, nv)


def test_trusted_inputs_scope():
    from mimo_fast import ops

    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 3, 3, generator=g, dtype=torch.float64)
    gram, rhs = A @ A.mT, torch.randn(2, 3, generator=g, dtype=torch.float64)
    lam, gam = torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    gam[0, 0] = float("nan")
    with pytest.raises(ValueError, match="gam has a non-finite"):
        ops.ep_lmmse(gram, rhs, lam, gam)
    with ops.trusted_inputs():
        mean, _ = ops.ep_lmmse(gram, rhs, lam, gam)   # scans skipped: NaN flows, as asked
    assert torch.isnan(mean[0]).any() and torch.isfinite(mean[1]).all()
    with pytest.raises(ValueError, match="gam has a non-finite"):
        ops.ep_lmmse(gram, rhs, lam, gam)             # back on after the block
