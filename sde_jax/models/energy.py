"""Energy-based score models: a network ``f_theta(x[, t]) = log p~(x[, t])`` (unnormalised) whose score is its gradient.

An energy model gives both views a sampler or a loss may need:

* ``log_prob(x[, t]) -> [B]``: the unnormalised log-density, what MALA's Metropolis test and replica
  exchange's swaps need (:func:`sde_jax.samplers.mala_step`, :func:`sde_jax.samplers.replica_exchange_step`),
  and what the energy losses of :mod:`sde_jax.losses_fd` differentiate by finite differences;
* ``score(x[, t]) = grad_x log_prob -> [B, ...]``: a ``score_fn(x, t)`` (or ``score_fn(x)``) for every
  score-based loss and sampler (DSM, ISM, SSM, PC, ODE, ULA, annealed Langevin).

The score is a conservative field by construction (a score network's need not be), and the density is known
up to its normalising constant, so a learned model can be sampled with MALA, not only with score-only samplers.

:class:`EnergyMLP` is a residual MLP with a scalar head; :func:`get_energy_fn` wraps any network
``apply_fn(params, x, labels) -> [B]`` as an :class:`EnergyFn` (a pytree: new parameters do not recompile a
jitted consumer). Labels follow :meth:`SDE.time_label <sde_jax.sdes.SDE.time_label>` when an SDE is given (``999 t`` for VP,
``sigma(t)`` for VE), are ``t`` itself when not, and are ``None`` when ``t`` is not passed (a model of one
distribution). Gradients are taken per example (``jax.vmap`` of ``jax.grad``), exact whatever the network
does across a batch.

References:
  * LeCun, Chopra, Hadsell, Ranzato, Huang 2006, "A tutorial on energy-based learning".
  * Saremi, Mehrjou, Schölkopf, Hyvärinen 2018, "Deep energy estimator networks" (an MLP energy trained by
    score matching).
  * Song & Ermon 2019, Sec. 3 (score networks vs the gradient of an energy); Salimans & Ho 2021, "Should
    EBMs model the energy or the score?".
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from sde_jax.models.mlp import EMBEDDINGS
from sde_jax.sdes import SDE, check_batch

__all__ = ["EnergyMLP", "EnergyFn", "get_energy_fn", "SMOOTH_ACTIVATIONS"]

SMOOTH_ACTIVATIONS = {"silu": nn.silu, "swish": nn.silu, "softplus": nn.softplus, "gelu": nn.gelu,
                      "tanh": jnp.tanh, "elu": nn.elu}
"""Activations with a non-zero second derivative: score matching of an energy differentiates it twice, and
with ReLU the Hessian of the network is zero almost everywhere (ISM's trace term would vanish)."""


class EnergyMLP(nn.Module):
    """Residual MLP ``(x [B, D], labels [B] or None) -> [B]``: an unnormalised log-density ``log p~(x[, labels])``.

    ``h_0 = Dense(x)``; each block ``h <- h + Dense(act(Dense(act(h)) + Dense(e)))`` with ``e`` the label
    embedding passed through ``Dense -> act -> Dense`` (absent when ``labels`` is ``None``); output
    ``Dense_1(act(h)) - confinement * ||x||^2 / 2``. The optional confinement term makes ``exp(f)``
    integrable whatever the weights (the MLP part grows at most linearly), so the model is a density and
    MALA chains cannot drift away.

    Attributes:
      hidden, num_layers: width and number of residual blocks.
      embedding, embed_dim, fourier_scale, log_labels, max_positions: the label embedding, as
        :class:`~sde_jax.models.ScoreMLP`.
      act: a key of :data:`SMOOTH_ACTIVATIONS` (twice differentiable).
      confinement: weight ``c >= 0`` of ``-c ||x||^2 / 2``.
    """

    hidden: int = 128
    num_layers: int = 3
    embedding: str = "sinusoidal"
    embed_dim: int = 64
    fourier_scale: float = 16.0
    log_labels: bool = False
    max_positions: float = 10_000.0
    act: str = "silu"
    confinement: float = 0.0

    @nn.compact
    def __call__(self, x, labels=None):
        if self.act not in SMOOTH_ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(SMOOTH_ACTIVATIONS)} (twice differentiable); "
                             f"got {self.act!r}.")
        if x.ndim != 2:
            raise ValueError(f"EnergyMLP expects x of shape [B, D]; got {x.shape}.")
        if self.confinement < 0:
            raise ValueError(f"confinement must be >= 0; got {self.confinement!r}.")
        act = SMOOTH_ACTIVATIONS[self.act]
        emb = None if labels is None else self._embed(x, labels, act)
        h = nn.Dense(self.hidden)(x)
        for _ in range(self.num_layers):
            u = nn.Dense(self.hidden)(act(h))
            if emb is not None:
                u = u + nn.Dense(self.hidden)(act(emb))
            h = h + nn.Dense(self.hidden)(act(u))
        out = nn.Dense(1)(act(h))[:, 0]
        return out - 0.5 * self.confinement * jnp.sum(jnp.square(x), axis=-1)

    def _embed(self, x, labels, act):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {list(EMBEDDINGS)}; got {self.embedding!r}.")
        if jnp.shape(labels) != x.shape[:1]:
            raise ValueError(f"labels must have shape [B] = {x.shape[:1]}; got {jnp.shape(labels)}.")
        if self.embed_dim % 2 or self.embed_dim < 4:
            raise ValueError(f"embed_dim must be even and >= 4; got {self.embed_dim}.")
        c = jnp.asarray(labels).astype(x.dtype)
        c = jnp.log(c) if self.log_labels else c
        if self.embedding == "fourier":
            emb = GaussianFourierProjection(self.embed_dim // 2, self.fourier_scale, dtype=c.dtype)(c)
        else:
            emb = sinusoidal_embedding(c, self.embed_dim, self.max_positions, dtype=c.dtype)
        return nn.Dense(4 * self.embed_dim)(act(nn.Dense(4 * self.embed_dim)(emb)))


@struct.dataclass
class EnergyFn:
    """An energy network as ``log_prob(x[, t]) -> [B]`` and ``score(x[, t]) -> [B, ...]`` (a pytree).

    Calling it is the score, so it *is* a ``score_fn(x, t)`` (or ``score_fn(x)`` for a model without time).

    Attributes:
      params: the network's variables (a leaf).
      sde: optional SDE for the time labels (a leaf); ``None``: the label is ``t`` itself.
      apply_fn: ``apply_fn(params, x, labels) -> [B]``; static. ``labels`` is ``None`` without ``t``.
      continuous: continuous-time labels (with an SDE); static.
    """

    params: Any
    sde: Any = None
    apply_fn: Callable = struct.field(pytree_node=False, default=None)
    continuous: bool = struct.field(pytree_node=False, default=True)

    def labels(self, t):
        if t is None:
            return None
        return t if self.sde is None else self.sde.time_label(t, continuous=self.continuous)

    def log_prob(self, x, t=None):
        """``log p~(x[, t])``: ``[B]`` for ``x: [B, ...]`` (and ``t: [B]``)."""
        if t is not None:
            check_batch(x, t)
        out = self.apply_fn(self.params, x, self.labels(t))
        if jnp.shape(out) != jnp.shape(x)[:1]:
            raise ValueError(f"the energy network must return one value per example, shape [B] = "
                             f"{jnp.shape(x)[:1]}; got shape {jnp.shape(out)}.")
        return out

    def value_and_score(self, x, t=None):
        """``(log p~(x) [B], grad_x log p~(x) [B, ...])``, per example."""
        if t is None:
            return jax.vmap(jax.value_and_grad(lambda xi: self.log_prob(xi[None])[0]))(x)
        check_batch(x, t)
        return jax.vmap(jax.value_and_grad(lambda xi, ti: self.log_prob(xi[None], ti[None])[0]))(x, t)

    def score(self, x, t=None):
        """``grad_x log p~(x[, t])``, shape of ``x``."""
        return self.value_and_score(x, t)[1]

    def __call__(self, x, t=None):
        return self.score(x, t)

    def log_prob_at(self, t) -> Callable:
        """``x -> log p~(x, t)`` at one time ``t`` for every example (e.g. for MALA on a marginal ``p_t``)."""
        return lambda x: self.log_prob(x, jnp.full(jnp.shape(x)[:1], t, jnp.result_type(x)))


def get_energy_fn(apply_fn: Callable, params, *, sde: SDE | None = None, continuous: bool = True) -> EnergyFn:
    """Wrap ``apply_fn(params, x, labels) -> [B]`` (e.g. ``EnergyMLP().apply``) as an :class:`EnergyFn`.

    Args:
      apply_fn: the network's pure apply function; ``labels`` is ``None`` when no time is given.
      params: its variables.
      sde: optional SDE: labels ``sde.time_label(t)`` (``999 t`` VP/sub-VP, ``sigma(t)`` VE); without it the
        label is ``t`` itself (e.g. a noise level ``sigma`` for an NCSN-style energy).
      continuous: continuous-time labels (with an SDE).

    Example:
      >>> model = EnergyMLP(hidden=64, num_layers=2)
      >>> params = model.init(key, jnp.zeros((1, 2)))
      >>> energy = get_energy_fn(model.apply, params)
      >>> energy.log_prob(x), energy.score(x)          # [B], [B, 2]
      >>> mala_init(x, energy.log_prob)                 # MALA on the learned density
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable; got {type(apply_fn).__name__}.")
    return EnergyFn(params=params, sde=sde, apply_fn=apply_fn, continuous=bool(continuous))
