r"""Sequential Monte Carlo over the reverse process: asymptotically exact sampling of ``p(x | y)`` for a linear
measurement ``y`` (inpainting, colourisation, ``y = A x + noise``).

A twisted particle filter over the PC grid (Wu, Trippe, Naesseth, Blei, Cunningham 2023, "Practical and
asymptotically exact conditional sampling in diffusion models" (TDS), Algorithm 1) with the Gaussian proposal
of Monte Carlo guided diffusion (Cardoso, Janati, Le Corff, Moulines 2023, "Monte Carlo guided diffusion for
Bayesian linear inverse problems" (MCGdiff), Sec. 3), for any linear SDE and any Gaussian predictor.

In the spectral basis of the measurement (:mod:`sde_jax.samplers.measurements`) observed coordinate ``i`` is
``\tilde y_i = \bar x_{0,i} + \tilde\sigma_i \epsilon``. Two functions of ``x_t`` per time ``t``:

* the **proposal potential** (MCGdiff) ``g_t(\bar x) = \prod_i N(\bar x_i; a(t) \tilde y_i, v_i(t))``,
  ``v_i(t) = s(t)^2 + a(t)^2 \tilde\sigma_i^2``: the observation pushed through the forward kernel. With the
  predictor's Gaussian kernel ``q(x' | x) = N(m(x), G^2 I)`` (:attr:`Predictor.kernel`) the proposal
  ``q(x' | x) g_{t'}(\bar x') / Z(x)`` is drawn exactly (observed coordinates: the product Gaussian; free ones:
  the kernel), with ``Z(x) = \prod_i N(\bar m_i(x); a(t') \tilde y_i, G^2 + v_i(t'))``. These are the
  paper's replacement steps made exact: replacement draws the observed coordinates from ``g`` alone.
* the **twist** (TDS) ``\tau_t(x) = \prod_i N(\tilde y_i; \hat x_{0,i}(x), \tilde\sigma_i^2 + s(t)^2/a(t)^2)``
  with Tweedie's denoiser ``\hat x_0 = (x + s^2 score)/a``: an approximation of ``p(y | x_t)`` that, unlike
  ``g_t``, sees the free coordinates (through the score), so the intermediate targets
  ``gamma_t ∝ p_theta(x_t) tau_t(x_t)`` already weight the modes almost as the posterior does.

Targets ``gamma_k`` (path of the reverse-process model ``p_theta`` times ``tau_{t_k}``) are tracked with the
weight of a move ``x -> x'`` (``t -> t'``)

.. math::  w = \frac{q(x' | x)\, \tau_{t'}(x')}{\tau_t(x)\, \mathrm{proposal}(x' | x)}
    = \frac{Z(x)\, \tau_{t'}(x')}{\tau_t(x)\, g_{t'}(\bar x')},

completed one step late (``tau_{t'}(x')`` needs the score at ``x'``, which the next step evaluates anyway:
one score evaluation per step). At ``t = 0`` the twist and the potential are both the exact likelihood
``N(\tilde y; \bar x_0, \tilde\sigma^2)`` (a Dirac when noise-free) and cancel, so the final target is the
model's posterior ``p_theta(x_0 | y) ∝ p_theta(x_0) N(y; A x_0, sigma_y^2)``. Particles are resampled
(systematic, Kitagawa 1996, on the device, within each measurement's particles) when the effective sample
size falls below ``resample_threshold * P``. As the number of particles ``P`` grows the result converges to
that posterior whatever the twist and potential (Chopin & Papaspiliopoulos 2020, Ch. 10-11); they only decide
how many particles that takes. The particle count is the accuracy knob. ``twist="mcgdiff"`` uses ``tau = g``
(MCGdiff's own weights, fully adapted) for comparison; its mode weights converge much more slowly when the
observation lies between modes (README).

``p_theta`` is the reverse-process model: the discretised reverse SDE driven by ``score_fn``. With the exact
score and enough steps it is the data distribution (the tests check it against closed-form Gaussian-mixture
conditionals); with a network it is what the network learned.

Each of the ``B`` measurements gets its own ``P`` particles (the score function sees batches of ``B * P``).
The result is one draw per measurement from its final weighted particles; :class:`SMCInfo` has them all, the
effective sample sizes and the log-evidence estimate ``log p_theta(y)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from sde_jax import _checks as C
from sde_jax import _jit
from sde_jax.samplers.measurements import LinearMeasurement
from sde_jax.samplers.pc import check_grid, grid_levels, time_grid
from sde_jax.samplers.predictors import get_predictor, probability_flow

__all__ = ["SMCInfo", "smc_sample", "TWISTS"]

TWISTS = {"tweedie": True, "mcgdiff": False}
"""``twist`` name -> whether the twist uses Tweedie's denoiser (module docstring)."""

