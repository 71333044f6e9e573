"""MCMC diagnostics over several chains: effective sample size, split R-hat and a burn-in estimate.

Samples are ``[num_chains, num_draws, ...]`` (``chain_axis=0``, ``sample_axis=1``, the ArviZ/blackjax layout);
a trajectory from :func:`sde_jax.samplers.run_chain` is ``[num_draws, num_chains, ...]``, so pass
``chain_axis=1, sample_axis=0`` for it. Every trailing axis is a separate scalar quantity; results have the
trailing shape. The estimators are the standard ones (Gelman et al., *Bayesian Data Analysis*, 3rd ed.,
Sec. 11.4-11.5; Stan reference manual; Vehtari, Gelman, Simpson, Carpenter, Bürkner 2021), written here
with ``jnp`` and jitted (one compile per input shape; no host loop) and checked against closed forms for AR(1) chains.

With ``M`` chains of ``N`` draws, chain means ``xbar_m``, within-chain variances ``s_m^2`` (``ddof=1``):

.. math::

    W = \\tfrac1M \\sum_m s_m^2, \\qquad \\tfrac{B}{N} = \\mathrm{Var}_m(\\bar x_m)\\ (\\text{ddof}=1), \\qquad
    \\widehat{\\mathrm{var}}^+ = \\tfrac{N-1}{N} W + \\tfrac{B}{N}, \\qquad \\hat R = \\sqrt{\\widehat{\\mathrm{var}}^+ / W}.

Split R-hat applies this to the ``2M`` half-chains (so a trend within a chain also shows). Effective sample
size: ``rho_t = 1 - (W - acov_t) / var+`` with ``acov_t`` the chains' mean autocovariance at lag ``t``,
summed with Geyer's initial monotone sequence (pairs ``rho_2k + rho_2k+1`` while positive, made
non-increasing): ``tau = -1 + 2 sum_k P_k`` and ``ESS = M N / tau`` (``tau`` floored at ``1/log10(MN)`` as
in Stan). For a stationary AR(1) chain ``x_t = phi x_t-1 + sqrt(1 - phi^2) e_t``, ``tau = (1 + phi)/(1 - phi)``.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["effective_sample_size", "split_rhat", "rhat_trace", "burn_in", "autocorrelation"]


def _standard(samples, chain_axis, sample_axis):
    x = jnp.asarray(samples)
    if x.ndim < 2:
        raise ValueError(f"samples must have a chain axis and a draw axis, shape [num_chains, num_draws, ...]; "
                         f"got shape {x.shape}.")
    c, s = chain_axis % x.ndim, sample_axis % x.ndim
    if c == s:
        raise ValueError(f"chain_axis and sample_axis must differ; got {chain_axis} and {sample_axis}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    rest = [i for i in range(x.ndim) if i not in (c, s)]
    x = jnp.transpose(x, [c, s] + rest)
    return jnp.reshape(x, x.shape[:2] + (-1,)), x.shape[2:]             # [M, N, F], trailing shape


def _check_draws(n, minimum, what):
    if n < minimum:
        raise ValueError(f"{what} needs at least {minimum} draws per chain; got {n}.")


def _rhat(x):
    """Classical R-hat of ``x: [M, N, F]`` (no splitting): ``[F]``."""
    n = x.shape[1]
    w = jnp.mean(jnp.var(x, axis=1, ddof=1), axis=0)
    b_over_n = jnp.var(jnp.mean(x, axis=1), axis=0, ddof=1)
    return jnp.sqrt(((n - 1) / n * w + b_over_n) / w)


def _split(x):
    half = x.shape[1] // 2
    return jnp.concatenate([x[:, :half], x[:, half:2 * half]], axis=0)


def _rank_normal(x):
    """Rank-normalise ``x: [M, N, F]`` over the pooled draws: ``Phi^-1((r - 3/8) / (MN + 1/4))`` (Blom)."""
    m, n, f = x.shape
    flat = jnp.reshape(x, (m * n, f))
    ranks = jnp.argsort(jnp.argsort(flat, axis=0), axis=0).astype(x.dtype) + 1.0   # ties: improbable for floats
    z = jax.scipy.special.ndtri((ranks - 0.375) / (m * n + 0.25))
    return jnp.reshape(z, (m, n, f))


@functools.partial(jax.jit, static_argnames=("chain_axis", "sample_axis", "rank_normalize"))
def split_rhat(samples, *, chain_axis=0, sample_axis=1, rank_normalize=False):
    """Split R-hat (Gelman et al. BDA3, Sec. 11.4) of each scalar quantity.

    Each chain is split in two halves (the last draw is dropped when ``N`` is odd) and the classical R-hat
    (module docstring) is computed over the ``2M`` halves. With ``rank_normalize`` it is Vehtari et al.'s
    (2021) rank-normalised split R-hat: the maximum of the statistic on the rank-normalised draws (bulk) and
    on the rank-normalised draws folded about the median, ``|x - median|`` (tails).

    Args:
      samples: ``[num_chains, num_draws, ...]`` (or other axes, see ``chain_axis``/``sample_axis``); at least
        one chain and 4 draws.
      chain_axis, sample_axis: the axes of chains and draws.
      rank_normalize: Vehtari et al.'s rank-normalised version.

    Returns:
      R-hat with the trailing shape (a scalar for ``[M, N]``). Values near 1 mean the half-chains agree;
      1.01 is Vehtari et al.'s threshold.
    """
    x, shape = _standard(samples, chain_axis, sample_axis)
    _check_draws(x.shape[1], 4, "split_rhat")
    x = _split(x)
    if rank_normalize:
        folded = jnp.abs(x - jnp.median(jnp.reshape(x, (-1, x.shape[-1])), axis=0))
        r = jnp.maximum(_rhat(_rank_normal(x)), _rhat(_rank_normal(folded)))
    else:
        r = _rhat(x)
    return jnp.reshape(r, shape)


@functools.partial(jax.jit, static_argnames=("chain_axis", "sample_axis"))
def autocorrelation(samples, *, chain_axis=0, sample_axis=1):
    """Multi-chain autocorrelation ``rho_t = 1 - (W - acov_t) / var+`` for lags ``t = 0..N-1`` (``rho_0 = 1``).

    ``acov_t`` is the chains' mean (biased, ``1/N``) autocovariance at lag ``t``, by FFT.

    Returns:
      ``[N, ...]`` (lags first, then the trailing shape).
    """
    x, shape = _standard(samples, chain_axis, sample_axis)
    _check_draws(x.shape[1], 2, "autocorrelation")
    return jnp.reshape(_autocorr(x), (x.shape[1],) + shape)


def _autocorr(x):
    m, n, _ = x.shape
    xc = x - jnp.mean(x, axis=1, keepdims=True)
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spec = jnp.fft.rfft(xc, n=size, axis=1)
    acov = jnp.fft.irfft(spec * jnp.conj(spec), n=size, axis=1)[:, :n] / n     # [M, N, F]
    mean_acov = jnp.mean(acov, axis=0)                                         # [N, F]
    w = mean_acov[0] * n / (n - 1)
    var_plus = (n - 1) / n * w
    if m > 1:
        var_plus = var_plus + jnp.var(jnp.mean(x, axis=1), axis=0, ddof=1)
    rho = 1.0 - (w - mean_acov) / var_plus
    return rho.at[0].set(1.0)


@functools.partial(jax.jit, static_argnames=("chain_axis", "sample_axis"))
def effective_sample_size(samples, *, chain_axis=0, sample_axis=1):
    """Effective sample size over several chains (BDA3 Sec. 11.5; Stan; as ``blackjax.diagnostics``).

    ``ESS = M N / tau`` with the integrated autocorrelation time ``tau = -1 + 2 sum_k P_k`` summed over
    Geyer's (1992) initial monotone sequence ``P_k = rho_2k + rho_2k+1`` (truncated at the first
    non-positive pair, then made non-increasing); ``tau`` is floored at ``1 / log10(M N)`` (Stan), so ESS can
    exceed ``M N`` for antithetic chains but stays finite. A quantity with zero variance gets ESS 0.

    Args:
      samples: ``[num_chains, num_draws, ...]`` (at least 4 draws); chain_axis, sample_axis: as
        :func:`split_rhat`.

    Returns:
      ESS with the trailing shape.
    """
    x, shape = _standard(samples, chain_axis, sample_axis)
    m, n, _ = x.shape
    _check_draws(n, 4, "effective_sample_size")
    rho = _autocorr(x)
    k = n // 2
    pairs = rho[0:2 * k:2] + rho[1:2 * k:2]                                     # [K, F]
    positive = jnp.cumprod(pairs > 0, axis=0).astype(bool)
    monotone = jax.lax.cummin(jnp.where(positive, pairs, 0.0), axis=0)
    tau = jnp.maximum(-1.0 + 2.0 * jnp.sum(monotone, axis=0), 1.0 / math.log10(max(m * n, 2)))
    variance = jnp.var(jnp.reshape(x, (m * n, -1)), axis=0)
    ess = jnp.where(variance > 0, m * n / tau, 0.0)
    return jnp.reshape(ess, shape)


def rhat_trace(samples, num_checkpoints=20, *, chain_axis=0, sample_axis=1, rank_normalize=False):
    """Split R-hat as the chains grow: at ``n_k = k N / K`` draws (``k = 1..K``) over the last half, draws
    ``[n_k / 2, n_k)`` (the usual "discard the first half as warm-up" rule, BDA3 Sec. 11.4).

    Returns:
      ``(n [K] int numpy array, rhat [K, ...])``; checkpoints with fewer than 8 draws are skipped.
    """
    x, shape = _standard(samples, chain_axis, sample_axis)
    n_total = x.shape[1]
    _check_draws(n_total, 8, "rhat_trace")
    if not isinstance(num_checkpoints, int) or isinstance(num_checkpoints, bool) or num_checkpoints < 1:
        raise ValueError(f"num_checkpoints must be an integer >= 1; got {num_checkpoints!r}.")
    ns = sorted({n_total * k // num_checkpoints for k in range(1, num_checkpoints + 1)})
    ns = [n for n in ns if n >= 8]
    if rank_normalize:   # ranks are pooled per window: one program per window length
        rh = jnp.stack([split_rhat(x[:, n // 2:n], rank_normalize=True) for n in ns])
    else:
        rh = _windowed_split_rhat(x, jnp.asarray(ns))
    return np.asarray(ns), jnp.reshape(rh, (len(ns),) + shape)


@jax.jit
def _windowed_split_rhat(x, ns):
    """Split R-hat of the windows ``[n/2, n)`` for every ``n`` in ``ns``, in one program: each half-chain is a
    0/1 weight over the draws (halves ``[n/2, n/2 + L)`` and ``[n/2 + L, n/2 + 2L)``, ``L = (n - n/2) // 2``,
    as :func:`split_rhat` on the window). Returns ``[K, F]``."""
    t = jnp.arange(x.shape[1])

    def one(n):
        start = n // 2
        half = (n - start) // 2
        masks = jnp.stack([(t >= start) & (t < start + half), (t >= start + half) & (t < start + 2 * half)])
        w = masks.astype(x.dtype)[:, None, :, None]                                  # [2, 1, N, 1]
        mean = jnp.sum(w * x[None], axis=2) / half                                  # [2, M, F]
        var = jnp.sum(w * (x[None] - mean[:, :, None]) ** 2, axis=2) / (half - 1)
        within = jnp.mean(var, axis=(0, 1))
        between = jnp.var(jnp.reshape(mean, (-1, mean.shape[-1])), axis=0, ddof=1)
        return jnp.sqrt(((half - 1) / half * within + between) / within)

    return jax.vmap(one)(ns)


def burn_in(samples, *, threshold=1.01, num_checkpoints=20, chain_axis=0, sample_axis=1, rank_normalize=False):
    """Steps until the chains pass the R-hat test: the first checkpoint ``n_k`` of :func:`rhat_trace` at
    which the largest split R-hat over all quantities (of draws ``[n_k/2, n_k)``) is below ``threshold``.

    Returns:
      ``n_k`` (a Python int; the warm-up to discard is ``n_k // 2``), or ``None`` if no checkpoint passes.
    """
    if not float(threshold) > 1.0:
        raise ValueError(f"threshold must be > 1; got {threshold!r}.")
    ns, rh = rhat_trace(samples, num_checkpoints, chain_axis=chain_axis, sample_axis=sample_axis,
                        rank_normalize=rank_normalize)
    worst = np.asarray(jnp.max(jnp.reshape(rh, (len(ns), -1)), axis=1))
    passed = np.nonzero(worst < threshold)[0]
    return int(ns[passed[0]]) if passed.size else None
