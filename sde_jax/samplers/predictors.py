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

from sde_jax import _checks as C
from sde_jax.sdes import SDE, batch_broadcast, check_score, reverse_discretize, reverse_sde

__all__ = ["Predictor", "PREDICTORS", "get_predictor", "euler_maruyama", "reverse_diffusion", "ancestral",
           "no_predictor"]


class Predictor(NamedTuple):
    """A predictor step and its static properties.

    Attributes:
      step: ``step(key, sde, score_fn, x, t, t_next, index) -> (x, x_mean)``.
      nfe_per_step: score evaluations per call of ``step``.
      discrete: True if the step moves exactly one of the SDE's ``N`` levels (then the sampler must take
        ``num_steps == sde.N`` steps).
      requires: name of an SDE method the step needs (``None``: any SDE), e.g. ``"ancestral_step"``.
      name: for messages.
    """

    step: Callable
    nfe_per_step: int = 1
    discrete: bool = False
    requires: str | None = None
    name: str = "custom"

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
    """Ancestral sampling of the SMLD (VE) or DDPM (VP) chain (Song et al. 2021, App. F): the SDE's own
    :meth:`ancestral_step` gives ``x_mean`` and the noise std."""
    x_mean, std = sde.ancestral_step(x, check_score(score_fn(x, t), x), index)
    return x_mean + batch_broadcast(std, x) * _noise(key, x), x_mean


def _none(key, sde, score_fn, x, t, t_next, index):
    return x, x


euler_maruyama = Predictor(_euler_maruyama, 1, False, None, "euler_maruyama")
reverse_diffusion = Predictor(_reverse_diffusion, 1, True, "discretize", "reverse_diffusion")
ancestral = Predictor(_ancestral, 1, True, "ancestral_step", "ancestral")
no_predictor = Predictor(_none, 0, False, None, "none")

PREDICTORS = {p.name: p for p in (euler_maruyama, reverse_diffusion, ancestral, no_predictor)}


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