# Variance floor: the last step of a kernel without noise (VE ancestral at level 0) meets a Dirac potential.
_TINY = 1e-30


class SMCInfo(NamedTuple):
    """What the particle filter saw.

    Attributes:
      ess: ``[num_steps, B]`` effective sample size of each step's weights before resampling.
      log_evidence: ``[B]`` estimate of ``log p_theta(y)`` (unbiased in ``p``, not in ``log p``), in nats, of
        the measurement in the spectral basis (``V`` is orthogonal, so a density of ``V^T x`` coordinates).
      particles: ``[B, P, ...]`` final particles (their noise-free means when ``denoise``).
      log_weights: ``[B, P]`` their normalised log-weights.
    """

    ess: jax.Array
    log_evidence: jax.Array
    particles: jax.Array
    log_weights: jax.Array


def smc_sample(key, sde, score_fn, measurement: LinearMeasurement, *, num_particles=16,
               predictor="reverse_diffusion", num_steps=None, eps=1e-3, denoise=True, resample_threshold=0.5,
               twist="tweedie", mesh=None, dtype=None, return_info=False):
    """Sample ``p_theta(x | y)`` for a linear measurement with the twisted particle filter (module docstring).

    Args:
      key: PRNG key.
      sde: a :class:`~sde_jax.SDE`.
      score_fn: the *unconditional* ``score_fn(x, t)``; sees batches of ``B * num_particles``.
      measurement: a :class:`LinearMeasurement` (``[B, ...]``: one measurement per example).
      num_particles: particles per measurement (>= 1; the accuracy knob).
      predictor: a predictor with a stochastic Gaussian kernel: ``"reverse_diffusion"``,
        ``"euler_maruyama"``, ``"ancestral"`` or a :class:`Predictor` with ``kernel``.
      num_steps: grid size (default ``sde.N``; must equal it for discrete predictors).
      eps: the smallest time at which the score is evaluated, in ``(0, T)``.
      denoise: return the noise-free mean of the last step (observed coordinates then equal the exact
        observation when noise-free).
      resample_threshold: resample a measurement's particles when their effective sample size falls below
        ``resample_threshold * num_particles`` (in ``[0, 1]``; 1: every step, 0: never).
      twist: ``"tweedie"`` (the TDS twist; default) or ``"mcgdiff"`` (the proposal potential; module docstring).
      mesh: optional device mesh; the ``B`` measurements are sharded over its ``data`` axis.
      dtype: sample dtype (default: JAX's default float).
      return_info: also return :class:`SMCInfo`.

    Returns:
      ``(x, nfe)`` or ``(x, nfe, info)``: one sample per measurement ``[B, ...]`` and the number of batched
      score evaluations (``num_steps``, each on ``B * num_particles`` examples).
    """
    if not isinstance(measurement, LinearMeasurement):
        raise TypeError(f"measurement must be a LinearMeasurement (sde_jax.samplers.mask_measurement, "
                        f"colour_measurement, linear_measurement); got {type(measurement).__name__}.")
    pred = get_predictor(predictor)
    if pred.kernel is None or pred is probability_flow:
        raise ValueError(f"method 'smc' needs a predictor with a stochastic Gaussian kernel (reverse_diffusion, "
                         f"euler_maruyama, ancestral); got {pred.name!r}.")
    num_steps = check_grid(sde, pred, num_steps)
    num_particles = C.check_int("num_particles", num_particles)
    threshold = C.check_scalar("resample_threshold", resample_threshold)
    if C.is_concrete(threshold) and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"resample_threshold must be in [0, 1]; got {resample_threshold!r}.")
    eps = C.check_eps(eps, sde)
    shape = measurement.shape
    C.check_mesh(mesh, shape[0], name="number of measurements")
    dtype = _jit.default_dtype(dtype)
    tweedie_twist = C.lookup(TWISTS, twist, "twist")
    x, info = _smc_loop(key, _jit.as_leaves(sde, dtype, convert_arrays=True), _jit.as_leaves(score_fn, dtype),
                        _jit.as_leaves(measurement, dtype, convert_arrays=True), _jit.as_leaves(eps, dtype),
                        jnp.asarray(threshold, dtype), pred, num_particles, num_steps, bool(denoise), dtype, mesh,
                        tweedie_twist)
    return (x, num_steps, info) if return_info else (x, num_steps)


