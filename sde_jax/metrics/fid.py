"""Fréchet distance between Gaussians fitted to features (FID in the Inception pool3 space).

Computed on the host in float64 from pivoted Cholesky factors and one singular-value decomposition
(:func:`trace_sqrt_product`), exact for singular (rank-deficient) covariances: no iterative ``sqrtm``, no
complex round-off to discard, no ``eps`` added to the diagonal. (scipy, a dependency of JAX, provides
LAPACK's pivoted Cholesky.)
"""
from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "feature_statistics", "trace_sqrt_product"]

_PSD_TOL = 1e-8   # relative: eigenvalues below -tol * max|eigenvalue| mean "not a covariance"


def _as_covariance(name: str, sigma, dim: int) -> np.ndarray:
    s = np.asarray(sigma, np.float64)
    if s.shape != (dim, dim):
        raise ValueError(f"{name} must be a [{dim}, {dim}] covariance matrix (same dimension as the mean); got "
                         f"shape {s.shape}.")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} has non-finite entries.")
    asym = np.max(np.abs(s - s.T)) if dim else 0.0
    if asym > 1e-6 * max(np.max(np.abs(s)), 1e-300):
        raise ValueError(f"{name} is not symmetric (largest |sigma - sigma^T| = {asym:.3g}).")
    return 0.5 * (s + s.T)


def _factor(name: str, s: np.ndarray) -> np.ndarray:
    """``F: [d, r]`` with ``s = F F^T`` (pivoted Cholesky, LAPACK ``dpstrf``; ``r`` = numerical rank).

    Pivots below ``d * eps * max(diag)`` end the factorisation; what is left (the Schur complement of the
    factored part) must then vanish up to ``_PSD_TOL * max(diag)``, which is exactly "``s`` is positive
    semi-definite"; otherwise ``ValueError``.
    """
    from scipy.linalg import lapack      # here, not at import: scipy.linalg costs ~0.5 s to import

    d = s.shape[0]
    if d == 0:
        return np.zeros((0, 0))
    c, piv, rank, info = lapack.dpstrf(s, lower=1, tol=-1.0)
    if info < 0:
        raise ValueError(f"{name}: LAPACK dpstrf failed (info {info}).")
    perm = piv[:d] - 1
    lower = np.tril(c)[:, :rank]                 # rows in pivot order
    scale = max(float(np.max(np.diag(s))), 1e-300)
    if rank < d:
        tail = perm[rank:]
        rest = s[np.ix_(tail, tail)] - lower[rank:] @ lower[rank:].T
        worst = float(np.max(np.abs(rest)))
        if worst > _PSD_TOL * scale:
            raise ValueError(f"{name} is not positive semi-definite (after its {rank} positive pivots a "
                             f"remainder of size {worst:.3g} is left; largest variance {scale:.3g}).")
    f = np.empty((d, rank))
    f[perm] = lower
    return f


def _trace_sqrt(s1: np.ndarray, s2: np.ndarray) -> float:
    f1, f2 = _factor("sigma1", s1), _factor("sigma2", s2)
    if min(f1.shape[1], f2.shape[1]) == 0:
        return 0.0
    return float(np.sum(np.linalg.svd(f2.T @ f1, compute_uv=False)))


def trace_sqrt_product(sigma1, sigma2) -> float:
    """``tr((sigma1 sigma2)^{1/2})`` for symmetric PSD ``sigma1, sigma2: [d, d]``, in float64.

    With factors ``sigma1 = F1 F1^T``, ``sigma2 = F2 F2^T`` (pivoted Cholesky, ``F_i: [d, r_i]`` with
    ``r_i`` the numerical rank), ``sigma1 sigma2`` has the non-zero eigenvalues of
    ``(F2^T F1)^T (F2^T F1)``, so

    .. math::  \\operatorname{tr}(\\Sigma_1 \\Sigma_2)^{1/2} = \\|F_2^\\top F_1\\|_* = \\sum_i s_i(F_2^\\top F_1),

    the sum of singular values. No matrix square root and no square root of eigenvalues: singular values
    are accurate to ``eps * |F2^T F1|`` in absolute terms, so the (many, for rank-deficient statistics)
    zero directions add ~1e-16 each instead of the ~1e-8 that ``sqrt`` of a round-off eigenvalue gives.
    Exact for singular covariances. Cost: two pivoted Cholesky factorisations (``d^3 / 3``) and one
    singular-value decomposition of ``[r2, r1]``.
    """
    s1 = np.asarray(sigma1, np.float64)
    if s1.ndim != 2:
        raise ValueError(f"sigma1 must be a square matrix [d, d]; got shape {s1.shape}.")
    return _trace_sqrt(_as_covariance("sigma1", s1, s1.shape[0]), _as_covariance("sigma2", sigma2, s1.shape[0]))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    .. math::  d^2 = \\|\\mu_1 - \\mu_2\\|^2 + \\operatorname{tr}\\big(\\Sigma_1 + \\Sigma_2
               - 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\big)

    (Dowson & Landau 1982; FID: Heusel et al. 2017, eq. 6). float64 throughout; the matrix square root is
    :func:`trace_sqrt_product`. Negative results from round-off (identical statistics) are clipped to 0.

    Args:
      mu1, mu2: means ``[d]`` (NumPy or JAX arrays, any float dtype).
      sigma1, sigma2: covariances ``[d, d]``, symmetric positive semi-definite.

    Returns:
      The distance as a Python float.

    Raises:
      ValueError: shapes that disagree, non-finite values, a non-symmetric or non-PSD covariance.
    """
    m1, m2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors [d] of the same length; got {m1.shape} and {m2.shape}.")
    if not (np.all(np.isfinite(m1)) and np.all(np.isfinite(m2))):
        raise ValueError("mu1 / mu2 have non-finite entries.")
    d = m1.shape[0]
    s1 = _as_covariance("sigma1", sigma1, d)
    s2 = _as_covariance("sigma2", sigma2, d)
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt(s1, s2))
    return max(value, 0.0)


def feature_statistics(features, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` (``ddof = 1``, as ``np.cov`` and pytorch-fid) of
    ``features: [n, d]``, accumulated in float64 over row chunks (no ``[n, d]`` float64 copy).

    Two passes (mean, then the centred cross-products), so large means do not cancel the covariance.
    """
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [n, d] with n >= 2; got shape {f.shape}.")
    if not np.all(np.isfinite(f)):
        raise ValueError("features have non-finite entries (a diverged sampler or feature network?).")
    n, d = f.shape
    total = np.zeros(d, np.float64)
    for i in range(0, n, chunk):
        total += f[i:i + chunk].astype(np.float64).sum(0)
    mu = total / n
    cov = np.zeros((d, d), np.float64)
    for i in range(0, n, chunk):
        c = f[i:i + chunk].astype(np.float64) - mu
        cov += c.T @ c
    return mu, cov / (n - 1)
