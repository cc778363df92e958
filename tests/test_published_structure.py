"""The published structure (docs/fidelity.md): a `gnn` and a `gepnet` built with their
default options equal, to float64 rounding, a forward pass of the formulas of the authors'
code written out below with explicit loops over nodes and pairs (no mimo_fast.nn or
mimo_fast.ops in the oracle: only the model's parameters, read from its state_dict):

* message MLP with a ReLU after its last layer too, summed over the senders j != n;
* GRU on the message sum only (gnn) or on [message sum, x_obs, v_obs] (gepnet);
* affine readout (no activation), then softmax;
* node feature -h_K^T h_K, edge feature [-h_K^T h_J, sigma^2];
* gepnet: EP from lam0 = 1 / E[x_K^2] = 2, variance floor 1e-13, moment matching, the
  negative-precision rule, damping 0.7.

Masked users are handled by solving the smaller problem without them (what a masked user
must be: absent). Each test also checks that the oracle tells the structures apart (the
legacy options on the same parameters give other numbers)."""
import math

import pytest
import torch

from mimo_fast import comm, detect

NR, NT, ORDER = 4, 2, 16
ATOL = 1e-12


# --- the oracle: the published formulas, written out --------------------------------------------
def relu(x):
    return torch.clamp(x, min=0.0)


def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


class Params:
    """The model's parameters by role (its state_dict only)."""

    def __init__(self, det):
        s = {k: v.detach() for k, v in det.state_dict().items()}
        self.enc_w, self.enc_b = s["mpnn.encoder.weight"], s["mpnn.encoder.bias"]
        self.msg = [(s[f"mpnn.message.layers.{i}.weight"], s[f"mpnn.message.layers.{i}.bias"]) for i in range(3)]
        self.read = [(s[f"mpnn.readout_mlp.layers.{i}.weight"], s[f"mpnn.readout_mlp.layers.{i}.bias"])
                     for i in range(3)]
        self.w_ih, self.w_hh = s["mpnn.gru.weight_ih"], s["mpnn.gru.weight_hh"]
        self.b_ih, self.b_hh = s["mpnn.gru.bias_ih"], s["mpnn.gru.bias_hh"]
        self.up_w, self.up_b = s["mpnn.update.weight"], s["mpnn.update.bias"]


def message(P, u_n, u_j, e_nj):
    """m_{j->n} = relu(W3 relu(W2 relu(W1 [u_n; u_j; e_nj] + b1) + b2) + b3)."""
    (w1, b1), (w2, b2), (w3, b3) = P.msg
    h = relu(w1 @ torch.cat([u_n, u_j, e_nj]) + b1)
    h = relu(w2 @ h + b2)
    return relu(w3 @ h + b3)


def gru(P, x, h):
    """The GRU cell (Cho et al.): gates r, z, candidate n, stacked [r, z, n] in the weights."""
    H = h.numel()
    gi, gh = P.w_ih @ x + P.b_ih, P.w_hh @ h + P.b_hh
    r = sigmoid(gi[:H] + gh[:H])
    z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
    n = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
    return (1 - z) * n + z * h


def readout(P, u):
    """Affine readout: W3 (W2 (W1 u + b1) + b2) + b3, no activation."""
    x = u
    for w, b in P.read:
        x = w @ x + b
    return x


def softmax(x):
    e = torch.exp(x - x.max())
    return e / e.sum()


def real_model(H, y):
    """y_r = H_r x_r + n: H_r = [[Re H, -Im H], [Im H, Re H]], y_r = [Re y; Im y]; node K
    is column K of H_r (the real parts of the users, then the imaginary parts)."""
    Hr = torch.cat([torch.cat([H.real, -H.imag], 1), torch.cat([H.imag, H.real], 1)], 0)
    return Hr, torch.cat([y.real, y.imag])


def graph(Hr, yr, s2):
    """Node features [y^T h_K, -h_K^T h_K, s2] and edges e_KJ = [-h_K^T h_J, s2]."""
    K = Hr.shape[1]
    cols = [Hr[:, k] for k in range(K)]
    feats = [torch.stack([yr @ cols[k], -(cols[k] @ cols[k]), s2]) for k in range(K)]
    edges = [[torch.stack([-(cols[k] @ cols[j]), s2]) for j in range(K)] for k in range(K)]
    return feats, edges