def _log_normal(x, mean, var):
    var = jnp.maximum(var, _TINY)
    return -0.5 * (jnp.log(2.0 * jnp.pi * var) + (x - mean) ** 2 / var)


def _sum_observed(v, observed):
    """``v: [B, P, ...]`` summed over the observed coordinates -> ``[B, P]``."""
    v = jnp.where(observed, v, jnp.zeros_like(v))
    return jnp.sum(jnp.reshape(v, v.shape[:2] + (-1,)), axis=-1)


def _systematic(key, log_w):
    """Systematic resampling of one measurement's particles: ``[P]`` ancestor indices."""
    p = log_w.shape[0]
    cdf = jnp.cumsum(jax.nn.softmax(log_w))
    u = (jax.random.uniform(key, (), log_w.dtype) + jnp.arange(p, dtype=log_w.dtype)) / p
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), p - 1)


def _ess(log_w):
    return jnp.exp(2.0 * logsumexp(log_w, axis=-1) - logsumexp(2.0 * log_w, axis=-1))


@eqx.filter_jit
def _smc_loop(key, sde, score_fn, meas, eps, threshold, pred, num_particles, num_steps, denoise, dtype, mesh,
              tweedie_twist):
    constrain = _jit.constrainer(mesh)
    b, event = meas.shape[0], meas.shape[1:]
    p = num_particles
    full, flat = (b, p) + event, (b * p,) + event
    y_bar, observed, noise_var = meas.y_bar[:, None], meas.observed[:, None], meas.noise_var[:, None]

    def coefficients(t):  # a(t) and the potential variance v(t) = s^2 + a^2 sigma~^2 on [B, 1, ...]
        a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
        return a, s**2 + a**2 * noise_var

    def log_g(x_bar, t):  # proposal potential g_t: [B, P]
        a, v = coefficients(t)
        return _sum_observed(_log_normal(x_bar, a * y_bar, v), observed)

    def log_tau(x, score, t):  # twist tau_t: [B, P]
        if not tweedie_twist:
            return log_g(meas.to_spectral(x), t)
        a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
        x0_bar = meas.to_spectral((x + s**2 * score) / a)
        return _sum_observed(_log_normal(y_bar, x0_bar, noise_var + (s / a) ** 2), observed)

    key_init, key_loop, key_final = jax.random.split(key, 3)
    t_end = jnp.asarray(sde.T, dtype)
    a_end, v_end = coefficients(t_end)
    prior_var = jnp.asarray(sde.prior_std(), dtype) ** 2
    # Initial particles ~ prior x g_T (exact: a product of Gaussians on the observed coordinates). Their weight
    # for gamma_K, Z_T tau_T(x) / g_T(x), is completed at the first step (tau_T needs the score).
    denom = prior_var + v_end
    z = jax.random.normal(key_init, full, dtype)
    x_bar = jnp.where(observed, a_end * y_bar * prior_var / denom + jnp.sqrt(prior_var * v_end / denom) * z,
                      jnp.sqrt(prior_var) * z)
    x = constrain(meas.from_spectral(x_bar))
    log_z_init = _sum_observed(_log_normal(a_end * y_bar, 0.0, denom), observed)   # [B, 1]
    pending = (jnp.broadcast_to(log_z_init, (b, p)), log_g(x_bar, t_end), jnp.zeros((b, p), dtype))

    ts, t_next = time_grid(sde, num_steps, eps, dtype)
    levels = grid_levels(sde, ts)
    pick = jax.vmap(lambda v, i: v[i])

    def step(carry, inputs):
        x, _, log_w, log_z, (log_z_move, log_g_new, log_tau_prev) = carry
        k, t, tn, level = inputs
        key_resample, key_move = jax.random.split(jax.random.fold_in(key_loop, k))
        tb = jnp.full((b * p,), t, dtype)
        score = jnp.reshape(score_fn(jnp.reshape(x, flat), tb), full)   # the step's one evaluation
        m, std = pred.kernel(sde, lambda *_: jnp.reshape(score, flat), jnp.reshape(x, flat), tb,
                             jnp.full((b * p,), tn, dtype), jnp.full((b * p,), level))
        tau = log_tau(x, score, t)
        log_w = log_w + log_z_move - log_g_new + tau - log_tau_prev   # completes the previous move's weight
        ess = _ess(log_w)
        resample = ess < threshold * p
        ancestors = jax.vmap(_systematic)(jax.random.split(key_resample, b), log_w)
        ancestors = jnp.where(resample[:, None], ancestors, jnp.arange(p)[None])
        log_z = log_z + jnp.where(resample, logsumexp(log_w, axis=-1) - math.log(p), 0.0)
        log_w = jnp.where(resample[:, None], jnp.zeros_like(log_w), log_w)
        m_bar = pick(meas.to_spectral(jnp.reshape(m, full)), ancestors)
        g2 = pick(_expand(jnp.reshape(std.astype(dtype) ** 2, (b, p)), event), ancestors)
        tau = pick(tau, ancestors)
        # propose from kernel x g_{t'}: the product Gaussian on observed coordinates, the kernel elsewhere
        a_next, v_next = coefficients(tn)
        denom = jnp.maximum(g2 + v_next, _TINY)
        mean = jnp.where(observed, (m_bar * v_next + a_next * y_bar * g2) / denom, m_bar)
        sd = jnp.where(observed, jnp.sqrt(g2 * v_next / denom), jnp.sqrt(g2))
        x_bar = mean + sd * jax.random.normal(key_move, full, dtype)
        log_z_move = _sum_observed(_log_normal(m_bar, a_next * y_bar, g2 + v_next), observed)
        pending = (log_z_move, log_g(x_bar, tn), tau)
        x, x_mean = constrain(meas.from_spectral(x_bar)), constrain(meas.from_spectral(mean))
        return (x, x_mean, log_w, log_z, pending), ess

    init = (x, x, jnp.zeros((b, p), dtype), jnp.zeros((b,), dtype), pending)
    (x, x_mean, log_w, log_z, (log_z_move, _, log_tau_prev)), ess = jax.lax.scan(
        step, init, (jnp.arange(num_steps), ts, t_next, levels))
    # at t = 0 the twist is the exact likelihood, equal to g_0: the last move's weight is Z(x) / tau(x)
    log_w = log_w + log_z_move - log_tau_prev
    log_z = log_z + logsumexp(log_w, axis=-1) - math.log(p)
    log_w = log_w - logsumexp(log_w, axis=-1, keepdims=True)
    particles = x_mean if denoise else x
    chosen = jax.random.categorical(key_final, log_w, axis=-1)
    out = constrain(pick(particles, chosen))
    return out, SMCInfo(ess=ess, log_evidence=log_z, particles=particles, log_weights=log_w)


def _expand(v, event):
    """``[B, P] -> [B, P, 1, ...]``."""
    return jnp.reshape(v, v.shape + (1,) * len(event))
