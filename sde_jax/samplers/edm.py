"""EDM's samplers (Karras et al. 2022, Algorithms 1 and 2) for VE, VP and sub-VP score models.

Both integrate ``dx^/dsigma = eps^(x^; sigma) = (x^ - D(x^; sigma)) / sigma`` in EDM's variables (the SDE's
``a(t)``, ``sigma(t)``: :mod:`sde_jax.samplers.fixed_grid`), by default on the Karras grid (``rho = 7``).

* ``edm_heun`` (Algorithm 1): Heun's second-order method, two evaluations per step,

  .. math:: \\hat x_e = \\hat x_i + (\\sigma_{i+1} - \\sigma_i)\\,d_i, \\qquad
            \\hat x_{i+1} = \\hat x_i + (\\sigma_{i+1} - \\sigma_i)\\,\\tfrac12\\big(d_i + \\hat\\epsilon(\\hat x_e;
            \\sigma_{i+1})\\big), \\qquad d_i = \\hat\\epsilon(\\hat x_i; \\sigma_i).

* ``edm_stochastic`` (Algorithm 2): before each step, "churn": raise the noise level to ``sigma^ = (1 + gamma)
  sigma_i`` by adding fresh noise ``S_noise sqrt(sigma^2 - sigma_i^2) z``, with ``gamma = min(S_churn / N,
  sqrt(2) - 1)`` for ``sigma_i`` in ``[S_tmin, S_tmax]`` (else 0), then the Heun step from ``sigma^``. ``N`` is
  EDM's number of noise levels before 0, here ``num_steps + 1``. With ``S_churn = 0`` it is ``edm_heun``
  exactly. With ``denoise=True`` the last level ``sigma(eps)`` is churned too before the final evaluation (EDM's
  last step to ``sigma = 0``), as in EDM and k-diffusion.

The final step to ``sigma = 0`` of EDM is our ``denoise`` (one evaluation), so EDM's ``N``-level schedule with
``2N - 1`` evaluations is ``num_steps = N - 1`` here (``N = 18``: 35 evaluations).

Churn at ``sigma_i`` near ``sigma(T)`` evaluates the model at ``t(sigma^) > T``; for networks trained on
``[eps, T]`` keep ``S_tmax`` below ``sigma(T) / (1 + gamma)`` (EDM uses ``S_tmax = 50`` with ``sigma_max = 80``).
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax.samplers import fixed_grid

__all__ = ["edm_heun_sample", "edm_stochastic_sample", "EDM_HEUN", "EDM_STOCHASTIC"]


def _churn(key, x_hat, model, t, num_levels, options):
    """EDM's churn at time ``t``: ``(x^ + noise, sigma^, t^)``; ``t^ = t`` exactly when ``gamma = 0``."""
    sigma = model.sigma(t)
    inside = (sigma >= options["S_tmin"]) & (sigma <= options["S_tmax"])
    gamma = jnp.where(inside, jnp.minimum(options["S_churn"] / num_levels, math.sqrt(2.0) - 1.0), 0.0)
    sigma_hat = sigma * (1.0 + gamma)
    # sqrt(sigma_hat^2 - sigma^2) written without the cancellation (which XLA's fused multiply-add can make
    # slightly negative, i.e. a NaN, at gamma = 0)
    noise = options["S_noise"] * sigma * jnp.sqrt(gamma * (2.0 + gamma)) * fixed_grid.step_noise(key, x_hat)
    return x_hat + noise, sigma_hat, jnp.where(gamma > 0, model.time(sigma_hat), t)


def _heun(x_hat, model, sigma, t, t_next):
    sigma_next = model.sigma(t_next)
    d = model.eps(x_hat, t)
    x_euler = x_hat + (sigma_next - sigma) * d
    return x_hat + (sigma_next - sigma) * 0.5 * (d + model.eps(x_euler, t_next))


def _heun_step(key, x_hat, model, ts, i, options):
    return _heun(x_hat, model, model.sigma(ts[i]), ts[i], ts[i + 1])


