"""Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen, Aila 2019, Sec. 2).

Each feature set approximates its manifold by the union of balls around its points, the radius of a point
being the distance to its ``k``-th nearest neighbour in the same set (the point itself excluded; ``k = 3``
as in the paper):

.. math::  f(\\phi, \\Phi) = 1 \\text{ if } \\exists\\, \\phi' \\in \\Phi:
           \\|\\phi - \\phi'\\| \\le \\|\\phi' - \\mathrm{NN}_k(\\phi', \\Phi)\\| \\text{ else } 0,

    precision = mean over generated ``phi`` of ``f(phi, Phi_real)``; recall = mean over real ``phi`` of
    ``f(phi, Phi_generated)``.

Identical sets give 1 / 1. The paper uses VGG-16 fc2 features; here they are computed in the feature space
of whatever :class:`~sde_jax.metrics.features.FeatureExtractor` is used (Inception pool3 for the image
metrics), so they are comparable only between runs with the same network and sample sizes (radii shrink as
sets grow).

On the device: squared distances in float32 (``Precision.HIGHEST``) in row blocks of ``block_size`` queries
against the whole other set (memory ``block_size x n``), a ``lax.map`` over blocks, static shapes (queries
padded to a whole number of blocks; padded rows are dropped).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sde_jax.metrics.sample_stats import squared_distances

__all__ = ["precision_recall", "knn_radii", "manifold_coverage"]


def _blocks(q, block_size):
    n = q.shape[0]
    nb = -(-n // block_size)
    q = jnp.pad(q, ((0, nb * block_size - n), (0, 0)))
    return q.reshape(nb, block_size, q.shape[1]), n


@functools.partial(jax.jit, static_argnames=("k", "block_size"))
def knn_radii(features, k: int = 3, block_size: int = 1024):
    """Squared distance of each of ``features: [n, d]`` to its ``k``-th nearest other point: ``[n]``."""
    qb, n = _blocks(features, block_size)

    def one(q):
        d2 = squared_distances(q, features, lax.Precision.HIGHEST)
        return -lax.top_k(-d2, k + 1)[0][:, k]      # index 0 is the point itself (distance 0)

    return lax.map(one, qb).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames=("block_size",))
def manifold_coverage(queries, manifold, radii2, block_size: int = 1024):
    """``[m]`` booleans: query ``i`` lies in some ball ``|q_i - p_j|^2 <= radii2_j`` of ``manifold: [n, d]``."""
    qb, m = _blocks(queries, block_size)

    def one(q):
        return jnp.any(squared_distances(q, manifold, lax.Precision.HIGHEST) <= radii2[None, :], axis=1)

    return lax.map(one, qb).reshape(-1)[:m]


def precision_recall(real_features, fake_features, *, k: int = 3, block_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of ``fake_features: [m, d]`` against ``real_features: [n, d]``.

    Args:
      real_features, fake_features: feature sets (NumPy or JAX), same ``d``, more than ``k`` rows each.
      k: neighbourhood size of the radii (3, as the paper).
      block_size: query rows per device block (memory ``block_size x max(n, m)`` floats).

    Returns:
      ``(precision, recall)`` as Python floats in ``[0, 1]``.

    Raises:
      ValueError: wrong shapes, ``k`` not in ``[1, min(n, m) - 1]``, non-finite features.
    """
    real = np.asarray(real_features, np.float32)
    fake = np.asarray(fake_features, np.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features and fake_features must be [n, d] and [m, d] with the same d; got "
                         f"{real.shape} and {fake.shape}.")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(fake))):
        raise ValueError("features have non-finite entries.")
    if not isinstance(k, int) or not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k must be an integer in [1, min(n, m) - 1 = {min(real.shape[0], fake.shape[0]) - 1}]; "
                         f"got {k!r}.")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}.")
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    r_real = knn_radii(real, k=k, block_size=block_size)
    r_fake = knn_radii(fake, k=k, block_size=block_size)
    inside_real = int(jnp.sum(manifold_coverage(fake, real, r_real, block_size=block_size)))
    inside_fake = int(jnp.sum(manifold_coverage(real, fake, r_fake, block_size=block_size)))
    return inside_real / fake.shape[0], inside_fake / real.shape[0]      # exact fractions (float64)
