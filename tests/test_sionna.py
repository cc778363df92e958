"""mimo_fast.sionna: mimo_fast detectors as Sionna PHY MIMO detectors, checked against
Sionna's own detectors on identical inputs (docs/sionna.md)."""
import importlib
import math
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sionna.phy", reason="mimo_fast.sionna needs sionna-no-rt (the [sionna] extra)")

from sionna.phy import mimo as smimo  # noqa: E402
from sionna.phy import ofdm as sofdm  # noqa: E402
from sionna.phy.mapping import Constellation, Demapper, Mapper  # noqa: E402
from sionna.phy.mimo import StreamManagement  # noqa: E402

import mimo_fast.sionna as ms  # noqa: E402
from mimo_fast import comm, detect  # noqa: E402
from mimo_fast.sionna import labels  # noqa: E402


def draw(B, M, K, m, snr_db, seed, s_extra=None):
    """Sionna-mapped 5G QAM symbols over mimo_fast's Rayleigh channel at mimo_fast's SNR:
    ``(bits (B,K,m), sionna indices (B,K), y, H, s)``."""
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (B, K, m), generator=g).float()
    x = Mapper("qam", m)(bits).squeeze(-1)
    H = comm.rayleigh(B, M, K, g)
    nv = comm.noise_var_from_snr(snr_db, M, K)
    y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
    s = (nv * torch.eye(M, dtype=torch.complex64)).expand(B, M, M)
    j = (bits.long() * 2 ** torch.arange(m - 1, -1, -1)).sum(-1)
    return bits, j, y, H, s


def binom_tol(p, n, sigmas=4.0):
    """Tolerance on the difference of two independent error rates near p over n trials."""
    return sigmas * math.sqrt(2 * max(p, 1.0 / n) * (1 - p) / n)


@pytest.mark.parametrize("m", [2, 4, 6, 8])
def test_label_permutation_maps_sionna_bits_to_our_points(m):
    ours = comm.qam(2 ** m)
    sc = Constellation("qam", m)
    perm = ms.label_permutation(labels.sionna_points(sc), ours)
    assert sorted(perm.tolist()) == list(range(2 ** m))
    assert perm.tolist() != list(range(2 ** m))          # the labellings do differ
    j = torch.arange(2 ** m)
    bits = ((j[:, None] >> torch.arange(m - 1, -1, -1)) & 1).float()
    x_sionna = Mapper(constellation=sc)(bits.reshape(1, -1))[0].to(torch.complex128)
    assert torch.allclose(x_sionna, ours.points[perm], atol=1e-6)


def test_label_permutation_refuses_other_points():
    pts = labels.sionna_points(Constellation("qam", 4)) * 1.1
    with pytest.raises(ValueError, match="not those of the detector"):
        ms.label_permutation(pts, comm.qam(16))


