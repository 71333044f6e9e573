"""Sample-quality statistics for low-dimensional targets: energy distance, MMD, mode weights.

The two-sample statistics are only meaningful against a reference level: the value seen between two
independent samples of the same size from the *true* distribution (:func:`two_sample_reference`). A sampler
is "as good as exact sampling at this sample size" when its statistic against true samples is within that
level.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["energy_distance", "mmd", "mode_weights", "two_sample_reference"]


def _check_pair(x, y):
    if jnp.ndim(x) != 2 or jnp.ndim(y) != 2 or jnp.shape(x)[1] != jnp.shape(y)[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d] with the same d; got {jnp.shape(x)} and {jnp.shape(y)}.")
    if jnp.shape(x)[0] < 2 or jnp.shape(y)[0] < 2:
        raise ValueError(f"need at least 2 samples in each set; got {jnp.shape(x)[0]} and {jnp.shape(y)[0]}.")


def squared_distances(a, b, precision=None):
    """``|a_i - b_j|^2: [n, m]`` for ``a: [n, d]``, ``b: [m, d]`` (one matrix product; clipped at 0)."""
    d2 = jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2.0 * jnp.dot(a, b.T, precision=precision)
    return jnp.maximum(d2, 0.0)


def _pairwise_dist(a, b):
    return jnp.sqrt(squared_distances(a, b))


def _offdiag_mean(k):
    n = k.shape[0]
    return (jnp.sum(k) - jnp.trace(k)) / (n * (n - 1))


@jax.jit
def energy_distance(x, y):
    """Unbiased energy distance (Székely & Rizzo 2013) between samples ``x: [n, d]`` and ``y: [m, d]``.

    .. math::  \\mathcal E = 2\\,E\\|X - Y\\| - E\\|X - X'\\| - E\\|Y - Y'\\|,

    with U-statistics (diagonal excluded) for the within-sample terms, so its expectation is zero when
    the two distributions are equal (it can then be slightly negative).
    """
    _check_pair(x, y)
    xy = jnp.mean(_pairwise_dist(x, y))
    return 2.0 * xy - _offdiag_mean(_pairwise_dist(x, x)) - _offdiag_mean(_pairwise_dist(y, y))


@jax.jit
def mmd(x, y, bandwidth=1.0):
    """Unbiased squared MMD with the Gaussian kernel ``exp(-|a-b|^2 / (2 h^2))`` (Gretton et al. 2012)."""
    _check_pair(x, y)

    def k(a, b):
        return jnp.exp(-(_pairwise_dist(a, b) ** 2) / (2.0 * bandwidth**2))

    return _offdiag_mean(k(x, x)) + _offdiag_mean(k(y, y)) - 2.0 * jnp.mean(k(x, y))


def mode_weights(x, means):
    """Fraction of samples ``x: [n, d]`` nearest to each of ``means: [K, d]``: returns ``[K]``."""
    x, means = jnp.asarray(x), jnp.asarray(means)
    if x.ndim != 2 or means.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"x must be [n, d] and means [K, d]; got {x.shape} and {means.shape}.")
    nearest = jnp.argmin(jnp.sum((x[:, None, :] - means[None]) ** 2, -1), axis=1)
    return jnp.mean(jax.nn.one_hot(nearest, means.shape[0]), axis=0)


def two_sample_reference(sample_fn, key, n, *, num_pairs=20, statistic=energy_distance):
    """The statistic between pairs of independent true samples of size ``n``.

    Args:
      sample_fn: ``sample_fn(key, n) -> [n, d]`` draws exact samples of the target.
      key: PRNG key.
      n: sample size (use the size of the sample you will compare).
      num_pairs: number of independent pairs.
      statistic: ``statistic(x, y) -> scalar`` (energy distance by default).

    Returns:
      ``[num_pairs]`` values; their spread is the level a perfect sampler would show at this size.
    """
    keys = jax.random.split(key, 2 * num_pairs)
    vals = [statistic(sample_fn(keys[2 * i], n), sample_fn(keys[2 * i + 1], n)) for i in range(num_pairs)]
    return jnp.stack(vals)
