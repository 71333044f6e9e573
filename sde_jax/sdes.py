"""Linear SDEs for score-based generative modelling: VE, VP and sub-VP (Song et al. 2021).

Each SDE is an immutable pytree (a frozen dataclass): its float hyper-parameters are leaves, so a
jitted function taking an SDE does not recompile when only their values change; ``N`` (the number of
discretisation levels) fixes array shapes and is static.

All three are linear, ``dx = f(t) x dt + g(t) dw``, so the perturbation kernel is Gaussian:

.. math::

    p_{0t}(x_t \\mid x_0) = \\mathcal N\\big(a(t)\\, x_0,\\ s(t)^2 I\\big),

with ``a(t) = marginal_mean_coeff(t)`` and ``s(t) = marginal_std(t)``. Shapes: ``x`` is ``[B, ...]`` (any
data shape), ``t`` is ``[B]``; per-example scalars (diffusion, std, log-densities) are ``[B]``.

Deviations from the paper's code (yang-song/score_sde ``sde_lib.py``), each deliberate:

* **VE marginal std.** We return the exact kernel of the SDE, ``s(t)^2 = sigma(t)^2 - sigma_min^2``
  (computed as ``sigma_min^2 expm1(2 t log(sigma_max/sigma_min))``); the paper returns ``sigma(t)``, which is
  the kernel of the same SDE started from data already blurred by ``N(0, sigma_min^2)``. The two differ by
  less than 1e-4 relative for ``t > 0.5`` with the default sigmas, and only near ``t = 0`` materially.
  ``VESDE.sigma(t)`` (the paper's value, used for noise conditioning) is available separately.
* **Discrete level index.** ``discretize(x, t, index=None)`` takes the level ``index`` from the caller when
  given (the PC sampler passes the exact level of each step, so every level is visited exactly once); from
  ``t`` alone it uses the nearest level ``round(t (N-1) / T)`` for every SDE. The paper truncates for VP and
  rounds for VE.
* **sub-VP has Langevin step scalings** (``langevin_alpha``): the VP values ``1 - beta_i``, since sub-VP
  shares VP's drift. The paper's sub-VP defines none and its Langevin correctors crash.
"""
from __future__ import annotations

import abc
import math
import numbers

import jax
import jax.numpy as jnp

from sde_jax._pytree import pytree_dataclass, static_field

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "reverse_sde",
    "reverse_discretize",
    "probability_flow_drift",
    "check_batch",
    "check_score",
    "batch_broadcast",
]


def batch_broadcast(v, x):
    """Reshape per-example values ``v: [B]`` to broadcast against ``x: [B, ...]``."""
    return jnp.reshape(v, jnp.shape(v) + (1,) * (jnp.ndim(x) - jnp.ndim(v)))


def check_batch(x, t, *, name_x="x", name_t="t"):
    """Check that ``t`` is ``[B]`` for ``x`` of shape ``[B, ...]`` (no silent broadcasting).

    Raises:
      ValueError: naming the argument, its shape and the expected shape.
    """
    xs, ts = jnp.shape(x), jnp.shape(t)
    if len(xs) < 1:
        raise ValueError(f"{name_x} must have a batch axis [B, ...]; got shape {xs}.")
    if ts != xs[:1]:
        raise ValueError(
            f"{name_t} must have shape [B] = {xs[:1]} to match {name_x} of shape {xs}; got shape {ts}."
        )


def check_score(score, x):
    """Check that a score function returned an array of the same shape as its input ``x``."""
    if jnp.shape(score) != jnp.shape(x):
        raise ValueError(
            f"score_fn(x, t) must return an array of the same shape as x {jnp.shape(x)}; "
            f"got shape {jnp.shape(score)}."
        )
    return score


def _concrete(v):
    return isinstance(v, (numbers.Number,)) or (hasattr(v, "shape") and not isinstance(v, jax.core.Tracer))


def _check_positive(name, value):
    if _concrete(value) and not float(value) > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}.")


