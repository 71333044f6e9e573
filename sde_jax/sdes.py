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
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from sde_jax import _checks as C
from sde_jax._checks import check_batch, check_score
from sde_jax._pytree import pytree_dataclass, static_field

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "reverse_sde",
    "reverse_discretize",
    "probability_flow_drift",
    "tweedie_denoise",
    "batch_broadcast",
]

VP_TIME_SCALE = 999.0
"""The paper's continuous VP/sub-VP network label ``999 t`` (DDPM's 1000 steps), whatever ``N`` is."""


def batch_broadcast(v, x):
    """Reshape per-example values ``v: [B]`` to broadcast against ``x: [B, ...]``."""
    return jnp.reshape(v, jnp.shape(v) + (1,) * (jnp.ndim(x) - jnp.ndim(v)))


def _check_n(n):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"N (number of discretisation levels) must be an integer >= 1; got {n!r}.")


def _check_ordered(self, lo_name, hi_name):
    """``lo < hi`` for two positive hyper-parameters (stored back: traced values carry run-time checks)."""
    lo = C.check_positive(lo_name, getattr(self, lo_name))
    hi = C.check_positive(hi_name, getattr(self, hi_name))
    message = f"{lo_name} must be < {hi_name}"
    if C.is_concrete((lo, hi)):
        if not float(lo) < float(hi):
            raise ValueError(f"{message}; got {lo_name}={lo}, {hi_name}={hi}.")
    elif C.is_concrete(hi):   # thread the run-time check onto the traced one of the two
        lo = eqx.error_if(lo, jnp.logical_not(lo < hi), f"{message}.")
    else:
        hi = eqx.error_if(hi, jnp.logical_not(lo < hi), f"{message}.")
    object.__setattr__(self, lo_name, lo)
    object.__setattr__(self, hi_name, hi)


def _logexpm1(u):
    """``log(e^u - 1)`` without overflow."""
    return u + jnp.log(-jnp.expm1(-u))