def mpnn_rounds(P, u, g, edges, rounds, attr=None):
    """``rounds`` rounds: m_n = sum_{j != n} message(u_n, u_j, e_nj); g_n = GRU([m_n(, attr_n)], g_n);
    u_n = W g_n + b. Synchronous: every message of a round reads the previous round's u."""
    K = len(u)
    for _ in range(rounds):
        m = []
        for n in range(K):
            total = torch.zeros_like(u[n])
            for j in range(K):
                if j != n:
                    total = total + message(P, u[n], u[j], edges[n][j])
            m.append(total)
        g = [gru(P, m[n] if attr is None else torch.cat([m[n], attr[n]]), g[n]) for n in range(K)]
        u = [P.up_w @ g[n] + P.up_b for n in range(K)]
    return u, g


def qam_logits(pam_probs, c):
    """Per user k: log p_k(Re s) + log p_{k+Nt}(Im s) for every point s."""
    levels = c.real_levels.to(torch.float64)
    nt = len(pam_probs) // 2
    out = torch.empty(nt, c.order, dtype=torch.float64)
    for k in range(nt):
        for q, s in enumerate(c.points.to(torch.complex128)):
            i_re = int(torch.argmin((levels - s.real).abs()))
            i_im = int(torch.argmin((levels - s.imag).abs()))
            out[k, q] = torch.log(pam_probs[k][i_re]) + torch.log(pam_probs[k + nt][i_im])
    return out


def gnn_oracle(P, H, y, nv, c, rounds, min_noise_var):
    """Scotti et al.'s GNN detector as the authors' code computes it, one sample."""
    Hr, yr = real_model(H, y)
    s2 = torch.clamp(nv / 2, min=min_noise_var)
    feats, edges = graph(Hr, yr, s2)
    u = [P.enc_w @ f + P.enc_b for f in feats]
    g = [torch.zeros(P.w_hh.shape[1], dtype=torch.float64) for _ in feats]
    u, g = mpnn_rounds(P, u, g, edges, rounds)                     # GRU input: the message sum only
    return qam_logits([softmax(readout(P, un)) for un in u], c)


def gepnet_oracle(P, H, y, nv, c, iterations, rounds, min_noise_var, eta=0.7, lam0=2.0, v_min=1e-13):
    """GEPNet (Kosasih et al.) as the authors' code computes it, one sample."""
    Hr, yr = real_model(H, y)
    K = Hr.shape[1]
    s2 = torch.clamp(nv / 2, min=min_noise_var)
    feats, edges = graph(Hr, yr, s2)
    levels = c.real_levels.to(torch.float64)
    u = [P.enc_w @ f + P.enc_b for f in feats]
    g = [torch.zeros(P.w_hh.shape[1], dtype=torch.float64) for _ in feats]
    lam = [torch.tensor(lam0, dtype=torch.float64) for _ in range(K)]
    gam = [torch.tensor(0.0, dtype=torch.float64) for _ in range(K)]
    for t in range(iterations):
        A = Hr.T @ Hr / s2 + torch.diag(torch.stack(lam))                        # (6a)
        Sig_full = torch.linalg.inv(A)
        mu = Sig_full @ (Hr.T @ yr / s2 + torch.stack(gam))                       # (6b)
        x_obs, v_obs = [], []
        for k in range(K):
            sig = Sig_full[k, k]
            v = torch.clamp(sig / (1 - sig * lam[k]), min=v_min)                 # (7b)
            v_obs.append(v)
            x_obs.append(v * (mu[k] / sig - gam[k]))                               # (7c)
        attr = [torch.stack([x_obs[k], v_obs[k]]) for k in range(K)]
        u, g = mpnn_rounds(P, u, g, edges, rounds, attr)
        probs = [softmax(readout(P, un)) for un in u]                              # refined cavity
        if t == iterations - 1:
            return qam_logits(probs, c)
        for k in range(K):
            x_hat = (probs[k] * levels).sum()                                      # (8a)
            v_hat = torch.clamp((probs[k] * (levels - x_hat) ** 2).sum(), min=v_min)   # (8b)
            lam_new = 1 / v_hat - 1 / v_obs[k]                                     # (9a)
            gam_new = x_hat / v_hat - x_obs[k] / v_obs[k]                          # (9b)
            if not lam_new > 0:                                                    # not a precision
                lam_new, gam_new = lam[k], gam[k]
            lam[k] = (1 - eta) * lam_new + eta * lam[k]                            # (10a)
            gam[k] = (1 - eta) * gam_new + eta * gam[k]                            # (10b)


# --- the comparison -------------------------------------------------------------------------------
def system(B=3, seed=11):
    g = torch.Generator().manual_seed(seed)
    c = comm.qam(ORDER)
    H = comm.rayleigh(B, NR, NT, g, torch.complex128)
    idx = c.random_indices((B, NT), g)
    x = c.indices_to_points(idx, H.dtype)
    nv = torch.tensor([comm.noise_var_from_snr(s, NR, NT) for s in (6.0, 12.0, 20.0)][:B], dtype=torch.float64)
    y = comm.awgn((H @ x[..., None])[..., 0], nv, g)
    mask = torch.ones(B, NT, dtype=torch.bool)
    mask[1, 0] = False                                    # one sample with a user absent
    return c, H, y, nv, mask


