"""Adaptive-step reverse-SDE sampling ("Gotta Go Fast", Jolicoeur-Martineau et al. 2021, Algorithm 1).

Each example integrates the reverse-time SDE ``dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw`` from ``T`` down
to ``eps`` with its own step size ``h``, chosen by an embedded error estimate. One attempted step from ``t``:

.. math::

    x' = x - h\\,\\tilde f(x, t) + \\sqrt h\\, g(t) z, \\qquad
    \\tilde x = x' - h\\,\\tilde f(x', t - h) + \\sqrt h\\, g(t - h) z, \\qquad x'' = \\tfrac12 (x' + \\tilde x),

(Euler--Maruyama, then the improved-Euler (stochastic Heun) extrapolation with the same ``z``;
``f~ = f - g^2 score``), two score evaluations. The scaled error

.. math::

    E_2 = \\frac{1}{\\sqrt{n}} \\Big\\| \\frac{x' - x''}{\\delta} \\Big\\|_2, \\qquad
    \\delta = \\max\\big(\\epsilon_{abs},\\ \\epsilon_{rel} \\max(|x'|, |x'_{prev}|)\\big)

(``n`` the example's dimension, ``x'_prev`` the last accepted ``x'``) accepts the step when ``E_2 <= 1`` (then
``x <- x''``, ``t <- t - h``), and the next step size is ``h <- min(t - eps, theta h E_2^{-r})`` either way.
Defaults are the paper's: ``atol = 0.0078`` (for data in ``[-1, 1]``: scale it with your data), ``rtol = 0.05``,
``h_init = 0.01``, ``theta = 0.9``, ``r = 0.9``; the last step is clipped to land on ``eps`` and ``denoise``
then applies Tweedie's formula at ``eps`` (the paper's final denoising step).

Every example is its own ``lax.while_loop`` (``vmap``-ed; under a mesh one loop per device via
:func:`sde_jax.flow.map_examples`, no cross-device communication inside it) with its own noise
(``fold_in(key_b, attempt)``), so a sample does not depend on its batch-mates. A rejected step draws new noise
(as in the paper). ``nfe``: the batched loop runs until its slowest example is done, so the evaluations made
are ``2 x`` the largest per-example number of attempted steps (plus one for ``denoise``); per-example counts are
in the info. Failure policy as :mod:`sde_jax.flow`: an example that exhausts ``max_steps`` or turns non-finite is
NaN, named in a :class:`sde_jax.flow.FlowWarning`, the others are unaffected.
"""
from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax import _jit, flow
from sde_jax.sdes import reverse_sde, tweedie_denoise

__all__ = ["adaptive_sde_sample"]


def _solve_one(x0, key, rep, max_steps, batch):
    """One example (no batch axis) from ``T`` to ``eps``: ``(x, attempts, status, t_stop)``. The reverse SDE's
    coefficients are evaluated for the whole batch of ``batch`` examples under the ``vmap``
    (:func:`sde_jax.flow.batch_native`: one ``score_fn`` call on the batch, each example at its own time)."""
    sde, score_fn, eps, rtol, atol, h_init, safety, exponent = rep
    dtype = x0.dtype
    n = x0.size

    def one(x, t):
        d, g = reverse_sde(sde, score_fn, x[None], jnp.full((1,), t, dtype))
        return d[0], g[0]

    drift = flow.batch_native(one, lambda x, t: reverse_sde(sde, score_fn, x, t), (x0, jnp.zeros((), dtype)), batch)

    def cond(state):
        x, _, t, _, k, ok = state
        return (t > eps) & (k < max_steps) & ok

    def body(state):
        x, x_prev, t, h, k, _ = state
        h = jnp.minimum(h, t - eps)
        t_next = jnp.where(h >= t - eps, eps, t - h)   # land exactly on eps
        z = jax.random.normal(jax.random.fold_in(key, k), x.shape, dtype)
        f0, g0 = drift(x, t)
        x1 = x - h * f0 + jnp.sqrt(h) * g0 * z
        f1, g1 = drift(x1, t_next)
        x2 = 0.5 * (x + (x1 - h * f1 + jnp.sqrt(h) * g1 * z))
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x1), jnp.abs(x_prev)))
        err = jnp.sqrt(jnp.sum(((x1 - x2) / delta) ** 2) / n)
        finite = jnp.all(jnp.isfinite(x2)) & jnp.isfinite(err)
        accept = (err <= 1.0) & finite
        x, x_prev, t = jnp.where(accept, x2, x), jnp.where(accept, x1, x_prev), jnp.where(accept, t_next, t)
        h_new = safety * h * jnp.maximum(err, 1e-10) ** (-exponent)
        return x, x_prev, t, jnp.minimum(h_new, jnp.maximum(t - eps, 0.0)), k + 1, finite

    t0 = jnp.asarray(sde.T, dtype)
    state = (x0, x0, t0, jnp.minimum(h_init, t0 - eps).astype(dtype), jnp.asarray(0, jnp.int32), jnp.asarray(True))
    x, _, t, _, attempts, finite = jax.lax.while_loop(cond, body, state)
    status = jnp.where(~finite, flow.STATUS_NONFINITE, jnp.where(t > eps, flow.STATUS_MAX_STEPS, flow.STATUS_OK))
    x = jnp.where(status == flow.STATUS_OK, x, jnp.nan)
    return x, attempts, status.astype(jnp.int32), t


