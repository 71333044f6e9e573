"""DDIM (Song, Meng, Ermon 2021) for VE, VP and sub-VP, deterministic or with ``eta`` in ``[0, 1]``, on any grid.

In EDM's variables (:mod:`sde_jax.samplers.fixed_grid`: ``x^ = x / a(t)``, ``sigma = s(t) / a(t)``) one DDIM
step from ``sigma`` to ``sigma'`` reads

.. math::

    \\hat x' = D + \\sqrt{\\sigma'^2 - c^2}\\,\\hat\\epsilon + c\\,z, \\qquad
    c = \\eta\\,\\sigma' \\sqrt{1 - \\sigma'^2/\\sigma^2}, \\quad z \\sim N(0, I),

with ``eps^`` and ``D = x^ - sigma eps^`` the noise prediction and denoiser at ``(x^, sigma)``. Multiplied by
``a(t')`` this is DDIM's Eq. 12 for VP (``alpha_bar = a^2``, ``sigma_t(eta)`` of their Eq. 16 equals ``a(t') c``),
and it is the same update for any kernel ``N(a x_0, s^2 I)``: for VE (``a = 1``) it is DDIM's VE analogue,
for sub-VP (``a^2 + s^2 != 1``) the posterior of the Markov chain with sub-VP's marginals.

* ``eta = 0``: deterministic; the step is Euler's method for ``dx^/dsigma = eps^`` (EDM, Sec. 3), first order.
* ``eta = 1``: ``c^2`` is the variance of ``q(x_{t'} | x_t, x_0)``, so each step samples the posterior of the
  forward Markov chain at ``x_0 = D``: DDPM's ancestral sampler with ``sigma_t^2 = beta~_t`` (Ho et al. 2020,
  Eq. 6-7) on the chosen grid (tested step for step).

Deviation: the kernel is the continuous SDE's ``a(t), s(t)`` at the grid times; a DDPM chain's discrete
``alpha_bar_i`` differs from ``a(t_i)^2`` by ``O(1/N)`` (discrete-time checkpoints still work through
``get_score_fn(..., continuous=False)``, with that approximation).
"""
from __future__ import annotations

import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax.samplers import fixed_grid

__all__ = ["ddim_sample", "DDIM"]


def _step(key, x_hat, model, ts, i, options):
    t, t_next = ts[i], ts[i + 1]
    sigma, sigma_next = model.sigma(t), model.sigma(t_next)
    eps = model.eps(x_hat, t)
    denoised = x_hat - sigma * eps
    c = options["eta"] * sigma_next * jnp.sqrt(jnp.maximum(1.0 - (sigma_next / sigma) ** 2, 0.0))
    noise = fixed_grid.step_noise(key, x_hat)
    return denoised + jnp.sqrt(jnp.maximum(sigma_next**2 - c**2, 0.0)) * eps + c * noise


DDIM = fixed_grid.GridMethod(init=lambda x: x, step=_step, output=lambda x: x, nfe_per_step=1, name="ddim")


DEFAULT_STEPS = 50


def ddim_sample(key, sde, score_fn, shape, *, num_steps=None, eta=0.0, grid="uniform", rho=7.0, eps=1e-3,
                denoise=True, x_init=None, mesh=None, dtype=None):
    """Sample with DDIM (module docstring) on a fixed grid, as one ``lax.scan``.

    Args:
      key: PRNG key.
      sde: a VE, VP or sub-VP SDE.
      score_fn: ``score_fn(x, t) -> score`` (``x: [B, ...]``, ``t: [B]``).
      shape: sample shape ``[B, ...]``.
      num_steps: number of steps (score evaluations, plus one for ``denoise``); default 50 (on an array grid:
        its length).
      eta: stochasticity in ``[0, 1]`` (0: deterministic DDIM, 1: DDPM's ancestral posterior).
      grid: ``"uniform"`` (in ``t``, DDIM's), ``"karras"``, ``"logsnr"`` or a decreasing array of times from
        ``T`` to ``eps`` (then ``num_steps``/``eps`` come from it).
      rho: Karras grid exponent.
      eps: last grid time in ``(0, T)``.
      denoise: return Tweedie's ``E[x_0 | x_eps]`` (one more evaluation) instead of ``x_eps``.
      x_init: optional starting points at ``T`` (default: prior samples from ``key``).
      mesh: optional device mesh; the batch is sharded over its ``data`` axis (same samples as one device).
      dtype: sample dtype.

    Returns:
      ``(x, nfe)``: samples ``[B, ...]`` and ``num_steps + denoise`` (a Python int).

    New values of ``eta``, ``rho``, ``eps``, the key, the SDE's and the score function's arrays do not recompile.
    """
    eta = C.check_nonnegative("eta", eta)
    if C.is_concrete(eta) and float(eta) > 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta!r}.")
    return fixed_grid.run(DDIM, key, sde, score_fn, shape, num_steps=num_steps, default_steps=DEFAULT_STEPS,
                          grid=grid, rho=rho, eps=eps, denoise=denoise, options={"eta": eta}, x_init=x_init,
                          mesh=mesh, dtype=dtype)
