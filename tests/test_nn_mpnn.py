"""mimo_fast.nn: the MPNN block against its equations written out pair by pair (both
structures: the papers' text and the authors' code, i.e. message_out_act, readout_act and
a GRU without node attribute), masks, permutation equivariance, gradients, backends, the
MLP options, and argument errors."""
import pytest
import torch

from mimo_fast import nn as mnn
from mimo_fast.ops import registry


def make_mpnn(seed=0, attr=2, **kw):
    torch.manual_seed(seed)
    opts = dict(readout_out=4, node_size=5, message_hidden=(7, 6), gru_size=9, readout_hidden=(8, 3),
                attr_features=attr, rounds=2)
    opts.update(kw)
    return mnn.MPNN(**opts).double()


def inputs(B=3, N=5, attr=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    e = torch.randn(B, N, N, 2, generator=g, dtype=torch.float64)
    d = torch.randn(B, N, attr, generator=g, dtype=torch.float64) if attr else None
    return f, e, d


def mlp3(layers, x, hidden_relu: bool, out_relu: bool):
    """A 3-layer MLP written out: ``x W1^T + b1 -> [relu] -> ... -> x W3^T + b3 -> [relu]``."""
    for i, layer in enumerate(layers):
        x = x @ layer.weight.T + layer.bias
        if (hidden_relu if i < len(layers) - 1 else out_relu):
            x = x.clamp_min(0)
    return x


def naive(m, f, e, d, mask):
    """Eqs. (14)-(18) with every pair's message formed explicitly; the message MLP ends in
    a ReLU per message when ``message_out_act="relu"``, the readout is affine when
    ``readout_act="none"``."""
    B, N, _ = f.shape
    valid = torch.ones(B, N, dtype=torch.bool) if mask is None else mask
    keep = valid[..., None].double()
    u = m.encoder(f) * keep
    g = torch.zeros(B, N, m.gru_size, dtype=f.dtype)
    for _ in range(m.rounds):
        pair = torch.cat([u[:, :, None].expand(B, N, N, -1), u[:, None].expand(B, N, N, -1), e], -1)
        msg = mlp3(m.message.layers, pair, True, m.message_out_act == "relu")   # (B, n, j, F): j -> n
        w = (valid[:, None, :] & ~torch.eye(N, dtype=torch.bool)).double()[..., None]
        s = (msg * w).sum(2) * keep
        x = s if d is None else torch.cat([s, d * keep], -1)
        g = m.gru(x.reshape(B * N, -1), g.reshape(B * N, -1)).reshape(B, N, -1) * keep
        u = m.update(g) * keep
    return u, g, mlp3(m.readout_mlp.layers, u, m.readout_act == "relu", False)


STRUCTURES = {"text": dict(message_out_act="none", readout_act="relu"),
              "code": dict(message_out_act="relu", readout_act="none"),
              "relu-relu": dict(message_out_act="relu", readout_act="relu")}


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("attr", [2, 0])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_equations(attr, masked, structure):
    m = make_mpnn(attr=attr, **STRUCTURES[structure])
    f, e, d = inputs(attr=attr)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool) if masked else None
    u, g = m(*m.encode(f, mask), e, d, mask)
    u0, g0, r0 = naive(m, f, e, d, mask)
    torch.testing.assert_close(u, u0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.readout(u), r0, rtol=1e-12, atol=1e-12)


def test_state_carried_across_calls():
    """Two calls of L rounds = one model with 2L rounds when the attribute is unchanged (eq. 19)."""
    m1, m2 = make_mpnn(rounds=2), make_mpnn(rounds=4)
    f, e, d = inputs()
    u, g = m1(*m1.encode(f), e, d)
    u, g = m1(u, g, e, d)
    u2, g2 = m2(*m2.encode(f), e, d)
    torch.testing.assert_close(u, u2, rtol=1e-12, atol=1e-12)


def test_permutation_equivariance():
    m = make_mpnn()
    f, e, d = inputs()
    p = torch.tensor([3, 0, 4, 1, 2])
    u, _ = m(*m.encode(f), e, d)
    up, _ = m(*m.encode(f[:, p]), e[:, p][:, :, p], d[:, p])
    torch.testing.assert_close(up, u[:, p], rtol=1e-12, atol=1e-12)