@eqx.filter_jit
def _loop(key, sde, score_fn, options, shape, max_steps, denoise, dtype, mesh, x_init):
    constrain = _jit.constrainer(mesh)
    key_prior, key_loop = jax.random.split(key)
    x = sde.prior_sampling(key_prior, shape, dtype) if x_init is None else x_init
    keys = jax.random.split(key_loop, shape[0])
    eps = options[0]

    batch = flow.per_device_batch(shape[0], mesh)

    def one(xi, ki, rep):
        xi, attempts, status, t_stop = _solve_one(xi, ki, rep, max_steps, batch)
        return xi, flow.FlowInfo(status, t_stop, 2 * attempts)

    x, info = flow.map_examples(one, (constrain(x), keys), (sde, score_fn) + tuple(options), mesh)
    if denoise:
        x = tweedie_denoise(sde, score_fn, x, jnp.full((shape[0],), eps, dtype))
    return constrain(x), info


def adaptive_sde_sample(key, sde, score_fn, shape, *, rtol=0.05, atol=0.0078, h_init=0.01, safety=0.9,
                        exponent=0.9, eps=1e-3, denoise=True, max_steps=4096, x_init=None, mesh=None, dtype=None,
                        return_info=False):
    """Sample the reverse SDE with per-example error-controlled steps (module docstring).

    Args:
      key: PRNG key.
      sde: a VE, VP or sub-VP SDE.
      score_fn: ``score_fn(x, t) -> score``; it must treat examples independently (no batch statistics) and be
        ``vmap``-able: each example is solved on its own, and ``score_fn`` is called on the whole batch (per
        device), each example at its own time and state.
      shape: sample shape ``[B, ...]``.
      rtol, atol: the relative and absolute tolerances ``epsilon_rel``, ``epsilon_abs`` (> 0).
      h_init: first step size (> 0). safety: ``theta`` in ``(0, 1]``. exponent: ``r`` (> 0).
      eps: end time in ``(0, T)``.
      denoise: Tweedie's formula at ``eps`` (one more evaluation).
      max_steps: attempted steps per example before it is declared failed (NaN).
      x_init: optional starting points at ``T``. mesh: optional device mesh. dtype: sample dtype.
      return_info: also return a :class:`sde_jax.flow.FlowInfo` (per-example status, stop time, NFE).

    Returns:
      ``(x, nfe)`` (or ``(x, nfe, info)``); ``nfe`` (an int32 array) counts the batched evaluations.

    New values of the tolerances, ``h_init``, ``safety``, ``exponent``, ``eps``, the key and the SDE's and score
    function's arrays do not recompile.
    """
    shape = C.check_shape(shape)
    C.check_key(key)
    C.check_mesh(mesh, shape[0])
    dtype = _jit.default_dtype(dtype)
    options = (C.check_eps(eps, sde), C.check_positive("rtol", rtol), C.check_positive("atol", atol),
               C.check_positive("h_init", h_init), C.check_open_interval("safety", safety, 0.0, 1.0 + 1e-12),
               C.check_positive("exponent", exponent))
    max_steps = C.check_int("max_steps", max_steps)
    if x_init is not None and jnp.shape(x_init) != shape:
        raise ValueError(f"x_init must have shape {shape}; got {jnp.shape(x_init)}.")
    x, info = _loop(key, _jit.as_leaves(sde, dtype, convert_arrays=True), _jit.as_leaves(score_fn, dtype),
                    tuple(jnp.asarray(o, dtype) for o in options), shape, max_steps, bool(denoise), dtype, mesh,
                    None if x_init is None else jnp.asarray(x_init, dtype))
    flow.report(info, "adaptive_sde_sample")
    nfe = jnp.max(info.nfe) + int(bool(denoise))
    return (x, nfe, info) if return_info else (x, nfe)