def oracle_batch(fn, det, H, y, nv, mask, c, **kw):
    """The oracle on every sample, each solved without its masked users; (B, Nt, Q) with
    zeros for the masked users (the detectors' convention)."""
    P = Params(det)
    out = torch.zeros(H.shape[0], NT, c.order, dtype=torch.float64)
    for b in range(H.shape[0]):
        keep = mask[b].nonzero()[:, 0]
        out[b, keep] = fn(P, H[b][:, keep], y[b], nv[b], c, **kw)
    return out


def build(name, seed, **kw):
    torch.manual_seed(seed)
    return detect.make(name, ORDER, pretrained=False, **kw).double().eval()


def test_gnn_is_the_published_formulas():
    det = build("gnn", 0)
    cfg = det.config()
    assert (cfg["message_out_act"], cfg["readout_act"], cfg["node_sign"], cfg["gru_attr"]) == ("relu", "none",
                                                                                              -1.0, False)
    assert cfg["message_hidden"] == [128, 64] and cfg["gru_size"] == 128 and cfg["readout_hidden"] == [128, 64]
    c, H, y, nv, mask = system()
    with torch.no_grad():
        got = det(y, H, nv, mask).logits
    want = oracle_batch(gnn_oracle, det, H, y, nv, mask, c, rounds=det.rounds, min_noise_var=det.min_noise_var)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # the oracle tells the structures apart: each legacy option alone moves the logits
    for opt in (dict(message_out_act="none"), dict(readout_act="relu"), dict(node_sign=1.0)):
        other = build("gnn", 0, **opt)
        other.load_state_dict(det.state_dict())
        with torch.no_grad():
            assert float((other(y, H, nv, mask).logits - want).abs().max()) > 1e-9, opt


def test_gepnet_is_the_published_formulas():
    det = build("gepnet", 1)
    cfg = det.config()
    assert (cfg["message_out_act"], cfg["readout_act"], cfg["node_sign"]) == ("relu", "none", -1.0)
    assert cfg["lam0"] == 2.0 and cfg["v_min"] == 1e-13 and cfg["damping"] == 0.7 and cfg["readout"] == "pam"
    c, H, y, nv, mask = system()
    with torch.no_grad():
        got = det(y, H, nv, mask).logits
    want = oracle_batch(gepnet_oracle, det, H, y, nv, mask, c, iterations=det.iterations, rounds=det.rounds,
                        min_noise_var=det.min_noise_var)
    assert bool(torch.isfinite(want).all()) and not math.isclose(float(want.std()), 0.0)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    for opt in (dict(message_out_act="none"), dict(readout_act="relu"), dict(node_sign=1.0), dict(lam0=1.0)):
        other = build("gepnet", 1, **opt)
        other.load_state_dict(det.state_dict())
        with torch.no_grad():
            assert float((other(y, H, nv, mask).logits - want).abs().max()) > 1e-9, opt


@pytest.mark.parametrize("name", ["gnn", "gepnet"])
def test_the_oracle_without_masks_and_training_loss_agree(name):
    """Unmasked batch: the same numbers; the loss is the oracle's cross-entropy (gnn: over the
    real nodes' levels; gepnet: averaged over the iterations, here checked for T = 1)."""
    kw = dict(iterations=1) if name == "gepnet" else {}
    det = build(name, 2, **kw)
    c, H, y, nv, _ = system(seed=12)
    mask = torch.ones(H.shape[0], NT, dtype=torch.bool)
    fn = gnn_oracle if name == "gnn" else gepnet_oracle
    okw = dict(rounds=det.rounds, min_noise_var=det.min_noise_var)
    if name == "gepnet":
        okw["iterations"] = 1
    want = oracle_batch(fn, det, H, y, nv, mask, c, **okw)
    with torch.no_grad():
        torch.testing.assert_close(det(y, H, nv).logits, want, rtol=0, atol=ATOL)
    # the PAM cross-entropy from the oracle's QAM log-probabilities: log p(Re) + log p(Im) summed
    # over the true points' two levels, averaged over the 2 Nt real nodes
    g = torch.Generator().manual_seed(5)
    idx = c.random_indices((H.shape[0], NT), g)
    ce = -want.gather(-1, idx[..., None]).sum() / (2 * NT * H.shape[0])
    torch.testing.assert_close(det.training_loss(y, H, nv, idx).detach(), ce, rtol=0, atol=ATOL)