def test_masked_nodes_change_nothing():
    """Absent nodes: any features, attributes and edges give the same outputs for the others
    as dropping them; their own state is zero."""
    m = make_mpnn()
    f, e, d = inputs(B=2, N=6)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    f2, e2, d2 = f.clone(), e.clone(), d.clone()
    f2[~mask] = 1e6
    d2[~mask] = -3e5
    e2[~mask] = 7e4                    # edges seen by absent receivers
    e2.transpose(1, 2)[~mask] = -9e4   # edges from absent senders
    with torch.no_grad():
        u, g = m(*m.encode(f, mask), e, d, mask)
        u2, g2 = m(*m.encode(f2, mask), e2, d2, mask)
        keep = mask[0].nonzero()[:, 0]
        us, _ = m(*m.encode(f[:1, keep]), e[:1, keep][:, :, keep], d[:1, keep])
    torch.testing.assert_close(u, u2, rtol=0, atol=0)
    assert float(u[~mask].abs().max()) == 0.0 and float(g[~mask].abs().max()) == 0.0
    torch.testing.assert_close(u[:1, keep], us, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_gradient_reaches_every_parameter(structure):
    m = make_mpnn(**STRUCTURES[structure])
    f, e, d = inputs()
    f.requires_grad_(True)
    e.requires_grad_(True)
    u, _ = m(*m.encode(f), e, d)
    m.readout(u).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert float(e.grad.abs().sum()) > 0 and float(f.grad.abs().sum()) > 0


@pytest.mark.parametrize("structure", ["text", "code"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_backend_passed_down(backend, structure):
    why = registry.get_backend(backend).unavailable()
    if why is not None:
        pytest.skip(f"backend {backend} off: {why}")
    f, e, d = inputs()
    ref = make_mpnn(backend="reference", **STRUCTURES[structure])
    m = make_mpnn(backend=backend, **STRUCTURES[structure])
    torch.testing.assert_close(m(*m.encode(f), e, d)[0], ref(*ref.encode(f), e, d)[0], rtol=1e-10, atol=1e-10)


def test_argument_errors():
    m = make_mpnn()
    f, e, d = inputs()
    u, g = m.encode(f)
    with pytest.raises(ValueError, match="edge must have shape"):
        m(u, g, e[:, :, :4], d)
    with pytest.raises(ValueError, match="attr must have shape"):
        m(u, g, e, d[..., :1])
    with pytest.raises(TypeError, match="features is torch.float32"):
        m.encode(f.float())
    with pytest.raises(ValueError, match="mask must have shape"):
        m(u, g, e, d, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool"):
        m(u, g, e, d, torch.ones(3, 5))
    with pytest.raises(ValueError, match="message_hidden must have 2 entries"):
        mnn.MPNN(readout_out=4, message_hidden=(8,))
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        mnn.MPNN(readout_out=4, rounds=0)
    with pytest.raises(ValueError, match="sizes must be a sequence of positive ints"):
        mnn.MLP((4, 0, 2))
    with pytest.raises(ValueError, match="message_out_act must be one of"):
        mnn.MPNN(readout_out=4, message_out_act="tanh")
    with pytest.raises(ValueError, match="readout_act must be one of"):
        mnn.MPNN(readout_out=4, readout_act=None)
    with pytest.raises(ValueError, match="hidden_act must be one of"):
        mnn.MLP((4, 3, 2), hidden_act="gelu")
    with pytest.raises(ValueError, match="out_act must be one of"):
        mnn.MLP((4, 3, 2), out_act="sigmoid")


def test_message_out_act_reaches_the_op(monkeypatch):
    """The MPNN passes message_out_act to ops.mpnn_message_sum as out_act; the parameters
    (names and shapes) do not depend on the structure options."""
    from mimo_fast import ops
    seen = []
    real = ops.mpnn_message_sum

    def spy(*a, **kw):
        seen.append(kw.get("out_act"))
        return real(*a, **kw)

    monkeypatch.setattr(ops, "mpnn_message_sum", spy)
    f, e, d = inputs()
    for structure, opts in STRUCTURES.items():
        m = make_mpnn(**opts)
        m(*m.encode(f), e, d)
        assert seen[-m.rounds:] == [opts["message_out_act"]] * m.rounds, structure
    shapes = {k: v.shape for k, v in make_mpnn().state_dict().items()}
    assert {k: v.shape for k, v in make_mpnn(**STRUCTURES["code"]).state_dict().items()} == shapes


def test_mlp_activation_options():
    """hidden_act="none": the layers compose to one affine map; out_act="relu": a ReLU on
    the output; the defaults are ReLU after hidden layers only."""
    torch.manual_seed(3)
    x = torch.randn(7, 4, dtype=torch.float64)
    for hidden, out in [("relu", "none"), ("none", "none"), ("relu", "relu"), ("none", "relu")]:
        m = mnn.MLP((4, 6, 5, 3), hidden_act=hidden, out_act=out).double()
        torch.testing.assert_close(m(x), mlp3(m.layers, x, hidden == "relu", out == "relu"), rtol=0, atol=0)
    m = mnn.MLP((4, 6, 5, 3), hidden_act="none").double()
    W, b = torch.eye(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for layer in m.layers:
        W, b = layer.weight @ W, layer.weight @ b + layer.bias
    torch.testing.assert_close(m(x), x @ W.T + b, rtol=1e-12, atol=1e-12)
    assert float(mnn.MLP((4, 6, 5, 3), out_act="relu").double()(x).detach().min()) >= 0
    assert "hidden_act='none'" in repr(m) and "out_act" not in repr(m)
