"""mimo_fast.comm: constellations, bits, channels, SNR."""
import math

import pytest
import torch

from mimo_fast import comm
from mimo_fast.comm import Constellation, qam


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("order", [4, 16, 64, 256])
def test_qam_unit_energy_and_distinct(order):
    c = qam(order)
    assert c.points.shape == (order,) and c.points.is_complex()
    assert c.bits_per_symbol == int(math.log2(order))
    assert abs(float(c.points.abs().square().mean()) - 1.0) < 1e-12
    assert torch.unique(torch.view_as_real(c.points).mul(1e6).round(), dim=0).shape[0] == order
    assert c.separable and c.real_levels.numel() == int(math.isqrt(order))


@pytest.mark.parametrize("order", [4, 16, 64, 256])
def test_qam_gray_nearest_neighbours_differ_in_one_bit(order):
    c = qam(order)
    d = (c.points[:, None] - c.points[None, :]).abs()
    dmin = d[d > 0].min()
    near = (d - dmin).abs() < 1e-9
    bits = c.bit_table()
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert bool((hamming[near] == 1).all())
    # every point has 2..4 nearest neighbours on the square grid
    assert int(near.sum(1).min()) >= 2 and int(near.sum(1).max()) <= 4


def test_qam_labels_are_binary_digits_msb_first():
    c = qam(16)
    assert c.bit_table()[6].tolist() == [0, 1, 1, 0]
    # first half of the bits picks the real part, second half the imaginary part
    same_re = c.real_index.view(4, 4)
    assert bool((same_re == same_re[:, :1]).all())


def test_bits_indices_points_roundtrip():
    c = qam(64)
    idx = c.random_indices((5, 7), gen())
    bits = c.indices_to_bits(idx)
    assert bits.shape == (5, 7, 6)
    assert torch.equal(c.bits_to_indices(bits), idx)
    pts = c.indices_to_points(idx, torch.complex128)
    assert torch.equal(c.nearest(pts), idx)


def test_pam_decomposition():
    c = qam(16)
    lv = c.real_levels
    assert torch.allclose(lv, torch.tensor([-3., -1., 1., 3.], dtype=lv.dtype) / math.sqrt(10))
    assert torch.allclose(c.points.real, lv[c.real_index]) and torch.allclose(c.points.imag, c.imag_levels[c.imag_index])
    assert torch.allclose(c.real_prior, torch.full((4,), 0.25, dtype=torch.float64))


def test_custom_constellation_is_same_type():
    pts = torch.exp(2j * math.pi * torch.arange(8) / 8) * 3
    c = Constellation(pts, name="8psk", normalize=True)
    assert isinstance(c, Constellation) and c.bits_per_symbol == 3
    assert abs(c.energy - 1) < 1e-12 and not c.separable
    assert comm.as_constellation("qam16").name == "qam16" and comm.as_constellation(4).order == 4


@pytest.mark.parametrize("bad", [2, 8, 32, 1024, "x"])
def test_qam_bad_order(bad):
    with pytest.raises(ValueError, match="order"):
        qam(bad)


def test_custom_constellation_bad_input():
    with pytest.raises(TypeError, match="complex"):
        Constellation(torch.ones(4))
    with pytest.raises(ValueError, match="modulation"):
        comm.from_name("psk3")


def test_noise_var_formula():
    assert comm.noise_var_from_snr(0, 8, 8) == pytest.approx(1.0)
    assert comm.noise_var_from_snr(10, 16, 4) == pytest.approx(4 / (16 * 10))


