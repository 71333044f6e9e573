"""Targets with exact answers: Gaussian mixtures (any dimension) and classic 2-D densities.

A linear SDE maps a Gaussian mixture to a Gaussian mixture: component ``N(mu_k, diag(sd_k^2))`` becomes
``N(a(t) mu_k, diag(a(t)^2 sd_k^2 + s(t)^2))`` at time ``t`` (``a``, ``s`` from the SDE's perturbation kernel).
So the perturbed density ``p_t`` and its score are known in closed form, which is what every sampler and
likelihood test here is checked against.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sde_jax._pytree import pytree_dataclass
from sde_jax._checks import check_batch
from sde_jax.sdes import SDE

__all__ = ["GaussianMixture", "NoiseConditionalScore", "PerturbedScore", "PerturbedLogProb"]


@pytree_dataclass
class GaussianMixture:
    """Mixture of diagonal Gaussians ``sum_k w_k N(mu_k, diag(sd_k^2))`` in ``d`` dimensions.

    Args:
      means: ``[K, d]`` component means.
      stds: ``[K, d]`` (or ``[K]``, or scalar, broadcast) per-coordinate standard deviations, > 0.
      weights: ``[K]`` mixture weights, >= 0; normalised to sum to one.

    Example:
      >>> gmm = GaussianMixture([[-2.0, -2.0], [2.0, 2.0]], 0.5, [0.2, 0.8])
      >>> x = gmm.sample(jax.random.key(0), 1000)            # [1000, 2]
      >>> score = gmm.perturbed_score(sde)(x, t)            # exact score of p_t
    """

    means: jax.Array
    stds: jax.Array
    weights: jax.Array

    def __post_init__(self):
        means, stds, weights = self.means, self.stds, self.weights
        means = jnp.asarray(means, dtype=jnp.result_type(float))
        if means.ndim != 2:
            raise ValueError(f"means must have shape [K, d]; got shape {means.shape}.")
        k, d = means.shape
        stds = jnp.asarray(stds, dtype=means.dtype)
        if stds.ndim == 1:
            stds = stds[:, None]
        try:
            stds = jnp.broadcast_to(stds, (k, d))
        except ValueError:
            raise ValueError(f"stds must broadcast to [K, d] = {(k, d)}; got shape {stds.shape}.") from None
        weights = jnp.asarray(weights, dtype=means.dtype)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape [K] = {(k,)}; got shape {weights.shape}.")
        if not isinstance(stds, jax.core.Tracer) and bool(jnp.any(stds <= 0)):
            raise ValueError(f"stds must be > 0; got {stds}.")
        if not isinstance(weights, jax.core.Tracer):
            if bool(jnp.any(weights < 0)) or not float(jnp.sum(weights)) > 0:
                raise ValueError(f"weights must be >= 0 with a positive sum; got {weights}.")
        # Unflattening (under jit) bypasses __post_init__: no re-validation or re-normalisation.
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / jnp.sum(weights))

    def __repr__(self):
        return f"GaussianMixture(K={self.num_components}, d={self.dim})"

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _check_x(self, x):
        if jnp.ndim(x) != 2 or jnp.shape(x)[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}]; got shape {jnp.shape(x)}.")

    def sample(self, key, n, *, return_component=False):
        """``n`` samples ``[n, d]`` (and their component indices ``[n]`` if ``return_component``)."""
        key_comp, key_noise = jax.random.split(key)
        comp = jax.random.choice(key_comp, self.num_components, (n,), p=self.weights)
        z = jax.random.normal(key_noise, (n, self.dim), self.means.dtype)
        x = self.means[comp] + self.stds[comp] * z
        return (x, comp) if return_component else x

    def component_log_probs(self, x):
        """``log w_k + log N(x; mu_k, diag sd_k^2)`` for every component: ``[B, K]``."""
        self._check_x(x)
        diff = (x[:, None, :] - self.means[None]) / self.stds[None]
        log_norm = -0.5 * self.dim * jnp.log(2 * jnp.pi) - jnp.sum(jnp.log(self.stds), axis=-1)
        return jnp.log(self.weights) + log_norm - 0.5 * jnp.sum(diff**2, axis=-1)

    def log_prob(self, x):
        """Exact log-density ``[B]`` at ``x: [B, d]``."""
        return jax.nn.logsumexp(self.component_log_probs(x), axis=-1)

    def responsibilities(self, x):
        """Posterior component probabilities ``p(k | x)``: ``[B, K]``."""
        return jax.nn.softmax(self.component_log_probs(x), axis=-1)

    def score(self, x):
        """Exact score ``grad_x log p(x)``: ``[B, d]``, a responsibility-weighted sum of component scores."""
        return _mixture_score(self.component_log_probs(x), x[:, None, :] - self.means[None], self.stds[None])

    def convolve(self, sigma):
        """The mixture of ``x + sigma z``: every variance grows by ``sigma^2`` (``sigma`` scalar)."""
        return GaussianMixture(self.means, jnp.sqrt(self.stds**2 + jnp.asarray(sigma) ** 2), self.weights)

    def _component_terms(self, x, a, s):
        """Per-component logits ``[B, K]``, ``x - a mu_k`` ``[B, K, d]`` and stds ``[B, K, d]`` of the
        mixture of ``a x_0 + s z`` for per-example ``a, s: [B]``."""
        self._check_x(x)
        a, s = a[:, None, None], s[:, None, None]
        means = a * self.means[None]
        stds = jnp.sqrt((a * self.stds[None]) ** 2 + s**2)
        diff = x[:, None, :] - means
        log_norm = -0.5 * self.dim * jnp.log(2 * jnp.pi) - jnp.sum(jnp.log(stds), axis=-1)
        logits = jnp.log(self.weights) + log_norm - 0.5 * jnp.sum((diff / stds) ** 2, axis=-1)
        return logits, diff, stds

    def _perturbed_component_terms(self, sde, x, t):
        check_batch(x, t)
        return self._component_terms(x, sde.marginal_mean_coeff(t), sde.marginal_std(t))

    def perturbed_log_prob(self, sde: SDE):
        """``log_prob_fn(x, t) -> [B]``: the exact log-density of the SDE's marginal ``p_t`` (a pytree)."""
        return PerturbedLogProb(self, sde)

    def noise_conditional_score(self):
        """``score_fn(x, sigma) -> [B, d]``: exact score of ``p * N(0, sigma^2 I)`` for per-example
        ``sigma: [B]`` (the noise-conditional score that annealed Langevin dynamics needs)."""
        return NoiseConditionalScore(self)

    def perturbed_score(self, sde: SDE):
        """``score_fn(x, t) -> [B, d]``: the exact score of ``p_t`` (a pytree, so passing a fresh one
        to a jitted sampler does not recompile)."""
        return PerturbedScore(self, sde)


