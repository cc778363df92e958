"""The GNN detectors gnn, gepnet (PAM and complex readouts) and ampgnn: permutation
equivariance, native masks, gradients, losses, weight files and make(); the structure
options (published defaults, legacy structure of files that lack them)."""
import math
import os

import pytest
import torch

from mimo_fast import comm, detect
from mimo_fast.detect.learned import WeightsError, weights
from mimo_fast.ops import registry

# small models: every test here runs in well under a second per case
SMALL = dict(node_size=4, message_hidden=(8, 6), gru_size=6, readout_hidden=(8, 6))
#: the structure the shipped files were trained with (the classes' LEGACY_STRUCTURE)
LEGACY_GNN = dict(message_out_act="none", readout_act="relu", node_sign=1.0, gru_attr=True)
LEGACY_GEPNET = dict(message_out_act="none", readout_act="relu", node_sign=1.0, lam0=1.0, v_min=5e-7)
MODELS = {
    "gnn": ("gnn", dict(rounds=3, **SMALL)),
    "gnn-legacy": ("gnn", dict(rounds=3, **SMALL, **LEGACY_GNN)),
    "gepnet": ("gepnet", dict(iterations=3, rounds=2, **SMALL)),
    "gepnet-legacy": ("gepnet", dict(iterations=3, rounds=2, **SMALL, **LEGACY_GEPNET)),
    "gepnet-complex": ("gepnet", dict(iterations=3, rounds=2, readout="complex", **SMALL)),
    "gepnet-gate": ("gepnet", dict(iterations=3, rounds=2, cavity_skip=True, cavity_gate=True, **SMALL)),
    "ampgnn": ("ampgnn", dict(iterations=3, rounds=2, **SMALL)),
}


def model(key, order=16, seed=0, **kw):
    name, opts = MODELS[key]
    torch.manual_seed(seed)
    return detect.make(name, order, pretrained=False, **{**opts, **kw}).double()


def system(B=5, nr=6, nt=3, order=16, snr_db=12.0, seed=3):
    g = torch.Generator().manual_seed(seed)
    c = comm.qam(order)
    H = comm.rayleigh(B, nr, nt, g, torch.complex128)
    idx = c.random_indices((B, nt), g)
    x = c.indices_to_points(idx, H.dtype)
    nv = comm.noise_var_from_snr(snr_db, nr, nt)
    y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
    return H, y, torch.full((B,), nv, dtype=torch.float64), idx


@pytest.mark.parametrize("key", MODELS)
def test_permutation_equivariance(key):
    det = model(key)
    H, y, nv, _ = system()
    p = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a, b = det(y, H, nv), det(y, H[:, :, p], nv)
    # gepnet-gate: the Gaussian cavity term -(s - x_obs)^2 / (2 v_obs) reaches ~300 with the
    # authors' floor v_min = 1e-13 (lam up to 1e13 in the LMMSE step), so the summation order
    # shows at ~1e-7 relative; with v_min = 5e-7 it agrees to 1e-9
    rtol = 1e-6 if key == "gepnet-gate" else 1e-9
    torch.testing.assert_close(b.logits, a.logits[:, p], rtol=rtol, atol=1e-9)
    assert torch.equal(b.hard, a.hard[:, p])


@pytest.mark.parametrize("key", MODELS)
@pytest.mark.parametrize("pad", ["random", "zeros"])
def test_masked_users_change_nothing(key, pad):
    """A batch padded with masked users (random or zero columns, in the middle and at the
    end) gives the unpadded logits for the present users; masked users get 0 / hard 0."""
    det = model(key)
    H, y, nv, _ = system()
    B, nr, nt = H.shape
    g = torch.Generator().manual_seed(9)
    extra = comm.rayleigh(B, nr, 2, g, H.dtype) * (pad == "random")
    Hp = torch.cat([H[:, :, :1], extra[:, :, :1], H[:, :, 1:], extra[:, :, 1:]], 2)
    mask = torch.tensor([True, False, True, True, False]).expand(B, 5)
    with torch.no_grad():
        ref, out = det(y, H, nv), det(y, Hp, nv, mask)
    # gepnet-gate: the same ~1e-7 relative summation-order effect as in the permutation test
    # above (the padded problem's fused LMMSE + cavity sums in another order)
    rtol = 1e-6 if key == "gepnet-gate" else 1e-9
    torch.testing.assert_close(out.logits[:, mask[0]], ref.logits, rtol=rtol, atol=1e-9)
    assert float(out.logits[:, ~mask[0]].abs().max()) == 0.0
    assert torch.equal(out.hard[:, mask[0]], ref.hard) and not bool(out.hard[:, ~mask[0]].any())


