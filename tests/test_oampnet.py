"""OAMP-Net / OAMP-Net2: the formulas (against a direct solve-based implementation), OAMP
at the initial parameters, equivariance under user permutation, native masks, the loss."""
import json

import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.detect.base import qam_denoiser
from mimo_fast.detect.learned import weights

NAMES = ["oampnet", "oampnet2"]


def system(B, nr, nt, order, snr_db, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g, dtype)
    idx = c.random_indices((B, nt), g)
    x = c.indices_to_points(idx, dtype)
    nv = comm.noise_var_from_snr(snr_db, nr, nt)
    y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
    return c, H, y, nv, idx


def model(name, c, seed=None, **kw):
    det = detect.REGISTRY[name](c, **kw).double()
    if seed is not None:                       # parameters away from their OAMP values
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in det.parameters():
                p.copy_(0.6 + 0.7 * torch.rand(p.shape, generator=g, dtype=p.dtype))
    return det


def direct(det, y, H, nv):
    """The layer equations of the module docstring with explicit W, B and a solve."""
    B, Nr, Nt = H.shape
    pts, s2 = det.points(H), torch.full((B,), nv, dtype=torch.float64)
    G, eye = H.mH @ H, torch.eye(Nt, dtype=H.dtype)
    trG = G.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    x = torch.zeros(B, Nt, dtype=H.dtype)
    for t in range(det.layers):
        res = y - (H @ x[..., None])[..., 0]
        v2 = ((res.abs().square().sum(-1) - Nr * s2) / trG).clamp_min(det.eps)
        What = torch.linalg.solve(G + (s2 / v2)[:, None, None] * eye, H.mH)
        W = What * (Nt / (What @ H).diagonal(dim1=-2, dim2=-1).sum(-1).real)[:, None, None]
        r = x + det.gamma[t] * (W @ res[..., None])[..., 0]
        Bm = eye - det.theta[t] * W @ H
        tau2 = (Bm.abs().square().sum((-2, -1)) * v2
                + det.theta[t] ** 2 * W.abs().square().sum((-2, -1)) * s2) / Nt
        x_hat, _, _ = qam_denoiser(r, tau2[:, None].expand(B, Nt), pts)
        x = det.phi[t] * (x_hat - det.xi[t] * r) if det.name == "oampnet2" else x_hat
    return x, r, tau2


@pytest.mark.parametrize("name", NAMES)
def test_layers_match_direct_formulas(name):
    c, H, y, nv, _ = system(30, 6, 4, 16, 14.0, seed=1)
    det = model(name, c, seed=5, layers=4)
    with torch.no_grad():
        x, r, tau2 = det._run(y, H, torch.full((30,), nv, dtype=torch.float64), torch.ones(30, 4, dtype=torch.bool))
        xd, rd, tau2d = direct(det, y, H, nv)
    assert torch.allclose(r, rd, atol=1e-9) and torch.allclose(x, xd, atol=1e-9)
    assert torch.allclose(tau2[:, 0], tau2d, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_initial_parameters_are_oamp(name):
    c, H, y, nv, _ = system(50, 8, 8, 16, 16.0, seed=2)
    det = model(name, c, layers=10)
    ref = detect.make("oamp", c, iterations=10)(y, H, nv)
    with torch.no_grad():
        out = det(y, H, nv)
    scale = float(ref.logits.abs().max())
    assert torch.allclose(out.logits, ref.logits, atol=1e-9 * scale)
    assert torch.equal(out.hard, ref.hard)


@pytest.mark.parametrize("name", NAMES)
def test_equivariant_under_user_permutation(name):
    c, H, y, nv, _ = system(20, 6, 5, 4, 8.0, seed=3)
    mask = torch.rand(20, 5, generator=torch.Generator().manual_seed(0)) < 0.7
    perm = torch.tensor([3, 0, 4, 1, 2])
    det = model(name, c, seed=7, layers=3)
    with torch.no_grad():
        a = det(y, H, nv, mask)
        b = det(y, H[:, :, perm], nv, mask[:, perm])
    assert torch.allclose(a.logits[:, perm], b.logits, atol=1e-10)
    assert torch.equal(a.hard[:, perm], b.hard)


@pytest.mark.parametrize("name", NAMES)
def test_mask_equals_smaller_problem(name):
    """A masked user changes nothing for the others (whatever its H column holds) and gets
    uniform logits and hard 0; the present users see exactly the smaller problem."""
    c, H, y, nv, _ = system(12, 6, 5, 16, 12.0, seed=4)
    mask = torch.rand(12, 5, generator=torch.Generator().manual_seed(1)) < 0.6
    mask[0] = True
    mask[1] = False
    mask[1, 2] = True
    det = model(name, c, seed=9, layers=3, nt=5)
    H2 = H.clone()
    H2[~mask[:, None, :].expand_as(H)] = 7.0 - 3.0j          # garbage in masked columns
    with torch.no_grad():
        out = det(y, H, nv, mask)
        out2 = det(y, H2, nv, mask)
        assert torch.allclose(out.logits, out2.logits, atol=1e-10)
        for b in range(12):
            cols = mask[b].nonzero()[:, 0]
            if cols.numel() == 0:
                continue
            small = det(y[b:b + 1], H[b:b + 1][:, :, cols], nv)
            assert torch.allclose(small.logits[0], out.logits[b, cols], atol=1e-9)
    assert bool((out.logits[~mask] == 0).all()) and bool((out.hard[~mask] == 0).all())


def test_fewer_users_than_trained_and_complex64():
    c, H, y, nv, idx = system(200, 8, 6, 4, 14.0, seed=5, dtype=torch.complex64)
    det = detect.REGISTRY["oampnet2"](c, nr=8, nt=8, layers=5)
    with torch.no_grad():
        out = det(y, H, nv)
    assert out.logits.dtype == torch.float32 and out.logits.shape == (200, 6, 4)
    assert float((out.hard != idx).float().mean()) < 0.05          # OAMP-level detection at 14 dB
    _, H9, y9, _, _ = system(2, 8, 9, 4, 10.0, dtype=torch.complex64)
    with pytest.raises(ValueError, match="nt=8"):
        det(y9, H9, 0.1)


@pytest.mark.parametrize("name", NAMES)
def test_training_loss_is_l2_and_reaches_every_parameter(name):
    c, H, y, nv, idx = system(40, 4, 4, 16, 12.0, seed=6)
    mask = torch.ones(40, 4, dtype=torch.bool)
    mask[::3, 1] = False
    det = model(name, c, seed=3, layers=3)
    loss = det.training_loss(y, H, nv, idx, mask)
    x_out, _, _ = det._run(y, H, torch.full((40,), nv, dtype=torch.float64), mask)
    x = c.indices_to_points(idx, H.dtype) * mask
    assert torch.allclose(loss, (x - x_out).abs().square().sum(-1).mean())
    loss.backward()
    for pname, p in det.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().gt(0).all()), pname