@pytest.mark.parametrize("m,method", [(4, "app"), (4, "maxlog"), (6, "app")])
def test_single_stream_llrs_equal_sionna_demapper(m, method):
    # 1x1, h = 1: the LMMSE output is y itself with noise no, so the LLRs must be Sionna's
    # demapper's bit for bit (labels, bit order, sign)
    g = torch.Generator().manual_seed(3)
    B, no = 500, 0.3
    y = comm.complex_normal((B, 1), 1.0, g) + comm.complex_normal((B, 1), no, g)
    h = torch.ones(B, 1, 1, dtype=torch.complex64)
    s = torch.full((B, 1, 1), no, dtype=torch.complex64)
    ours = ms.LMMSEDetector("bit", method, num_bits_per_symbol=m)(y, h, s)[:, 0]
    ref = Demapper(method, "qam", m)(y[:, 0], torch.tensor(no))
    assert torch.allclose(ours, ref.reshape(B, m), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("snr_db", [15.0, 20.0])
def test_lmmse_matches_sionna_linear_detector(snr_db):
    bits, j, y, H, s = draw(2000, 8, 8, 4, snr_db, seed=int(snr_db))
    ref = smimo.LinearDetector("lmmse", "bit", "maxlog", constellation_type="qam", num_bits_per_symbol=4)(y, H, s)
    ours = ms.LinearDetector("lmmse", "bit", "maxlog", constellation_type="qam", num_bits_per_symbol=4)(y, H, s)
    assert ours.shape == ref.shape == (2000, 8, 4)
    assert float(((ours > 0) != (ref > 0)).float().mean()) <= 1e-3
    assert torch.allclose(ours, ref, rtol=1e-3, atol=1e-2)
    ber_ref, ber = (float(((z > 0).float() != bits).float().mean()) for z in (ref, ours))
    assert abs(ber - ber_ref) <= binom_tol(ber_ref, bits.numel())
    sym = ms.LMMSEDetector("symbol", hard_out=True, num_bits_per_symbol=4)(y, H, s)
    sym_ref = smimo.LinearDetector("lmmse", "symbol", "maxlog", constellation_type="qam", num_bits_per_symbol=4,
                                   hard_out=True)(y, H, s)
    ser, ser_ref = float((sym != j).float().mean()), float((sym_ref != j).float().mean())
    assert 0.0 < ser_ref and abs(ser - ser_ref) <= binom_tol(ser_ref, j.numel())


def test_whitening_of_a_full_noise_covariance_matches_sionna():
    # coloured noise-plus-interference covariance: both whiten with its Cholesky factor
    _, _, y, H, _ = draw(400, 6, 4, 4, 18.0, seed=5)
    g = torch.Generator().manual_seed(6)
    V = comm.complex_normal((400, 6, 2), 0.05, g)
    s = V @ V.mH + 0.02 * torch.eye(6, dtype=torch.complex64)
    for method in ("app", "maxlog"):
        ref = smimo.LinearDetector("lmmse", "bit", method, "qam", 4)(y, H, s)
        ours = ms.LinearDetector("lmmse", "bit", method, "qam", 4)(y, H, s)
        assert torch.allclose(ours, ref, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("snr_db", [18.0, 22.0])
def test_ep_with_sionna_defaults_matches_sionna_ep(snr_db):
    _, j, y, H, s = draw(2000, 8, 8, 4, snr_db, seed=10 + int(snr_db))
    ref = smimo.EPDetector("symbol", 4, hard_out=True)(y, H, s)
    ours = ms.EPDetector("symbol", 4, hard_out=True, sionna_defaults=True)(y, H, s)
    assert ours.dtype == ref.dtype == torch.int32
    ser, ser_ref = float((ours != j).float().mean()), float((ref != j).float().mean())
    assert ser_ref > 0 and abs(ser - ser_ref) <= binom_tol(ser_ref, j.numel())
    assert float((ours != ref).float().mean()) <= 1e-3     # measured: identical decisions
    llr, llr_ref = (d("bit", 4, sionna_defaults=True) if d is ms.EPDetector else d("bit", 4)
                    for d in (ms.EPDetector, smimo.EPDetector))
    a, b = llr(y, H, s), llr_ref(y, H, s)
    assert float(((a > 0) != (b > 0)).float().mean()) <= 1e-3


def test_wrapper_equals_native_detector():
    # s = no I: whitening and rescaling leave the problem a classical detector solves the same
    bits, j, y, H, s = draw(1000, 8, 8, 4, 20.0, seed=21)
    nv = float(s[0, 0, 0].real)
    c = comm.qam(16)
    perm = ms.label_permutation(labels.sionna_points(Constellation("qam", 4)), c)
    for name in ("ep", "lmmse", "kbest"):
        native = detect.make(name, c)(y, H, nv)
        hard = ms.MimoFastDetector(name, "symbol", hard_out=True, num_bits_per_symbol=4)(y, H, s)
        assert float((perm[hard.long()] != native.hard).float().mean()) <= 1e-3, name


def test_shapes_hard_out_symbol_and_precision():
    g = torch.Generator().manual_seed(0)
    M, K, m = 4, 3, 4
    y = comm.complex_normal((2, 5, M), 1.0, g)
    h = comm.complex_normal((2, 5, M, K), 1.0, g)
    s = 0.1 * torch.eye(M, dtype=torch.complex64)                   # broadcast over the batch
    llr = ms.EPDetector("bit", m)(y, h, s)
    assert llr.shape == (2, 5, K, m) and llr.dtype == torch.float32
    hard_bits = ms.EPDetector("bit", m, hard_out=True)(y, h, s)
    assert torch.equal(hard_bits, (llr > 0).float())
    logits = ms.LMMSEDetector("symbol", num_bits_per_symbol=m)(y, h, s)
    assert logits.shape == (2, 5, K, 2 ** m)
    ind = ms.LMMSEDetector("symbol", num_bits_per_symbol=m, hard_out=True)(y, h, s)
    assert ind.shape == (2, 5, K) and ind.dtype == torch.int32
    assert torch.equal(ind.long(), logits.argmax(-1))
    one = ms.LMMSEDetector("bit", num_bits_per_symbol=m)(y[0, 0], h[0, 0], s)
    assert one.shape == (K, m) and torch.allclose(one, ms.LMMSEDetector("bit", num_bits_per_symbol=m)(y, h, s)[0, 0])
    dbl = ms.MLDetector("bit", "app", num_bits_per_symbol=2, precision="double")(y[..., :2], h[..., :2, :2],
                                                                              s[:2, :2])
    assert dbl.dtype == torch.float64 and dbl.shape == (2, 5, 2, 2)
    ml_ref = smimo.MaximumLikelihoodDetector("bit", "app", 2, "qam", 2, precision="double")
    assert torch.allclose(dbl, ml_ref(y[..., :2], h[..., :2, :2], s[:2, :2].expand(2, 5, 2, 2)), atol=1e-6)


def test_refusals_name_the_argument():
    y = torch.ones(2, 4, dtype=torch.complex64)
    h = s = torch.eye(4, dtype=torch.complex64).expand(2, 4, 4)
    det = ms.LMMSEDetector("bit", num_bits_per_symbol=4)
    with pytest.raises(ValueError, match="prior"):
        det(y, h, s, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="shapes"):
        det(y[:, :3], h, s)
    with pytest.raises(ValueError, match="positive definite"):
        det(y, h, -s)
    with pytest.raises(ValueError, match="num_streams"):
        ms.LMMSEDetector("bit", num_bits_per_symbol=4, num_streams=3)(y, h, s)
    with pytest.raises(ValueError, match="output"):
        ms.LMMSEDetector("llr", num_bits_per_symbol=4)
    with pytest.raises(ValueError, match="unknown name"):
        ms.MimoFastDetector("nope", num_bits_per_symbol=4)
    with pytest.raises(ValueError, match="num_bits_per_symbol"):
        ms.LMMSEDetector("bit")
    with pytest.raises(ValueError, match="use_real_rep"):
        ms.KBestDetector("bit", 4, 16, "qam", 4, use_real_rep=True)
    with pytest.raises(TypeError, match="equalizer"):
        ms.LinearDetector(lambda *a: a, "bit", "app", "qam", 4)
    custom = Constellation("custom", 4, points=labels.sionna_points(Constellation("qam", 4)) * 1j ** 0.5)
    with pytest.raises(ValueError, match="learned detector"):
        ms.GEPNetDetector("bit", constellation=custom, num_rx_ant=8, num_streams=8)


def test_custom_constellation_on_a_classical_detector():
    pts = torch.exp(2j * math.pi * torch.arange(8) / 8)         # 8-PSK: not a QAM
    sc = Constellation("custom", 3, points=pts)
    g = torch.Generator().manual_seed(2)
    j = torch.randint(0, 8, (300, 2), generator=g)
    H = comm.rayleigh(300, 4, 2, g)
    y = comm.awgn((H @ pts.to(torch.complex64)[j][..., None])[..., 0], 0.01, g)
    s = 0.01 * torch.eye(4, dtype=torch.complex64)
    hard = ms.MLDetector("symbol", "maxlog", constellation=sc, hard_out=True)(y, H, s)
    ref = smimo.MaximumLikelihoodDetector("symbol", "maxlog", 2, constellation=sc, hard_out=True)
    assert torch.equal(hard, ref(y, H, s.expand(300, 4, 4)))


def _grid():
    rg = sofdm.ResourceGrid(num_ofdm_symbols=2, fft_size=12, subcarrier_spacing=30e3, num_tx=1,
                            num_streams_per_tx=4, pilot_pattern="empty")
    return rg, StreamManagement(np.ones([1, 1], int), 4)


def test_inside_sionna_ofdm_detector_wrapper():
    rg, sm = _grid()
    g = torch.Generator().manual_seed(4)
    y = comm.complex_normal((3, 1, 6, 2, 12), 1.0, g)
    h = comm.complex_normal((3, 1, 6, 1, 4, 2, 12), 1.0, g)
    err_var, no = torch.tensor(0.01), torch.tensor(0.1)
    ref = sofdm.LinearDetector("lmmse", "bit", "maxlog", rg, sm, "qam", 4)(y, h, err_var, no)
    ours = sofdm.OFDMDetector(ms.LMMSEDetector("bit", "maxlog", "qam", 4), "bit", rg, sm)(y, h, err_var, no)
    assert ours.shape == ref.shape == (3, 1, 4, 2 * 12 * 4)
    assert torch.allclose(ours, ref, rtol=1e-3, atol=1e-2)
    ep_ref = sofdm.EPDetector("symbol", rg, sm, 4, hard_out=True)(y, h, err_var, no)
    ep = sofdm.OFDMDetector(ms.EPDetector("symbol", 4, hard_out=True, sionna_defaults=True), "symbol", rg, sm)
    out = ep(y, h, err_var, no)
    assert out.shape == ep_ref.shape == (3, 1, 4, 24)
    assert float((out != ep_ref).float().mean()) <= 0.02


def test_learned_detector_through_the_wrapper():
    # shipped gepnet 8x8 16-QAM: the wrapper's decisions are the native model's (rescaled to its
    # training scale), and better than LMMSE's
    _, j, y, H, s = draw(300, 8, 8, 4, 22.0, seed=31)
    det = ms.GEPNetDetector("symbol", hard_out=True, num_bits_per_symbol=4, num_rx_ant=8, num_streams=8)
    with torch.no_grad():
        hard = det(y, H, s)
        native = detect.make("gepnet", "qam16", nr=8, nt=8)(y, H, float(s[0, 0, 0].real)).hard
    perm = det._perm
    assert float((perm[hard.long()] != native).float().mean()) <= 0.01
    lmmse = ms.LMMSEDetector("symbol", hard_out=True, num_bits_per_symbol=4)(y, H, s)
    assert (hard != j).sum() < (lmmse != j).sum()
    llr = ms.GEPNetDetector("bit", num_bits_per_symbol=4, num_rx_ant=8, num_streams=8)
    with torch.no_grad():
        assert llr(y[:5], H[:5], s[:5]).shape == (5, 8, 4)


def test_e2e_detects_its_learned_constellation():
    det = ms.E2EDetector("symbol", hard_out=True, num_bits_per_symbol=4, num_rx_ant=8, num_streams=2)
    learned = det.detector.constellation
    assert det.constellation.constellation_type == "custom"
    assert torch.allclose(labels.sionna_points(det.constellation), learned.points, atol=1e-6)
    g = torch.Generator().manual_seed(8)
    bits = torch.randint(0, 2, (200, 2, 4), generator=g).float()
    x = Mapper(constellation=det.constellation)(bits).squeeze(-1)
    H = comm.rayleigh(200, 8, 2, g)
    y = comm.awgn((H @ x[..., None])[..., 0], 0.01, g)
    with torch.no_grad():
        hard = det(y, H, 0.01 * torch.eye(8, dtype=torch.complex64))
    j = (bits.long() * torch.tensor([8, 4, 2, 1])).sum(-1)
    assert float((hard != j).float().mean()) < 0.01


def test_every_mimo_fast_detector_has_a_class():
    assert set(ms.CLASSES) == set(detect.available())
    _, _, y, H, s = draw(20, 4, 2, 2, 15.0, seed=1)
    for name in ("mf", "zf", "vblast", "sphere", "amp", "oamp"):
        out = ms.CLASSES[name]("bit", num_bits_per_symbol=2)(y, H, s)
        assert out.shape == (20, 2, 2) and bool(torch.isfinite(out).all()), name


def test_missing_sionna_says_how_to_install(monkeypatch):
    for mod in [k for k in sys.modules if k == "mimo_fast.sionna" or k.startswith("mimo_fast.sionna.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "sionna", None)
    monkeypatch.setitem(sys.modules, "sionna.phy", None)
    with pytest.raises(ImportError, match=r"pip install 'mimo-fast\[sionna\]'"):
        importlib.import_module("mimo_fast.sionna")