def _mixture_score(logits, diff, stds):
    """Responsibility-weighted sum of component scores ``-(x - m_k) / v_k``."""
    r = jax.nn.softmax(logits, axis=-1)
    return jnp.sum(r[..., None] * (-diff / stds**2), axis=1)


@pytree_dataclass
class PerturbedScore:
    """Exact score of ``p_t`` for a Gaussian mixture under a linear SDE; call as ``score_fn(x, t)``."""

    mixture: GaussianMixture
    sde: SDE

    def __call__(self, x, t):
        logits, diff, stds = self.mixture._perturbed_component_terms(self.sde, x, t)
        return _mixture_score(logits, diff, stds)


@pytree_dataclass
class NoiseConditionalScore:
    """Exact score of ``p * N(0, sigma^2 I)`` for a Gaussian mixture; call as ``score_fn(x, sigma)``."""

    mixture: GaussianMixture

    def __call__(self, x, sigma):
        check_batch(x, sigma, name_t="sigma")
        logits, diff, stds = self.mixture._component_terms(x, jnp.ones_like(sigma), sigma)
        return _mixture_score(logits, diff, stds)


@pytree_dataclass
class PerturbedLogProb:
    """Exact log-density of ``p_t`` for a Gaussian mixture under a linear SDE; call as ``f(x, t) -> [B]``."""

    mixture: GaussianMixture
    sde: SDE

    def __call__(self, x, t):
        logits, _, _ = self.mixture._perturbed_component_terms(self.sde, x, t)
        return jax.nn.logsumexp(logits, axis=-1)
