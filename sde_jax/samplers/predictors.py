"""Predictors: one reverse-time step of a discretised reverse SDE (Song et al. 2021, Sec. 4.2).

A predictor is a :class:`Predictor`: a pure ``step(key, sde, score_fn, x, t, t_next, index)`` returning
``(x, x_mean)`` (the sample and its value before the step's noise was added), plus the facts the driver
needs as data: how many score evaluations one step costs, whether the step is tied to the SDE's ``N``
discrete levels, and which SDEs it applies to. ``t`` and ``t_next`` are ``[B]``; ``index`` is the
discrete level of this step (``[B]`` int32).

Every built-in predictor is a Gaussian transition ``x' ~ N(x_mean, std^2 I)`` and says so as data:
``kernel(sde, score_fn, x, t, t_next, index) -> (x_mean, std [B])``, from which ``step`` draws. The
sequential Monte Carlo samplers (:mod:`sde_jax.samplers.smc`) need the kernel itself (they multiply it with a
Gaussian potential before drawing); the PC sampler uses it to draw the steps' noise ahead of its loop
(:func:`sde_jax.pc_sample`). ``probability_flow`` is the deterministic member (``std = 0``): Euler
steps of the probability-flow ODE on the PC grid, the paper's ``probability_flow=True`` predictors.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from sde_jax import _checks as C
from sde_jax.sdes import SDE, batch_broadcast, check_score, reverse_discretize, reverse_sde

__all__ = ["Predictor", "PREDICTORS", "get_predictor", "euler_maruyama", "reverse_diffusion", "ancestral",
           "probability_flow", "no_predictor"]


class Predictor(NamedTuple):
    """A predictor step and its static properties.

    Attributes:
      step: ``step(key, sde, score_fn, x, t, t_next, index) -> (x, x_mean)``.
      nfe_per_step: score evaluations per call of ``step``.
      discrete: True if the step moves exactly one of the SDE's ``N`` levels (then the sampler must take
        ``num_steps == sde.N`` steps).
      requires: name of an SDE method the step needs (``None``: any SDE), e.g. ``"ancestral_step"``.
      name: for messages.
      kernel: ``kernel(sde, score_fn, x, t, t_next, index) -> (x_mean, std)`` when the step draws
        ``x' = x_mean + std z`` (``std: [B]``); ``None`` for steps that are not (isotropic) Gaussian.
    """

    step: Callable
    nfe_per_step: int = 1
    discrete: bool = False
    requires: str | None = None
    name: str = "custom"
    kernel: Callable | None = None

    def check_sde(self, sde):
        """Raise ``ValueError`` if the SDE lacks what this predictor needs."""
        if self.requires is not None and not hasattr(sde, self.requires):
            valid = ", ".join(c.__name__ for c in _public_sde_classes() if hasattr(c, self.requires))
            raise ValueError(f"predictor {self.name!r} is defined for {valid}; got {type(sde).__name__} (it needs "
                             f"SDE.{self.requires}).")


def _public_sde_classes():
    """The concrete SDE classes, in definition order (for messages)."""
    out, todo = [], list(SDE.__subclasses__())
    while todo:
        c = todo.pop(0)
        todo.extend(c.__subclasses__())
        if not c.__name__.startswith("_"):
            out.append(c)
    return out


def _noise(key, x):
    return jax.random.normal(key, x.shape, x.dtype)


def _euler_maruyama(sde, score_fn, x, t, t_next, index):
    """``x_mean = x + f_rev(x, t) dt``, ``std = g(t) sqrt(-dt)`` with ``dt = t_next - t < 0``.

    The paper's code uses ``dt = -1/N`` whatever the grid; here ``dt`` is the grid's own spacing, so the
    steps integrate exactly from ``T`` to 0 (see :func:`sde_jax.samplers.pc_sample` for the grid).
    """
    dt = t_next - t
    drift, g = reverse_sde(sde, score_fn, x, t)
    return x + batch_broadcast(dt, x) * drift, g * jnp.sqrt(-dt)


def _reverse_diffusion(sde, score_fn, x, t, t_next, index):
    """``x_mean = x - f_i + G_i^2 score``, ``std = G_i``: the reverse of ``sde.discretize``."""
    rev_f, rev_g = reverse_discretize(sde, score_fn, x, t, index)
    return x - rev_f, rev_g


def _ancestral(sde, score_fn, x, t, t_next, index):
    """Ancestral sampling of the SMLD (VE) or DDPM (VP) chain (Song et al. 2021, App. F): the SDE's own
    :meth:`ancestral_step` gives ``x_mean`` and the noise std."""
    return sde.ancestral_step(x, check_score(score_fn(x, t), x), index)


def _probability_flow(sde, score_fn, x, t, t_next, index):
    """An Euler step of the probability-flow ODE ``dx = [f - g^2 score / 2] dt`` from ``t`` to ``t_next``; no
    noise (``std = 0``). The paper's predictors with ``probability_flow=True`` (Song et al. 2021, Eq. 13)."""
    dt = t_next - t
    drift, _ = reverse_sde(sde, score_fn, x, t, probability_flow=True)
    return x + batch_broadcast(dt, x) * drift, jnp.zeros(jnp.shape(t), x.dtype)


def gaussian_move(x_mean, std, z):
    """``x_mean + std z`` with ``std: [B]`` broadcast over each example: a Gaussian kernel's draw from ``z``."""
    return x_mean + batch_broadcast(std, x_mean) * z


def _gaussian_step(kernel):
    """The step ``x' = x_mean + std z`` of a Gaussian kernel (``z`` from the step's key)."""

    def step(key, sde, score_fn, x, t, t_next, index):
        x_mean, std = kernel(sde, score_fn, x, t, t_next, index)
        return gaussian_move(x_mean, std, _noise(key, x)), x_mean

    step.__name__ = kernel.__name__.lstrip("_")
    return step


def _none(key, sde, score_fn, x, t, t_next, index):
    return x, x


def _gaussian(kernel, discrete, requires, name):
    return Predictor(_gaussian_step(kernel), 1, discrete, requires, name, kernel)


euler_maruyama = _gaussian(_euler_maruyama, False, None, "euler_maruyama")
reverse_diffusion = _gaussian(_reverse_diffusion, True, "discretize", "reverse_diffusion")
ancestral = _gaussian(_ancestral, True, "ancestral_step", "ancestral")
probability_flow = _gaussian(_probability_flow, False, None, "probability_flow")
no_predictor = Predictor(_none, 0, False, None, "none")

PREDICTORS = {p.name: p for p in (euler_maruyama, reverse_diffusion, ancestral, probability_flow, no_predictor)}


def get_predictor(predictor) -> Predictor:
    """A :class:`Predictor` from a name in ``PREDICTORS``, a ``Predictor``, or a bare step function
    (then taken as one score evaluation per step, continuous time, any SDE)."""
    if isinstance(predictor, Predictor):
        return predictor
    if isinstance(predictor, str):
        return C.lookup(PREDICTORS, predictor, "predictor")
    if callable(predictor):
        return Predictor(predictor, 1, False, None, getattr(predictor, "__name__", "custom"))
    raise TypeError(f"predictor must be a name, a Predictor or a step function; got {predictor!r}.")