class SDE(abc.ABC):
    """A linear SDE ``dx = f(t) x dt + g(t) dw`` on ``[0, T]``: time runs from data (0) to the prior (``T``).

    Subclasses give the coefficients ``f(t)`` (:meth:`drift_coeff`) and ``g(t)`` (:meth:`diffusion_coeff`), the
    Gaussian kernel ``N(a(t) x_0, s(t)^2 I)`` (:meth:`marginal_mean_coeff`, :meth:`marginal_std`), the prior,
    the discrete chain of the paper's code (:meth:`discretize`), the network-conditioning conventions
    (:meth:`time_label`, :meth:`label_std`) and the closed-form importance density of the likelihood
    weighting (:meth:`importance_cdf`). Everything else is written once here.
    """

    N: int
    paper_parameterization: ClassVar[str]
    """How the paper's networks output the score for this SDE (see :mod:`sde_jax.models.score_fn`)."""

    @property
    def T(self) -> float:  # noqa: N802 (name from the paper's code)
        """End time of the forward SDE."""
        return 1.0

    # -- coefficients and kernel ---------------------------------------------------------------------------
    @abc.abstractmethod
    def drift_coeff(self, t):
        """``f(t)`` in the drift ``f(t) x``; shape of ``t``."""

    @abc.abstractmethod
    def diffusion_coeff(self, t):
        """``g(t)``; shape of ``t``."""

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

    # -- network conventions and importance sampling ----------------------------------------------------------
    @abc.abstractmethod
    def time_label(self, t, *, continuous=True):
        """The label ``[B]`` the paper's networks are conditioned on at times ``t: [B]``."""

    @abc.abstractmethod
    def label_std(self, t, *, continuous=True):
        """The noise std that the ``"noise"``/``"scaled"`` output parameterisations divide by at ``t``."""

    @abc.abstractmethod
    def importance_cdf(self, t):
        """An antiderivative ``F(t)`` of ``g(t)^2 / s(t)^2`` (the likelihood weighting over the default one)."""

    @abc.abstractmethod
    def importance_cdf_inverse(self, u):
        """The inverse of :meth:`importance_cdf`."""

    # -- EDM form (Karras et al. 2022, Eq. 4 and Table 1) -----------------------------------------------------
    def edm_scale(self, t):
        """EDM's scale (their ``s(t)``) in ``x_t = scale(t) (x_0 + sigma(t) n)``: our ``a(t)``; shape of ``t``."""
        return self.marginal_mean_coeff(t)

    @abc.abstractmethod
    def edm_sigma(self, t):
        """EDM's noise level ``sigma(t) = s(t) / a(t)`` (std of the kernel of ``x_t / a(t)``); shape of ``t``."""

    @abc.abstractmethod
    def edm_time(self, sigma):
        """The inverse of :meth:`edm_sigma`: the time ``t`` with ``sigma(t) = sigma`` (``sigma > 0``)."""

    # -- shared formulas ----------------------------------------------------------------------------------
    def sde(self, x: Float[Array, "b ..."], t: Float[Array, " b"]):
        """Forward drift ``f(t) x`` (shape of ``x``) and diffusion ``g(t)`` (``[B]``)."""
        check_batch(x, t)
        return batch_broadcast(self.drift_coeff(t), x) * x, self.diffusion_coeff(t)

    def marginal_prob(self, x0: Float[Array, "b ..."], t: Float[Array, " b"]):
        """Mean ``a(t) x_0`` (shape of ``x0``) and std ``s(t)`` (``[B]``) of ``p_0t(x_t | x_0)``."""
        check_batch(x0, t, name_x="x0")
        return batch_broadcast(self.marginal_mean_coeff(t), x0) * x0, self.marginal_std(t)

    def prior_sampling(self, key, shape, dtype=None):
        """Samples of the prior ``N(0, prior_std^2 I)`` with the given shape ``[B, ...]``."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.prior_std() * jax.random.normal(key, shape, dtype)

    def prior_logp(self, z: Float[Array, "b ..."]) -> Float[Array, " b"]:
        """Log-density of the prior at ``z: [B, ...]``; returns ``[B]`` (nats)."""
        z = jnp.asarray(z)
        d = math.prod(z.shape[1:])
        s = jnp.asarray(self.prior_std(), z.dtype)
        sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2 * jnp.pi * s**2) - 0.5 * sq / s**2

    def time_index(self, t) -> Int[Array, "..."]:
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
class _BetaSDE(SDE):
    """The VP family: ``beta(t) = beta_0 + t (beta_1 - beta_0)``, drift ``-beta(t) x / 2``, mean
    ``log a(t) = -t^2 (beta_1 - beta_0)/4 - t beta_0/2`` (Song et al. 2021, Eq. 11 and 29), prior ``N(0, I)``.
    VP and sub-VP differ only in the diffusion (and so in ``s(t)``) and in the discrete chain."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = static_field(default=1000)
    paper_parameterization: ClassVar[str] = "noise"

    def __post_init__(self):
        _check_n(self.N)
        _check_ordered(self, "beta_min", "beta_max")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t):
        """``B(t) = int_0^t beta(s) ds = -2 log a(t)``."""
        return t * self.beta_min + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def _t_from_integrated_beta(self, b):
        """The root of ``B(t) = b`` in a cancellation-free form."""
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * b / (b0 + jnp.sqrt(b0**2 + 2.0 * db * b))

    def log_mean_coeff(self, t):
        return -0.5 * self.integrated_beta(t)

    def drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def marginal_mean_coeff(self, t):
        return jnp.exp(self.log_mean_coeff(t))

    def prior_std(self):
        return 1.0

    def check_discrete_chain(self):
        """``ValueError`` unless the discrete (DDPM) chain is well defined: every ``beta_i = beta(t_i) / N < 1``,
        i.e. ``N > beta_max``. At ``N = beta_max`` the last level's ``sqrt(1 - beta_i)`` is 0: the forward step
        destroys the whole signal and the ancestral step divides by zero. Checked only when ``beta_max`` is
        concrete (a traced one, inside a jitted function, is not); :func:`sde_jax.pc_sample` checks it at call
        time for the discrete predictors."""
        if C.is_concrete(self.beta_max) and float(self.beta_max) >= self.N:
            raise ValueError(
                f"the discrete (DDPM) chain of {type(self).__name__} needs every beta_i = beta(t_i) / N < 1, i.e. "
                f"N > beta_max; got beta_max={float(self.beta_max)}, N={self.N}. Use more levels (N; the paper: "
                f"1000) or a sampler that does not take the discrete chain (e.g. predictor='euler_maruyama').")

    @property
    def discrete_betas(self):
        """DDPM betas ``linspace(beta_0/N, beta_1/N, N)``; the chain takes ``sqrt(1 - beta_i)``, so every
        ``beta_i`` must be < 1, i.e. ``N > beta_1`` (:meth:`check_discrete_chain`, ``ValueError`` otherwise when
        ``beta_max`` is concrete). Use ``N`` well above ``beta_1`` (the paper: 1000)."""
        self.check_discrete_chain()
        return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

    @property
    def alphas(self):
        return 1.0 - self.discrete_betas

    @property
    def alphas_cumprod(self):
        return jnp.cumprod(self.alphas)

    def langevin_alpha(self, t, index=None):
        return self.alphas[self._index(t, index)]

    def time_label(self, t, *, continuous=True):
        """``999 t`` (continuous) or the level ``i`` (discrete, rounded; the paper truncates)."""
        t = jnp.asarray(t)
        if continuous:
            return VP_TIME_SCALE * t
        self._check_discrete_labels()
        return self.time_index(t).astype(t.dtype)

    def label_std(self, t, *, continuous=True):
        """``s(t)`` (continuous) or ``sqrt(1 - alphas_cumprod[i])`` (discrete)."""
        t = jnp.asarray(t)
        if continuous:
            return self.marginal_std(t)
        self._check_discrete_labels()
        return jnp.sqrt(1.0 - self.alphas_cumprod.astype(t.dtype)[self.time_index(t)])

    def _check_discrete_labels(self):
        pass


