"""Score-matching losses: SDE denoising score matching, SMLD/NCSN, DDPM, ISM, SSM, SSM-VR, ESM, DSM; and the
cross-entropy of a noise-conditional classifier (for classifier guidance).

Every loss is a pure function ``loss_fn(score_fn, key, batch) -> (loss, aux)``: ``score_fn`` is the model's
score (``score_fn(x, t)`` for the time-dependent losses, ``score_fn(x)`` for the classical ones at a single
distribution), ``key`` a PRNG key (split into named subkeys inside), ``batch`` an array ``[B, ...]``;
``loss`` is a scalar and ``aux`` a dict of scalar diagnostics (per-term means). Training composes them with a
score-function wrapper (:func:`sde_jax.models.get_score_fn`), so the gradient is taken with respect to the
parameters inside ``score_fn``.

Reductions follow the paper's code (yang-song/score_sde ``losses.py``): with ``reduce_mean=False`` the
per-example loss is ``1/2 sum`` over data dimensions, with ``reduce_mean=True`` the mean over them; the
batch is always averaged.

Per-example functions of the network (traces, projections) are evaluated with ``jax.vmap`` over examples,
so the losses are exact whatever the network does across a batch.

References:
  * Hyvärinen 2005, "Estimation of non-normalized statistical models by score matching" (ISM).
  * Vincent 2011, "A connection between score matching and denoising autoencoders" (DSM).
  * Song, Garg, Shi, Ermon 2020, "Sliced score matching" (SSM, SSM-VR).
  * Song & Ermon 2019, "Generative modeling by estimating gradients of the data distribution" (NCSN).
  * Ho, Jain, Abbeel 2020, "Denoising diffusion probabilistic models" (DDPM).
  * Song et al. 2021, "Score-based generative modeling through SDEs" (continuous DSM, Eq. 7).
  * Song, Durkan, Murray, Ermon 2021, "Maximum likelihood training of score-based diffusion models"
    (likelihood weighting ``lambda(t) = g(t)^2`` and importance sampling of ``t``).
  * Karras, Aittala, Aila, Laine 2022, "Elucidating the design space of diffusion-based generative models"
    (EDM: log-normal noise levels, the weighting ``(sigma^2 + sigma_d^2) / (sigma sigma_d)^2``).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax.sdes import SDE, VESDE, VPSDE, batch_broadcast, check_score

__all__ = [
    "reduce_per_example",
    "dsm_per_example",
    "get_sde_loss_fn",
    "get_smld_loss_fn",
    "get_ddpm_loss_fn",
    "get_ncsn_loss_fn",
    "get_sde_score_matching_loss_fn",
    "sample_marginal",
    "implicit_score_matching_loss",
    "sliced_score_matching_loss",
    "explicit_score_matching_loss",
    "denoising_score_matching_loss",
    "ism_per_example",
    "ssm_per_example",
    "importance_weight_normalizer",
    "sample_importance_time",
    "discrete_times",
    "get_classifier_loss_fn",
    "edm_loss_weight",
    "edm_per_example",
    "get_edm_loss_fn",
    "LOSSES",
    "CLASSIFIER_LOSSES",
    "get_loss_fn",
]


# --------------------------------------------------------------------------------------------------
# Reductions and checks
# --------------------------------------------------------------------------------------------------
def reduce_per_example(v, reduce_mean: bool):
    """Reduce ``v: [B, ...]`` over its data dimensions: mean (``reduce_mean``) or ``1/2 sum``. Returns ``[B]``."""
    v = jnp.reshape(v, (v.shape[0], -1))
    return jnp.mean(v, axis=-1) if reduce_mean else 0.5 * jnp.sum(v, axis=-1)


def _check_batch_array(batch):
    if not hasattr(batch, "shape"):
        raise ValueError(f"batch must have shape [B, ...] with a batch axis and at least one data axis; got {type(batch)}.")
    C.check_data("batch", batch)


def _check_projection(projection):
    C.lookup(_PROJECTIONS, projection, "projection")


def _dim(x):
    return math.prod(x.shape[1:])


# --------------------------------------------------------------------------------------------------
# Continuous-time denoising score matching (Song et al. 2021, Eq. 7)
# --------------------------------------------------------------------------------------------------
def dsm_per_example(score_fn, sde: SDE, x0, t, z, *, reduce_mean=False, likelihood_weighting=False):
    """Per-example continuous DSM loss at given times and noise (the paper's ``losses.get_sde_loss_fn``).

    With ``x_t = a(t) x_0 + s(t) z`` (``sde.marginal_prob``):

    .. math::

        \\ell_{\\sigma^2}(x_0, t, z) = \\mathrm{red}\\,\\big\\|s(t)\\, s_\\theta(x_t, t) + z\\big\\|^2, \\qquad
        \\ell_{g^2}(x_0, t, z) = g(t)^2\\,\\mathrm{red}\\,\\big\\|s_\\theta(x_t, t) + z / s(t)\\big\\|^2,

    the paper's weighting ``lambda(t) = s(t)^2`` (Song et al. 2021, Eq. 7) and the likelihood weighting
    ``lambda(t) = g(t)^2`` (Song et al. 2021b, Thm. 1); ``red`` is ``1/2 sum`` or the mean over dimensions.
    At the true score of ``p_t`` the expectation over ``(x_0, z)`` is the irreducible value
    ``c (D - s(t)^2 J(p_t))`` (times ``g^2/s^2`` with the likelihood weighting), ``c = 1/2`` (sum) or ``1/D``
    (mean), ``J(p_t) = E||grad log p_t||^2`` the Fisher information; it follows from
    ``E[z | x_t] = -s(t) grad log p_t(x_t)`` (Vincent 2011).

    Args:
      score_fn: ``score_fn(x, t) -> [B, ...]``.
      sde: the forward SDE.
      x0: data ``[B, ...]``; t: times ``[B]``; z: standard normal noise, shape of ``x0``.
      reduce_mean: mean over dimensions instead of ``1/2 sum``.
      likelihood_weighting: ``g(t)^2`` instead of ``s(t)^2``.

    Returns:
      ``[B]`` per-example losses.
    """
    mean, std = sde.marginal_prob(x0, t)
    std_b = batch_broadcast(std, x0)
    xt = mean + std_b * z
    score = check_score(score_fn(xt, t), xt)
    if likelihood_weighting:
        g2 = sde.diffusion_coeff(t) ** 2
        return reduce_per_example(jnp.square(score + z / std_b), reduce_mean) * g2
    return reduce_per_example(jnp.square(score * std_b + z), reduce_mean)


# Importance sampling of t for the likelihood weighting: p(t) ∝ g(t)^2 / s(t)^2 on [eps, T]. Each SDE gives the
# antiderivative F of g^2/s^2 and its inverse in closed form (SDE.importance_cdf / importance_cdf_inverse).
def importance_weight_normalizer(sde: SDE, eps: float):
    """``Z = int_eps^T g(t)^2 / s(t)^2 dt``, the normaliser of the importance density of ``t``."""
    return sde.importance_cdf(jnp.asarray(sde.T)) - sde.importance_cdf(jnp.asarray(eps))


def sample_importance_time(key, sde: SDE, n: int, eps: float, dtype=None):
    """``n`` times from ``p(t) = g(t)^2 / (s(t)^2 Z)`` on ``[eps, T]`` by inverting its closed-form CDF.

    This is the proposal of Song et al. 2021b (Sec. 5) that removes the ``1/s(t)^2`` blow-up of the
    likelihood-weighted loss near ``t = 0``; the loss is then ``Z/(T - eps) red||s(t) s_theta + z||^2``, an
    unbiased estimate of the same objective as uniform ``t``.
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    lo = sde.importance_cdf(jnp.asarray(eps, dtype))
    hi = sde.importance_cdf(jnp.asarray(sde.T, dtype))
    u = jax.random.uniform(key, (n,), dtype, lo, hi)
    return jnp.clip(sde.importance_cdf_inverse(u), eps, sde.T)


def get_sde_loss_fn(sde: SDE, *, reduce_mean=False, likelihood_weighting=False, importance_sampling=False,
                    eps=1e-5) -> Callable:
    """Continuous-time DSM loss for any SDE (the paper's ``get_sde_loss_fn``; Song et al. 2021, Eq. 7).

    ``t ~ U(eps, T)`` (or the importance density when ``importance_sampling``), ``z ~ N(0, I)``, loss =
    batch mean of :func:`dsm_per_example`. With importance sampling each example is weighted by
    ``Z / (T - eps)`` so the expectation equals the uniform-``t`` loss.

    Args:
      sde: forward SDE.
      reduce_mean: mean over data dimensions instead of ``1/2 sum``.
      likelihood_weighting: ``lambda(t) = g(t)^2`` (Song et al. 2021b) instead of ``s(t)^2``.
      importance_sampling: sample ``t`` from ``p(t) ∝ g^2/s^2`` (only with ``likelihood_weighting``).
      eps: smallest time (the paper uses 1e-5).

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss", "t_mean"})`` with ``score_fn(x, t)``.
    """
    eps = C.check_eps(eps, sde)
    if importance_sampling and not likelihood_weighting:
        raise ValueError("importance_sampling=True requires likelihood_weighting=True (it samples t from "
                         "g(t)^2 / s(t)^2, the likelihood weighting divided by the default one).")

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        key_t, key_z = jax.random.split(key)
        b = batch.shape[0]
        z = jax.random.normal(key_z, batch.shape, batch.dtype)
        if importance_sampling:
            t = sample_importance_time(key_t, sde, b, eps, batch.dtype)
            scale = importance_weight_normalizer(sde, eps) / (sde.T - eps)
            losses = scale * dsm_per_example(score_fn, sde, batch, t, z, reduce_mean=reduce_mean)
        else:
            t = jax.random.uniform(key_t, (b,), batch.dtype, eps, sde.T)
            losses = dsm_per_example(score_fn, sde, batch, t, z, reduce_mean=reduce_mean,
                                     likelihood_weighting=likelihood_weighting)
        loss = jnp.mean(losses)
        return loss, {"loss": loss, "t_mean": jnp.mean(t)}

    return loss_fn


# --------------------------------------------------------------------------------------------------
# Discrete losses: SMLD / NCSN (VE) and DDPM (VP)
# --------------------------------------------------------------------------------------------------
def discrete_times(sde: SDE, index):
    """The time ``t_i = i T / (N - 1)`` of discrete level ``i`` (so ``sde.time_index(t_i) == i``)."""
    return jnp.asarray(index) * (sde.T / max(sde.N - 1, 1))


def _levels(key, sde, b):
    return jax.random.randint(key, (b,), 0, sde.N)


def get_smld_loss_fn(vesde: VESDE, *, reduce_mean=False) -> Callable:
    """SMLD (NCSN) loss over the VE SDE's ``N`` discrete noise levels (the paper's ``get_smld_loss_fn``).

    A level ``i ~ U{0..N-1}`` per example (``sigma_i = vesde.discrete_sigmas[i]``, ascending), ``x~ = x +
    sigma_i z``, target ``-(x~ - x)/sigma_i^2``, weight ``lambda(sigma) = sigma^2`` (Song & Ermon 2019):

    .. math::  \\ell = \\sigma_i^2\\,\\mathrm{red}\\,\\|s_\\theta(\\tilde x, t_i) + z/\\sigma_i\\|^2
               = \\mathrm{red}\\,\\|\\sigma_i s_\\theta(\\tilde x, t_i) + z\\|^2,

    with ``t_i = i T/(N-1)`` (:func:`discrete_times`); a discrete score wrapper maps ``t_i`` back to the
    level (NCSN label ``N-1-i``, label 0 = ``sigma_max``, as in the paper).

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss", "sigma_mean"})`` with ``score_fn(x, t)``.
    """
    if not isinstance(vesde, VESDE):
        raise ValueError(f"the SMLD loss needs a VESDE; got {type(vesde).__name__}.")

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        key_i, key_z = jax.random.split(key)
        i = _levels(key_i, vesde, batch.shape[0])
        sigma = vesde.discrete_sigmas.astype(batch.dtype)[i]
        z = jax.random.normal(key_z, batch.shape, batch.dtype)
        xt = batch + batch_broadcast(sigma, batch) * z
        t = discrete_times(vesde, i).astype(batch.dtype)
        score = check_score(score_fn(xt, t), xt)
        losses = reduce_per_example(jnp.square(batch_broadcast(sigma, batch) * score + z), reduce_mean)
        loss = jnp.mean(losses)
        return loss, {"loss": loss, "sigma_mean": jnp.mean(sigma)}

    return loss_fn


def get_ddpm_loss_fn(vpsde: VPSDE, *, reduce_mean=True) -> Callable:
    """DDPM loss (Ho et al. 2020, Eq. 14; the paper's ``get_ddpm_loss_fn``) written for a score function.

    Level ``i ~ U{0..N-1}``, ``x_i = sqrt(abar_i) x + sqrt(1 - abar_i) eps``; with the noise prediction
    ``eps_theta = -sqrt(1 - abar_i) s_theta(x_i, t_i)`` (what the VP score wrapper inverts):

    .. math::  \\ell = \\mathrm{red}\\,\\|\\epsilon_\\theta - \\epsilon\\|^2
               = \\mathrm{red}\\,\\|\\sqrt{1-\\bar\\alpha_i}\\, s_\\theta(x_i, t_i) + \\epsilon\\|^2.

    ``reduce_mean=True`` by default, as in the paper's DDPM configs.

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss"})`` with ``score_fn(x, t)``, ``t_i = i T/(N-1)``.
    """
    if not isinstance(vpsde, VPSDE):
        raise ValueError(f"the DDPM loss needs a VPSDE; got {type(vpsde).__name__}.")

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        key_i, key_z = jax.random.split(key)
        i = _levels(key_i, vpsde, batch.shape[0])
        abar = vpsde.alphas_cumprod.astype(batch.dtype)[i]
        std = batch_broadcast(jnp.sqrt(1.0 - abar), batch)
        noise = jax.random.normal(key_z, batch.shape, batch.dtype)
        xt = batch_broadcast(jnp.sqrt(abar), batch) * batch + std * noise
        score = check_score(score_fn(xt, discrete_times(vpsde, i).astype(batch.dtype)), xt)
        loss = jnp.mean(reduce_per_example(jnp.square(std * score + noise), reduce_mean))
        return loss, {"loss": loss}

    return loss_fn


def get_ncsn_loss_fn(sigmas, *, reduce_mean=False, anneal_power=2.0) -> Callable:
    """Multi-level NCSN loss (Song & Ermon 2019, Eq. 5-6) for a noise-conditional ``score_fn(x, sigma)``.

    .. math::  L = \\tfrac1L \\sum_i \\lambda(\\sigma_i)\\,\\mathbb E\\,\\mathrm{red}
               \\|s_\\theta(x + \\sigma_i z, \\sigma_i) + z/\\sigma_i\\|^2, \\qquad \\lambda(\\sigma) = \\sigma^{p},

    estimated with one random level per example; ``p = anneal_power = 2`` is the paper's choice, which
    makes every level's term of order one.

    Args:
      sigmas: ``[L]`` noise levels (any order).
      reduce_mean: mean over dimensions instead of ``1/2 sum``.
      anneal_power: exponent ``p`` of ``lambda(sigma) = sigma^p``.

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss", "sigma_mean"})``; the second argument of
      ``score_fn`` is the per-example noise level ``sigma: [B]``.
    """
    sigmas = jnp.asarray(sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must be a non-empty 1-D array; got shape {sigmas.shape}.")

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        key_i, key_z = jax.random.split(key)
        i = jax.random.randint(key_i, (batch.shape[0],), 0, sigmas.shape[0])
        sigma = sigmas.astype(batch.dtype)[i]
        sb = batch_broadcast(sigma, batch)
        z = jax.random.normal(key_z, batch.shape, batch.dtype)
        score = check_score(score_fn(batch + sb * z, sigma), batch)
        losses = reduce_per_example(jnp.square(score + z / sb), reduce_mean) * sigma**anneal_power
        loss = jnp.mean(losses)
        return loss, {"loss": loss, "sigma_mean": jnp.mean(sigma)}

    return loss_fn


# --------------------------------------------------------------------------------------------------
# Classical score matching at one distribution: score_fn(x) -> [B, ...]
# --------------------------------------------------------------------------------------------------
def _example_fn(score_fn, t, x):
    """``x_i -> score`` for one example (no batch axis): ``score_fn(x_i[None])[0]`` or, with times,
    ``score_fn(x_i[None], t_i[None])[0]``. Returns ``(f, extra_args)`` for ``vmap``.

    The batched output's shape is checked against ``x`` first (``jax.eval_shape``: no computation), so a
    score that would broadcast (``[B, 1]`` for ``[B, D]`` data) fails with a clear error instead of giving
    a wrong loss."""
    name = "score_fn(x)" if t is None else "score_fn(x, t)"
    check_score(jax.eval_shape(score_fn, x) if t is None else jax.eval_shape(score_fn, x, t), x, name)
    if t is None:
        return (lambda xi: score_fn(xi[None])[0]), ()
    return (lambda xi, ti: score_fn(xi[None], ti[None])[0]), (t,)


def ism_per_example(score_fn, x, t=None):
    """Per-example implicit score matching terms (Hyvärinen 2005, Eq. 4), exact trace of the Jacobian.

    .. math::  \\ell(x) = \\mathrm{tr}\\,\\nabla_x s_\\theta(x) + \\tfrac12 \\|s_\\theta(x)\\|^2.

    The Jacobian is formed with ``D`` forward-mode products per example (``jax.jacfwd`` under ``vmap``):
    exact, and meant for low dimension ``D``.

    Args:
      score_fn: ``score_fn(x) -> [B, ...]``, or ``score_fn(x, t)`` when ``t`` is given.
      x: ``[B, ...]``.
      t: optional times ``[B]`` (the Jacobian is taken in ``x`` at fixed ``t``).

    Returns:
      ``(trace [B], half_sq_norm [B])``.
    """
    d = _dim(x)
    f, extra = _example_fn(score_fn, t, x)

    def one(xi, *ti):
        jac = jax.jacfwd(f)(xi, *ti)
        s = f(xi, *ti)
        return jnp.trace(jnp.reshape(jac, (d, d))), 0.5 * jnp.sum(jnp.square(s))

    return jax.vmap(one)(x, *extra)


def _gaussian(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


_PROJECTIONS = {"gaussian": _gaussian, "rademacher": _rademacher}


def ssm_per_example(score_fn, x, v, t=None):
    """Per-example sliced score matching terms (Song et al. 2020, Eq. 7-8) for projections ``v``.

    .. math::  \\ell_{SSM} = v^\\top \\nabla_x s_\\theta(x)\\, v + \\tfrac12 (v^\\top s_\\theta(x))^2,\\qquad
               \\ell_{SSM\\text{-}VR} = v^\\top \\nabla_x s_\\theta(x)\\, v + \\tfrac12 \\|s_\\theta(x)\\|^2,

    the second using ``E[v v^T] = I`` to integrate the norm term in closed form. One Jacobian-vector
    product per projection.

    Args:
      score_fn: ``score_fn(x) -> [B, ...]``, or ``score_fn(x, t)`` when ``t`` is given.
      x: ``[B, ...]``.
      v: ``[M, B, ...]`` projections (``M`` per example).
      t: optional times ``[B]``.

    Returns:
      ``(vjv [M, B], half_sq_proj [M, B], half_sq_norm [B])``.
    """
    f, extra = _example_fn(score_fn, t, x)

    def one(vi, xi, *ti):
        s, jv = jax.jvp(lambda y: f(y, *ti), (xi,), (vi,))
        return jnp.sum(vi * jv), 0.5 * jnp.sum(vi * s) ** 2, 0.5 * jnp.sum(jnp.square(s))

    per_example = jax.vmap(one)                                   # over the batch
    vjv, proj, norm = jax.vmap(per_example, in_axes=(0, None) + (None,) * len(extra))(v, x, *extra)
    return vjv, proj, norm[0]


def implicit_score_matching_loss(score_fn, key, batch, *, reduce_mean=False):
    """ISM loss ``E[tr grad s + 1/2 ||s||^2]`` (Hyvärinen 2005); ``key`` is unused (kept for the interface).

    ``reduce_mean`` divides by the dimension ``D`` (the ``1/2 sum`` convention is the default). Minimising it
    equals minimising ``1/2 E||s - grad log p||^2`` (the constant is ``1/2 E||grad log p||^2``).

    Returns:
      ``(loss, {"loss", "trace_term", "norm_term"})``.
    """
    del key
    _check_batch_array(batch)
    tr, norm = ism_per_example(score_fn, batch)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    loss = c * jnp.mean(tr + norm)
    return loss, {"loss": loss, "trace_term": c * jnp.mean(tr), "norm_term": c * jnp.mean(norm)}


def sliced_score_matching_loss(score_fn, key, batch, *, num_projections=1, projection="gaussian",
                               variance_reduction=False, reduce_mean=False):
    """Sliced score matching (Song et al. 2020, Eq. 7; SSM-VR Eq. 8 with ``variance_reduction``).

    Args:
      score_fn: ``score_fn(x) -> [B, ...]``.
      key: PRNG key for the projections.
      batch: ``[B, ...]``.
      num_projections: projections per example, ``M``; the loss averages over them.
      projection: ``"gaussian"`` or ``"rademacher"`` (both have ``E[v v^T] = I``).
      variance_reduction: SSM-VR (norm term ``1/2||s||^2`` in closed form).
      reduce_mean: divide by the dimension ``D``.

    Returns:
      ``(loss, {"loss", "jacobian_term", "norm_term"})``.
    """
    _check_batch_array(batch)
    _check_projection(projection)
    v = _PROJECTIONS[projection](key, (num_projections,) + batch.shape, batch.dtype)
    vjv, proj, norm = ssm_per_example(score_fn, batch, v)
    c = 1.0 / _dim(batch) if reduce_mean else 1.0
    jac_term = c * jnp.mean(vjv)
    norm_term = c * (jnp.mean(norm) if variance_reduction else jnp.mean(proj))
    loss = jac_term + norm_term
    return loss, {"loss": loss, "jacobian_term": jac_term, "norm_term": norm_term}


def explicit_score_matching_loss(score_fn, key, batch, *, target_score_fn, reduce_mean=False):
    """ESM loss ``red ||s_theta(x) - s*(x)||^2`` against a known score ``target_score_fn(x)``.

    Returns:
      ``(loss, {"loss"})``; ``key`` is unused.
    """
    del key
    _check_batch_array(batch)
    diff = check_score(score_fn(batch), batch, "score_fn(x)") - check_score(target_score_fn(batch), batch,
                                                                           "target_score_fn(x)")
    loss = jnp.mean(reduce_per_example(jnp.square(diff), reduce_mean))
    return loss, {"loss": loss}


def denoising_score_matching_loss(score_fn, key, batch, *, sigma, reduce_mean=False):
    """DSM at one noise level (Vincent 2011, Eq. 9): ``red ||s_theta(x + sigma z) + z / sigma||^2``.

    Its minimiser is the score of the data convolved with ``N(0, sigma^2 I)``, which tends to the data
    score as ``sigma -> 0`` (with variance growing as ``1/sigma^2``).

    Returns:
      ``(loss, {"loss"})``.
    """
    _check_batch_array(batch)
    z = jax.random.normal(key, batch.shape, batch.dtype)
    score = check_score(score_fn(batch + sigma * z), batch, "score_fn(x)")
    loss = jnp.mean(reduce_per_example(jnp.square(score + z / sigma), reduce_mean))
    return loss, {"loss": loss}


# --------------------------------------------------------------------------------------------------
# Classical objectives on the perturbed data of an SDE (time-dependent score models)
# --------------------------------------------------------------------------------------------------
_SM_METHODS = ("ism", "ssm", "ssm_vr", "esm")


def sample_marginal(sde: SDE, key, batch, *, eps, likelihood_weighting=False):
    """A sample of the SDE's marginals for the classical objectives on ``p_t``: ``t ~ U(eps, T)``,
    ``x_t = a(t) x_0 + s(t) z``, and the weight ``lambda(t) = s(t)^2`` (or ``g(t)^2``).

    ``key`` is split in three (time, noise, and a third key returned for the loss's own draws, e.g. projections).

    Returns:
      ``(t [B], x_t [B, ...], weight [B], key_rest)``.
    """
    key_t, key_z, key_rest = jax.random.split(key, 3)
    t = jax.random.uniform(key_t, (batch.shape[0],), batch.dtype, eps, sde.T)
    z = jax.random.normal(key_z, batch.shape, batch.dtype)
    mean, std = sde.marginal_prob(batch, t)
    xt = mean + batch_broadcast(std, batch) * z
    weight = sde.diffusion_coeff(t) ** 2 if likelihood_weighting else std**2
    return t, xt, weight, key_rest


def get_sde_score_matching_loss_fn(sde: SDE, *, method="ssm", likelihood_weighting=False, eps=1e-5,
                                   num_projections=1, projection="gaussian", reduce_mean=False,
                                   target_score_fn=None) -> Callable:
    """ISM / SSM / SSM-VR / ESM applied to the SDE's marginals ``p_t`` (instead of DSM's conditional target).

    ``t ~ U(eps, T)``, ``x_t = a(t) x_0 + s(t) z`` (a sample of ``p_t``), and for each example the classical
    objective of the map ``x -> s_theta(x, t)`` at ``x_t``, weighted by ``lambda(t) = s(t)^2`` (or ``g(t)^2``):

    .. math::  L = \\mathbb E_t\\,\\lambda(t)\\, \\mathbb E_{x_t \\sim p_t}\\big[\\mathrm{tr}\\nabla s_\\theta
               + \\tfrac12\\|s_\\theta\\|^2\\big] \\quad(\\text{ISM; SSM slices the trace}),

    which equals ``1/2 E lambda ||s_theta - grad log p_t||^2`` up to a constant: any score-matching objective
    can train the time-dependent model (Song et al. 2021, Sec. 3.3). ``"esm"`` needs
    ``target_score_fn(x, t)``, the exact score of ``p_t`` (e.g. ``GaussianMixture.perturbed_score``).

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, aux)`` with ``score_fn(x, t)``.
    """
    C.lookup(dict.fromkeys(_SM_METHODS), method, "method")
    eps = C.check_eps(eps, sde)
    _check_projection(projection)
    if method == "esm" and target_score_fn is None:
        raise ValueError("method='esm' needs target_score_fn(x, t), the exact score of p_t.")

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        t, xt, weight, key_v = sample_marginal(sde, key, batch, eps=eps, likelihood_weighting=likelihood_weighting)
        c = 1.0 / _dim(batch) if reduce_mean else 1.0
        aux = {"t_mean": jnp.mean(t)}
        if method == "esm":
            diff = check_score(score_fn(xt, t), xt) - check_score(target_score_fn(xt, t), xt, "target_score_fn(x, t)")
            losses = weight * reduce_per_example(jnp.square(diff), reduce_mean)
        else:
            if method == "ism":
                first, second = ism_per_example(score_fn, xt, t)
            else:
                v = _PROJECTIONS[projection](key_v, (num_projections,) + batch.shape, batch.dtype)
                vjv, proj, norm = ssm_per_example(score_fn, xt, v, t)
                first = jnp.mean(vjv, axis=0)
                second = norm if method == "ssm_vr" else jnp.mean(proj, axis=0)
            aux["jacobian_term"] = c * jnp.mean(weight * first)
            aux["norm_term"] = c * jnp.mean(weight * second)
            losses = c * weight * (first + second)
        loss = jnp.mean(losses)
        aux["loss"] = loss
        return loss, aux

    return loss_fn


# --------------------------------------------------------------------------------------------------
# Noise-conditional classifier (Song et al. 2021, App. I.1)
# --------------------------------------------------------------------------------------------------
def get_classifier_loss_fn(sde: SDE, *, eps=1e-5) -> Callable:
    r"""Cross-entropy of a noise-conditional classifier on data noised by the SDE's kernel.

    .. math::  \mathcal L = E_{t \sim U(\epsilon, T)} E_{(x_0, y)} E_z
        \big[-\log \mathrm{softmax}(c_\phi(a(t) x_0 + s(t) z, t))_y\big],

    minimised by the exact noisy-data posterior ``log p_t(y | x_t)`` (Gibbs' inequality), which is what
    classifier guidance needs (Song et al. 2021, Eq. 14 and App. I.1).

    Args:
      sde: the forward SDE.
      eps: smallest time.

    Returns:
      ``loss_fn(logit_fn, key, batch) -> (loss, {"loss", "accuracy", "t_mean"})`` with ``logit_fn(x, t) -> [B,
      C]`` (:func:`sde_jax.models.get_logit_fn`) and ``batch = (x [B, ...], labels [B] int)`` or the labelled
      batches of :func:`sde_jax.data.device_batches`, ``{"image": x, "label": labels}``.
    """
    eps = C.check_eps(eps, sde)

    def loss_fn(logit_fn, key, batch):
        if isinstance(batch, Mapping) and "image" in batch and "label" in batch:   # sde_jax.data's labelled batches
            batch = (batch["image"], batch["label"])
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError("the classifier loss needs batch = (x [B, ...], labels [B]) or {'image': x, 'label': "
                             "labels}.")
        x, labels = batch
        _check_batch_array(x)
        if jnp.shape(labels) != jnp.shape(x)[:1]:
            raise ValueError(f"labels must have shape [B] = {jnp.shape(x)[:1]}; got {jnp.shape(labels)}.")
        key_t, key_z = jax.random.split(key)
        b = x.shape[0]
        t = jax.random.uniform(key_t, (b,), x.dtype, eps, sde.T)
        mean, std = sde.marginal_prob(x, t)
        xt = mean + batch_broadcast(std, x) * jax.random.normal(key_z, x.shape, x.dtype)
        logits = logit_fn(xt, t)
        log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        labels = labels.astype(jnp.int32)
        loss = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
        return loss, {"loss": loss, "accuracy": accuracy, "t_mean": jnp.mean(t)}

    return loss_fn


# --------------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022, Sec. 5 and Table 1)
# --------------------------------------------------------------------------------------------------
def edm_loss_weight(sigma, sigma_data):
    """EDM's ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2`` (``= 1 / c_out^2``, see
    :mod:`sde_jax.models.edm`)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_per_example(score_fn, sde: SDE, y, sigma, n, *, sigma_data, reduce_mean=True):
    """Per-example EDM loss at noise levels ``sigma: [B]`` and standard noise ``n`` (shape of ``y``).

    The noisy point of EDM, ``y + sigma n``, is the SDE's ``x_t = a(t) (y + sigma n)`` at ``t = t(sigma)``
    (:meth:`sde_jax.SDE.edm_time`), where the denoiser is read from the score by Tweedie's formula,
    ``D = x^ + sigma^2 a(t) score(x_t, t)`` (exactly the network's ``D`` under the ``"edm"`` parameterisation):

    .. math::  \\ell = \\lambda(\\sigma)\\,\\mathrm{red}\\,\\|D(y + \\sigma n; \\sigma) - y\\|^2
               = \\lambda(\\sigma)\\,\\sigma^2\\,\\mathrm{red}\\,\\|\\sigma a\\, s_\\theta(x_t, t) + n\\|^2.

    At the exact denoiser ``E[y | y + sigma n]`` its expectation is ``lambda(sigma) c tr Cov[y | y + sigma n]``;
    for Gaussian data ``N(mu, v I)`` that is ``lambda(sigma) c D v sigma^2 / (v + sigma^2)`` (``c = 1/D`` with
    ``reduce_mean``, else ``1/2``), which is 1 per dimension (mean) when ``v = sigma_d^2``: EDM's unit loss.

    Returns:
      ``[B]`` per-example losses.
    """
    t = sde.edm_time(sigma)
    a = batch_broadcast(sde.edm_scale(t), y)
    s = batch_broadcast(sigma, y)
    xt = a * (y + s * n)
    score = check_score(score_fn(xt, t), xt)
    return edm_loss_weight(sigma, sigma_data) * sigma**2 * reduce_per_example(jnp.square(s * a * score + n),
                                                                               reduce_mean)


def get_edm_loss_fn(sde: SDE, *, sigma_data=0.5, p_mean=-1.2, p_std=1.2, reduce_mean=True) -> Callable:
    """EDM's training loss (Karras et al. 2022, Eq. 8 and Table 1) for a score model under any SDE.

    ``log sigma ~ N(p_mean, p_std^2)``, ``n ~ N(0, I)``, loss = batch mean of :func:`edm_per_example`. Use it with
    the ``"edm"`` parameterisation (``model.parameterization``; :mod:`sde_jax.models.edm`) to train EDM's
    preconditioned denoiser, or with any other score model.

    Args:
      sde: forward SDE (gives ``t(sigma)`` and ``a(t)``).
      sigma_data: the data std ``sigma_d`` (> 0; EDM: 0.5).
      p_mean, p_std: the log-normal noise distribution (EDM: -1.2, 1.2).
      reduce_mean: mean over data dimensions (EDM's per-pixel mean) instead of ``1/2 sum``.

    Returns:
      ``loss_fn(score_fn, key, batch) -> (loss, {"loss", "sigma_mean"})`` with ``score_fn(x, t)``.
    """
    sigma_data = C.check_positive("sigma_data", C.finite_float("sigma_data", sigma_data))
    p_mean, p_std = C.finite_float("p_mean", p_mean), C.check_positive("p_std", C.finite_float("p_std", p_std))

    def loss_fn(score_fn, key, batch):
        _check_batch_array(batch)
        key_s, key_n = jax.random.split(key)
        sigma = jnp.exp(p_mean + p_std * jax.random.normal(key_s, batch.shape[:1], batch.dtype))
        n = jax.random.normal(key_n, batch.shape, batch.dtype)
        losses = edm_per_example(score_fn, sde, batch, sigma, n, sigma_data=sigma_data, reduce_mean=reduce_mean)
        loss = jnp.mean(losses)
        return loss, {"loss": loss, "sigma_mean": jnp.mean(sigma)}

    return loss_fn


# --------------------------------------------------------------------------------------------------
# Registry: config names -> loss factories ``factory(sde, **options) -> loss_fn``
# --------------------------------------------------------------------------------------------------
def _smld(sde, *, reduce_mean=False):
    return get_smld_loss_fn(sde, reduce_mean=reduce_mean)


def _ddpm(sde, *, reduce_mean=True):
    return get_ddpm_loss_fn(sde, reduce_mean=reduce_mean)


LOSSES = {
    "dsm": get_sde_loss_fn,
    "smld": _smld,
    "ddpm": _ddpm,
    "ism": functools.partial(get_sde_score_matching_loss_fn, method="ism"),
    "ssm": functools.partial(get_sde_score_matching_loss_fn, method="ssm"),
    "ssm_vr": functools.partial(get_sde_score_matching_loss_fn, method="ssm_vr"),
    "esm": functools.partial(get_sde_score_matching_loss_fn, method="esm"),
    "classifier": get_classifier_loss_fn,
    "edm": get_edm_loss_fn,
}
"""Loss names (``config.training.loss``) -> ``factory(sde, **options)``; all return ``loss_fn(score_fn, key, batch)``
with a time-dependent ``score_fn(x, t)``. ``"smld"`` and ``"ddpm"`` are the discrete losses (use a discrete
score wrapper, ``continuous=False``). ``"edm"`` takes ``sigma_data`` from ``config.model.sigma_data`` (shared with
the ``"edm"`` parameterisation) when built by :func:`sde_jax.training.build`. ``"classifier"`` trains a
noise-conditional classifier: its ``loss_fn`` takes a ``logit_fn(x, t)`` and batches ``(x, labels)``
(:data:`CLASSIFIER_LOSSES`)."""

CLASSIFIER_LOSSES = ("classifier",)
"""The losses of :data:`LOSSES` that train a classifier (``training.build`` wraps the network with
:func:`sde_jax.models.get_logit_fn` instead of :func:`sde_jax.models.get_score_fn`)."""


def get_loss_fn(name: str, sde: SDE, **options) -> Callable:
    """Look up ``name`` in :data:`LOSSES` and build the loss for ``sde``; unknown names list the valid ones."""
    return C.lookup(LOSSES, name, "loss")(sde, **options)


# --------------------------------------------------------------------------------------------------
# Finite-difference score matching and regularised ISM (sde_jax.losses_fd; Pang et al. 2020, Kingma & LeCun
# 2010): re-exported here, and the time-dependent FD objectives registered as "fd_ism", "fd_ssm", "fd_ssm_vr".
# --------------------------------------------------------------------------------------------------
from sde_jax import losses_fd  # noqa: E402
from sde_jax.losses_fd import (  # noqa: E402
    fd_energy_dsm_loss,
    fd_energy_ism_loss,
    fd_energy_ssm_loss,
    fd_ism_loss,
    fd_ssm_loss,
    get_sde_fd_loss_fn,
    regularized_ism_loss,
)

__all__ += ["fd_energy_dsm_loss", "fd_energy_ism_loss", "fd_energy_ssm_loss", "fd_ism_loss", "fd_ssm_loss",
            "get_sde_fd_loss_fn", "regularized_ism_loss"]
LOSSES.update({name: functools.partial(get_sde_fd_loss_fn, method=name) for name in losses_fd.FD_SDE_METHODS})