def _stochastic_step(key, x_hat, model, ts, i, options):
    x_hat, sigma_hat, t_hat = _churn(key, x_hat, model, ts[i], ts.shape[0], options)
    return _heun(x_hat, model, sigma_hat, t_hat, ts[i + 1])


def _stochastic_finish(key, x_hat, model, ts, options):
    """EDM's last step ``sigma(eps) -> 0``: churn, then one evaluation of the denoiser at ``sigma^``."""
    x_hat, sigma_hat, t_hat = _churn(key, x_hat, model, ts[-1], ts.shape[0], options)
    return x_hat - sigma_hat * model.eps(x_hat, t_hat)


def _identity(x):
    return x


EDM_HEUN = fixed_grid.GridMethod(init=_identity, step=_heun_step, output=_identity, nfe_per_step=2, name="edm_heun")
EDM_STOCHASTIC = fixed_grid.GridMethod(init=_identity, step=_stochastic_step, output=_identity, nfe_per_step=2,
                                       name="edm_stochastic", finish=_stochastic_finish)


DEFAULT_STEPS = 17   # + the final denoising: EDM's 18 levels, 35 evaluations


def edm_heun_sample(key, sde, score_fn, shape, *, num_steps=None, grid="karras", rho=7.0, eps=1e-3, denoise=True,
                    x_init=None, mesh=None, dtype=None):
    """EDM's deterministic Heun sampler (Algorithm 1; module docstring), one ``lax.scan``.

    Args:
      key, sde, score_fn, shape, eps, denoise, x_init, mesh, dtype: as :func:`sde_jax.samplers.ddim_sample`.
      num_steps: Heun steps (``2 num_steps + denoise`` evaluations; default 17: EDM's 35-evaluation schedule).
      grid: ``"karras"`` (default), ``"uniform"``, ``"logsnr"`` or a decreasing array of times.
      rho: Karras grid exponent (EDM: 7).

    Returns:
      ``(x, nfe)`` with ``nfe = 2 num_steps + denoise``.
    """
    return fixed_grid.run(EDM_HEUN, key, sde, score_fn, shape, num_steps=num_steps, default_steps=DEFAULT_STEPS,
                          grid=grid, rho=rho, eps=eps, denoise=denoise, options={}, x_init=x_init, mesh=mesh,
                          dtype=dtype)


def edm_stochastic_sample(key, sde, score_fn, shape, *, num_steps=None, S_churn=0.0, S_tmin=0.0,  # noqa: N803
                          S_tmax=float("inf"), S_noise=1.0, grid="karras", rho=7.0, eps=1e-3, denoise=True,
                          x_init=None, mesh=None, dtype=None):
    """EDM's stochastic sampler (Algorithm 2; module docstring), one ``lax.scan``.

    Args:
      S_churn: total churn (``>= 0``; per level ``gamma = min(S_churn / (num_steps + 1), sqrt(2) - 1)``).
      S_tmin, S_tmax: churn only where ``S_tmin <= sigma_i <= S_tmax`` (noise levels, not times).
      S_noise: scale of the added noise (EDM: slightly above 1 offsets the loss of detail).
      Other arguments: as :func:`edm_heun_sample`.

    Returns:
      ``(x, nfe)`` with ``nfe = 2 num_steps + denoise``.
    """
    options = {"S_churn": C.check_nonnegative("S_churn", S_churn), "S_tmin": C.check_scalar("S_tmin", S_tmin),
               "S_tmax": C.check_scalar("S_tmax", S_tmax), "S_noise": C.check_nonnegative("S_noise", S_noise)}
    return fixed_grid.run(EDM_STOCHASTIC, key, sde, score_fn, shape, num_steps=num_steps, default_steps=DEFAULT_STEPS,
                          grid=grid, rho=rho, eps=eps, denoise=denoise, options=options, x_init=x_init, mesh=mesh,
                          dtype=dtype)