@pytree_dataclass
class VPSDE(_BetaSDE):
    """Variance-preserving SDE (the continuous limit of DDPM).

    .. math::

        dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)}\\,dw, \\qquad
        \\beta(t) = \\beta_0 + t(\\beta_1 - \\beta_0),

    with ``s(t)^2 = 1 - a(t)^2`` (Song et al. 2021, Eq. 11 and 29). ``discretize`` is the DDPM chain with
    ``beta_i = linspace(beta_0/N, beta_1/N, N)`` (Ho et al. 2020).

    Args:
      beta_min: ``beta_0`` > 0.
      beta_max: ``beta_1`` > ``beta_0``.
      N: number of discretisation levels (static).
    """

    def diffusion_coeff(self, t):
        return jnp.sqrt(self.beta(t))

    def marginal_std(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_mean_coeff(t)))

    def discretize(self, x, t, index=None):
        """DDPM step: ``f_i = (sqrt(1 - beta_i) - 1) x``, ``G_i = sqrt(beta_i)``."""
        check_batch(x, t)
        i = self._index(t, index)
        beta = self.discrete_betas.astype(x.dtype)[i]
        f = batch_broadcast(jnp.sqrt(1.0 - beta), x) * x - x
        return f, jnp.sqrt(beta)

    def ancestral_step(self, x, score, index):
        """DDPM ancestral step: ``x_mean = (x + beta_i score) / sqrt(1 - beta_i)``, noise std ``sqrt(beta_i)``."""
        beta = self.discrete_betas.astype(x.dtype)[index]
        x_mean = (x + batch_broadcast(beta, x) * score) / batch_broadcast(jnp.sqrt(1.0 - beta), x)
        return x_mean, jnp.sqrt(beta)

    def importance_cdf(self, t):
        """``g^2/s^2 = beta / (1 - e^{-B})`` integrates to ``log(expm1(B(t)))``."""
        return _logexpm1(self.integrated_beta(t))

    def importance_cdf_inverse(self, u):
        return self._t_from_integrated_beta(jax.nn.softplus(u))

    def edm_sigma(self, t):
        """``sigma^2 = (1 - a^2) / a^2 = e^{B(t)} - 1``: ``sqrt(expm1(B(t)))``."""
        return jnp.sqrt(jnp.expm1(self.integrated_beta(t)))

    def edm_time(self, sigma):
        """``B(t) = log(1 + sigma^2)``, solved for ``t`` without cancellation."""
        return self._t_from_integrated_beta(jnp.log1p(jnp.square(sigma)))