@pytest.mark.parametrize("key", ["gepnet", "ampgnn"])
def test_mixed_masks_in_one_batch(key):
    """Each row of a batch with different masks equals that row solved alone, unpadded."""
    det = model(key)
    H, y, nv, _ = system(B=3, nt=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = det(y, H, nv, mask)
        for b in range(3):
            cols = mask[b].nonzero()[:, 0]
            alone = det(y[b:b + 1], H[b:b + 1][:, :, cols], nv[b:b + 1])
            torch.testing.assert_close(out.logits[b, cols], alone.logits[0], rtol=1e-9, atol=1e-9)


# GEPNet's EP options and the classical EP's that give the same iterations: the defaults
# (the authors' code: lam0 = 1 / E[x_K^2] = 2, v_min = 1e-13) and the legacy ones (EP's defaults)
EP_MATCH = {"published": ({}, dict(lam0="prior", v_min=1e-13)),
            "legacy": (LEGACY_GEPNET, {})}


@pytest.mark.parametrize("ep", EP_MATCH)
def test_gepnet_with_the_gaussian_cavity_is_ep(ep):
    """With the GNN step replaced by the Gaussian cavity N(x_obs, v_obs) itself, GEPNet's
    iterations (6)-(10) are classical EP's, so the outputs agree (T = 10, eta = 0.7)."""
    class Plain(type(model("gepnet"))):
        def _refine(self, u, g, edge, attr, node_mask, Nt):
            levels = self.constellation.real_levels.to(attr.dtype)
            return u, g, -(levels - attr[..., :1]).square() / (2 * attr[..., 1:])

    mine, classical = EP_MATCH[ep]
    det = Plain(16, iterations=10, **SMALL, **mine).double()
    H, y, nv, _ = system(B=20, nr=8, nt=6, snr_db=14.0)
    with torch.no_grad():
        a, b = det(y, H, nv), detect.make("ep", 16, **classical)(y, H, nv)
    torch.testing.assert_close(a.logits.softmax(-1), b.logits.softmax(-1), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("ep", EP_MATCH)
@pytest.mark.parametrize("readout", ["pam", "complex"])
def test_gepnet_cavity_skip_starts_as_ep(readout, ep):
    """cavity_skip: the readout corrects the Gaussian cavity and starts at zero, so an
    untrained model is classical EP; training moves it (its last layer gets gradients).
    Also with the affine readout of the published structure (the default)."""
    mine, classical = EP_MATCH[ep]
    det = model("gepnet", readout=readout, cavity_skip=True, iterations=10, **mine).double()
    assert det.mpnn.readout_mlp.hidden_act == ("none" if ep == "published" else "relu")
    H, y, nv, idx = system(B=20, nr=8, nt=6, snr_db=14.0)
    with torch.no_grad():
        a, b = det(y, H, nv), detect.make("ep", 16, **classical)(y, H, nv)
    torch.testing.assert_close(a.logits.softmax(-1), b.logits.softmax(-1), rtol=1e-6, atol=1e-8)
    det.training_loss(y, H, nv, idx).backward()
    assert float(det.mpnn.readout_mlp.layers[-1].weight.grad.abs().sum()) > 0
    with pytest.raises(TypeError, match="cavity_skip must be a bool"):
        model("gepnet", cavity_skip=1)


@pytest.mark.parametrize("readout", ["pam", "complex"])
def test_gepnet_cavity_gate_starts_as_the_ungated_model(readout):
    """cavity_gate: tau = 2 sigmoid(w u + b) starts at 1, so a gated model holding an ungated
    model's weights gives its logits exactly; training moves the gate; a file without the
    gate seeds the gated model (init_optional) but an unrelated missing name still fails."""
    plain = model("gepnet", readout=readout, cavity_skip=True)
    gated = model("gepnet", readout=readout, cavity_skip=True, cavity_gate=True, seed=1)
    state = plain.state_dict()
    with pytest.raises(WeightsError, match="missing"):
        weights.load_state(gated, state, "test")
    weights.load_state(gated, state, "test", optional=gated.init_optional())
    torch.nn.init.normal_(plain.mpnn.readout_mlp.layers[-1].weight)   # a non-zero correction
    gated.mpnn.readout_mlp.layers[-1].weight.data.copy_(plain.mpnn.readout_mlp.layers[-1].weight)
    H, y, nv, idx = system(B=12, nr=8, nt=4, snr_db=25.0)
    with torch.no_grad():
        assert torch.equal(gated(y, H, nv).logits, plain(y, H, nv).logits)
    gated.training_loss(y, H, nv, idx).backward()
    assert float(gated.gate.weight.grad.abs().sum()) > 0
    assert gated.config()["cavity_gate"] is True and plain.init_optional() == ()
    with pytest.raises(ValueError, match="pass cavity_skip=True"):
        model("gepnet", cavity_gate=True)
    with pytest.raises(TypeError, match="cavity_gate must be a bool"):
        model("gepnet", cavity_skip=True, cavity_gate=1)


def test_ampgnn_with_the_gaussian_posterior_is_amp():
    """With the MPNN step replaced by the AWGN model r = x + CN(0, Sigma) (eq. 7), AMP-GNN is
    Algorithm 1's AMP (T = 10)."""
    class Plain(type(model("ampgnn"))):
        def _refine(self, u, g, edge, d, node_mask):
            levels = self.constellation.real_levels.to(d.dtype)
            return u, g, -(levels - d[..., :1]).square() / d[..., 1:]

    det = Plain(16, iterations=10, **SMALL).double()
    H, y, nv, _ = system(B=20, nr=16, nt=6, snr_db=14.0)
    with torch.no_grad():
        a, b = det(y, H, nv), detect.make("amp", 16)(y, H, nv)
    torch.testing.assert_close(a.logits.softmax(-1), b.logits.softmax(-1), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("key", MODELS)
def test_gradient_reaches_every_parameter(key):
    det = model(key)
    with torch.no_grad():   # zero-initialised layers (cavity_skip, the gate) would block the paths before them
        for p in det.parameters():
            if not bool(p.any()):
                p.normal_(std=0.1)
    H, y, nv, idx = system()
    mask = torch.ones(5, 3, dtype=torch.bool)
    mask[1, 2] = False
    loss = det.training_loss(y, H, nv, idx, mask)
    assert loss.dim() == 0 and bool(torch.isfinite(loss))
    loss.backward()
    for name, p in det.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_losses_follow_the_papers():
    """gnn/gepnet: cross-entropy of the readout (a uniform readout gives log L per real node);
    ampgnn: L2 of the final estimate (31): at x_hat = 0 it is sum |x|^2 per sample."""
    H, y, nv, idx = system()
    for key in ("gnn", "gepnet"):
        det = model(key)
        for p in det.mpnn.readout_mlp.layers[-1].parameters():
            torch.nn.init.zeros_(p)
        assert abs(det.training_loss(y, H, nv, idx).item() - math.log(4)) < 1e-12
    det = model("ampgnn")
    for p in det.mpnn.readout_mlp.layers[-1].parameters():
        torch.nn.init.zeros_(p)                 # uniform PAM posterior: x_hat = 0 (symmetric levels)
    x = comm.qam(16).indices_to_points(idx, H.dtype)
    expect = float(x.abs().square().sum(-1).mean())
    assert abs(det.training_loss(y, H, nv, idx).item() - expect) < 1e-12


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("key", ["gnn", "gepnet", "ampgnn"])
def test_backends_agree_with_reference(key, backend):
    """The backend option reaches every op: outputs and parameter gradients match the
    reference backend (triton runs in its interpreter without a GPU)."""
    why = registry.get_backend(backend).unavailable()
    if why is not None:
        pytest.skip(f"backend {backend} off: {why}")
    H, y, nv, idx = system(B=3)
    grads = []
    for b in (backend, "reference"):
        det = model(key, backend=b, iterations=2) if key != "gnn" else model(key, backend=b, rounds=2)
        with torch.no_grad():
            logits = det(y, H, nv).logits
        det.training_loss(y, H, nv, idx).backward()
        grads.append((logits, [p.grad for p in det.parameters()]))
    (la, ga), (lb, gb) = grads
    torch.testing.assert_close(la, lb, rtol=1e-8, atol=1e-8)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_float32_default_runs():
    det = detect.make("gepnet", "qam4", pretrained=False, iterations=2, **SMALL)
    H, y, nv, _ = system(order=4)
    out = det(y.to(torch.complex64), H.to(torch.complex64), nv.float())
    assert out.logits.dtype == torch.float32 and bool(torch.isfinite(out.logits).all())


def test_input_and_option_errors():
    det = detect.make("gepnet", 16, pretrained=False, **SMALL)             # float32 parameters
    H, y, nv, idx = system()
    with pytest.raises(TypeError, match="H is torch.complex128 .* det.double"):
        det(y, H, nv)
    with pytest.raises(ValueError, match="readout must be one of"):
        detect.make("gepnet", 16, pretrained=False, readout="bits")
    with pytest.raises(ValueError, match="iterations must be a positive int"):
        detect.make("ampgnn", 16, pretrained=False, iterations=0)
    with pytest.raises(ValueError, match="damping must be in"):
        detect.make("gepnet", 16, pretrained=False, damping=1.0)
    with pytest.raises(ValueError, match="QAM-like"):
        detect.make("ampgnn", comm.Constellation(torch.exp(2j * torch.pi * torch.arange(8) / 8)),
                    pretrained=False)
    with pytest.raises(ValueError, match="x_idx must hold point indices"):
        model("gnn").training_loss(y, H, nv, idx + 16)


def test_complex_readout_serves_any_constellation():
    """The E2E GNN-rx readout reads points, not PAM levels: 8-PSK works."""
    c = comm.Constellation(torch.exp(2j * torch.pi * torch.arange(8) / 8), name="psk8")
    torch.manual_seed(0)
    det = detect.make("gepnet", c, pretrained=False, readout="complex", iterations=2, **SMALL).double()
    H, y, nv, _ = system(order=4)
    with torch.no_grad():
        out = det(y, H, nv)
    assert out.logits.shape == (5, 3, 8) and bool(torch.isfinite(out.logits).all())


# --- weight files ------------------------------------------------------------------------
@pytest.mark.parametrize("key", MODELS)
def test_weights_round_trip(key, tmp_path):
    det = model(key, seed=4)
    path = tmp_path / f"{key}.safetensors"
    weights.save(det, path, record={"steps": 0})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask      # not mkstemp's 0600
    name = MODELS[key][0]
    back = detect.make(name, 16, weights=path).double()
    assert back.config() == det.config() and back.record == {"steps": 0}
    H, y, nv, _ = system()
    with torch.no_grad():
        torch.testing.assert_close(back(y, H, nv).logits, det(y, H, nv).logits, rtol=0, atol=0)


def test_weights_errors(tmp_path):
    det = model("gepnet")
    path = tmp_path / "g.safetensors"
    weights.save(det, path)
    with pytest.raises(WeightsError, match="holds a 'gepnet' detector, not 'ampgnn'"):
        detect.make("ampgnn", 16, weights=path)
    with pytest.raises(WeightsError, match="shape mismatch"):
        detect.make("gepnet", 16, weights=path, node_size=5)
    with pytest.raises(WeightsError, match="shape mismatch.*readout_mlp"):
        detect.make("gepnet", 16, weights=path, readout="complex")   # other readout: other shapes
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state.pop("mpnn.update.bias")
    save_file(state, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match=r"missing \['mpnn.update.bias'\]"):
        detect.make("gepnet", 16, weights=tmp_path / "short.safetensors")
    with pytest.raises(WeightsError, match="is for qam16, not qam4"):
        detect.make("gepnet", 4, weights=path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        detect.make("gepnet", 16, weights=bad)
    with pytest.raises(WeightsError, match="no such file"):
        detect.make("gepnet", 16, weights=tmp_path / "none.safetensors")


@pytest.mark.parametrize("name", ["gnn", "gepnet", "ampgnn"])
def test_make_without_shipped_weights_lists_them(name, monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)
    with pytest.raises(WeightsError, match=f"no shipped weights for detector '{name}'.*shipped for {name}: none"):
        detect.make(name, 16, nr=8, nt=8)


def test_make_finds_shipped_weights(monkeypatch, tmp_path):
    """weights=None loads the shipped file for (name, nr, nt, constellation); one trained
    for more users serves fewer."""
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)
    torch.manual_seed(0)
    det = detect.make("ampgnn", 16, nr=6, nt=4, pretrained=False, iterations=2, **SMALL)
    weights.save(det, tmp_path / weights.shipped_name("ampgnn", 6, 4, det.constellation))
    back = detect.make("ampgnn", 16, nr=6, nt=3)
    assert back.nt == 4 and back.iterations == 2
    for a, b in zip(det.parameters(), back.parameters()):
        assert torch.equal(a, b)


def test_simulate_runs_a_weights_file(tmp_path, capsys):
    from mimo_fast import cli
    torch.manual_seed(0)
    det = detect.make("gepnet", 4, nr=4, nt=2, pretrained=False, iterations=2, **SMALL)
    path = tmp_path / "g.safetensors"
    weights.save(det, path)
    args = ["simulate", "--nr", "4", "--nt", "2", "--mod", "qam4", "--min-errors", "10", "--max-symbols", "400",
            "--batch", "200", "--no-progress", "--snr", "10", "--json", str(tmp_path / "o.json")]
    assert cli.main([*args, "--detector", "gepnet", "ep", "--weights", str(path)]) == 0
    assert "gepnet" in capsys.readouterr().out
    assert cli.main([*args, "--mod", "qam16", "--detector", "gepnet", "--weights", str(path)]) == 2
    assert "is for qam4, not qam16" in capsys.readouterr().err
    assert cli.main([*args, "--detector", "ampgnn"]) == 2       # no shipped ampgnn weights: listed
    assert "no shipped weights for detector 'ampgnn'" in capsys.readouterr().err


# --- structure options: published defaults, legacy files ------------------------------------
def test_structure_defaults_follow_the_authors_code():
    """gnn and gepnet default to the structure of the authors' code (docs/fidelity.md) and
    record it in config(); ampgnn keeps its paper's text; all accept the options."""
    gnn = detect.make("gnn", 16, pretrained=False)
    cfg = gnn.config()
    assert {k: cfg[k] for k in LEGACY_GNN} == dict(message_out_act="relu", readout_act="none", node_sign=-1.0,
                                                  gru_attr=False)
    assert cfg["message_hidden"] == [128, 64] and cfg["gru_size"] == 128 and cfg["readout_hidden"] == [128, 64]
    assert gnn.mpnn.attr_features == 0 and gnn.mpnn.gru.input_size == gnn.node_size
    assert gnn.mpnn.message.out_act == "relu" and gnn.mpnn.readout_mlp.hidden_act == "none"
    for order in (4, 16, 64):
        cfg = detect.make("gepnet", order, pretrained=False).config()
        assert cfg["lam0"] == 2.0 and cfg["v_min"] == 1e-13 and cfg["node_sign"] == -1.0
        assert cfg["message_out_act"] == "relu" and cfg["readout_act"] == "none"
    assert detect.make("gepnet", 16, pretrained=False, lam0=1.5).config()["lam0"] == 1.5
    psk = comm.Constellation(2 * torch.exp(2j * torch.pi * torch.arange(8) / 8), name="psk8")   # energy 4
    assert detect.make("gepnet", psk, pretrained=False, readout="complex").lam0 == pytest.approx(0.5, rel=1e-6)
    amp = detect.make("ampgnn", 16, pretrained=False)
    assert amp.config()["message_out_act"] == "none" and amp.config()["readout_act"] == "relu"
    amp = detect.make("ampgnn", 16, pretrained=False, message_out_act="relu", readout_act="none")
    assert amp.mpnn.message.out_act == "relu" and amp.mpnn.readout_mlp.hidden_act == "none"
    # the legacy tables are exactly the old behaviour
    from mimo_fast.detect.learned.ampgnn import AMPGNN
    from mimo_fast.detect.learned.gepnet import GEPNet
    from mimo_fast.detect.learned.gnn import GNN
    assert GNN.LEGACY_STRUCTURE == LEGACY_GNN and GEPNet.LEGACY_STRUCTURE == LEGACY_GEPNET
    assert AMPGNN.LEGACY_STRUCTURE == dict(message_out_act="none", readout_act="relu")


def test_structure_option_errors():
    for name, bad, needle in [("gnn", dict(message_out_act="gelu"), "message_out_act must be one of"),
                              ("gepnet", dict(readout_act="tanh"), "readout_act must be one of"),
                              ("ampgnn", dict(readout_act=None), "readout_act must be one of"),
                              ("gnn", dict(node_sign=0.5), "node_sign must be"),
                              ("gepnet", dict(node_sign=True), "node_sign must be"),
                              ("gepnet", dict(lam0=-1.0), "lam0 must be"),
                              ("gepnet", dict(lam0="prior"), "lam0 must be"),
                              ("gepnet", dict(v_min=0.0), "v_min must be")]:
        with pytest.raises(ValueError, match=needle):
            detect.make(name, 16, pretrained=False, **bad)
    with pytest.raises(TypeError, match="gru_attr must be a bool"):
        detect.make("gnn", 16, pretrained=False, gru_attr=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        detect.make("ampgnn", 16, pretrained=False, node_sign=-1)


def _strip_config(path, out, drop):
    """A copy of weights file ``path`` whose saved config lacks the options ``drop``, as a
    file written before they existed."""
    import json
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        meta, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["mimo_fast.config"])
    for k in drop:
        del cfg[k]
    meta["mimo_fast.config"] = json.dumps(cfg, sort_keys=True)
    save_file(state, str(out), metadata=meta)


@pytest.mark.parametrize("key", ["gnn-legacy", "gepnet-legacy", "ampgnn"])
def test_file_without_structure_options_loads_the_legacy_structure(key, tmp_path):
    """A weights file whose config lacks the structure options (every file written before
    they existed, the shipped ones included) is rebuilt with the legacy structure and gives
    its model's logits exactly, not those of the new defaults; a new file records them all."""
    det = model(key, seed=4)
    name = MODELS[key][0]
    legacy = type(det).LEGACY_STRUCTURE
    path = tmp_path / "new.safetensors"
    weights.save(det, path)
    assert set(legacy) <= set(weights.read(path)[1]["config"])          # new files record them
    _strip_config(path, tmp_path / "old.safetensors", legacy)
    back = detect.make(name, 16, weights=tmp_path / "old.safetensors").double()
    assert back.config() == det.config()
    H, y, nv, _ = system()
    mask = torch.ones(5, 3, dtype=torch.bool)
    mask[2, 1] = False
    with torch.no_grad():
        torch.testing.assert_close(back(y, H, nv, mask).logits, det(y, H, nv, mask).logits, rtol=0, atol=0)
    if name == "ampgnn":
        return                                   # its legacy structure is its default
    # the same parameters under the published structure compute something else
    published = {k: v for k, v in det.config().items() if k not in legacy}
    if name == "gnn":
        published["gru_attr"] = True            # keeps the GRU's input size (the file's shapes)
    new = detect.make(name, 16, pretrained=False, **published).double()
    weights.load_state(new, det.state_dict(), "test")
    with torch.no_grad():
        assert float((new(y, H, nv).logits - det(y, H, nv).logits).abs().max()) > 1e-3


@pytest.mark.parametrize("key", ["gnn-legacy", "gepnet-legacy"])
def test_checkpoint_without_structure_options_resumes_only_the_legacy_structure(key, tmp_path):
    """checkpoint.load fills the options a checkpoint lacks with the legacy structure (not
    the constructor's new default): it resumes into a legacy-built model and refuses one
    built with the published defaults."""
    from mimo_fast.train import CheckpointError, checkpoint
    det = model(key, seed=2)
    legacy = type(det).LEGACY_STRUCTURE
    checkpoint.save(tmp_path, det, {"step": 3}, {})
    path = tmp_path / checkpoint.LAST_WEIGHTS
    _strip_config(path, path, legacy)
    again = model(key, seed=5)
    assert checkpoint.load(tmp_path, again)["step"] == 3
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), det.parameters()))
    name, opts = MODELS[key]
    published = {k: v for k, v in opts.items() if k not in legacy}
    if name == "gnn":
        published["gru_attr"] = True
    with pytest.raises(CheckpointError, match="options"):
        checkpoint.load(tmp_path, detect.make(name, 16, pretrained=False, **published).double())
