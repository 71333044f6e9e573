"""Correctors: score-based MCMC steps that pull samples towards ``p_t`` at a fixed time (Song et al. 2021,
Algorithms 4 and 5).

A corrector is a :class:`Corrector`: ``step(key, sde, score_fn, x, t, index, snr, per_sample) ->
(x, x_mean)`` does ONE Langevin update; the driver repeats it ``n_corrector_steps`` times. Both correctors
use the update

.. math::  x_{mean} = x + \\epsilon\\, s_\\theta(x, t), \\qquad x = x_{mean} + \\sqrt{2\\epsilon}\\, z,

and differ in the step size ``epsilon``:

* ``langevin``: ``epsilon = 2 alpha_i (r ||z|| / ||s||)^2`` with target signal-to-noise ratio ``r = snr``.
  The paper's code averages the two norms over the (global) batch, so a sample's step depends on its
  batch-mates; that is the default here too. ``per_sample=True`` uses each sample's own norms instead, so
  samples no longer depend on batch composition.
* ``ald`` (annealed Langevin): ``epsilon = 2 alpha_i (r s(t))^2``, ``s(t)`` the marginal std (per sample).

``alpha_i = sde.langevin_alpha(t, index)``: 1 for VE, ``1 - beta_i`` for VP and (here, unlike the paper's
code, which crashes) for sub-VP.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sde_jax.sdes import batch_broadcast, check_score

__all__ = ["Corrector", "CORRECTORS", "get_corrector", "langevin", "annealed_langevin", "no_corrector"]

# Smallest squared score norm used in the step size, so a zero score gives a finite (huge) step rather
# than a division by zero.
_TINY = 1e-30


class Corrector(NamedTuple):
    """A corrector step and its static properties (``nfe_per_step`` evaluations per Langevin update)."""

    step: Callable
    nfe_per_step: int = 1
    name: str = "custom"


def _norms(v):
    return jnp.sqrt(jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=-1))


def _langevin_update(key, x, score, step):
    x_mean = x + batch_broadcast(step, x) * score
    z = jax.random.normal(key, x.shape, x.dtype)
    return x_mean + batch_broadcast(jnp.sqrt(2.0 * step), x) * z, x_mean


def _langevin(key, sde, score_fn, x, t, index, snr, per_sample):
    score = check_score(score_fn(x, t), x)
    key_z, key_noise = jax.random.split(key)
    z = jax.random.normal(key_z, x.shape, x.dtype)
    noise_norm, score_norm = _norms(z), _norms(score)
    if not per_sample:
        noise_norm = jnp.broadcast_to(jnp.mean(noise_norm), noise_norm.shape)
        score_norm = jnp.broadcast_to(jnp.mean(score_norm), score_norm.shape)
    alpha = sde.langevin_alpha(t, index).astype(x.dtype)
    step = 2.0 * alpha * (snr * noise_norm) ** 2 / jnp.maximum(score_norm**2, _TINY)
    return _langevin_update(key_noise, x, score, step)


def _ald(key, sde, score_fn, x, t, index, snr, per_sample):
    score = check_score(score_fn(x, t), x)
    alpha = sde.langevin_alpha(t, index).astype(x.dtype)
    step = 2.0 * alpha * (snr * sde.marginal_std(t).astype(x.dtype)) ** 2
    return _langevin_update(key, x, score, step)


def _none(key, sde, score_fn, x, t, index, snr, per_sample):
    return x, x


langevin = Corrector(_langevin, 1, "langevin")
annealed_langevin = Corrector(_ald, 1, "ald")
no_corrector = Corrector(_none, 0, "none")

CORRECTORS = {c.name: c for c in (langevin, annealed_langevin, no_corrector)}


def get_corrector(corrector) -> Corrector:
    """A :class:`Corrector` from a name in ``CORRECTORS``, a ``Corrector``, or a bare step function (one
    score evaluation per update)."""
    if isinstance(corrector, Corrector):
        return corrector
    if isinstance(corrector, str):
        if corrector not in CORRECTORS:
            raise ValueError(f"unknown corrector {corrector!r}; valid names: {sorted(CORRECTORS)}.")
        return CORRECTORS[corrector]
    if callable(corrector):
        return Corrector(corrector, 1, getattr(corrector, "__name__", "custom"))
    raise TypeError(f"corrector must be a name, a Corrector or a step function; got {corrector!r}.")