def _check_n(n):
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"N (number of discretisation levels) must be an integer >= 1; got {n!r}.")


class SDE(abc.ABC):
    """Interface shared by the linear SDEs. Time runs forward from 0 (data) to ``T`` (prior)."""

    N: int

    @property
    def T(self) -> float:  # noqa: N802 (name from the paper's code)
        """End time of the forward SDE."""
        return 1.0

    @abc.abstractmethod
    def sde(self, x, t):
        """Forward drift ``f(x, t)`` (shape of ``x``) and diffusion ``g(t)`` (``[B]``)."""

    @abc.abstractmethod
    def marginal_mean_coeff(self, t):
        """``a(t)`` with ``E[x_t | x_0] = a(t) x_0``; shape of ``t``."""

    @abc.abstractmethod
    def marginal_std(self, t):
        """``s(t)``, the std of the perturbation kernel ``p_0t``; shape of ``t``."""

    @abc.abstractmethod
    def prior_std(self):
        """Std of the Gaussian prior ``N(0, prior_std^2 I)`` at ``t = T``."""

    @abc.abstractmethod
    def discretize(self, x, t, index=None):
        """One forward discretisation step ``x_{i+1} = x_i + f_i + G_i z``: returns ``(f_i, G_i)``."""

    @abc.abstractmethod
    def langevin_alpha(self, t, index=None):
        """Scaling ``alpha_i`` of the Langevin corrector step (1 for VE, ``1 - beta_i`` for VP/sub-VP)."""

    def marginal_prob(self, x0, t):
        """Mean ``a(t) x_0`` (shape of ``x0``) and std ``s(t)`` (``[B]``) of ``p_0t(x_t | x_0)``."""
        check_batch(x0, t, name_x="x0")
        return batch_broadcast(self.marginal_mean_coeff(t), x0) * x0, self.marginal_std(t)

    def prior_sampling(self, key, shape, dtype=None):
        """Samples of the prior ``N(0, prior_std^2 I)`` with the given shape ``[B, ...]``."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.prior_std() * jax.random.normal(key, shape, dtype)

    def prior_logp(self, z):
        """Log-density of the prior at ``z: [B, ...]``; returns ``[B]`` (nats)."""
        z = jnp.asarray(z)
        d = math.prod(z.shape[1:])
        s = jnp.asarray(self.prior_std(), z.dtype)
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2 * jnp.pi * s**2) - 0.5 * sq / s**2

    def time_index(self, t):
        """Nearest discrete level ``round(t (N-1) / T)``, clipped to ``[0, N-1]`` (int32, shape of ``t``)."""
        i = jnp.round(jnp.asarray(t) * (self.N - 1) / self.T)
        return jnp.clip(i, 0, self.N - 1).astype(jnp.int32)

    def _index(self, t, index):
        return self.time_index(t) if index is None else jnp.broadcast_to(jnp.asarray(index), jnp.shape(t))

    def _em_discretize(self, x, t):
        """Euler--Maruyama discretisation with ``dt = T / N``: ``f_i = f dt``, ``G_i = g sqrt(dt)``."""
        dt = self.T / self.N
        drift, g = self.sde(x, t)
        return drift * dt, g * math.sqrt(dt)


@pytree_dataclass
class VPSDE(SDE):
    """Variance-preserving SDE (the continuous limit of DDPM).

    .. math::

        dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)}\\,dw, \\qquad
        \\beta(t) = \\beta_0 + t(\\beta_1 - \\beta_0),

    with ``log a(t) = -t^2 (beta_1 - beta_0)/4 - t beta_0 / 2`` and ``s(t)^2 = 1 - a(t)^2``
    (Song et al. 2021, Eq. 11 and 29). ``discretize`` is the DDPM chain with
    ``beta_i = linspace(beta_0/N, beta_1/N, N)`` (Ho et al. 2020).

    Args:
      beta_min: ``beta_0`` > 0.
      beta_max: ``beta_1`` > ``beta_0``.
      N: number of discretisation levels (static).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = static_field(default=1000)

    def __post_init__(self):
        _check_n(self.N)
        _check_positive("beta_min", self.beta_min)
        _check_positive("beta_max", self.beta_max)
        if _concrete(self.beta_min) and _concrete(self.beta_max) and not self.beta_min < self.beta_max:
            raise ValueError(f"beta_min must be < beta_max; got beta_min={self.beta_min}, beta_max={self.beta_max}.")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sde(self, x, t):
        check_batch(x, t)
        beta = self.beta(t)
        return -0.5 * batch_broadcast(beta, x) * x, jnp.sqrt(beta)

    def marginal_mean_coeff(self, t):
        return jnp.exp(self.log_mean_coeff(t))

    def marginal_std(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_mean_coeff(t)))

    def prior_std(self):
        return 1.0

    @property
    def discrete_betas(self):
        """DDPM betas ``linspace(beta_0/N, beta_1/N, N)``."""
        return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self):
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self):
        return jnp.cumprod(self.alphas)

    def discretize(self, x, t, index=None):
        """DDPM step: ``f_i = (sqrt(1 - beta_i) - 1) x``, ``G_i = sqrt(beta_i)``."""
        check_batch(x, t)
        i = self._index(t, index)
        beta = self.discrete_betas.astype(x.dtype)[i]
        f = batch_broadcast(jnp.sqrt(1.0 - beta), x) * x - x
        return f, jnp.sqrt(beta)

    def langevin_alpha(self, t, index=None):
        return self.alphas[self._index(t, index)]