def test_bad_arguments_name_themselves():
    c, H, y, nv, idx = system(4, 4, 4, 4, 10.0)
    with pytest.raises(ValueError, match="layers"):
        detect.REGISTRY["oampnet"](c, layers=0)
    with pytest.raises(ValueError, match="eps"):
        detect.REGISTRY["oampnet2"](c, eps=-1.0)
    det = model("oampnet", c)
    with pytest.raises(TypeError, match="x_idx"):
        det.training_loss(y, H, nv, idx.float())
    with pytest.raises(ValueError, match="x_idx"):
        det.training_loss(y, H, nv, idx[:, :3])
    with pytest.raises(ValueError, match="x_idx"):
        det.training_loss(y, H, nv, idx + 4)


def test_weights_round_trip(tmp_path):
    c, H, y, nv, _ = system(10, 4, 4, 16, 12.0, seed=8, dtype=torch.complex64)
    det = detect.REGISTRY["oampnet2"](c, nr=4, nt=4, layers=3, eps=1e-8)
    with torch.no_grad():
        det.xi.fill_(0.1)
    weights.save(det, tmp_path / "w.safetensors", {"note": "test"})
    back = weights.load(tmp_path / "w.safetensors", expect="oampnet2")
    assert back.config() == det.config() and back.layers == 3 and back.record == {"note": "test"}
    with torch.no_grad():
        assert torch.equal(back(y, H, nv).logits, det(y, H, nv).logits)


def test_make_and_simulate_with_a_weights_file(tmp_path, capsys):
    from mimo_fast import cli
    c = comm.qam(4)
    det = detect.make("oampnet", c, nr=4, nt=4, pretrained=False, layers=2)
    assert isinstance(det, detect.REGISTRY["oampnet"]) and det.layers == 2
    weights.save(det, tmp_path / "w.safetensors")
    assert detect.make("oampnet", c, weights=tmp_path / "w.safetensors").layers == 2
    with pytest.raises(weights.WeightsError, match="not 'oampnet2'"):
        detect.make("oampnet2", c, weights=tmp_path / "w.safetensors")
    with pytest.raises(weights.WeightsError, match="not qam16"):
        detect.make("oampnet", comm.qam(16), weights=tmp_path / "w.safetensors")
    with pytest.raises(weights.WeightsError, match="mimo-fast train oampnet"):
        detect.make("oampnet", c, nr=3, nt=3)                  # nothing shipped for that
    out = tmp_path / "ser.json"
    rc = cli.main(["simulate", "--nr", "4", "--nt", "4", "--mod", "qam4", "--detector", "oampnet", "oamp",
                   "--weights", str(tmp_path / "w.safetensors"), "--snr", "8", "--max-symbols", "800",
                   "--batch", "100", "--no-progress", "--json", str(out)])
    assert rc == 0
    assert [r["detector"] for r in json.loads(out.read_text())["results"]] == ["oampnet", "oamp"]


def test_shipped_oampnet2_beats_oamp():
    """The shipped 8x8 16-QAM weights load by name and improve on OAMP, their start point."""
    det = detect.make("oampnet2", "qam16", nr=8, nt=8)
    assert det.record["command"].startswith("mimo-fast train oampnet2") and det.record["wall_clock_s"] > 0
    c, H, y, nv, idx = system(1000, 8, 8, 16, 25.0, seed=11, dtype=torch.complex64)
    with torch.no_grad():
        ser = float((det(y, H, nv).hard != idx).float().mean())
    ser_oamp = float((detect.make("oamp", c)(y, H, nv).hard != idx).float().mean())
    assert ser < 0.7 * ser_oamp, (ser, ser_oamp)
