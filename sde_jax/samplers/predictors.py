"""Predictors: one reverse-time step of a discretised reverse SDE (Song et al. 2021, Sec. 4.2).

A predictor is a :class:`Predictor`: a pure ``step(key, sde, score_fn, x, t, t_next, index)`` returning
``(x, x_mean)`` (the sample and its value before the step's noise was added), plus the facts the driver
needs as data: how many score evaluations one step costs, whether the step is tied to the SDE's ``N``
discrete levels, and which SDEs it applies to. ``t`` and ``t_next`` are ``[B]``; ``index`` is the
discrete level of this step (``[B]`` int32).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sde_jax.sdes import SubVPSDE, VESDE, VPSDE, batch_broadcast, check_score, reverse_discretize, reverse_sde

__all__ = ["Predictor", "PREDICTORS", "get_predictor", "euler_maruyama", "reverse_diffusion", "ancestral",
           "no_predictor"]


class Predictor(NamedTuple):
    """A predictor step and its static properties.

    Attributes:
      step: ``step(key, sde, score_fn, x, t, t_next, index) -> (x, x_mean)``.
      nfe_per_step: score evaluations per call of ``step``.
      discrete: True if the step moves exactly one of the SDE's ``N`` levels (then the sampler must take
        ``num_steps == sde.N`` steps).
      sde_types: SDE classes the step is defined for (``None``: all).
      name: for messages.
    """

    step: Callable
    nfe_per_step: int = 1
    discrete: bool = False
    sde_types: tuple | None = None
    name: str = "custom"


def _noise(key, x):
    return jax.random.normal(key, x.shape, x.dtype)


def _euler_maruyama(key, sde, score_fn, x, t, t_next, index):
    """``x_mean = x + f_rev(x, t) dt``, ``x = x_mean + g(t) sqrt(-dt) z`` with ``dt = t_next - t < 0``.

    The paper's code uses ``dt = -1/N`` whatever the grid; here ``dt`` is the grid's own spacing, so the
    steps integrate exactly from ``T`` to 0 (see :func:`sde_jax.samplers.pc_sample` for the grid).
    """
    dt = t_next - t
    drift, g = reverse_sde(sde, score_fn, x, t)
    x_mean = x + batch_broadcast(dt, x) * drift
    return x_mean + batch_broadcast(g * jnp.sqrt(-dt), x) * _noise(key, x), x_mean


def _reverse_diffusion(key, sde, score_fn, x, t, t_next, index):
    """``x_mean = x - f_i + G_i^2 score``, ``x = x_mean + G_i z``: the reverse of ``sde.discretize``."""
    rev_f, rev_g = reverse_discretize(sde, score_fn, x, t, index)
    x_mean = x - rev_f
    return x_mean + batch_broadcast(rev_g, x) * _noise(key, x), x_mean


def _ancestral(key, sde, score_fn, x, t, t_next, index):
    """Ancestral sampling of the SMLD (VE) or DDPM (VP) chain (Song et al. 2021, App. F).

    VE: ``x_mean = x + (sigma_i^2 - sigma_{i-1}^2) score``, noise std
    ``sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)``.
    VP: ``x_mean = (x + beta_i score) / sqrt(1 - beta_i)``, noise std ``sqrt(beta_i)``.
    """
    score = check_score(score_fn(x, t), x)
    if isinstance(sde, VESDE):
        sigmas = sde.discrete_sigmas.astype(x.dtype)
        sigma = sigmas[index]
        prev = jnp.where(index == 0, 0.0, sigmas[jnp.maximum(index - 1, 0)])
        x_mean = x + batch_broadcast(sigma**2 - prev**2, x) * score
        std = jnp.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)
    else:
        beta = sde.discrete_betas.astype(x.dtype)[index]
        x_mean = (x + batch_broadcast(beta, x) * score) / batch_broadcast(jnp.sqrt(1.0 - beta), x)
        std = jnp.sqrt(beta)
    return x_mean + batch_broadcast(std, x) * _noise(key, x), x_mean


def _none(key, sde, score_fn, x, t, t_next, index):
    return x, x


euler_maruyama = Predictor(_euler_maruyama, 1, False, None, "euler_maruyama")
reverse_diffusion = Predictor(_reverse_diffusion, 1, True, (VESDE, VPSDE, SubVPSDE), "reverse_diffusion")
ancestral = Predictor(_ancestral, 1, True, (VESDE, VPSDE), "ancestral")
no_predictor = Predictor(_none, 0, False, None, "none")

PREDICTORS = {p.name: p for p in (euler_maruyama, reverse_diffusion, ancestral, no_predictor)}


def get_predictor(predictor) -> Predictor:
    """A :class:`Predictor` from a name in ``PREDICTORS``, a ``Predictor``, or a bare step function
    (then taken as one score evaluation per step, continuous time, any SDE)."""
    if isinstance(predictor, Predictor):
        return predictor
    if isinstance(predictor, str):
        if predictor not in PREDICTORS:
            raise ValueError(f"unknown predictor {predictor!r}; valid names: {sorted(PREDICTORS)}.")
        return PREDICTORS[predictor]
    if callable(predictor):
        return Predictor(predictor, 1, False, None, getattr(predictor, "__name__", "custom"))
    raise TypeError(f"predictor must be a name, a Predictor or a step function; got {predictor!r}.")