@pytree_dataclass
class SubVPSDE(SDE):
    """The sub-VP SDE (Song et al. 2021, Eq. 12): VP's drift with a smaller diffusion.

    .. math::

        dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)\\,(1 - e^{-2\\int_0^t \\beta(s) ds})}\\,dw,

    whose kernel has mean ``a(t) x_0`` (as VP) and std ``s(t) = 1 - a(t)^2`` (no square root), always
    below VP's. ``discretize`` is Euler--Maruyama with ``dt = T/N``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = static_field(default=1000)

    def __post_init__(self):
        VPSDE.__post_init__(self)

    beta = VPSDE.beta
    log_mean_coeff = VPSDE.log_mean_coeff
    marginal_mean_coeff = VPSDE.marginal_mean_coeff
    discrete_betas = VPSDE.discrete_betas
    alphas = VPSDE.alphas

    def sde(self, x, t):
        check_batch(x, t)
        beta = self.beta(t)
        integral = t * self.beta_min + 0.5 * t**2 * (self.beta_max - self.beta_min)
        g2 = beta * -jnp.expm1(-2.0 * integral)
        return -0.5 * batch_broadcast(beta, x) * x, jnp.sqrt(g2)

    def marginal_std(self, t):
        return -jnp.expm1(2.0 * self.log_mean_coeff(t))

    def prior_std(self):
        return 1.0

    def discretize(self, x, t, index=None):
        check_batch(x, t)
        return self._em_discretize(x, t)

    def langevin_alpha(self, t, index=None):
        return self.alphas[self._index(t, index)]


@pytree_dataclass
class VESDE(SDE):
    """Variance-exploding SDE (the continuous limit of SMLD / NCSN).

    .. math::

        dx = \\sigma(t)\\sqrt{2 \\log(\\sigma_{max}/\\sigma_{min})}\\,dw, \\qquad
        \\sigma(t) = \\sigma_{min} (\\sigma_{max}/\\sigma_{min})^t,

    (Song et al. 2021, Eq. 9 and 30). ``a(t) = 1`` and ``s(t)^2 = \\sigma(t)^2 - \\sigma_{min}^2`` exactly (see
    the module docstring for the paper's ``sigma(t)``). The prior is ``N(0, sigma_max^2 I)``.
    ``discretize`` is the SMLD chain over ``N`` geometric sigmas, ``G_i = sqrt(sigma_i^2 - sigma_{i-1}^2)``
    with ``sigma_{-1} = 0``.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = static_field(default=1000)

    def __post_init__(self):
        _check_n(self.N)
        _check_positive("sigma_min", self.sigma_min)
        _check_positive("sigma_max", self.sigma_max)
        if _concrete(self.sigma_min) and _concrete(self.sigma_max) and not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"sigma_min must be < sigma_max; got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}."
            )

    def log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def sigma(self, t):
        """The paper's noise level ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``."""
        return self.sigma_min * jnp.exp(t * self.log_ratio())

    def sde(self, x, t):
        check_batch(x, t)
        g = self.sigma(t) * jnp.sqrt(2.0 * self.log_ratio())
        return jnp.zeros_like(x), g

    def marginal_mean_coeff(self, t):
        return jnp.ones_like(jnp.asarray(t))

    def marginal_std(self, t):
        return self.sigma_min * jnp.sqrt(jnp.expm1(2.0 * t * self.log_ratio()))

    def prior_std(self):
        return self.sigma_max

    @property
    def discrete_sigmas(self):
        """SMLD noise levels ``exp(linspace(log sigma_min, log sigma_max, N))``, ascending."""
        return jnp.exp(jnp.linspace(jnp.log(self.sigma_min), jnp.log(self.sigma_max), self.N))

    def discretize(self, x, t, index=None):
        """SMLD step: ``f_i = 0``, ``G_i = sqrt(sigma_i^2 - sigma_{i-1}^2)``, ``sigma_{-1} = 0``."""
        check_batch(x, t)
        i = self._index(t, index)
        sigmas = self.discrete_sigmas.astype(x.dtype)
        sigma = sigmas[i]
        prev = jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - prev**2)

    def langevin_alpha(self, t, index=None):
        return jnp.ones(jnp.shape(t))


