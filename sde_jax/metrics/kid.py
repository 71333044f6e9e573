"""Kernel distance (KID in the Inception pool3 space): unbiased polynomial-kernel MMD^2 over subsets.

Bińkowski, Sutherland, Arbel, Gretton 2018, "Demystifying MMD GANs", Sec. 4 / Appendix: with the cubic
polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree`` (``gamma = 1/d``, ``coef0 = 1``, ``degree = 3``)
and ``s`` random subsets of ``m`` examples from each set (without replacement within a subset), KID is the
mean of the unbiased estimates

.. math::  \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{m(m-1)}\\sum_{i \\ne j} k(x_i, x_j)
           + \\frac{1}{m(m-1)}\\sum_{i \\ne j} k(y_i, y_j) - \\frac{2}{m^2} \\sum_{i, j} k(x_i, y_j),

reported with the standard deviation over subsets (``ddof = 1``). Each estimate is unbiased for the
population MMD^2, so KID is unbiased whatever the sample size (unlike FID), and can be negative.

Numerics: the Gram matrices ``x x^T, y y^T, x y^T`` of a subset are one jitted float32 program on the
default device (``Precision.HIGHEST``); the kernel values and every sum are float64 on the host, so the
~1e-3 differences between ~1e6 kernel values of size ~1 do not drown in float32 summation error.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["kernel_distance", "mmd2_unbiased", "polynomial_kernel"]


@jax.jit
def _grams(x, y):
    hi = lax.Precision.HIGHEST
    return jnp.dot(x, x.T, precision=hi), jnp.dot(y, y.T, precision=hi), jnp.dot(x, y.T, precision=hi)


def polynomial_kernel(gram, dim: int, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    """``(gamma * gram + coef0) ** degree`` in float64; ``gamma = 1 / dim`` by default."""
    g = 1.0 / dim if gamma is None else gamma
    return (g * np.asarray(gram, np.float64) + coef0) ** degree


def mmd2_unbiased(kxx, kyy, kxy) -> float:
    """Unbiased MMD^2 (module formula) from kernel matrices ``[m, m]`` (``kxx``, ``kyy``) and ``[m, n]``
    (``kxy``), in float64. Needs ``m, n >= 2``."""
    kxx, kyy, kxy = (np.asarray(k, np.float64) for k in (kxx, kyy, kxy))
    m, n = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def _check_features(name, f):
    f = np.asarray(f)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be [n, d] with n >= 2; got shape {f.shape}.")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} has non-finite entries.")
    return f


def kernel_distance(features1, features2, *, num_subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                    gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID-style kernel distance between two feature sets (module docstring).

    Args:
      features1, features2: ``[n1, d]``, ``[n2, d]`` (e.g. generated and reference Inception pool3 features).
      num_subsets: number of subset pairs ``s`` (100, as Bińkowski et al. and clean-fid).
      subset_size: ``m``; ``min(subset_size, n1, n2)`` is used (see :func:`effective_subset_size`).
      degree, gamma, coef0: the polynomial kernel (``gamma=None``: ``1/d``).
      seed: seed of the NumPy generator that draws the subsets (results are reproducible).

    Returns:
      ``(mean, std)`` of the ``s`` unbiased estimates, Python floats (``std = 0`` for one subset).

    Raises:
      ValueError: wrong shapes, differing ``d``, non-finite features, ``num_subsets < 1``.
    """
    x = _check_features("features1", features1)
    y = _check_features("features2", features2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features1 and features2 must have the same dimension; got {x.shape[1]} and {y.shape[1]}.")
    if not isinstance(num_subsets, int) or num_subsets < 1:
        raise ValueError(f"num_subsets must be a positive integer; got {num_subsets!r}.")
    m = effective_subset_size(subset_size, x.shape[0], y.shape[0])
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)].astype(np.float32)
        ys = y[rng.choice(y.shape[0], m, replace=False)].astype(np.float32)
        gxx, gyy, gxy = jax.device_get(_grams(xs, ys))
        k = [polynomial_kernel(g, d, degree=degree, gamma=gamma, coef0=coef0) for g in (gxx, gyy, gxy)]
        values[s] = mmd2_unbiased(*k)
    return float(values.mean()), float(values.std(ddof=1)) if num_subsets > 1 else 0.0


def effective_subset_size(subset_size: int, n1: int, n2: int) -> int:
    """``min(subset_size, n1, n2)``; raises ``ValueError`` if that is below 2."""
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer >= 2; got {subset_size!r}.")
    m = min(subset_size, n1, n2)
    if m < 2:
        raise ValueError(f"need at least 2 examples in each set for a kernel distance; got {n1} and {n2}.")
    return m
