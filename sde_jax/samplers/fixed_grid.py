"""The one driver under the fixed-grid fast samplers (DDIM, EDM, DPM-Solver): the model in EDM's form, the time
grids, and one ``lax.scan`` loop.

**EDM's form of any linear SDE** (Karras et al. 2022, Eq. 4). With ``x_t = a(t) x_0 + s(t) z`` (our kernel),
the scaled state ``x^ = x / a(t)`` and the noise level ``sigma(t) = s(t) / a(t)`` (:meth:`sde_jax.SDE.edm_sigma`),
the probability-flow ODE of every one of our SDEs becomes the same ODE

.. math::

    \\frac{d\\hat x}{d\\sigma} = \\hat\\epsilon(\\hat x; \\sigma) = \\frac{\\hat x - D(\\hat x; \\sigma)}{\\sigma},
    \\qquad \\frac{d\\hat x}{d\\lambda} = D - \\hat x = -\\sigma\\,\\hat\\epsilon \\quad (\\lambda = -\\log\\sigma),

with the noise prediction ``eps^ = -s(t) score(x, t)`` and the denoiser ``D = x^ - sigma eps^ = (x + s^2 score) / a``
(Tweedie's posterior mean ``E[x_0 | x_t]``), both from one evaluation of ``score_fn`` at ``x = a(t) x^``. The
samplers integrate ``x^`` from ``sigma(T)`` down to ``sigma(eps)`` on a grid of times, which makes every method
defined for VE, VP and sub-VP alike (VE has ``a = 1``, so ``x^ = x``); the SDE enters only through ``a(t)``,
``s(t)``, ``sigma(t)`` and its inverse ``t(sigma)`` (:meth:`sde_jax.SDE.edm_time`).

**Grids** (:data:`GRIDS`): ``num_steps + 1`` times ``T = t_0 > ... > t_n = eps``: ``"uniform"`` in ``t`` (the PC
sampler's and DDIM's), ``"karras"`` (EDM Eq. 5: ``sigma_i = (sigma_max^{1/rho} + i/n (sigma_min^{1/rho} -
sigma_max^{1/rho}))^rho``, ``sigma_max = sigma(T)``, ``sigma_min = sigma(eps)``), ``"logsnr"`` (uniform in
``lambda = -log sigma``, DPM-Solver's), or any decreasing array of times.

**Output.** ``denoise=True`` (the default of every fast sampler) returns ``D(x^_n; sigma(eps))``, the posterior
mean at the last grid time (Tweedie, one more evaluation). This is exactly the last step to ``sigma = 0`` of EDM,
k-diffusion and DPM-Solver ("denoise to zero"): EDM's 18-point Heun schedule (35 evaluations) is
``num_steps=17`` here. ``denoise=False`` returns ``x_eps = a(eps) x^_n``, the probability-flow state at ``eps``
(what the convergence tests compare with the exact flow map).

**Noise.** The prior sample uses ``split(key)[0]``; step ``i`` draws its noise with the key
``fold_in(split(key)[1], i)`` (:func:`step_noise`; the final step ``i = num_steps``), so results do not depend on
the batch's sharding.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C
from sde_jax import _jit
from sde_jax.sdes import batch_broadcast, check_score

__all__ = ["GRIDS", "GridMethod", "EDMModel", "sampling_times", "step_noise", "prior_and_loop_keys", "run"]


def _uniform(sde, n, eps, rho, dtype):
    return jnp.linspace(jnp.asarray(sde.T, dtype), eps, n + 1, dtype=dtype)


def _karras(sde, n, eps, rho, dtype):
    lo, hi = sde.edm_sigma(eps), sde.edm_sigma(jnp.asarray(sde.T, dtype))
    ramp = jnp.linspace(0.0, 1.0, n + 1, dtype=dtype)
    sigmas = (hi ** (1.0 / rho) + ramp * (lo ** (1.0 / rho) - hi ** (1.0 / rho))) ** rho
    return sde.edm_time(sigmas)


def _logsnr(sde, n, eps, rho, dtype):
    lo, hi = sde.edm_sigma(eps), sde.edm_sigma(jnp.asarray(sde.T, dtype))
    return sde.edm_time(jnp.exp(jnp.linspace(jnp.log(hi), jnp.log(lo), n + 1, dtype=dtype)))


GRIDS = {"uniform": _uniform, "karras": _karras, "logsnr": _logsnr}
"""Grid name -> ``fn(sde, num_steps, eps, rho, dtype) -> times [num_steps + 1]`` (module docstring)."""


def sampling_times(sde, num_steps: int, eps, grid: str = "karras", rho=7.0, dtype=None):
    """The ``num_steps + 1`` decreasing times ``t_0 = T, ..., t_n = eps`` of a named grid (endpoints exact).

    ``rho`` is used by ``"karras"`` only (EDM's default 7; ``rho = 1`` is uniform in ``sigma``).
    """
    dtype = _jit.default_dtype(dtype)
    eps = jnp.asarray(eps, dtype)
    ts = C.lookup(GRIDS, grid, "grid")(sde, num_steps, eps, jnp.asarray(rho, dtype), dtype)
    return ts.at[0].set(sde.T).at[-1].set(eps).astype(dtype)


def prior_and_loop_keys(key):
    """``(prior key, loop key)``: the split every fixed-grid sampler makes of its ``key``."""
    return jax.random.split(key)


def step_noise(step_key, like):
    """Standard normal noise shaped like ``like`` from a step's key ``fold_in(loop_key, i)``."""
    return jax.random.normal(step_key, like.shape, like.dtype)


class EDMModel(NamedTuple):
    """A score function seen in EDM's variables (module docstring); ``t`` is a scalar time (one per step)."""

    sde: Any
    score_fn: Callable

    def sigma(self, t):
        return self.sde.edm_sigma(t)

    def time(self, sigma):
        return self.sde.edm_time(sigma)

    def eps(self, x_hat, t):
        """Noise prediction ``eps^ = -s(t) score(a(t) x^, t)`` (shape of ``x^``): one score evaluation."""
        tb = jnp.full(x_hat.shape[:1], t, x_hat.dtype)
        x = batch_broadcast(self.sde.edm_scale(tb).astype(x_hat.dtype), x_hat) * x_hat
        score = check_score(self.score_fn(x, tb), x)
        return -batch_broadcast(self.sde.marginal_std(tb).astype(x_hat.dtype), x_hat) * score

    def denoise(self, x_hat, t):
        """``D(x^; sigma(t)) = x^ - sigma(t) eps^``: Tweedie's ``E[x_0 | x_t]`` (one score evaluation)."""
        return x_hat - self.sigma(t).astype(x_hat.dtype) * self.eps(x_hat, t)


class GridMethod(NamedTuple):
    """A fixed-grid sampler family member, as data.

    Attributes:
      init: ``x^ [B, ...] -> carry`` (a pytree of ``[B, ...]`` arrays: the state and any history).
      step: ``step(key, carry, model, ts, i, options) -> carry``: one step from ``ts[i]`` to ``ts[i + 1]``
        (``ts`` the whole grid, ``i`` traced, ``key`` this step's key for :func:`step_noise`).
      output: ``carry -> x^``.
      nfe_per_step: score evaluations per step.
      name: for messages.
      finish: optional ``finish(key, x^, model, ts, options) -> x_0`` replacing the default denoising
        (EDM's stochastic sampler churns before its last denoising evaluation).
    """

    init: Callable
    step: Callable
    output: Callable
    nfe_per_step: int
    name: str
    finish: Callable | None = None


def _check_grid_array(grid, sde):
    g = np.asarray(grid, np.float64)
    if g.ndim != 1 or g.shape[0] < 2:
        raise ValueError(f"grid must be a name in {sorted(GRIDS)} or a 1-D array of >= 2 decreasing times; got "
                         f"shape {g.shape}.")
    if not (np.all(np.diff(g) < 0) and g[0] <= sde.T and g[-1] > 0):
        raise ValueError(f"grid times must decrease strictly within (0, T={sde.T}]; got {g}.")
    return int(g.shape[0] - 1)


def run(method: GridMethod, key, sde, score_fn, shape, *, num_steps, default_steps: int, grid, rho, eps, denoise,
        options: dict, x_init=None, mesh=None, dtype=None):
    """Check the arguments, run ``method`` on the grid as one jitted ``lax.scan``, and count evaluations.

    ``num_steps=None`` means ``default_steps`` on a named grid, the array's length on an array grid.

    Returns:
      ``(x, nfe)``: samples ``[B, ...]`` and ``num_steps * method.nfe_per_step + denoise`` (a Python int).
    """
    shape = C.check_shape(shape)
    C.check_key(key)
    C.check_mesh(mesh, shape[0])
    dtype = _jit.default_dtype(dtype)
    if isinstance(grid, str):
        C.lookup(GRIDS, grid, "grid")
        num_steps = C.check_int("num_steps", default_steps if num_steps is None else num_steps)
        eps = C.check_eps(eps, sde)
        times = None
    else:
        if not C.is_concrete(grid):
            raise ValueError("a grid array must be concrete (its length fixes the program); pass it as an argument "
                             "outside jax.jit or use a named grid.")
        n = _check_grid_array(grid, sde)
        if num_steps is not None and C.check_int("num_steps", num_steps) != n:
            raise ValueError(f"num_steps={num_steps} does not match the grid's {n} steps; pass num_steps=None.")
        num_steps, times, eps, grid = n, jnp.asarray(grid, dtype), float(np.asarray(grid)[-1]), None
    rho = C.check_positive("rho", rho)
    if x_init is not None and jnp.shape(x_init) != shape:
        raise ValueError(f"x_init must have shape {shape}; got {jnp.shape(x_init)}.")
    x = _loop(method, key, _jit.as_leaves(sde, dtype, convert_arrays=True), _jit.as_leaves(score_fn, dtype),
              _jit.as_leaves(options, dtype), _jit.as_leaves((eps, rho), dtype), times, grid, shape, num_steps,
              bool(denoise), dtype, mesh, None if x_init is None else jnp.asarray(x_init, dtype))
    return x, num_steps * method.nfe_per_step + int(bool(denoise))


@eqx.filter_jit
def _loop(method, key, sde, score_fn, options, eps_rho, times, grid, shape, num_steps, denoise, dtype, mesh, x_init):
    constrain = _jit.constrainer(mesh)
    key_prior, key_loop = prior_and_loop_keys(key)
    eps, rho = eps_rho
    ts = sampling_times(sde, num_steps, eps, grid, rho, dtype) if times is None else times
    x = sde.prior_sampling(key_prior, shape, dtype) if x_init is None else x_init
    model = EDMModel(sde, score_fn)
    carry = method.init(constrain(x / sde.edm_scale(ts[0]).astype(dtype)))

    def body(carry, i):
        carry = method.step(jax.random.fold_in(key_loop, i), carry, model, ts, i, options)
        return jax.tree.map(constrain, carry), None

    carry, _ = jax.lax.scan(body, carry, jnp.arange(num_steps))
    x_hat = method.output(carry)
    if not denoise:
        return x_hat * sde.edm_scale(ts[-1]).astype(dtype)
    if method.finish is not None:
        return constrain(method.finish(jax.random.fold_in(key_loop, num_steps), x_hat, model, ts, options))
    return constrain(model.denoise(x_hat, ts[-1]))
