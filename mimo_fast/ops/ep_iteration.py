r"""``mimo_fast::ep_cavity`` and ``mimo_fast::ep_update``: one iteration of expectation
propagation (E2E paper eqs. 6-10), real-equivalent model, batched over ``B`` vectors of
``K`` real nodes with an alphabet of ``L`` levels per node.

    Sigma = diag(A^{-1}),  mu = A^{-1} (rhs + gam),  A = gram + diag(lam)        (6)
    v_obs = Sigma / (1 - Sigma lam),  x_obs = (mu - Sigma gam) / (1 - Sigma lam)  (7b)-(7c)
    q(s_l) = softmax_l(z_l),  z_l = log p(s_l) - (s_l - x_obs)^2 / (2 v_obs)      (7a)
    x_hat = sum_l q_l s_l,  v_hat = sum_l q_l (s_l - x_hat)^2                     (8)
    lam' = 1/v_hat - 1/v_obs,  gam' = x_hat/v_hat - x_obs/v_obs                   (9)
    lam <- (1 - eta) lam' + eta lam,  gam <- (1 - eta) gam' + eta gam             (10)

Floors and rules: ``v_obs`` and ``v_hat`` are floored at ``v_min``, but the cavity mean
comes from the *unfloored* variance (flooring first scaled the mean by v_min / v: EP's
high-SNR error floor); where ``1 - Sigma lam <= 0`` (not a proper Gaussian, by rounding)
the LMMSE posterior ``(mu, Sigma)`` stands in for the cavity. Where ``lam' <= 0`` (not a
precision; also NaN), or where ``keep`` is set (GEPNet's absent nodes), the previous
``(lam, gam)`` are kept before damping. The softmax clamps exponents at -80 below each
node's maximum (their weight is e^-80 or less).

Why the split at the cavity: GEPNet puts its GNN between (7) and (8) -- it reads
``(x_obs, v_obs)`` and gives the logits ``z`` of (8) itself -- so :func:`ep_cavity` is
(6)-(7) and :func:`ep_update` is (8)-(10) taking ``logits``, with EP's Gaussian logits
``z`` above computed inside when ``log_prior`` is given instead. ``ep_cavity(updates=n)``
first runs ``n`` whole EP iterations (6)-(10) with the Gaussian logits: EP's loop of
``n + 1`` iterations as one call, so the cpu backend keeps each group of vectors' matrix,
precisions and cavity in cache across all of them instead of re-reading ``gram`` and
launching two ops per iteration (the ``ep`` detector's inference path). Its gradient
replays the loop through the two steps' backwards.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from mimo_fast.ops import eager
from mimo_fast.ops import registry
from mimo_fast.ops import validate as V
from mimo_fast.ops.ep_lmmse import NotPositiveDefiniteError
from mimo_fast.ops.ep_lmmse import check as _check_lmmse

CAVITY = "ep_cavity"
UPDATE = "ep_update"


# ----------------------------------------------------------------- checks
def check_scalars(op, damping, v_min, updates=None) -> None:
    if isinstance(v_min, bool) or not isinstance(v_min, (int, float)) or not (math.isfinite(v_min) and v_min > 0):
        raise ValueError(f"{op}: v_min must be a finite float > 0, got {v_min!r}")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0.0 <= damping < 1.0:
        raise ValueError(f"{op}: damping must be a float in [0, 1), got {damping!r}")
    if updates is not None and (isinstance(updates, bool) or not isinstance(updates, int) or updates < 0):
        raise ValueError(f"{op}: updates must be an int >= 0, got {updates!r}")


def _check_alphabet(op, K, levels, log_prior, ref, ref_name) -> None:
    V.tensor("levels", levels, op)
    V.ndim("levels", levels, 2, op, ("K", "L"))
    V.shape("levels", levels, (K, levels.shape[1]), op, ("K", "L"))
    V.positive_size("levels", levels.shape[1], "level (L >= 1)", op)
    V.same_dtype("levels", levels, ref.dtype, ref_name, op)
    V.same_device("levels", levels, ref, ref_name, op)
    if log_prior is not None:
        V.tensor("log_prior", log_prior, op)
        V.shape("log_prior", log_prior, tuple(levels.shape), op, ("K", "L"))
        V.same_dtype("log_prior", log_prior, ref.dtype, ref_name, op)
        V.same_device("log_prior", log_prior, ref, ref_name, op)


def check_cavity(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min) -> None:
    op = CAVITY
    _check_lmmse(gram, rhs, lam, gam, op)
    K = gram.shape[-1]
    check_scalars(op, damping, v_min, updates)
    if (levels is None) != (log_prior is None):
        raise ValueError(f"{op}: levels and log_prior go together (the prior of EP's updates); got only one")
    if levels is None:
        if updates:
            raise ValueError(f"{op}: updates={updates} needs the prior: pass levels and log_prior")
        return
    _check_alphabet(op, K, levels, log_prior, gram, "gram")


def check_update(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min) -> None:
    op = UPDATE
    for name, t in (("x_obs", x_obs), ("v_obs", v_obs), ("lam", lam), ("gam", gam)):
        V.tensor(name, t, op)
    V.dtype_in("x_obs", x_obs, V.REAL_DTYPES, op)
    V.ndim("x_obs", x_obs, 2, op, ("B", "K"))
    B, K = x_obs.shape
    V.positive_size("x_obs", K, "node (K >= 1)", op)
    for name, t in (("v_obs", v_obs), ("lam", lam), ("gam", gam)):
        V.shape(name, t, (B, K), op, ("B", "K"))
        V.same_dtype(name, t, x_obs.dtype, "x_obs", op)
        V.same_device(name, t, x_obs, "x_obs", op)
    check_scalars(op, damping, v_min)
    if (log_prior is None) == (logits is None):
        raise ValueError(f"{op}: pass exactly one of log_prior (EP's Gaussian cavity times the prior) "
                         "and logits (a posterior of its own, e.g. GEPNet's readout)")
    _check_alphabet(op, K, levels, log_prior, x_obs, "x_obs")
    if logits is not None:
        V.tensor("logits", logits, op)
        V.shape("logits", logits, (B, K, levels.shape[1]), op, ("B", "K", "L"))
        V.same_dtype("logits", logits, x_obs.dtype, "x_obs", op)
        V.same_device("logits", logits, x_obs, "x_obs", op)
    if keep is not None:
        V.tensor("keep", keep, op)
        if keep.dtype != torch.bool:
            raise TypeError(f"{op}: keep must be a bool tensor, got {keep.dtype}")
        V.shape("keep", keep, (B, K), op, ("B", "K"))
        V.same_device("keep", keep, x_obs, "x_obs", op)


def _raise_on_failure(info: Tensor) -> None:
    if info.device.type != "cpu" and not bool(info.ne(0).any()):
        return          # one sync on a GPU; nonzero() below would cost a second
    bad = (info != 0).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        order = int(info[b])
        raise NotPositiveDefiniteError(
            f"{CAVITY}: A = gram + diag(lam) is not positive definite for batch index {b} (leading minor "
            f"of order {order}, first failing iteration); {bad.shape[0]} matrix(es) failed",
            batch_index=b, order=order)


def _present(*named):
    return [(n, t) for n, t in named if t is not None]


# ----------------------------------------------------------------- ep_cavity
def _cavity_forward(gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor, levels: Optional[Tensor],
                    log_prior: Optional[Tensor], updates: int, damping: float, v_min: float, backend: str,
                    check_errors: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    check_cavity(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min)
    if V.value_checks_enabled():
        V.values(CAVITY, _present(("gram", gram), ("rhs", rhs), ("lam", lam), ("gam", gam),
                                  ("levels", levels), ("log_prior", log_prior)), [("lam", lam, True)])
    impl = registry.resolve(CAVITY, backend, (gram, rhs)).ops[CAVITY]
    x, v, mu, Sigma, info = impl.forward(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min)
    if check_errors:
        _raise_on_failure(info)
    return x, v, mu, Sigma, info


_cavity_op = torch.library.custom_op("mimo_fast::ep_cavity", mutates_args=())(_cavity_forward)


@_cavity_op.register_fake
def _(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min, backend, check_errors):
    check_cavity(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min)
    B, K = rhs.shape
    return (*(rhs.new_empty(B, K) for _ in range(4)), rhs.new_empty(B, dtype=torch.int32))


@torch.library.custom_op("mimo_fast::ep_cavity_backward", mutates_args=())
def _cavity_backward_op(g_x: Tensor, g_v: Tensor, gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor,
                        levels: Optional[Tensor], log_prior: Optional[Tensor], mu: Tensor, Sigma: Tensor,
                        updates: int, damping: float, v_min: float, backend: str) -> list[Tensor]:
    impl = registry.resolve(CAVITY, backend, (gram, rhs)).ops[CAVITY]
    grads = impl.backward(g_x.contiguous(), g_v.contiguous(), gram, rhs, lam, gam, levels, log_prior,
                          mu, Sigma, updates, damping, v_min)
    return list(grads[:4]) if levels is None else list(grads)


@_cavity_backward_op.register_fake
def _(g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma, updates, damping, v_min, backend):
    like = (gram, rhs, lam, gam) if levels is None else (gram, rhs, lam, gam, levels, log_prior)
    return [torch.empty_like(t) for t in like]


def _cavity_setup(ctx, inputs, output):
    gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min, backend, _ = inputs
    _, _, mu, Sigma, _ = output
    ctx.save_for_backward(gram, rhs, lam, gam, levels, log_prior, mu, Sigma)
    ctx.args = (updates, damping, v_min, backend)


def _cavity_backward(ctx, g_x, g_v, _g_mu, _g_Sigma, _g_info):
    gram, rhs, lam, gam, levels, log_prior, mu, Sigma = ctx.saved_tensors
    g_x = torch.zeros_like(mu) if g_x is None else g_x
    g_v = torch.zeros_like(mu) if g_v is None else g_v
    grads = _cavity_backward_op(g_x, g_v, gram, rhs, lam, gam, levels, log_prior, mu, Sigma, *ctx.args)
    grads = list(grads) + [None] * (6 - len(grads))
    needs = ctx.needs_input_grad
    return (*[g if needs[i] else None for i, g in enumerate(grads)], None, None, None, None, None)


_cavity_op.register_autograd(_cavity_backward, setup_context=_cavity_setup)


def ep_cavity(gram: Tensor, rhs: Tensor, lam: Tensor, gam: Tensor, *, v_min: float,
              updates: int = 0, levels: Optional[Tensor] = None, log_prior: Optional[Tensor] = None,
              damping: float = 0.0, backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
    r"""The cavity (7) of the LMMSE posterior (6); see the module docstring for the formulas.

    Args:
        gram: ``(B, K, K)`` symmetric positive semi-definite, e.g. ``H_r^T H_r / sigma^2``
            (read through its symmetric part, as :func:`~mimo_fast.ops.ep_lmmse` does).
        rhs: ``(B, K)``, e.g. ``H_r^T y_r / sigma^2``.
        lam: ``(B, K)`` precisions, > 0; gam: ``(B, K)`` precision-times-means.
        v_min: floor on the cavity variance (and on ``v_hat`` in the updates).
        updates: run this many whole EP iterations (6)-(10) first (EP's loop of
            ``updates + 1`` iterations in one call); they need ``levels`` and ``log_prior``
            ``(K, L)``, the real alphabet of each node and its log-prior, and ``damping``.
        backend: ``None`` (fastest available) or a backend name.

    Returns:
        ``(x_obs, v_obs)``, each ``(B, K)``.

    Raises:
        NotPositiveDefiniteError: ``gram + diag(lam)`` is not positive definite (in any of
            the iterations); names the batch index.
    """
    for name, t in (("gram", gram), ("rhs", rhs), ("lam", lam), ("gam", gam)):
        V.tensor(name, t, CAVITY)
    run = eager.pick(CAVITY, _cavity_forward, _cavity_op, gram, rhs, lam, gam, levels, log_prior)
    x, v, _, _, _ = run(gram, rhs, lam, gam, levels, log_prior, updates, damping, v_min,
                        registry.backend_arg(backend), True)
    return x, v


# ----------------------------------------------------------------- ep_update
def _update_forward(x_obs: Tensor, v_obs: Tensor, lam: Tensor, gam: Tensor, levels: Tensor,
                    log_prior: Optional[Tensor], logits: Optional[Tensor], keep: Optional[Tensor],
                    damping: float, v_min: float, backend: str) -> tuple[Tensor, Tensor]:
    check_update(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min)
    if V.value_checks_enabled():
        V.values(UPDATE, _present(("x_obs", x_obs), ("v_obs", v_obs), ("lam", lam), ("gam", gam),
                                  ("levels", levels), ("log_prior", log_prior), ("logits", logits)),
                 [("v_obs", v_obs, True)])
    impl = registry.resolve(UPDATE, backend, (x_obs, v_obs)).ops[UPDATE]
    lam_new, gam_new = impl.forward(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min)
    return lam_new, gam_new


_update_op = torch.library.custom_op("mimo_fast::ep_update", mutates_args=())(_update_forward)


@_update_op.register_fake
def _(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min, backend):
    check_update(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min)
    return torch.empty_like(lam), torch.empty_like(gam)


@torch.library.custom_op("mimo_fast::ep_update_backward", mutates_args=())
def _update_backward_op(g_lam: Tensor, g_gam: Tensor, x_obs: Tensor, v_obs: Tensor, lam: Tensor,
                        gam: Tensor, levels: Tensor, log_prior: Optional[Tensor], logits: Optional[Tensor],
                        keep: Optional[Tensor], damping: float, v_min: float, backend: str) -> list[Tensor]:
    impl = registry.resolve(UPDATE, backend, (x_obs, v_obs)).ops[UPDATE]
    g = impl.backward(g_lam.contiguous(), g_gam.contiguous(), x_obs, v_obs, lam, gam, levels, log_prior,
                      logits, keep, damping, v_min)
    return [*g[:5], g[5] if logits is None else g[6]]


@_update_backward_op.register_fake
def _(g_lam, g_gam, x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min, backend):
    last = log_prior if logits is None else logits
    return [torch.empty_like(t) for t in (x_obs, v_obs, lam, gam, levels, last)]


def _update_setup(ctx, inputs, output):
    x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min, backend = inputs
    ctx.save_for_backward(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep)
    ctx.args = (damping, v_min, backend)
    ctx.has_logits = logits is not None


def _update_backward(ctx, g_lam, g_gam):
    x_obs, v_obs, lam, gam, levels, log_prior, logits, keep = ctx.saved_tensors
    g_lam = torch.zeros_like(lam) if g_lam is None else g_lam
    g_gam = torch.zeros_like(gam) if g_gam is None else g_gam
    g = _update_backward_op(g_lam, g_gam, x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, *ctx.args)
    grads = [*g[:5], None, g[5]] if ctx.has_logits else [*g[:5], g[5], None]
    needs = ctx.needs_input_grad
    return (*[gr if needs[i] else None for i, gr in enumerate(grads)], None, None, None, None)


_update_op.register_autograd(_update_backward, setup_context=_update_setup)


def ep_update(x_obs: Tensor, v_obs: Tensor, lam: Tensor, gam: Tensor, levels: Tensor, *,
              log_prior: Optional[Tensor] = None, logits: Optional[Tensor] = None,
              keep: Optional[Tensor] = None, damping: float, v_min: float,
              backend: Optional[str] = None) -> tuple[Tensor, Tensor]:
    r"""Moment matching (8), precision update (9) and damping (10); see the module docstring.

    Args:
        x_obs, v_obs: ``(B, K)`` the cavity (7), ``v_obs > 0``.
        lam, gam: ``(B, K)`` the previous precisions and precision-times-means.
        levels: ``(K, L)`` each node's real alphabet (PAM levels; for GEPNet's complex
            readout the real or imaginary parts of the ``L = Q`` points).
        log_prior: ``(K, L)``: ``q`` is EP's Gaussian cavity times this prior; or
        logits: ``(B, K, L)``: ``q = softmax(logits)`` (GEPNet's readout). Exactly one.
        keep: ``(B, K)`` bool or None: nodes whose ``(lam, gam)`` stay as they are.
        damping: eta of (10) in [0, 1) (the kept fraction of the previous values).
        v_min: floor on ``v_hat``.
        backend: ``None`` (fastest available) or a backend name.

    Returns:
        the new ``(lam, gam)``, each ``(B, K)``.
    """
    for name, t in (("x_obs", x_obs), ("v_obs", v_obs), ("lam", lam), ("gam", gam), ("levels", levels)):
        V.tensor(name, t, UPDATE)
    run = eager.pick(UPDATE, _update_forward, _update_op, x_obs, v_obs, lam, gam, levels, log_prior, logits, keep)
    return run(x_obs, v_obs, lam, gam, levels, log_prior, logits, keep, damping, v_min, registry.backend_arg(backend))
