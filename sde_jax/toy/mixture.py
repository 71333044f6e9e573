"""Targets with exact answers: Gaussian mixtures (any dimension) and classic 2-D densities.

A linear SDE maps a Gaussian mixture to a Gaussian mixture: component ``N(mu_k, diag(sd_k^2))`` becomes
``N(a(t) mu_k, diag(a(t)^2 sd_k^2 + s(t)^2))`` at time ``t`` (``a``, ``s`` from the SDE's perturbation kernel).
So the perturbed density ``p_t`` and its score are known in closed form, which is what every sampler and
likelihood test here is checked against.

Conditionals are closed-form too (what the controllable-generation samplers are checked against): given some
coordinates, observed exactly or with Gaussian noise, a diagonal mixture is again a diagonal mixture
(:meth:`GaussianMixture.condition`); an orthogonal change of basis keeps a mixture of *isotropic* components a
diagonal mixture (:meth:`GaussianMixture.rotate`), so a linear measurement ``y = A x`` with an SVD-structured
``A = U diag(s) V^T`` is conditioned in the basis ``V`` exactly; and with the components as classes,
``log p_t(k | x_t)`` is a softmax of the perturbed component log-densities
(:meth:`GaussianMixture.perturbed_class_log_prob`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C
from sde_jax._pytree import pytree_dataclass
from sde_jax._checks import check_batch
from sde_jax.sdes import SDE

__all__ = ["GaussianMixture", "NoiseConditionalScore", "PerturbedScore", "PerturbedLogProb", "PerturbedClassLogProb"]


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

    # -- conditionals ------------------------------------------------------------------------------------
    def condition(self, index, y, noise_std=0.0) -> "GaussianMixture":
        """The exact conditional of ``x`` given coordinates ``x[index] = y`` (or ``y = x[index] + noise_std z``).

        For component ``k`` (diagonal, so observed and free coordinates are independent within it) Bayes' rule
        gives the posterior weight ``w_k' ∝ w_k N(y; mu_k[index], diag(sd_k[index]^2 + noise_std^2))``; the free
        coordinates keep their component law. With noise, each observed coordinate of component ``k`` has the
        Gaussian posterior ``N((mu v_n + y v) / (v + v_n), v v_n / (v + v_n))``, ``v = sd_k^2``, ``v_n =
        noise_std^2`` (Bishop 2006, Sec. 2.3.3).

        Args:
          index: ``[m]`` distinct observed coordinates (concrete ints in ``[0, d)``), ``m < d`` when noise-free.
          y: ``[m]`` observed values (one observation; ``jax.vmap`` over ``y`` for several).
          noise_std: scalar or ``[m]`` std of the Gaussian measurement noise (0: exact observation).

        Returns:
          noise-free: the mixture of the ``d - m`` free coordinates (in increasing coordinate order); noisy:
          the mixture of all ``d`` coordinates.
        """
        index = self._check_index(index)
        y = jnp.asarray(y, self.means.dtype)
        if y.shape != index.shape:
            raise ValueError(f"y must have shape [m] = {index.shape} to match index; got shape {y.shape}.")
        noise_var = jnp.broadcast_to(jnp.asarray(noise_std, self.means.dtype) ** 2, index.shape)
        noise_free = C.is_concrete(noise_std) and not np.any(np.asarray(noise_std))
        if C.is_concrete(noise_std) and not noise_free and not np.all(np.asarray(noise_std) > 0):
            raise ValueError(f"noise_std must be 0 (exact observation) or > 0 for every observed coordinate; "
                             f"got {noise_std!r}.")
        if noise_free and index.size == self.dim:
            raise ValueError("condition: every coordinate is observed exactly; nothing is left to sample.")
        mu_o, var_o = self.means[:, index], self.stds[:, index] ** 2
        total = var_o + noise_var
        loglik = -0.5 * jnp.sum(jnp.log(2 * jnp.pi * total) + (y - mu_o) ** 2 / total, axis=-1)
        weights = jax.nn.softmax(jnp.log(self.weights) + loglik)
        if noise_free:
            free = np.setdiff1d(np.arange(self.dim), index)
            return GaussianMixture(self.means[:, free], self.stds[:, free], weights)
        post_mean = (mu_o * noise_var + y * var_o) / total
        post_std = jnp.sqrt(var_o * noise_var / total)
        return GaussianMixture(self.means.at[:, index].set(post_mean), self.stds.at[:, index].set(post_std), weights)

    def rotate(self, q) -> "GaussianMixture":
        """The law of ``x q`` (row vectors) for an orthogonal ``q: [d, d]``: means ``mu_k q``, same stds.

        Exact only for *isotropic* components (``sd_k`` equal over coordinates), whose covariance ``sd_k^2 I``
        an orthogonal map leaves unchanged; a ``ValueError`` is raised otherwise (a rotated anisotropic
        component has a full covariance, which this diagonal class cannot hold). With ``q = V`` from an SVD
        ``A = U diag(s) V^T`` the rotated coordinates are those a linear measurement observes.
        """
        q = jnp.asarray(q, self.means.dtype)
        if q.shape != (self.dim, self.dim):
            raise ValueError(f"q must have shape [d, d] = {(self.dim, self.dim)}; got shape {q.shape}.")
        if C.is_concrete(q):
            err = float(np.max(np.abs(np.asarray(q.T @ q) - np.eye(self.dim))))
            if err > 1e-5:
                raise ValueError(f"q must be orthogonal (q^T q = I); max |q^T q - I| = {err:.3g}.")
        if C.is_concrete(self.stds) and not np.allclose(np.asarray(self.stds), np.asarray(self.stds[:, :1])):
            raise ValueError("rotate needs isotropic components (equal stds over coordinates); a rotated "
                             "anisotropic component has a full covariance.")
        return GaussianMixture(self.means @ q, self.stds, self.weights)

    def _check_index(self, index):
        index = np.asarray(index)
        if (index.ndim != 1 or index.size < 1 or not np.issubdtype(index.dtype, np.integer)
                or np.any(index < 0) or np.any(index >= self.dim) or np.unique(index).size != index.size):
            raise ValueError(f"index must be [m] distinct integers in [0, {self.dim}); got {index.tolist()}.")
        return index

    def perturbed_class_log_prob(self, sde: SDE):
        """``log_prob_y_fn(x, t, y) -> [B]``: the exact ``log p_t(y | x)`` with the components as classes
        (``y: [B]`` int component indices), the softmax of the perturbed component log-densities. Its gradient
        in ``x`` is the exact classifier guidance term (Song et al. 2021, Eq. 14 and App. I)."""
        return PerturbedClassLogProb(self, sde)

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


@pytree_dataclass
class PerturbedClassLogProb:
    """Exact ``log p_t(y | x)`` for a Gaussian mixture whose components are the classes; call as
    ``f(x, t, y) -> [B]`` with ``y: [B]`` int."""

    mixture: GaussianMixture
    sde: SDE

    def __call__(self, x, t, y):
        logits, _, _ = self.mixture._perturbed_component_terms(self.sde, x, t)
        y = jnp.asarray(y)
        if y.shape != jnp.shape(x)[:1]:
            raise ValueError(f"y must have shape [B] = {jnp.shape(x)[:1]}; got shape {y.shape}.")
        log_post = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_post, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
