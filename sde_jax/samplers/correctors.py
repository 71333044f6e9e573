"""Correctors: score-based MCMC steps that pull samples towards ``p_t`` at a fixed time (Song et al. 2021,
Algorithms 4 and 5).

A corrector is a :class:`Corrector`: ``step(key, sde, score_fn, x, t, index, **options) -> (x, x_mean)``
does ONE update; the driver repeats it ``n_corrector_steps`` times and passes each corrector only the options
it declares (``Corrector.options``). Both correctors are the one overdamped Langevin step
(:func:`sde_jax.samplers.langevin.langevin_update`)

.. math::  x_{mean} = x + \\epsilon\\, s_\\theta(x, t), \\qquad x = x_{mean} + \\sqrt{2\\epsilon}\\, z,

and differ in the step size ``epsilon``:

* ``langevin`` (options ``snr``, ``per_sample_step``): ``epsilon = 2 alpha_i (r ||z|| / ||s||)^2`` with target
  signal-to-noise ratio ``r = snr``, where ``z`` is the very draw the update then adds (the paper's
  Algorithm 4 and code: one normal draw per update). The paper's code averages the two norms over the (global)
  batch, so a sample's step depends on its batch-mates; that is the default here too. ``per_sample_step=True``
  uses each sample's own norms instead, so samples no longer depend on batch composition.

  The batch means are computed by :func:`batch_mean`, whose bits do not depend on how the batch is sharded
  (a float sum reduced per device and then across devices rounds differently on 1 and 8 devices, and 1,000
  steps amplify that into visibly different samples). Examples whose score is non-finite are left out of the
  means, so one NaN example does not turn the whole batch into NaN.
* ``ald`` (annealed Langevin; option ``snr``): ``epsilon = 2 alpha_i (r s(t))^2``, ``s(t)`` the marginal std.

``alpha_i = sde.langevin_alpha(t, index)``: 1 for VE, ``1 - beta_i`` for VP and (here, unlike the paper's
code, which crashes) for sub-VP.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax.samplers.langevin import langevin_update
from sde_jax import _checks as C
from sde_jax.sdes import check_score

__all__ = ["Corrector", "CORRECTORS", "OPTIONS", "get_corrector", "langevin", "annealed_langevin", "no_corrector",
           "batch_mean"]

OPTIONS = ("snr", "per_sample_step")
"""The corrector options the PC sampler knows; each corrector declares the ones it takes."""

# Smallest squared score norm used in the step size, so a zero score gives a finite (huge) step rather
# than a division by zero.
_TINY = 1e-30


class Corrector(NamedTuple):
    """A corrector step and its static properties.

    Attributes:
      step: ``step(key, sde, score_fn, x, t, index, **options) -> (x, x_mean)``.
      nfe_per_step: score evaluations per update.
      name: for messages.
      options: names (from :data:`OPTIONS`) of the keyword options ``step`` takes.
      noise_step: for an update whose only randomness is one standard normal draw ``z`` of ``x``'s shape,
        the update given that draw: ``noise_step(z, sde, score_fn, x, t, index, **options)``, with ``step``
        equal to it at ``z = normal(key, x.shape, x.dtype)``. The PC sampler then makes the draws itself,
        for small batches those of many steps in one call (the same numbers; see :func:`sde_jax.pc_sample`).
        ``None``: the sampler calls ``step`` with a key.
    """

    step: Callable
    nfe_per_step: int = 1
    name: str = "custom"
    options: tuple[str, ...] = ()
    noise_step: Callable | None = None


def _norms(v):
    return jnp.sqrt(jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=-1))


def batch_mean(v, where=None):
    """Mean of a non-negative ``[B]`` vector over the entries in ``where``, bitwise the same however ``v`` is
    sharded across devices.

    A float sum over a sharded batch is reduced per device and then across devices, so its rounding depends
    on the device count. Here every step is exact or element-wise: with ``m = max v`` (exact) and
    ``k = 30 - ceil(log2 B)``, each entry is written in two integer limbs of ``k`` bits,
    ``v / 2^{e(m)} = (h + l 2^{-k}) 2^{-k}`` (``h, l < 2^k``; truncation below ``2^{-2k}`` of ``m``),
    the limbs are summed in int32 (exact, associative: no order dependence, no overflow as ``B 2^k < 2^31``)
    and the two sums are converted back and added. The result equals the float mean to within a few ulps
    plus ``2^{-2k} m``.

    Args:
      v: ``[B]`` finite non-negative values (others are ignored when ``where`` excludes them).
      where: optional ``[B]`` bool mask of the entries to average (default: all). The mean of none is 0.

    Returns:
      A scalar of ``v``'s dtype (float32 inside for 16-bit types).
    """
    b = v.shape[0]
    dtype = jnp.promote_types(v.dtype, jnp.float32)
    x = v.astype(dtype)
    where = jnp.ones(x.shape, bool) if where is None else where
    x = jnp.where(where, x, 0.0)
    k = 30 - max(int(np.ceil(np.log2(max(b, 1)))), 0)
    _, e = jnp.frexp(jnp.max(x))
    scaled = jnp.ldexp(x, k - e)                                  # in [0, 2^k), exact
    hi = jnp.floor(scaled)
    lo = jnp.floor(jnp.ldexp(scaled - hi, k))                     # the next k bits
    s_hi = jnp.sum(hi.astype(jnp.int32)).astype(dtype)
    s_lo = jnp.sum(lo.astype(jnp.int32)).astype(dtype)
    total = jnp.ldexp(s_hi, e - k) + jnp.ldexp(s_lo, e - 2 * k)
    count = jnp.sum(where.astype(jnp.int32))
    return (total / jnp.maximum(count, 1).astype(dtype)).astype(v.dtype)


def _langevin(z, sde, score_fn, x, t, index, *, snr, per_sample_step):
    score = check_score(score_fn(x, t), x)
    # z sets the step size and is the step's noise (Algorithm 4)
    noise_norm, score_norm = _norms(z), _norms(score)
    if not per_sample_step:
        finite = jnp.isfinite(score_norm)
        noise_norm = jnp.broadcast_to(batch_mean(noise_norm, finite), noise_norm.shape)
        score_norm = jnp.broadcast_to(batch_mean(score_norm, finite), score_norm.shape)
    alpha = sde.langevin_alpha(t, index).astype(x.dtype)
    step = 2.0 * alpha * (snr * noise_norm) ** 2 / jnp.maximum(score_norm**2, _TINY)
    return langevin_update(None, x, score, step, noise=z)


def _ald(z, sde, score_fn, x, t, index, *, snr):
    score = check_score(score_fn(x, t), x)
    alpha = sde.langevin_alpha(t, index).astype(x.dtype)
    step = 2.0 * alpha * (snr * sde.marginal_std(t).astype(x.dtype)) ** 2
    return langevin_update(None, x, score, step, noise=z)


def _with_key(noise_step):
    """The key form of a one-draw update: ``step(key, ...) = noise_step(normal(key, x.shape, x.dtype), ...)``."""

    def step(key, sde, score_fn, x, t, index, **options):
        return noise_step(jax.random.normal(key, x.shape, x.dtype), sde, score_fn, x, t, index, **options)

    step.__name__ = noise_step.__name__.lstrip("_")
    return step


def _none(key, sde, score_fn, x, t, index):
    return x, x


langevin = Corrector(_with_key(_langevin), 1, "langevin", ("snr", "per_sample_step"), _langevin)
annealed_langevin = Corrector(_with_key(_ald), 1, "ald", ("snr",), _ald)
no_corrector = Corrector(_none, 0, "none", ())

CORRECTORS = {c.name: c for c in (langevin, annealed_langevin, no_corrector)}


def get_corrector(corrector) -> Corrector:
    """A :class:`Corrector` from a name in ``CORRECTORS``, a ``Corrector``, or a bare step function (one
    score evaluation per update; it receives the options of :data:`OPTIONS` that its signature names)."""
    if isinstance(corrector, Corrector):
        return corrector
    if isinstance(corrector, str):
        return C.lookup(CORRECTORS, corrector, "corrector")
    if callable(corrector):
        try:
            params = inspect.signature(corrector).parameters
        except (TypeError, ValueError):
            params = {}
        return Corrector(corrector, 1, getattr(corrector, "__name__", "custom"),
                         tuple(o for o in OPTIONS if o in params))
    raise TypeError(f"corrector must be a name, a Corrector or a step function; got {corrector!r}.")
