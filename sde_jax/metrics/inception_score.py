"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs", Sec. 4).

.. math::  \\mathrm{IS} = \\exp\\Big(\\mathbb E_x\\, \\mathrm{KL}\\big(p(y|x)\\,\\|\\,p(y)\\big)\\Big),
           \\qquad p(y) = \\mathbb E_x\\, p(y|x),

computed on each of ``splits`` consecutive chunks of the samples (chunk ``i`` is
``[i N // splits, (i + 1) N // splits)``, as the original code), reported as the mean and the standard
deviation (``ddof = 0``, as the original) over chunks. ``p(y|x) = softmax(logits)``; the original code's
logits are Inception pool3 times the classifier weights *without* the bias (``logits_unbiased`` of
:class:`~sde_jax.metrics.inception.InceptionV3`). float64 throughout, with log-softmax (no ``log(0)``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["inception_score"]


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def inception_score(logits, splits: int = 10, *, return_std: bool = True):
    """Inception Score of class logits.

    Args:
      logits: ``[N, C]`` class logits (NumPy or JAX, any float dtype).
      splits: number of chunks (10, as the paper's evaluation); each needs at least one example.
      return_std: return ``(mean, std)`` (default) or the mean alone.

    Returns:
      ``(mean, std)`` over chunks as Python floats, or ``mean``. Between 1 (every ``p(y|x)`` equal) and
      ``C`` (confident and uniformly spread predictions).

    Raises:
      ValueError: ``logits`` not ``[N, C]``, non-finite values, ``splits`` not in ``[1, N]``.
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be [N, C] with C >= 2; got shape {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits have non-finite entries.")
    n = z.shape[0]
    if not isinstance(splits, int) or not 1 <= splits <= n:
        raise ValueError(f"splits must be an integer in [1, N={n}]; got {splits!r}.")
    logp = _log_softmax(z)
    scores = np.empty(splits)
    for i in range(splits):
        part = logp[i * n // splits:(i + 1) * n // splits]
        p = np.exp(part)
        top = part.max(axis=0)      # log p(y) by log-sum-exp: finite even where every p(y|x) underflows
        log_py = top + np.log(np.exp(part - top).sum(axis=0)) - np.log(part.shape[0])
        scores[i] = np.exp(np.mean(np.sum(p * (part - log_py), axis=1)))
    mean, std = float(scores.mean()), float(scores.std())
    return (mean, std) if return_std else mean
