"""Controllable generation with an unconditional score model (Song et al. 2021, Sec. 5 and App. I): inpainting,
colourisation, general linear inverse problems and class-conditional sampling (classifier guidance).

Linear measurements (:mod:`sde_jax.samplers.measurements`) are solved by one of two methods:

* ``method="replacement"`` -- the paper's (``controllable_generation.py``): the PC sampler with, after every
  predictor and corrector step, the observed coordinates replaced by the observation pushed through the
  forward kernel, ``\\bar x_i <- a(t) \\tilde y_i + s(t) z`` (:class:`Replacement`, the ``project`` hook of
  :func:`sde_jax.pc_sample`). Cheap and good on images, but **biased**: the free coordinates never see how
  likely the observation is under each mode, so when the observation lies between modes the sampler commits
  them too early (measured against exact conditionals in the tests and the README). Exact observations only.
* ``method="smc"`` -- asymptotically exact: the twisted particle filter of :mod:`sde_jax.samplers.smc` (MCGdiff,
  Cardoso et al. 2023), whose proposal is the replacement step made exact and whose weights remove the bias;
  ``num_particles`` is the accuracy knob. Noisy measurements too.

Deviations from the paper's code, all deliberate:

* **No last-step noise in the output.** The paper builds its "denoised" output from the *noisy* sample
  (``x_mean = x (1 - m) + mean_t(y) m`` with ``x`` after the noise was added). Here the free coordinates come
  from the predictor's noise-free mean and the observed ones are the observation itself (the last step ends
  at ``t = 0``, where ``a = 1``, ``s = 0``).
* **Replacement at the time the sample is at.** After a predictor step from ``t_k`` to ``t_{k+1}`` the
  observation is pushed to ``t_{k+1}`` (the paper uses ``t_k``); the prior sample is replaced at ``T``.
* Colourisation is a linear measurement in the paper's orthonormal colour basis (:data:`COLOUR_BASIS`), so it
  gets the SMC method and noisy grey levels too.

Class-conditional sampling (:func:`conditional_sample`) runs the PC sampler on the guided score
``s(x, t) + scale * grad_x log p_t(y | x)`` (:class:`GuidedScore`): with ``scale = 1`` and the exact
``log p_t(y | x)`` that *is* the score of ``p_t(x | y)`` (Bayes' rule; Song et al. 2021, Eq. 14), so the
sampler is exactly as accurate as the unconditional one. ``predictor="probability_flow"`` gives the ODE
counterpart of every sampler here (the paper's ``probability_flow=True``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax._pytree import pytree_dataclass
from sde_jax.samplers.measurements import LinearMeasurement, colour_measurement, mask_measurement
from sde_jax.samplers.pc import pc_sample
from sde_jax.samplers.smc import smc_sample
from sde_jax.sdes import SDE, batch_broadcast, check_score

__all__ = ["METHODS", "Replacement", "GuidedScore", "linear_inverse", "inpaint", "colorize",
           "conditional_sample"]


@pytree_dataclass
class Replacement:
    """The paper's data-consistency step as a ``project(key, x, x_mean, t)`` hook of :func:`sde_jax.pc_sample`.

    In the measurement's basis, observed coordinates become ``a(t) \\tilde y + s(t) z`` (sample) and
    ``a(t) \\tilde y`` (mean); free coordinates keep the sampler's values. At ``t = 0`` that is the observation
    itself, so the final ``x_mean`` has no noise anywhere.
    """

    sde: SDE
    measurement: LinearMeasurement

    def __call__(self, key, x, x_mean, t):
        meas = self.measurement
        a = batch_broadcast(self.sde.marginal_mean_coeff(t), x).astype(x.dtype)
        s = batch_broadcast(self.sde.marginal_std(t), x).astype(x.dtype)
        known_mean = a * meas.y_bar.astype(x.dtype)
        known = known_mean + s * jax.random.normal(key, x.shape, x.dtype)
        x_bar = jnp.where(meas.observed, known, meas.to_spectral(x))
        x_mean_bar = jnp.where(meas.observed, known_mean, meas.to_spectral(x_mean))
        return meas.from_spectral(x_bar), meas.from_spectral(x_mean_bar)


def _replacement(key, sde, score_fn, measurement, **options):
    if not measurement.is_noise_free():
        raise ValueError("method 'replacement' needs exact observations (noise_std=0); use method='smc' for "
                         "noisy measurements.")
    if "project" in options:
        raise TypeError("method 'replacement' sets pc_sample's project hook itself; do not pass project.")
    return pc_sample(key, sde, score_fn, measurement.shape, project=Replacement(sde, measurement), **options)


def _smc(key, sde, score_fn, measurement, **options):
    return smc_sample(key, sde, score_fn, measurement, **options)


METHODS = {"replacement": _replacement, "smc": _smc}
"""``method`` name -> ``sampler(key, sde, score_fn, measurement, **options) -> (x, nfe[, info])``. Options:
those of :func:`sde_jax.pc_sample` (replacement) or :func:`sde_jax.samplers.smc_sample` (smc)."""


def linear_inverse(key, sde, score_fn, measurement: LinearMeasurement, *, method="smc", **options):
    """Sample ``x`` given a linear measurement ``y = A x (+ noise)`` with an unconditional score model.

    Args:
      key: PRNG key.
      sde: a :class:`~sde_jax.SDE`.
      score_fn: the unconditional ``score_fn(x, t)``.
      measurement: a :class:`LinearMeasurement` (:func:`mask_measurement`, :func:`colour_measurement`,
        :func:`linear_measurement`); ``[B, ...]``, one per example.
      method: ``"smc"`` (asymptotically exact; default) or ``"replacement"`` (the paper's; biased, exact
        observations only). See the module docstring.
      **options: sampler options: for ``"replacement"`` those of :func:`sde_jax.pc_sample` (``predictor``,
        ``corrector``, ``snr``, ``n_corrector_steps``, ``num_steps``, ``eps``, ``denoise``, ...), for ``"smc"``
        those of :func:`sde_jax.samplers.smc_sample` (``num_particles``, ``predictor``, ``num_steps``, ``eps``,
        ``resample_threshold``, ``return_info``, ...).

    Returns:
      ``(x, nfe)`` (``(x, nfe, info)`` for ``smc`` with ``return_info``): samples ``[B, ...]``.
    """
    if not isinstance(measurement, LinearMeasurement):
        raise TypeError(f"measurement must be a LinearMeasurement; got {type(measurement).__name__}.")
    return C.lookup(METHODS, method, "method")(key, sde, score_fn, measurement, **options)


def inpaint(key, sde, score_fn, data, mask, *, method="replacement", noise_std=0.0, **options):
    """Inpainting: sample the coordinates where ``mask`` is 0 given ``data`` where it is 1.

    ``sj.inpaint(key, sde, score_fn, data, mask, method="replacement" | "smc", **options)``; ``mask`` is 1 where
    the data is known, with the data's shape ``[B, ...]`` or broadcastable to it. ``method="replacement"``
    (default) is the paper's PC inpainter (with its corrector; output without last-step noise);
    ``method="smc"`` the asymptotically exact particle filter. See :func:`linear_inverse` for the options.

    Returns:
      ``(x, nfe)``: completed examples ``[B, ...]``; known coordinates equal ``data`` exactly (noise-free,
      ``denoise=True``).
    """
    return linear_inverse(key, sde, score_fn, mask_measurement(data, mask, noise_std), method=method, **options)


def colorize(key, sde, score_fn, gray, *, method="replacement", noise_std=0.0, **options):
    """Colourisation: sample RGB images ``[B, H, W, 3]`` whose grey level ``(r + g + b)/3`` is ``gray``.

    ``gray`` is ``[B, H, W, 1]`` or a grey-scale ``[B, H, W, 3]`` image with equal channels (the paper's input).
    The measurement is the first channel in the paper's orthonormal colour basis (:func:`colour_measurement`);
    ``method`` and options as in :func:`linear_inverse`.
    """
    return linear_inverse(key, sde, score_fn, colour_measurement(gray, noise_std), method=method, **options)


@pytree_dataclass
class GuidedScore:
    """``score_fn(x, t) + scale * grad_x log p_t(y | x)``: the score of ``p_t(x | y)`` for ``scale = 1``.

    ``log_prob_y_fn(x, t, y) -> [B]`` must be per example (row ``i`` depends on ``x[i]`` only), so the gradient
    of its sum is every row's gradient; one score and one classifier gradient per call.
    """

    score_fn: object
    log_prob_y_fn: object
    y: jax.Array
    scale: jax.Array

    def __call__(self, x, t):
        score = check_score(self.score_fn(x, t), x)

        def total_log_prob(v):
            lp = self.log_prob_y_fn(v, t, self.y)
            if jnp.shape(lp) != jnp.shape(x)[:1]:
                raise ValueError(f"log_prob_y_fn(x, t, y) must return shape [B] = {jnp.shape(x)[:1]}; got "
                                 f"{jnp.shape(lp)}.")
            return jnp.sum(lp)

        return score + jnp.asarray(self.scale, x.dtype) * jax.grad(total_log_prob)(x).astype(x.dtype)


def conditional_sample(key, sde, score_fn, log_prob_y_fn, y, shape, scale=1.0, **options):
    """Class-conditional (or any-condition) sampling by guidance: the PC sampler on
    ``score(x, t) + scale * grad_x log p_t(y | x)`` (Song et al. 2021, Eq. 14; Dhariwal & Nichol 2021).

    With ``scale = 1`` and the exact ``log p_t(y | x)`` the guided score is the score of ``p_t(x | y)``, so the
    samples follow ``p(x | y)`` as exactly as the sampler follows ``p``; other scales sharpen (``> 1``) or
    flatten it (classifier guidance). A noise-conditional classifier gives ``log_prob_y_fn`` through
    :func:`sde_jax.models.classifier_log_prob`.

    Args:
      key: PRNG key.
      sde: a :class:`~sde_jax.SDE`.
      score_fn: the unconditional ``score_fn(x, t)``.
      log_prob_y_fn: ``log_prob_y_fn(x, t, y) -> [B]``, ``log p_t(y | x)`` per example.
      y: the condition of every example, ``[B, ...]`` (e.g. ``[B]`` int class labels).
      shape: sample shape ``[B, ...]``.
      scale: guidance scale (>= 0; 1 is exact conditioning).
      **options: those of :func:`sde_jax.pc_sample` (``predictor="probability_flow"`` for the ODE counterpart).

    Returns:
      ``(x, nfe)``; ``nfe`` counts score evaluations (each with one classifier gradient).
    """
    shape = C.check_shape(shape)
    y = jnp.asarray(y)
    if y.ndim < 1 or y.shape[0] != shape[0]:
        raise ValueError(f"y must have a batch axis of size B = {shape[0]}; got shape {y.shape}.")
    scale = C.check_nonnegative("scale", scale)
    return pc_sample(key, sde, GuidedScore(score_fn, log_prob_y_fn, y, jnp.asarray(scale)), shape, **options)