@pytree_dataclass
class SubVPSDE(_BetaSDE):
    """The sub-VP SDE (Song et al. 2021, Eq. 12): VP's drift with a smaller diffusion.

    .. math::

        dx = -\\tfrac12 \\beta(t) x\\,dt + \\sqrt{\\beta(t)\\,(1 - e^{-2\\int_0^t \\beta(s) ds})}\\,dw,

    whose kernel has mean ``a(t) x_0`` (as VP) and std ``s(t) = 1 - a(t)^2`` (no square root), always
    below VP's. ``discretize`` is Euler--Maruyama with ``dt = T/N``; discrete-time network labels are not
    defined (the SDE has no discrete chain of its own).
    """

    def diffusion_coeff(self, t):
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_std(self, t):
        return -jnp.expm1(2.0 * self.log_mean_coeff(t))

    def discretize(self, x, t, index=None):
        check_batch(x, t)
        return self._em_discretize(x, t)

    def _check_discrete_labels(self):
        raise ValueError("discrete-time (continuous=False) score functions are not defined for SubVPSDE "
                         "(it has no discrete chain of its own); use continuous=True.")

    def importance_cdf(self, t):
        """``g^2/s^2 = beta (e^B + 1)/(e^B - 1)`` integrates to ``2 log(expm1(B)) - B``."""
        b = self.integrated_beta(t)
        return 2.0 * _logexpm1(b) - b

    def importance_cdf_inverse(self, u):
        return self._t_from_integrated_beta(2.0 * jnp.arcsinh(0.5 * jnp.exp(0.5 * u)))

    def edm_sigma(self, t):
        """``sigma = (1 - a^2) / a`` with ``a = e^{-B/2}``: ``2 sinh(B(t) / 2)``."""
        return 2.0 * jnp.sinh(0.5 * self.integrated_beta(t))

    def edm_time(self, sigma):
        """``a`` is the positive root of the quadratic ``a^2 + sigma a - 1 = 0``, i.e. ``B = -2 log a =
        2 arcsinh(sigma / 2)``, solved for ``t``."""
        return self._t_from_integrated_beta(2.0 * jnp.arcsinh(0.5 * sigma))


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
    paper_parameterization: ClassVar[str] = "scaled"

    def __post_init__(self):
        _check_n(self.N)
        _check_ordered(self, "sigma_min", "sigma_max")

    def log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def sigma(self, t):
        """The paper's noise level ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``."""
        return self.sigma_min * jnp.exp(t * self.log_ratio())

    def drift_coeff(self, t):
        return jnp.zeros(jnp.shape(t), jnp.result_type(t, float))

    def diffusion_coeff(self, t):
        return self.sigma(t) * jnp.sqrt(2.0 * self.log_ratio())

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

    def _sigma_and_prev(self, index, dtype):
        sigmas = self.discrete_sigmas.astype(dtype)
        prev = jnp.where(index == 0, 0.0, sigmas[jnp.maximum(index - 1, 0)])
        return sigmas[index], prev

    def discretize(self, x, t, index=None):
        """SMLD step: ``f_i = 0``, ``G_i = sqrt(sigma_i^2 - sigma_{i-1}^2)``, ``sigma_{-1} = 0``."""
        check_batch(x, t)
        sigma, prev = self._sigma_and_prev(self._index(t, index), x.dtype)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - prev**2)

    def ancestral_step(self, x, score, index):
        """SMLD ancestral step: ``x_mean = x + (sigma_i^2 - sigma_{i-1}^2) score``, noise std
        ``sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2)`` (Song et al. 2021, App. F)."""
        sigma, prev = self._sigma_and_prev(index, x.dtype)
        x_mean = x + batch_broadcast(sigma**2 - prev**2, x) * score
        return x_mean, jnp.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)

    def langevin_alpha(self, t, index=None):
        return jnp.ones(jnp.shape(t))

    def time_label(self, t, *, continuous=True):
        """``sigma(t)`` (continuous) or ``N - 1 - i`` (discrete: label 0 is sigma_max, the paper's table)."""
        t = jnp.asarray(t)
        if continuous:
            return self.sigma(t)
        return (self.N - 1 - self.time_index(t)).astype(t.dtype)

    def label_std(self, t, *, continuous=True):
        """``sigma(t)`` (continuous; the paper's level, not the exact ``s(t)``) or ``discrete_sigmas[i]``."""
        t = jnp.asarray(t)
        if continuous:
            return self.sigma(t)
        return self.discrete_sigmas.astype(t.dtype)[self.time_index(t)]

    def importance_cdf(self, t):
        """``g^2/s^2 = 2L e^{2tL} / expm1(2tL)`` (exact kernel) integrates to ``log(expm1(2 t L))``."""
        return _logexpm1(2.0 * t * self.log_ratio())

    def importance_cdf_inverse(self, u):
        return jax.nn.softplus(u) / (2.0 * self.log_ratio())

    def edm_sigma(self, t):
        """``a = 1``, so ``sigma(t) = s(t) = sigma_min sqrt(expm1(2 t L))`` (the exact kernel; the paper's
        ``VESDE.sigma(t)`` differs by ``sigma_min`` in quadrature)."""
        return self.marginal_std(t)

    def edm_time(self, sigma):
        """``t = log(1 + (sigma / sigma_min)^2) / (2 L)``, ``L = log(sigma_max / sigma_min)``."""
        return jnp.log1p(jnp.square(sigma / self.sigma_min)) / (2.0 * self.log_ratio())


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


def tweedie_denoise(sde, score_fn, x, t):
    """Posterior mean ``E[x_0 | x_t] = (x_t + s(t)^2 score(x_t, t)) / a(t)`` (Tweedie's formula for the
    Gaussian kernel ``x_t = a(t) x_0 + s(t) z``; Efron 2011): one score evaluation."""
    score = check_score(score_fn(x, t), x)
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    return (x + batch_broadcast(s**2, x) * score) / batch_broadcast(a, x)