def _coef(probability_flow):
    return 0.5 if probability_flow else 1.0


def reverse_sde(sde, score_fn, x, t, probability_flow=False):
    """Drift and diffusion of the reverse-time SDE (or probability-flow ODE), in forward time.

    .. math::

        dx = [f(x,t) - c\\, g(t)^2 \\nabla_x \\log p_t(x)]\\,dt + g(t)\\,d\\bar w,

    integrated from ``t = T`` down to 0 (``dt < 0``), with ``c = 1`` (reverse SDE, Song et al. 2021 Eq. 6)
    or ``c = 1/2`` and no noise (probability-flow ODE, Eq. 13).

    Returns:
      ``(drift, diffusion)``: drift has the shape of ``x``; diffusion is ``[B]`` (zeros for the ODE).
    """
    drift, g = sde.sde(x, t)
    score = check_score(score_fn(x, t), x)
    drift = drift - _coef(probability_flow) * batch_broadcast(g**2, x) * score
    return drift, (jnp.zeros_like(g) if probability_flow else g)


def probability_flow_drift(sde, score_fn, x, t):
    """``f(x,t) - 1/2 g(t)^2 score(x, t)``: the velocity of the probability-flow ODE (Song et al. 2021, Eq. 13)."""
    return reverse_sde(sde, score_fn, x, t, probability_flow=True)[0]


def reverse_discretize(sde, score_fn, x, t, index=None, probability_flow=False):
    """One reverse step of the discretised SDE: ``x_{i-1} = x_i - rev_f + rev_G z``.

    ``rev_f = f_i - c G_i^2 score(x, t)`` and ``rev_G = G_i`` (0 for the probability flow), with
    ``(f_i, G_i) = sde.discretize(x, t, index)`` and ``c`` as in :func:`reverse_sde`.
    """
    f, G = sde.discretize(x, t, index)
    score = check_score(score_fn(x, t), x)
    rev_f = f - _coef(probability_flow) * batch_broadcast(G**2, x) * score
    return rev_f, (jnp.zeros_like(G) if probability_flow else G)
