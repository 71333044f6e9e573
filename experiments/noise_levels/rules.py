"""Song & Ermon 2020 ("Improved techniques for training score-based generative models", NCSNv2) rules for the
noise levels and the annealed-Langevin step size, on the host (NumPy; configuration, not computation).

* Technique 1: ``sigma_1`` = the largest pairwise Euclidean distance in the training set.
* Technique 2: a geometric sequence with ratio ``gamma = sigma_{i-1} / sigma_i`` such that
  ``Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) ~ 0.5``: a sample of
  ``N(0, sigma_i^2 I)`` lands, with probability 1/2, within three standard deviations of the typical radius
  ``sqrt(D) sigma_{i-1}`` of the previous level. For ``D <= 4`` (``sqrt(2D) <= 3``) the left side is at least
  ``Phi(3) - Phi(-3) = 0.997`` for every ``gamma >= 1``: the rule places no constraint in 2-D.
* Technique 4: with ``T`` steps per level, the step ``epsilon`` that makes the variance after a level of
  annealed Langevin on a single data point, relative to ``sigma_i^2``,

  .. math:: (1 - \\epsilon/\\sigma_L^2)^{2T}\\big(\\gamma^2 - s_\\infty\\big) + s_\\infty, \\qquad
            s_\\infty = \\frac{2\\epsilon}{\\sigma_L^2 - \\sigma_L^2 (1 - \\epsilon/\\sigma_L^2)^2},

  as close to 1 as possible (NCSNv2's update ``x + alpha s + sqrt(2 alpha) z``, ``alpha_i = epsilon
  sigma_i^2 / sigma_L^2``). :func:`sde_jax.samplers.annealed_langevin` uses Song & Ermon 2019's
  ``x + a/2 s + sqrt(a) z``, so its ``step_size`` is ``2 epsilon``.

Anchors (checked in tests): CIFAR-10 (``D = 3072``, ``sigma_1 = 50``, ``sigma_L = 0.01``) gives ``gamma = 1.040``,
``L = 219`` (the paper uses 232), and with ``L = 232, T = 5`` the step ``epsilon = 6.2e-6`` (the paper's value).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["max_pairwise_distance", "gamma_condition", "ncsnv2_num_levels", "ncsnv2_step_size",
           "step_variance_ratio"]


def max_pairwise_distance(x, chunk: int = 2048) -> float:
    """Technique 1: ``max_{i,j} ||x_i - x_j||`` over ``x: [n, ...]`` (in chunks of rows; exact)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    sq = np.sum(x * x, axis=1)
    best = 0.0
    for i in range(0, len(x), chunk):
        d2 = sq[i:i + chunk, None] + sq[None, :] - 2.0 * x[i:i + chunk] @ x.T
        best = max(best, float(np.max(d2)))
    return math.sqrt(max(best, 0.0))


def _phi(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def gamma_condition(gamma: float, dim: int) -> float:
    """Technique 2's left side ``Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma)``."""
    a = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(a + 3.0 * gamma) - _phi(a - 3.0 * gamma)


def ncsnv2_num_levels(sigma_max: float, sigma_min: float, dim: int, target: float = 0.5):
    """Technique 2: the ratio ``gamma`` with ``gamma_condition(gamma, dim) = target`` and the implied number of
    levels ``L = 1 + log(sigma_max / sigma_min) / log(gamma)`` (a float; round up).

    Returns:
      ``(gamma, L)``, or ``(None, None)`` when no ``gamma > 1`` meets the target (``D <= 4``: the condition
      stays above ``0.997``).
    """
    if not sigma_max > sigma_min > 0:
        raise ValueError(f"need sigma_max > sigma_min > 0; got {sigma_max!r}, {sigma_min!r}.")
    hi = 2.0
    while gamma_condition(hi, dim) > target:
        hi *= 2.0
        if hi > 1e6:
            return None, None
    lo = 1.0
    for _ in range(200):                       # bisection: the condition decreases in gamma when D > 4.5
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gamma_condition(mid, dim) > target else (lo, mid)
    gamma = 0.5 * (lo + hi)
    return gamma, 1.0 + math.log(sigma_max / sigma_min) / math.log(gamma)


def step_variance_ratio(eps: float, sigma_min: float, gamma: float, steps: int) -> float:
    """Technique 4's variance ratio after ``steps`` updates of one level (module docstring)."""
    c = 1.0 - eps / sigma_min**2
    s_inf = 2.0 * eps / (sigma_min**2 - sigma_min**2 * c**2)
    return c ** (2 * steps) * (gamma**2 - s_inf) + s_inf


def ncsnv2_step_size(sigma_min: float, gamma: float, steps: int) -> float:
    """Technique 4: ``epsilon`` (NCSNv2's convention) making :func:`step_variance_ratio` closest to 1, searched
    over ``(0, sigma_min^2)`` on a log grid and refined by golden section."""
    if not (sigma_min > 0 and gamma > 1 and steps >= 1):
        raise ValueError(f"need sigma_min > 0, gamma > 1, steps >= 1; got {sigma_min!r}, {gamma!r}, {steps!r}.")

    def loss(log_e):
        return abs(step_variance_ratio(math.exp(log_e), sigma_min, gamma, steps) - 1.0)

    grid = np.linspace(math.log(sigma_min**2) - 30.0, math.log(sigma_min**2) - 1e-6, 3001)
    i = int(np.argmin([loss(g) for g in grid]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    r = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        c, d = b - r * (b - a), a + r * (b - a)
        a, b = (a, d) if loss(c) < loss(d) else (c, b)
    return math.exp(0.5 * (a + b))
