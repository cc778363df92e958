"""RE-MIMO: the recurrent permutation-equivariant transformer detector (K. Pratik, B. D. Rao,
M. Welling, "RE-MIMO: Recurrent and Permutation Equivariant Neural MIMO Detection", IEEE
TSP 69, 2021, Sec. III-IV). One model serves every number of users up to its ``nt``.

Users are the tokens. With ``N_tr`` active users, the real-equivalent channel column of user
i, ``h_i = [Re h_i; Im h_i]`` (2 Nr), and the network's pre-softmax prediction ``x^_i^t``
(Q logits over the constellation, ``x^_i^0 = 0``), block t = 1..T computes

    z_i^t   = sum_j softmax(x^_i^t)_j X_j                                       (eq. 16)
    dy^t    = y - H z^t   (the residual of the log-likelihood gradient H^H dy / s^2)  (eq. 12, 15)
    phi_i^t = [s_i^{t-1}, x^_i^{t-1}, dy^{t-1} / sqrt(2 N_tr), h_i]                (eq. 20)
    s'_i    = LayerNorm(s_i^{t-1} + MultiHead(Phi)_i)                          (eq. 17-19)
    s_i^t   = LayerNorm(s'_i + FFN(s'_i))          FFN: d_s -> 4 d_s -> d_s, ReLU
    psi_i^t = [s_i^t, x^_i^{t-1}, dy^{t-1} / sqrt(2 N_tr), h_i, sigma / sqrt(2 N_tr)] (eq. 21)
    x^_i^t  = MLP(psi_i^t)                         hidden d_psi / 2, d_psi / 4, ReLU

initialised by the embedding network (Sec. IV-E) ``s_i^0 = gamma(f_i) sqrt(d_s)`` with
``f_i = [y / sqrt(2 N_tr), h_i, sigma / sqrt(2 N_tr), TE(N_tr)]`` (eq. 22) and the
transmitters encoding ``TE_{2i} = sin(N_tr / (2 Nr)^{2i / d_TE}) / sqrt(d_s)``,
``TE_{2i+1} = cos(...)`` (eq. 23-24, ``d_TE = Nr``). ``gamma``: d_f -> 4 d_s -> d_s, ReLU.
The loss is eq. 11: the cross entropy of every block's prediction, weighted ``w_t = 1/T``,
summed over a sample's users and divided by its ``N_tr``, averaged over samples.

Scaling: the paper normalises ``y``, ``dy`` and ``sigma`` by ``sqrt(2 N_tr)`` (eq. 12-15, 22)
so that their variance does not depend on the number of users. This implementation also
multiplies every channel-domain feature (``y``, ``dy``, ``sigma``, ``h_i``) by the constant
``sqrt(2 Nr)``, which gives them unit-order variance under the library's CN(0, 1/Nr) channel
(``h_i`` unit variance, ``y / sqrt(2 N_tr)`` variance Es/2); a constant reparametrisation of
the first layers, so the model is the paper's. ``sigma`` is the real-domain noise standard
deviation ``sqrt(noise_var / 2)``.

Masks: users with ``mask`` False are left out of the problem: the attention's keys are
masked (``scaled_dot_product_attention``'s boolean mask), their ``z`` is 0 (they are not in
the residual) and ``N_tr`` counts active users only, so one batch mixes numbers of users
and a padded user changes nothing for the others. Every other operation is per user, so the
model is permutation equivariant (Sec. III, eq. 13-14).

Shared inputs: ``dy``, ``y``, ``sigma`` and TE are the same for every user of a sample, so
the first linear layer over each concatenation (eq. 20-22) applies its columns for them
once per sample and broadcasts (:class:`SharedInputLinear`): the same numbers, 1/N_tr of
that part's cost. The concatenation order inside the parameter is [per-user, shared].

Gradient feature (``grad_feature=True``, not in the paper): four more numbers per user in
``phi_i`` and ``psi_i``, the real and imaginary parts of ``z_i`` and of the likelihood
gradient component ``h_i^H dy`` (eq. 15), and ``h_i^H y`` in ``f_i``. The paper passes
``h_i`` and ``dy`` and leaves the network to combine them; an inner product is slow for a
small MLP to learn, which matters in a short CPU training.

Sizes: ``preset="paper"`` is d_s 512, 8 heads, 12 blocks, ``d_k = d_phi / heads`` (Sec.
IV-C, V-A), no gradient feature; ``preset="small"`` (the shipped model) is d_s 64, 4 heads
of 16, 6 blocks, with the gradient feature; ``d_s``, ``heads``, ``blocks``, ``head_dim``,
``d_te``, ``grad_feature`` override the preset.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mimo_fast.detect.learned.base import LearnedDetector
from mimo_fast.detect.learned.oampnet import check_indices
from mimo_fast.nn.mlp import MLP

#: named sizes; ``head_dim=None`` is the paper's d_k = d_v = d_phi / heads (rounded up)
PRESETS = {
    "paper": {"d_s": 512, "heads": 8, "blocks": 12, "head_dim": None, "grad_feature": False},
    "small": {"d_s": 64, "heads": 4, "blocks": 6, "head_dim": 16, "grad_feature": True},
}


def transmitters_encoding(n_tr: Tensor, nr: int, d_te: int, d_s: int) -> Tensor:
    """TE of eq. 23-24 for ``n_tr (B,)`` users: ``(B, d_te)``; wavelengths from 2 pi to
    2 Nr 2 pi, the same vector for every user of a sample."""
    j = torch.arange(d_te, device=n_tr.device)
    expo = (2 * (j // 2)).to(n_tr.dtype) / d_te
    angle = n_tr[:, None] / (2.0 * nr) ** expo
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()) / math.sqrt(d_s)


class SharedInputLinear(nn.Module):
    """``nn.Linear`` over ``[user_features, shared_features]`` where the shared part is the
    same for every user of a sample (``dy``, ``y``, ``sigma``, TE): its product is taken once
    per sample and broadcast, the same numbers as the concatenation at 1/N of that cost."""

    def __init__(self, d_user: int, d_shared: int, d_out: int):
        super().__init__()
        self.d_user = d_user
        self.linear = nn.Linear(d_user + d_shared, d_out)

    def forward(self, user: Tensor, shared: Tensor) -> Tensor:
        w = self.linear.weight
        return F.linear(user, w[:, :self.d_user]) + F.linear(shared, w[:, self.d_user:], self.linear.bias)[:, None]


class EncoderPredictor(nn.Module):
    """One iteration block: the transformer encoder (eq. 17-20) and the per-user predictor
    (eq. 21). ``f`` = 2 Nr, the length of ``h_i`` and ``dy``; ``q`` = constellation size;
    ``extra`` = per-user features added to ``h_i`` (the gradient option)."""

    def __init__(self, d_s: int, heads: int, head_dim: Optional[int], q: int, f: int, extra: int = 0):
        super().__init__()
        d_user = d_s + q + f + extra                    # [s, x^, h_i (, grad_i)] per user
        d_phi = d_user + f                              # + dy, shared by the users (eq. 20)
        self.heads = heads
        self.head_dim = head_dim or -(-d_phi // heads)
        inner = heads * self.head_dim
        self.qkv = SharedInputLinear(d_user, f, 3 * inner)   # W^q, W^k, W^v of every head
        self.proj = nn.Linear(inner, d_s)               # W^o (eq. 17): back to d_s
        self.norm1 = nn.LayerNorm(d_s)
        self.ffn = MLP((d_s, 4 * d_s, d_s))
        self.norm2 = nn.LayerNorm(d_s)
        d_psi = d_phi + 1                               # + sigma (eq. 21)
        h1, h2 = -(-d_psi // 2), -(-d_psi // 4)
        self.predictor_in = SharedInputLinear(d_user, f + 1, h1)
        self.predictor = MLP((h1, h2, q))

    def forward(self, s: Tensor, x_hat: Tensor, user: Tensor, shared: Tensor, keep: Tensor):
        """``s (B, N, d_s)``, ``x_hat (B, N, q)``, ``user (B, N, f + extra)`` = h_i (and
        grad_i), ``shared (B, f + 1)`` = [dy, sigma] of the sample, ``keep (B, 1, 1, N)``
        bool key mask. Returns ``(s^t, x^^t)``."""
        B, N, _ = s.shape
        phi_user = torch.cat([s, x_hat, user], -1)                               # eq. 20
        q, k, v = self.qkv(phi_user, shared[:, :-1]).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)            # eq. 19, per head
        s = self.norm1(s + self.proj(att.transpose(1, 2).reshape(B, N, -1)))   # eq. 17 + residual
        s = self.norm2(s + self.ffn(s))
        psi_user = torch.cat([s, x_hat, user], -1)                               # eq. 21
        return s, self.predictor(self.predictor_in(psi_user, shared).relu())


class REMIMO(LearnedDetector):
    """RE-MIMO (see the module docstring). Options: ``preset`` ("paper" or "small"),
    ``d_s``, ``heads``, ``blocks`` (T), ``head_dim`` (None: d_phi / heads), ``d_te`` (TE
    length, default Nr), ``grad_feature``; ``nr`` is required (features are 2 Nr long)."""

    name = "remimo"

    def __init__(self, constellation, *, preset: str = "paper", d_s: Optional[int] = None,
                 heads: Optional[int] = None, blocks: Optional[int] = None, head_dim: Optional[int] = None,
                 d_te: Optional[int] = None, grad_feature: Optional[bool] = None, **kw):
        super().__init__(constellation, **kw)
        if preset not in PRESETS:
            raise ValueError(f"remimo: preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if self.nr is None:
            raise ValueError("remimo: nr is required (the per-user features are 2 nr long)")
        size = dict(PRESETS[preset])
        for arg, val in (("d_s", d_s), ("heads", heads), ("blocks", blocks), ("head_dim", head_dim),
                         ("grad_feature", grad_feature)):
            if val is not None:
                size[arg] = val
        size["d_te"] = self.nr if d_te is None else d_te
        for arg, val in size.items():
            if arg == "grad_feature":
                if not isinstance(val, bool):
                    raise ValueError(f"remimo: grad_feature must be a bool, got {val!r}")
            elif val is None and arg == "head_dim":
                continue
            elif isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"remimo: {arg} must be a positive int, got {val!r}")
        self.preset = preset
        self.d_s, self.heads, self.blocks_n = size["d_s"], size["heads"], size["blocks"]
        self.head_dim, self.d_te, self.grad_feature = size["head_dim"], size["d_te"], size["grad_feature"]
        q, f = self.constellation.order, 2 * self.nr
        extra = 4 if self.grad_feature else 0             # [Re, Im] of z_i and of h_i^H dy
        # gamma (eq. 22): [h_i (, h_i^H y)] per user, [y, sigma, TE] shared; d_f -> 4 d_s -> d_s
        self.embed_in = SharedInputLinear(f + extra // 2, f + 1 + self.d_te, 4 * self.d_s)
        self.embed_out = nn.Linear(4 * self.d_s, self.d_s)
        self.blocks = nn.ModuleList(EncoderPredictor(self.d_s, self.heads, self.head_dim, q, f, extra)
                                    for _ in range(self.blocks_n))

    def config(self) -> dict:
        return {"preset": self.preset, "d_s": self.d_s, "heads": self.heads, "blocks": self.blocks_n,
                "head_dim": self.head_dim, "d_te": self.d_te, "grad_feature": self.grad_feature}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", d_s={self.d_s}, heads={self.heads}, blocks={self.blocks_n}"

    @staticmethod
    def _real(v: Tensor) -> Tensor:
        """``(..., Nr)`` complex -> ``(..., 2 Nr)`` real ``[Re; Im]`` (docs/conventions.md)."""
        return torch.cat([v.real, v.imag], -1)

    def _run(self, y: Tensor, H: Tensor, noise_var: Tensor, mask: Tensor) -> list:
        """Every block's pre-softmax prediction ``x^^t`` (B, Nt, Q), t = 1..T."""
        dt = self.embed_out.weight.dtype
        cdt = torch.complex128 if dt == torch.float64 else torch.complex64
        B, Nr, Nt = H.shape
        m = mask.to(dt)
        Hm = H.to(cdt) * m[:, None, :].to(cdt)              # absent users leave the problem
        y = y.to(cdt)
        pts = self.constellation.points_as(cdt, H.device)
        n_tr = m.sum(-1).clamp_min(1.0)                                         # (B,)
        c = ((2.0 * Nr) / (2.0 * n_tr)).sqrt()[:, None]                         # sqrt(2Nr) / sqrt(2 N_tr)
        h = self._real(Hm.mT) * (2.0 * Nr) ** 0.5                               # (B, Nt, 2Nr)
        sig = (noise_var.to(dt).clamp_min(0.0) / 2).sqrt()[:, None] * c         # sigma / sqrt(2 N_tr)
        te = transmitters_encoding(n_tr, Nr, self.d_te, self.d_s)

        def grad(dy, z):   # optional per-user gradient of eq. 15 (h_i^H dy) and z_i (eq. 16)
            g = (Hm.mH @ dy[..., None])[..., 0]
            return torch.stack([z.real, z.imag, g.real, g.imag], -1).to(dt)

        zero = torch.zeros(B, Nt, dtype=cdt, device=H.device)
        user0 = torch.cat([h, grad(y, zero)[..., 2:]], -1) if self.grad_feature else h
        s = self.embed_out(self.embed_in(user0, torch.cat([self._real(y) * c, sig, te], -1)).relu())
        s = s * math.sqrt(self.d_s)                                             # s^0 (Sec. IV-E)
        x_hat = torch.zeros(B, Nt, self.constellation.order, dtype=dt, device=H.device)
        # key mask; a sample with no user keeps its keys (its outputs are discarded anyway)
        keep = (mask | ~mask.any(-1, keepdim=True))[:, None, None, :]
        dy, z = y, zero                                                         # z^0 = 0 (eq. 16)
        outs = []
        for block in self.blocks:
            user = torch.cat([h, grad(dy, z)], -1) if self.grad_feature else h
            s, x_hat = block(s, x_hat, user, torch.cat([self._real(dy) * c, sig], -1), keep)
            outs.append(x_hat)
            z = (x_hat.softmax(-1).to(cdt) @ pts) * m.to(cdt)                   # eq. 16
            dy = y - (Hm @ z[..., None])[..., 0]                                # residual, eq. 12
        return outs

    def _detect_masked(self, y, H, noise_var, mask):
        return self._run(y, H, noise_var, mask)[-1].to(H.dtype.to_real()), None

    def training_loss(self, y: Tensor, H: Tensor, noise_var: Tensor, x_idx: Tensor,
                      mask: Optional[Tensor] = None) -> Tensor:
        """Eq. 11 with ``w_t = 1/T``: mean over samples of ``(1/N_tr) sum_t w_t sum_i
        CE(x^_i^t, x_i)`` over the sample's present users."""
        nv, mask = self.checked(y, H, noise_var, mask)
        idx = check_indices(self, x_idx, H, mask)
        outs = torch.stack(self._run(y, H, nv, mask))                           # (T, B, Nt, Q)
        T = outs.shape[0]
        ce = F.cross_entropy(outs.flatten(0, 2), idx.expand(T, -1, -1).flatten(), reduction="none")
        m = mask.to(ce.dtype)
        per_sample = (ce.view(T, *idx.shape) * m).sum((0, 2)) / (T * m.sum(-1).clamp_min(1.0))
        return per_sample.mean()


__all__ = ["REMIMO", "EncoderPredictor", "transmitters_encoding", "PRESETS"]
