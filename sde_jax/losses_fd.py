"""Finite-difference score matching (Pang et al. 2020) and regularised ISM (Kingma & LeCun 2010).

Score-matching objectives contain derivatives of the model in ``x``: the Jacobian trace of a score network
(ISM), its Jacobian-vector products along random directions (SSM), or, for an energy model (a network
``log p~(x)``), the gradient and the Hessian. Pang, Xu, Li, Song, Ermon, Zhu 2020 ("Efficient learning of
generative models via finite-difference score matching") replace each directional derivative by a finite
difference of the model along the direction, so a loss needs only forward evaluations of the network (one
batched call on the perturbed copies) and a single reverse pass for the parameter gradient.

Two kinds of model:

* **score networks** ``score_fn(x) -> [B, ...]`` (or ``score_fn(x, t)``): :func:`fd_ism_loss`,
  :func:`fd_ssm_loss` (and SSM-VR);
* **energy models** ``log_prob_fn(x) -> [B]`` (or ``log_prob_fn(x, t)``), an unnormalised log-density whose
  score is its gradient (:mod:`sde_jax.models.energy`): :func:`fd_energy_ism_loss`, :func:`fd_energy_ssm_loss`,
  :func:`fd_energy_dsm_loss`, and :func:`regularized_ism_loss` (Kingma & LeCun's curvature penalty).
  Denoising score matching of a *score* network has no derivative in it, so its FD version exists only for
  energy models (where the score itself is a derivative).

Finite-difference schemes (``scheme``), for a direction ``v`` and a step ``h`` along it:

=========  ======================================================  =====================================  ========
scheme     first directional derivative ``v . grad f``             second ``v^T (grad^2 f) v``             error
=========  ======================================================  =====================================  ========
central    ``(f(x + h v) - f(x - h v)) / (2 h)``                   ``(f(x+hv) + f(x-hv) - 2 f(x)) / h^2``  O(h^2)
forward    ``(f(x + h v) - f(x)) / h``                             ``(f(x+2hv) - 2 f(x+hv) + f(x)) / h^2`` O(h)
exact      ``jax.jvp`` (autodiff)                                  ``jax.jvp`` of ``jax.grad``             --
=========  ======================================================  =====================================  ========

For a score network the derivative needed is the projected Jacobian ``v^T (grad s) v``, i.e. the first
directional derivative of ``v . s``; the central scheme also gives ``s(x) = (s(x+hv) + s(x-hv))/2 + O(h^2)``
(used for the norm terms, as Pang et al. do), the forward scheme evaluates ``s(x)``. ``"central"`` is the
paper's (second order); ``"forward"`` is first order; ``"exact"`` is the autodiff counterpart with the *same*
directions, so ``loss(scheme="central", fd_eps) - loss(scheme="exact")`` is the FD error, ``O(fd_eps^2)``.

Step size: ``fd_eps`` is the length of the step in ``x``. Sliced objectives use directions ``v`` with
``E[v v^T] = I`` (``"sphere"``: uniform on the sphere of radius ``sqrt(D)``, Pang et al.'s choice;
``"rademacher"``; ``"gaussian"``) and step ``h = fd_eps / sqrt(D)`` along them, so ``||h v|| = fd_eps``
(exactly for sphere and Rademacher, in mean square for Gaussian). ISM uses the ``D`` coordinate directions
``e_i`` with ``h = fd_eps``. In float32 the round-off of a second difference grows like ``ulp(f) / h^2``: keep
``fd_eps`` near the paper's ``0.1`` for energies at the data's scale; float64 tolerates ``1e-3``.

Every loss is ``loss_fn(model_fn, key, batch) -> (loss, aux)`` with the reductions of :mod:`sde_jax.losses`
(``reduce_mean=False``: the ``1/2 sum`` convention; ``True``: divide by ``D``). Directional derivatives are
estimated for the whole batch in one network call on ``[K B, ...]`` perturbed copies (``K = 2M`` central,
``M + 1`` forward, ``M`` projections), so the model must treat examples independently (every network here
does); the ``"exact"`` scheme is per example (``jax.vmap``) like :mod:`sde_jax.losses`.

References:
  * Pang, Xu, Li, Song, Ermon, Zhu 2020, "Efficient learning of generative models via finite-difference score
    matching", NeurIPS (FD-SSM, FD-DSM; directions on the sphere, ``eps = 0.1``).
  * Kingma & LeCun 2010, "Regularized estimation of image statistics by score matching", NeurIPS (the penalty
    ``lambda sum_i (d^2 log p / dx_i^2)^2``).
  * Hyvärinen 2005 (ISM); Song, Garg, Shi, Ermon 2020 (SSM, SSM-VR); Vincent 2011 (DSM).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax import losses as L
from sde_jax.sdes import SDE, check_score

__all__ = [
    "SCHEMES",
    "DIRECTIONS",
    "sample_directions",
    "fd_ism_per_example",
    "fd_ssm_per_example",
    "fd_energy_ism_per_example",
    "fd_energy_ssm_per_example",
    "fd_ism_loss",
    "fd_ssm_loss",
    "fd_energy_ism_loss",
    "fd_energy_ssm_loss",
    "fd_energy_dsm_loss",
    "regularized_ism_loss",
    "get_sde_fd_loss_fn",
    "FD_SDE_METHODS",
]

SCHEMES = ("central", "forward", "exact")
"""Finite-difference schemes: ``"central"`` (O(h^2), the paper's), ``"forward"`` (O(h)), ``"exact"`` (autodiff)."""


def _sphere(key, shape, dtype):
    g = jax.random.normal(key, shape, dtype)
    axes = tuple(range(2, len(shape)))
    return g * jnp.sqrt(math.prod(shape[2:]) / jnp.sum(g * g, axis=axes, keepdims=True))


DIRECTIONS = {
    "sphere": _sphere,
    "gaussian": lambda key, shape, dtype: jax.random.normal(key, shape, dtype),
    "rademacher": lambda key, shape, dtype: jax.random.rademacher(key, shape, dtype),
}
"""Direction distributions with ``E[v v^T] = I``: name -> ``sample(key, [M, B, ...], dtype)``."""


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------
def _check_scheme(scheme):
    C.lookup(dict.fromkeys(SCHEMES), scheme, "scheme")


def _check_direction(projection):
    C.lookup(DIRECTIONS, projection, "projection")


def _check_fd_args(scheme, fd_eps, x, v=None):
    _check_scheme(scheme)
    C.check_positive("fd_eps", fd_eps)
    if v is not None and jnp.shape(v)[1:] != jnp.shape(x):
        raise ValueError(f"v must have shape [M, *x.shape] = [M, {', '.join(map(str, x.shape))}]; "
                         f"got {jnp.shape(v)}.")


def _dim(x):
    return math.prod(x.shape[1:])


def sample_directions(key, shape, projection="sphere", dtype=None):
    """``[M, B, ...]`` directions with ``E[v v^T] = I`` per example (see :data:`DIRECTIONS`).

    Args:
      key: PRNG key.
      shape: ``(M, B, ...)``: ``M`` directions for each of ``B`` examples of shape ``...``.
      projection: ``"sphere"`` (radius ``sqrt(D)``), ``"gaussian"`` or ``"rademacher"``.
      dtype: float dtype (default: JAX's default float).
    """
    _check_direction(projection)
    dtype = jnp.result_type(float) if dtype is None else dtype
    return DIRECTIONS[projection](key, tuple(shape), dtype)


# --------------------------------------------------------------------------------------------------
# One network call on K perturbed copies of the batch
# --------------------------------------------------------------------------------------------------
def _stacked(fn, t):
    """``xs: [K, B, ...] -> fn`` evaluated on the ``K B`` copies in one call, reshaped to ``[K, B, ...]``
    (with times, ``t: [B]`` is tiled so that copy ``k`` of example ``b`` keeps ``t[b]``)."""

    def g(xs):
        k, b = xs.shape[:2]
        flat = jnp.reshape(xs, (k * b,) + xs.shape[2:])
        out = fn(flat) if t is None else fn(flat, jnp.tile(t, k))
        return jnp.reshape(out, (k, b) + jnp.shape(out)[1:])

    return g


def _score_stack(score_fn, t):
    ev = _stacked(score_fn, t)

    def g(xs):
        out = ev(xs)
        check_score(out, xs)
        return out

    return g


def _energy_stack(log_prob_fn, t):
    ev = _stacked(log_prob_fn, t)

    def g(xs):
        out = ev(xs)
        if jnp.shape(out) != jnp.shape(xs)[:2]:
            raise ValueError(f"log_prob_fn(x) must return one value per example, shape [B]; got shape "
                             f"{jnp.shape(out)[1:]} for a batch of {xs.shape[1]}.")
        return out

    return g


def _basis(x):
    """The ``D`` coordinate directions, ``[D, 1, ...]`` in the shape of one example."""
    d = _dim(x)
    return jnp.reshape(jnp.eye(d, dtype=x.dtype), (d, 1) + x.shape[1:])


def _dot(a, b):
    """Inner product over the data axes of ``[..., B, *data]`` arrays (data rank from ``b``'s last axes)."""
    return jnp.sum(jnp.reshape(a * b, a.shape[:2] + (-1,)), axis=-1)


def _example_fn(fn, t):
    if t is None:
        return (lambda xi: fn(xi[None])[0]), ()
    return (lambda xi, ti: fn(xi[None], ti[None])[0]), (t,)


# --------------------------------------------------------------------------------------------------
# Score networks
# --------------------------------------------------------------------------------------------------
def fd_ism_per_example(score_fn, x, *, fd_eps=0.1, scheme="central", t=None):
    """Diagonal of the Jacobian of ``score_fn`` and ``1/2 ||s(x)||^2`` per example, by finite differences.

    .. math::  \\partial_i s_i(x) \\approx \\frac{s_i(x + h e_i) - s_i(x - h e_i)}{2h} \\;(\\text{central}),
               \\qquad \\frac{s_i(x + h e_i) - s_i(x)}{h} \\;(\\text{forward}), \\qquad h = \\text{fd\\_eps},

    so ``sum_i`` of the diagonal is ISM's trace (Hyvärinen 2005, Eq. 4). Costs ``2D + 1`` (central) or ``D + 1``
    (forward) network evaluations per example, in one call; ``"exact"`` uses ``D`` JVPs (``jax.jacfwd``).

    Args:
      score_fn: ``score_fn(x) -> [B, ...]`` (or ``score_fn(x, t)`` with ``t``).
      x: ``[B, ...]``.
      fd_eps: step ``h`` along each coordinate (> 0).
      scheme: ``"central"``, ``"forward"`` or ``"exact"``.
      t: optional times ``[B]``.

    Returns:
      ``(jac_diag [B, D], half_sq_norm [B])`` (``D`` = number of data entries per example).
    """
    _check_fd_args(scheme, fd_eps, x)
    d, b = _dim(x), x.shape[0]
    if scheme == "exact":
        f, extra = _example_fn(score_fn, t)

        def one(xi, *ti):
            jac = jnp.reshape(jax.jacfwd(f)(xi, *ti), (d, d))
            return jnp.diagonal(jac), 0.5 * jnp.sum(jnp.square(f(xi, *ti)))

        return jax.vmap(one)(x, *extra)
    h = jnp.asarray(fd_eps, x.dtype)
    e = _basis(x)                                                  # [D, 1, ...]
    ev = _score_stack(score_fn, t)
    if scheme == "central":
        out = ev(jnp.concatenate([x[None], x[None] + h * e, x[None] - h * e], axis=0))
        s0, sp, sm = out[0], out[1:d + 1], out[d + 1:]
        diag = _dot(sp - sm, e) / (2.0 * h)                        # [D, B]
    else:
        out = ev(jnp.concatenate([x[None], x[None] + h * e], axis=0))
        s0, sp = out[0], out[1:]
        diag = _dot(sp - s0[None], e) / h
    half_sq = 0.5 * jnp.sum(jnp.reshape(jnp.square(s0), (b, -1)), axis=-1)
    return diag.T, half_sq


def fd_ssm_per_example(score_fn, x, v, *, fd_eps=0.1, scheme="central", t=None):
    """Sliced score matching terms with the projected Jacobian by finite differences (Pang et al. 2020).

    With ``h = fd_eps / sqrt(D)`` and directions ``v`` (``E[v v^T] = I``):

    .. math::  v^\\top \\nabla s\\, v \\approx \\frac{v^\\top (s(x + hv) - s(x - hv))}{2h}, \\qquad
               s(x) \\approx \\tfrac12 (s(x + hv) + s(x - hv))   \\quad(\\text{central, } O(h^2)),

    or ``v^T (s(x + hv) - s(x)) / h`` with ``s(x)`` evaluated (forward, ``O(h)``). ``"exact"`` is
    :func:`sde_jax.losses.ssm_per_example` (one JVP per direction).

    Args:
      score_fn: ``score_fn(x) -> [B, ...]`` (or ``score_fn(x, t)`` with ``t``).
      x: ``[B, ...]``.
      v: ``[M, B, ...]`` directions.
      fd_eps: length of the step ``||h v||`` (> 0).
      scheme: ``"central"``, ``"forward"`` or ``"exact"``.
      t: optional times ``[B]``.

    Returns:
      ``(vjv [M, B], half_sq_proj [M, B], half_sq_norm [B])`` as :func:`sde_jax.losses.ssm_per_example`:
      ``v^T grad s v``, ``1/2 (v . s)^2``, ``1/2 ||s||^2``.
    """
    _check_fd_args(scheme, fd_eps, x, v)
    if scheme == "exact":
        return L.ssm_per_example(score_fn, x, v, t)
    m = v.shape[0]
    h = jnp.asarray(fd_eps / math.sqrt(_dim(x)), x.dtype)
    ev = _score_stack(score_fn, t)
    if scheme == "central":
        out = ev(jnp.concatenate([x[None] + h * v, x[None] - h * v], axis=0))
        sp, sm = out[:m], out[m:]
        vjv = _dot(sp - sm, v) / (2.0 * h)
        s_hat = 0.5 * (sp + sm)                                   # [M, B, ...]: s(x) + O(h^2), one per direction
        proj = 0.5 * jnp.square(_dot(s_hat, v))
        norm = 0.5 * jnp.mean(jnp.sum(jnp.reshape(jnp.square(s_hat), (m, x.shape[0], -1)), axis=-1), axis=0)
        return vjv, proj, norm
    out = ev(jnp.concatenate([x[None], x[None] + h * v], axis=0))
    s0, sp = out[0], out[1:]
    vjv = _dot(sp - s0[None], v) / h
    proj = 0.5 * jnp.square(_dot(jnp.broadcast_to(s0, v.shape), v))
    norm = 0.5 * jnp.sum(jnp.reshape(jnp.square(s0), (x.shape[0], -1)), axis=-1)
    return vjv, proj, norm


def fd_ism_loss(score_fn, key, batch, *, fd_eps=0.1, scheme="central", reduce_mean=False):
    """FD implicit score matching: ``E[sum_i d_i s_i + 1/2 ||s||^2]`` with the diagonal by finite differences.

    The counterpart of :func:`sde_jax.losses.implicit_score_matching_loss` (``scheme="exact"`` equals it);
    ``key`` is unused. Meant for low dimension (``2D + 1`` evaluations per example).

    Returns:
      ``(loss, {"loss", "trace_term", "norm_term"})``.
    """
    del key
    L._check_batch_array(batch)
    diag, norm = fd_ism_per_example(score_fn, batch, fd_eps=fd_eps, scheme=scheme)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    tr = jnp.sum(diag, axis=-1)
    loss = c * jnp.mean(tr + norm)
    return loss, {"loss": loss, "trace_term": c * jnp.mean(tr), "norm_term": c * jnp.mean(norm)}


def fd_ssm_loss(score_fn, key, batch, *, fd_eps=0.1, scheme="central", num_projections=1, projection="sphere",
                variance_reduction=False, reduce_mean=False):
    """FD sliced score matching (Pang et al. 2020; FD-SSM-VR with ``variance_reduction``).

    .. math::  J = \\mathbb E_{x, v}\\Big[\\frac{v^\\top(s(x+hv) - s(x-hv))}{2h}
               + \\tfrac12\\big(v^\\top \\bar s\\big)^2\\Big], \\qquad \\bar s = \\tfrac12(s(x+hv) + s(x-hv)),

    SSM-VR replaces ``1/2 (v . s)^2`` by ``1/2 ||s||^2`` (Song et al. 2020, Eq. 8). ``scheme="exact"`` with
    ``projection="gaussian"`` or ``"rademacher"`` is :func:`sde_jax.losses.sliced_score_matching_loss` with
    the same draws.

    Args:
      score_fn: ``score_fn(x) -> [B, ...]``.
      key: PRNG key for the directions.
      batch: ``[B, ...]``.
      fd_eps: step length (> 0); scheme: see the module table.
      num_projections: ``M`` directions per example.
      projection: ``"sphere"`` (Pang et al.), ``"gaussian"`` or ``"rademacher"``.
      variance_reduction: SSM-VR.
      reduce_mean: divide by ``D`` instead of the ``1/2 sum`` convention.

    Returns:
      ``(loss, {"loss", "jacobian_term", "norm_term"})``.
    """
    L._check_batch_array(batch)
    C.check_int("num_projections", num_projections)
    v = sample_directions(key, (num_projections,) + batch.shape, projection, batch.dtype)
    vjv, proj, norm = fd_ssm_per_example(score_fn, batch, v, fd_eps=fd_eps, scheme=scheme)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    jac_term = c * jnp.mean(vjv)
    norm_term = c * (jnp.mean(norm) if variance_reduction else jnp.mean(proj))
    loss = jac_term + norm_term
    return loss, {"loss": loss, "jacobian_term": jac_term, "norm_term": norm_term}


# --------------------------------------------------------------------------------------------------
# Energy models: log_prob_fn(x) -> [B]
# --------------------------------------------------------------------------------------------------
def _energy_exact_fns(log_prob_fn, t):
    """Per-example ``f(x_i)``, its gradient, and the second directional derivative ``v^T H v``."""
    f, extra = _example_fn(log_prob_fn, t)

    def value(xi, *ti):
        out = f(xi, *ti)
        if jnp.shape(out) != ():
            raise ValueError(f"log_prob_fn(x) must return one value per example, shape [B]; got per-example "
                             f"shape {jnp.shape(out)}.")
        return out

    grad = jax.grad(value)

    def d1_d2(xi, vi, *ti):
        g, hv = jax.jvp(lambda y: grad(y, *ti), (xi,), (vi,))
        return jnp.sum(g * vi), jnp.sum(hv * vi), g

    return value, grad, d1_d2, extra


def _energy_fd(ev, x, dirs, h, scheme):
    """First and second directional derivatives of ``f`` along ``dirs: [K, B or 1, ...]`` (step ``h``)."""
    k = dirs.shape[0]
    dirs = jnp.broadcast_to(dirs, (k,) + x.shape)
    if scheme == "central":
        f = ev(jnp.concatenate([x[None], x[None] + h * dirs, x[None] - h * dirs], axis=0))
        f0, fp, fm = f[0], f[1:k + 1], f[k + 1:]
        return (fp - fm) / (2.0 * h), (fp + fm - 2.0 * f0[None]) / (h * h)
    f = ev(jnp.concatenate([x[None], x[None] + h * dirs, x[None] + 2.0 * h * dirs], axis=0))
    f0, f1, f2 = f[0], f[1:k + 1], f[k + 1:]
    return (f1 - f0[None]) / h, (f2 - 2.0 * f1 + f0[None]) / (h * h)


def fd_energy_ism_per_example(log_prob_fn, x, *, fd_eps=0.1, scheme="central", t=None):
    """Hessian diagonal and gradient of an energy model ``log_prob_fn`` per example, by finite differences.

    .. math::  \\partial_i^2 f \\approx \\frac{f(x + h e_i) + f(x - h e_i) - 2 f(x)}{h^2}, \\qquad
               \\partial_i f \\approx \\frac{f(x + h e_i) - f(x - h e_i)}{2h} \\quad(\\text{central}, O(h^2)),

    or the forward differences ``(f(x+2he_i) - 2f(x+he_i) + f(x))/h^2`` and ``(f(x+he_i) - f(x))/h`` (``O(h)``);
    ``h = fd_eps``; ``2D + 1`` scalar evaluations per example. ``"exact"``: ``jax.grad`` and ``D``
    forward-over-reverse Hessian-vector products.

    Args:
      log_prob_fn: ``log_prob_fn(x) -> [B]`` (or ``log_prob_fn(x, t)`` with ``t``), unnormalised.
      x: ``[B, ...]``; fd_eps: step (> 0); scheme: ``"central"``, ``"forward"``, ``"exact"``; t: times ``[B]``.

    Returns:
      ``(hess_diag [B, D], grad [B, D])``.
    """
    _check_fd_args(scheme, fd_eps, x)
    d = _dim(x)
    if scheme == "exact":
        _, grad, _, extra = _energy_exact_fns(log_prob_fn, t)

        def one(xi, *ti):
            g = jnp.reshape(grad(xi, *ti), (d,))
            hess = jnp.reshape(jax.jacfwd(lambda y: grad(y, *ti))(xi), (d, d))
            return jnp.diagonal(hess), g

        return jax.vmap(one)(x, *extra)
    d1, d2 = _energy_fd(_energy_stack(log_prob_fn, t), x, _basis(x), jnp.asarray(fd_eps, x.dtype), scheme)
    return d2.T, d1.T


def fd_energy_ssm_per_example(log_prob_fn, x, v, *, fd_eps=0.1, scheme="central", t=None):
    """First and second directional derivatives ``v . grad f`` and ``v^T (grad^2 f) v`` of an energy model.

    Central: ``(f(x+hv) - f(x-hv))/(2h)`` and ``(f(x+hv) + f(x-hv) - 2f(x))/h^2`` with ``h = fd_eps/sqrt(D)``
    (Pang et al. 2020, FD-SSM: three scalar evaluations per direction instead of a Hessian-vector product);
    forward: ``(f(x+hv) - f(x))/h`` and ``(f(x+2hv) - 2f(x+hv) + f(x))/h^2``; exact: autodiff.

    Returns:
      ``(d1 [M, B], d2 [M, B])``.
    """
    _check_fd_args(scheme, fd_eps, x, v)
    if scheme == "exact":
        _, _, d1_d2, extra = _energy_exact_fns(log_prob_fn, t)
        per_example = jax.vmap(lambda xi, vi, *ti: d1_d2(xi, vi, *ti)[:2])
        return jax.vmap(per_example, in_axes=(None, 0) + (None,) * len(extra))(x, v, *extra)
    h = jnp.asarray(fd_eps / math.sqrt(_dim(x)), x.dtype)
    return _energy_fd(_energy_stack(log_prob_fn, t), x, v, h, scheme)


def _energy_grad(log_prob_fn, x, t=None):
    """``grad_x log_prob_fn`` per example, ``[B, ...]`` (autodiff)."""
    _, grad, _, extra = _energy_exact_fns(log_prob_fn, t)
    return jax.vmap(grad)(x, *extra)


def fd_energy_ism_loss(log_prob_fn, key, batch, *, fd_eps=0.1, scheme="central", curvature_weight=0.0,
                       reduce_mean=False):
    """Implicit score matching of an energy model, derivative-free with the FD schemes (Hyvärinen 2005, Eq. 4).

    .. math::  J = \\mathbb E\\Big[\\sum_i \\partial_i^2 f + \\tfrac12 (\\partial_i f)^2
               + \\lambda\\, (\\partial_i^2 f)^2\\Big], \\qquad f = \\log \\tilde p,

    the last term Kingma & LeCun's (2010) curvature penalty (``lambda = curvature_weight``, default 0: plain
    ISM); see :func:`regularized_ism_loss`. ``key`` is unused.

    Returns:
      ``(loss, {"loss", "trace_term", "norm_term", "curvature_term"})``.
    """
    del key
    L._check_batch_array(batch)
    C.check_nonnegative("curvature_weight", curvature_weight)
    diag, grad = fd_energy_ism_per_example(log_prob_fn, batch, fd_eps=fd_eps, scheme=scheme)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    tr = c * jnp.mean(jnp.sum(diag, -1))
    norm = c * jnp.mean(0.5 * jnp.sum(jnp.square(grad), -1))
    curv = c * curvature_weight * jnp.mean(jnp.sum(jnp.square(diag), -1))
    loss = tr + norm + curv
    return loss, {"loss": loss, "trace_term": tr, "norm_term": norm, "curvature_term": curv}


def regularized_ism_loss(log_prob_fn, key, batch, *, curvature_weight, scheme="exact", fd_eps=0.1,
                         reduce_mean=False):
    """Regularised score matching (Kingma & LeCun 2010) of an energy model ``f = log p~``:

    .. math::  J_\\lambda = \\mathbb E\\Big[\\sum_i \\partial_i^2 f + \\tfrac12 (\\partial_i f)^2\\Big]
               + \\lambda\\, \\mathbb E\\Big[\\sum_i (\\partial_i^2 f)^2\\Big],

    ISM plus a penalty on the squared diagonal of the Hessian (the "curvature"), which Kingma & LeCun derive
    as the leading effect of Gaussian input noise and use against the instabilities of ISM with finite
    samples. For a Gaussian model ``f = -1/2 (x - mu)^T P (x - mu)`` the penalty is ``lambda sum_i P_ii^2``
    and, for diagonal ``P`` and data variance ``s_i``, the minimiser shrinks the precision to
    ``P_ii = 1 / (s_i + 2 lambda)``. The Hessian diagonal is exact by autodiff (``D`` Hessian-vector products)
    or finite differences (``scheme="central"``/``"forward"``, :func:`fd_energy_ism_per_example`).

    Returns:
      ``(loss, {"loss", "trace_term", "norm_term", "curvature_term"})``.
    """
    return fd_energy_ism_loss(log_prob_fn, key, batch, fd_eps=fd_eps, scheme=scheme,
                              curvature_weight=curvature_weight, reduce_mean=reduce_mean)


def fd_energy_ssm_loss(log_prob_fn, key, batch, *, fd_eps=0.1, scheme="central", num_projections=1,
                       projection="sphere", variance_reduction=False, reduce_mean=False):
    """FD sliced score matching of an energy model (Pang et al. 2020, FD-SSM).

    .. math::  J = \\mathbb E_{x, v}\\Big[\\frac{f(x+hv) + f(x-hv) - 2f(x)}{h^2}
               + \\tfrac18 \\Big(\\frac{f(x+hv) - f(x-hv)}{h}\\Big)^2\\Big],

    i.e. ``v^T H v + 1/2 (v . grad f)^2`` with both directional derivatives by central differences: three
    forward passes of the energy network and no input gradient. With ``variance_reduction`` the norm term is
    ``1/2 ||grad f||^2`` (SSM-VR), which needs the input gradient (one autodiff pass; the second derivative
    stays a finite difference).

    Returns:
      ``(loss, {"loss", "jacobian_term", "norm_term"})``.
    """
    L._check_batch_array(batch)
    C.check_int("num_projections", num_projections)
    v = sample_directions(key, (num_projections,) + batch.shape, projection, batch.dtype)
    d1, d2 = fd_energy_ssm_per_example(log_prob_fn, batch, v, fd_eps=fd_eps, scheme=scheme)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    jac_term = c * jnp.mean(d2)
    if variance_reduction:
        g = _energy_grad(log_prob_fn, batch)
        norm_term = c * jnp.mean(0.5 * jnp.sum(jnp.reshape(jnp.square(g), (batch.shape[0], -1)), -1))
    else:
        norm_term = c * jnp.mean(0.5 * jnp.square(d1))
    loss = jac_term + norm_term
    return loss, {"loss": loss, "jacobian_term": jac_term, "norm_term": norm_term}


def fd_energy_dsm_loss(log_prob_fn, key, batch, *, sigma, fd_eps=0.1, scheme="central", num_projections=1,
                       projection="sphere", reduce_mean=False):
    """FD denoising score matching of an energy model (Pang et al. 2020, FD-DSM; Vincent 2011, Eq. 9).

    With ``x~ = x + sigma z`` and directions ``v`` (``E[v v^T] = I``), ``||a||^2 = E_v (v . a)^2`` turns DSM's
    ``red ||grad f(x~) + z/sigma||^2`` into

    .. math::  \\ell = c\\, \\mathbb E_v\\Big(\\frac{f(\\tilde x + hv) - f(\\tilde x - hv)}{2h}
               + \\frac{v^\\top z}{\\sigma}\\Big)^2,

    ``c = 1/2`` (sum convention) or ``1/D`` (``reduce_mean``): two scalar evaluations per direction, no input
    gradient. ``scheme="exact"`` uses ``v . grad f`` (autodiff); averaged over directions it equals
    :func:`sde_jax.losses.denoising_score_matching_loss` of the model's score.

    Args:
      log_prob_fn: ``log_prob_fn(x) -> [B]``.
      key: PRNG key (noise and directions).
      batch: ``[B, ...]``; sigma: noise level (> 0); fd_eps, scheme, num_projections, projection: as
        :func:`fd_energy_ssm_loss`; reduce_mean: ``1/D`` instead of ``1/2``.

    Returns:
      ``(loss, {"loss"})``.
    """
    L._check_batch_array(batch)
    C.check_positive("sigma", sigma)
    C.check_int("num_projections", num_projections)
    key_z, key_v = jax.random.split(key)
    z = jax.random.normal(key_z, batch.shape, batch.dtype)
    xt = batch + sigma * z
    v = sample_directions(key_v, (num_projections,) + batch.shape, projection, batch.dtype)
    d1 = _energy_first_derivative(log_prob_fn, xt, v, fd_eps, scheme)
    c = 1.0 / _dim(batch) if reduce_mean else 0.5
    loss = c * jnp.mean(jnp.square(d1 + _dot(jnp.broadcast_to(z, v.shape), v) / sigma))
    return loss, {"loss": loss}


def _energy_first_derivative(log_prob_fn, x, v, fd_eps, scheme):
    """``v . grad f`` only, ``[M, B]``: two evaluations per direction (central), ``M + 1`` (forward) or one
    input gradient (exact). FD-DSM needs no second derivative."""
    _check_fd_args(scheme, fd_eps, x, v)
    if scheme == "exact":
        g = _energy_grad(log_prob_fn, x)
        return _dot(jnp.broadcast_to(g, v.shape), v)
    m = v.shape[0]
    h = jnp.asarray(fd_eps / math.sqrt(_dim(x)), x.dtype)
    ev = _energy_stack(log_prob_fn, None)
    if scheme == "central":
        f = ev(jnp.concatenate([x[None] + h * v, x[None] - h * v], axis=0))
        return (f[:m] - f[m:]) / (2.0 * h)
    f = ev(jnp.concatenate([x[None], x[None] + h * v], axis=0))
    return (f[1:] - f[0][None]) / h


# --------------------------------------------------------------------------------------------------
# Time-dependent score networks on the SDE's marginals (registered in sde_jax.losses.LOSSES)
# --------------------------------------------------------------------------------------------------
FD_SDE_METHODS = ("fd_ism", "fd_ssm", "fd_ssm_vr")


def get_sde_fd_loss_fn(sde: SDE, *, method="fd_ssm", fd_eps=0.1, scheme="central", num_projections=1,
                       projection="sphere", likelihood_weighting=False, eps=1e-5, reduce_mean=False) -> Callable:
    """FD-ISM / FD-SSM / FD-SSM-VR on the SDE's marginals ``p_t`` for a time-dependent ``score_fn(x, t)``.

    The finite-difference twin of :func:`sde_jax.losses.get_sde_score_matching_loss_fn`: ``t ~ U(eps, T)``,
    ``x_t = a(t) x_0 + s(t) z``, and the classical objective of ``x -> s_theta(x, t)`` at ``x_t`` weighted by
    ``lambda(t) = s(t)^2`` (or ``g(t)^2``), its derivatives by finite differences along ``x`` at fixed ``t``.
    The keys are split as in that function, so ``scheme="exact"`` with ``projection="gaussian"`` reproduces its
    ``"ism"``/``"ssm"``/``"ssm_vr"`` losses draw for draw.

    Args:
      sde: forward SDE.
      method: ``"fd_ism"``, ``"fd_ssm"`` or ``"fd_ssm_vr"``.
      fd_eps: FD step length (> 0); scheme: ``"central"``, ``"forward"``, ``"exact"``.
      num_projections, projection: directions of the sliced methods.
      likelihood_weighting: ``g(t)^2`` instead of ``s(t)^2``.
      eps: smallest time; reduce_mean: divide by ``D``.

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss", "t_mean", "jacobian_term", "norm_term"})``.
    """
    C.lookup(dict.fromkeys(FD_SDE_METHODS), method, "method")
    _check_scheme(scheme)
    _check_direction(projection)
    C.check_positive("fd_eps", fd_eps)
    C.check_int("num_projections", num_projections)
    C.check_eps(eps, sde)

    def loss_fn(score_fn, key, batch):
        L._check_batch_array(batch)
        t, xt, weight, key_v = L.sample_marginal(sde, key, batch, eps=eps, likelihood_weighting=likelihood_weighting)
        c = 1.0 / _dim(batch) if reduce_mean else 1.0
        if method == "fd_ism":
            diag, second = fd_ism_per_example(score_fn, xt, fd_eps=fd_eps, scheme=scheme, t=t)
            first = jnp.sum(diag, axis=-1)
        else:
            v = sample_directions(key_v, (num_projections,) + batch.shape, projection, batch.dtype)
            vjv, proj, norm = fd_ssm_per_example(score_fn, xt, v, fd_eps=fd_eps, scheme=scheme, t=t)
            first = jnp.mean(vjv, axis=0)
            second = norm if method == "fd_ssm_vr" else jnp.mean(proj, axis=0)
        loss = jnp.mean(c * weight * (first + second))
        return loss, {"loss": loss, "t_mean": jnp.mean(t), "jacobian_term": c * jnp.mean(weight * first),
                      "norm_term": c * jnp.mean(weight * second)}

    return loss_fn