def test_comm_channel_is_the_module_and_draw_channel_the_function():
    """`mimo_fast.comm.channel` names the submodule (it used to be shadowed by the function)."""
    import types

    import mimo_fast.comm.channel as m
    from mimo_fast.comm import channel
    assert isinstance(m, types.ModuleType) and m.__name__ == "mimo_fast.comm.channel"
    assert channel is m and comm.channel is m and comm.draw_channel is m.draw_channel
    assert "draw_channel" in comm.__all__ and "channel" not in comm.__all__
    with pytest.warns(DeprecationWarning, match="draw_channel"):
        old = m.channel("kronecker", 3, 4, 2, gen(5), rho_rx=0.5)
    assert torch.equal(old, comm.draw_channel("kronecker", 3, 4, 2, gen(5), rho_rx=0.5))
    with pytest.raises(ValueError, match="channel kind"):
        comm.draw_channel("awgn", 1, 2, 2, gen())


@pytest.mark.parametrize("kind,kw", [("rayleigh", {}), ("kronecker", {"rho_rx": 0.7, "rho_tx": (0.2, 0.9)})])
def test_snr_definition_measured(kind, kw):
    """SNR = E||Hx||^2 / E||n||^2, measured on generated data."""
    g = gen(1)
    B, nr, nt, snr_db = 20000, 6, 4, 7.0
    c = qam(16)
    H = comm.draw_channel(kind, B, nr, nt, g, **kw)
    x = c.indices_to_points(c.random_indices((B, nt), g))
    s = (H @ x[..., None])[..., 0]
    nv = comm.noise_var_from_snr(snr_db, nr, nt)
    n = comm.awgn(s, nv, g) - s
    ratio = float(s.abs().square().sum(-1).mean() / n.abs().square().sum(-1).mean())
    assert 10 * math.log10(ratio) == pytest.approx(snr_db, abs=0.1)
    assert float(n.abs().square().mean()) == pytest.approx(nv, rel=0.02)


def test_rayleigh_statistics_and_seed():
    H = comm.rayleigh(4000, 8, 4, gen(3))
    assert H.shape == (4000, 8, 4) and H.dtype == torch.complex64
    assert float(H.abs().square().mean()) == pytest.approx(1 / 8, rel=0.02)
    assert abs(float(H.real.square().mean() - H.imag.square().mean())) < 2e-3
    assert torch.equal(H, comm.rayleigh(4000, 8, 4, gen(3)))
    assert not torch.equal(H, comm.rayleigh(4000, 8, 4, gen(4)))


def test_kronecker_correlation():
    nr, nt, rho = 4, 3, 0.6
    H = comm.kronecker(40000, nr, nt, gen(5), rho_rx=rho, rho_tx=None, dtype=torch.complex128)
    c01 = (H[:, 0, :] * H[:, 1, :].conj()).mean() * nr
    c02 = (H[:, 0, :] * H[:, 2, :].conj()).mean() * nr
    assert abs(complex(c01) - rho) < 0.03 and abs(complex(c02) - rho ** 2) < 0.03
    Ht = comm.kronecker(40000, nr, nt, gen(5), rho_tx=rho, dtype=torch.complex128)
    t01 = (Ht[:, :, 0] * Ht[:, :, 1].conj()).mean() * nr
    assert abs(complex(t01) - rho) < 0.03
    with pytest.raises(ValueError, match="rho_rx"):
        comm.kronecker(2, 2, 2, gen(), rho_rx=1.0)


def test_imperfect_csi_error_variance():
    H = comm.rayleigh(5000, 8, 4, gen(6))
    He = comm.imperfect_csi(H, 0.1, gen(7))
    assert float((He - H).abs().square().mean()) == pytest.approx(0.1 / 8, rel=0.03)
    assert comm.imperfect_csi(H, 0.0, gen(7)) is H
    with pytest.raises(ValueError, match="error_var"):
        comm.imperfect_csi(H, -1.0, gen())


def test_real_equivalent():
    g = gen(8)
    H = comm.rayleigh(3, 4, 2, g, torch.complex128)
    x = comm.complex_normal((3, 2), 1.0, g, torch.complex128)
    Hr, xr = comm.real_equivalent(H, x)
    y = (H @ x[..., None])[..., 0]
    assert torch.allclose((Hr @ xr[..., None])[..., 0], comm.complex_to_real(y))
    assert torch.equal(comm.real_to_complex(xr), x)
