"""Replica exchange (parallel tempering): MALA chains at several temperatures that swap states.

Replica ``r`` targets the tempered density ``p_r(x) ∝ p(x)^{beta_r}`` with inverse temperatures
``1 = beta_0 > beta_1 > ... > beta_{R-1} > 0``; hot replicas (small ``beta``) cross the barriers between
modes that a chain at ``beta = 1`` cannot. One step is

1. a MALA move in every replica (the public :func:`sde_jax.samplers.mala_step` on ``beta_r log p``, with
   step size ``h_r``; ``jax.vmap`` over replicas), then
2. swap proposals between neighbours, first the pairs ``(0,1), (2,3), ...``, then ``(1,2), (3,4), ...``;
   swapping the states of ``r`` and ``r+1`` is accepted with probability

   .. math:: \\min\\big(1, \\exp\\{(\\beta_r - \\beta_{r+1})(\\log p(x_{r+1}) - \\log p(x_r))\\}\\big),

   the Metropolis ratio of the product target ``prod_r p_r(x_r)`` (Swendsen & Wang 1986; Geyer 1991).

Each stage leaves the product target invariant, so the ``beta = 1`` replica samples ``p`` exactly (up to
MCMC error). A swap needs only the stored ``log p`` values (no new evaluation), so one step costs ``R``
value-and-gradient evaluations per system, the same as ``R`` MALA chains.

State layout: ``n`` independent systems of ``R`` replicas, positions ``[R, n, ...]``; the log-density sees
each replica's batch ``[n, ...]``. Hyper-parameters (``betas``, ``step_size``) are call arguments (traced),
as for the other kernels, so new values do not recompile; :func:`sde_jax.samplers.run_chain` drives it.

References:
  * Swendsen & Wang 1986, "Replica Monte Carlo simulation of spin glasses"; Geyer 1991, "Markov chain Monte
    Carlo maximum likelihood" (parallel tempering).
  * Earl & Deem 2005, "Parallel tempering: theory, applications, and new perspectives" (review).
  * Syed, Bouchard-Côté, Deligiannidis, Doucet 2022, "Non-reversible parallel tempering" (the even/odd swap
    schedule).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C
from sde_jax.samplers.langevin import MALAState, mala_init, mala_step
from sde_jax.sdes import batch_broadcast

__all__ = ["ReplicaExchangeState", "ReplicaExchangeInfo", "replica_exchange_init", "replica_exchange_step",
           "geometric_betas"]


class ReplicaExchangeState(NamedTuple):
    position: jax.Array  # [R, n, ...], float: replica r of system i at position[r, i]
    logdensity: jax.Array  # [R, n], float: log p (untempered) at position
    score: jax.Array  # [R, n, ...], float: grad log p (untempered) at position


class ReplicaExchangeInfo(NamedTuple):
    acceptance_rate: jax.Array  # [R, n], float: MALA acceptance probability per replica
    swap_rate: jax.Array  # [R - 1, n], float: acceptance probability of the swap (r, r+1) proposed this step
    is_swapped: jax.Array  # [R - 1, n], bool


def geometric_betas(num_replicas: int, beta_min: float):
    """``R`` inverse temperatures ``beta_r = beta_min^{r / (R - 1)}``, from 1 down to ``beta_min``."""
    r = C.check_int("num_replicas", num_replicas, minimum=2)
    C.check_open_interval("beta_min", beta_min, 0, 1)
    return jnp.asarray(beta_min) ** (jnp.arange(r) / (r - 1))


def _check_betas(betas, num_replicas):
    betas = jnp.asarray(betas)
    if betas.shape != (num_replicas,):
        raise ValueError(f"betas must have shape [R] = ({num_replicas},), one per replica; got shape {betas.shape}.")
    if C.is_concrete(betas) and not (np.all(np.asarray(betas) > 0) and np.all(np.asarray(betas) <= 1)):
        raise ValueError(f"betas must be in (0, 1]; got {betas}.")
    return betas


def replica_exchange_init(position, logdensity_fn):
    """State of ``n`` systems of ``R`` replicas; ``position: [R, n, ...]`` (e.g. ``jnp.broadcast_to(x0, (R,) +
    x0.shape)``), ``logdensity_fn(x: [n, ...]) -> [n]`` the untempered log-density."""
    position = jnp.asarray(position)
    if position.ndim < 3:
        raise ValueError(f"position must have shape [R, n, ...] (replicas, systems, data); got {position.shape}.")
    states = jax.vmap(lambda x: mala_init(x, logdensity_fn))(position)
    return ReplicaExchangeState(states.position, states.logdensity, states.score)


def _swap_pairs(key, state, betas, parity):
    """Propose swaps between replicas ``(r, r+1)`` for ``r = parity, parity + 2, ...``."""
    num_r = betas.shape[0]
    lo = jnp.arange(parity, num_r - 1, 2)                    # lower replica of each proposed pair
    hi = lo + 1
    lp = state.logdensity
    log_ratio = (betas[lo] - betas[hi])[:, None] * (lp[hi] - lp[lo])          # [P, n]
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    u = jax.random.uniform(key, log_ratio.shape, lp.dtype)
    swap = jnp.log(u) < log_ratio                                               # [P, n]
    perm = jnp.broadcast_to(jnp.arange(num_r)[:, None], lp.shape)               # [R, n]: where each slot reads
    perm = perm.at[lo].set(jnp.where(swap, hi[:, None], lo[:, None]))
    perm = perm.at[hi].set(jnp.where(swap, lo[:, None], hi[:, None]))

    def take(v):   # v[perm[r, i], i, ...]
        return jnp.take_along_axis(v, jnp.broadcast_to(batch_broadcast(perm, v), v.shape), axis=0)

    new = ReplicaExchangeState(take(state.position), take(state.logdensity), take(state.score))
    rate = jnp.zeros((num_r - 1,) + lp.shape[1:], lp.dtype).at[lo].set(accept_prob)
    swapped = jnp.zeros((num_r - 1,) + lp.shape[1:], bool).at[lo].set(swap)
    return new, rate, swapped


def replica_exchange_step(key, state, logdensity_fn, betas, step_size):
    """One replica-exchange step: a MALA move in every replica, then even and odd neighbour swaps.

    Args:
      key: PRNG key.
      state: :class:`ReplicaExchangeState` with ``R`` replicas.
      logdensity_fn: ``logdensity_fn(x: [n, ...]) -> [n]``, the untempered (unnormalised) log-density.
      betas: ``[R]`` inverse temperatures in ``(0, 1]``, ``betas[0] = 1`` for the target (not enforced: any
        decreasing ladder works; the target replica is the one with ``beta = 1``).
      step_size: MALA step ``h``, a scalar or ``[R]`` per replica (hot replicas take larger steps, e.g.
        ``h / betas``).

    Returns:
      ``(state, ReplicaExchangeInfo)``.
    """
    num_r = state.position.shape[0]
    if num_r < 2:
        raise ValueError(f"replica exchange needs at least 2 replicas; got {num_r}.")
    betas = _check_betas(betas, num_r).astype(state.logdensity.dtype)
    if C.is_concrete(step_size) and not np.all(np.asarray(step_size) > 0):
        raise ValueError(f"step_size must be > 0 (a scalar or one per replica); got {step_size!r}.")
    h = jnp.broadcast_to(jnp.asarray(step_size, state.logdensity.dtype), (num_r,))
    key_mala, key_even, key_odd = jax.random.split(key, 3)

    def local(k, pos, lp, score, beta, hr):
        tempered = MALAState(pos, beta * lp, beta * score)
        new, info = mala_step(k, tempered, lambda x: beta * logdensity_fn(x), hr)
        return new.position, new.logdensity / beta, new.score / beta, info.acceptance_rate

    pos, lp, score, acc = jax.vmap(local)(jax.random.split(key_mala, num_r), state.position, state.logdensity,
                                          state.score, betas, h)
    state = ReplicaExchangeState(pos, lp, score)
    state, rate_even, swap_even = _swap_pairs(key_even, state, betas, 0)
    state, rate_odd, swap_odd = _swap_pairs(key_odd, state, betas, 1)
    is_even = (jnp.arange(num_r - 1) % 2 == 0)[:, None]
    return state, ReplicaExchangeInfo(acceptance_rate=acc, swap_rate=jnp.where(is_even, rate_even, rate_odd),
                                      is_swapped=jnp.where(is_even, swap_even, swap_odd))
