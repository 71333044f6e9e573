"""Langevin MCMC for a known score or log-density: ULA, MALA and annealed Langevin dynamics.

Kernels follow blackjax's pattern: ``init(position, ...) -> State`` and
``step(key, state, ..., step_size) -> (State, Info)``, pure functions over NamedTuple states; hyper-parameters
are call arguments (traced), so a new step size does not recompile. Positions are batches of chains
``[n, ...]``; the score / log-density functions see the whole batch. :func:`run_chain` drives any kernel
with a ``lax.scan`` (one key per step by ``fold_in``), optionally keeping a thinned trajectory.

One overdamped Langevin integrator, :func:`langevin_update` (``x' = x + h score(x) + sqrt(2 h) z``; Roberts &
Tweedie 1996), is the step of every kernel built on it: ULA, the MALA proposal, annealed Langevin dynamics
(Song & Ermon 2019, Algorithm 1: ``x' = x + a/2 score + sqrt(a) z`` with ``a_i = epsilon sigma_i^2 /
sigma_L^2``, so ``h = a/2``) and the PC sampler's Langevin correctors (:mod:`sde_jax.samplers.correctors`).
"""
from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import _checks as C
from sde_jax.sdes import batch_broadcast, check_score

__all__ = ["langevin_update", "LangevinState", "MALAState", "MALAInfo", "ula_init", "ula_step", "mala_init",
           "mala_step", "run_chain", "annealed_langevin"]


class LangevinState(NamedTuple):
    position: jax.Array  # [n, ...], float
    score: jax.Array  # [n, ...], float: score at position


class MALAState(NamedTuple):
    position: jax.Array  # [n, ...], float
    logdensity: jax.Array  # [n], float
    score: jax.Array  # [n, ...], float: gradient of logdensity at position


class MALAInfo(NamedTuple):
    acceptance_rate: jax.Array  # [n], float: min(1, Metropolis-Hastings ratio)
    is_accepted: jax.Array  # [n], bool


def langevin_update(key, x, score, step_size, *, noise=None):
    """One overdamped Langevin step: ``x_mean = x + h score``, ``x' = x_mean + sqrt(2 h) z``, ``z ~ N(0, I)``.

    Args:
      key: PRNG key for ``z`` (unused when ``noise`` is given; may then be ``None``).
      x: positions ``[n, ...]``.
      score: ``grad log p`` at ``x`` (shape of ``x``).
      step_size: ``h``: a scalar or one per chain (``[n]``).
      noise: the standard normal draw ``z`` (shape of ``x``) to use instead of drawing one from ``key``: the
        PC sampler's Langevin corrector moves with the draw whose norm set ``h`` (Song et al. 2021,
        Algorithm 4).

    Returns:
      ``(x', x_mean)`` in ``x``'s dtype (a score of a wider dtype does not change a chain's dtype).
    """
    h = jnp.asarray(step_size, x.dtype)
    h = batch_broadcast(h, x) if h.ndim else h
    z = jax.random.normal(key, x.shape, x.dtype) if noise is None else jnp.asarray(noise, x.dtype)
    x_mean = x + h * score
    x_new = x_mean + jnp.sqrt(2.0 * h) * z
    return x_new.astype(x.dtype), x_mean.astype(x.dtype)


def _sum_rest(v):
    return jnp.sum(jnp.reshape(v, (v.shape[0], -1)), axis=-1)


def _check_logdensity(lp, x):
    if jnp.shape(lp) != jnp.shape(x)[:1]:
        raise ValueError(f"logdensity_fn(x) must return shape [n] = {jnp.shape(x)[:1]}; got {jnp.shape(lp)}.")
    return lp


def ula_init(position, score_fn):
    """State of ``n`` unadjusted Langevin chains; ``score_fn(x) -> [n, ...]``."""
    position = jnp.asarray(position)
    return LangevinState(position, check_score(score_fn(position), position))


def ula_step(key, state, score_fn, step_size):
    """Unadjusted Langevin algorithm: ``x' = x + h score(x) + sqrt(2h) z``.

    Its stationary distribution is biased by O(h) from the target (no Metropolis correction).
    Returns ``(state, None)``.
    """
    x = state.position
    x, _ = langevin_update(key, x, state.score, C.check_positive("step_size", step_size))
    return LangevinState(x, check_score(score_fn(x), x)), None


def _value_and_score(logdensity_fn, x):
    lp, vjp = jax.vjp(logdensity_fn, x)
    lp = _check_logdensity(lp, x)
    return lp, vjp(jnp.ones_like(lp))[0]


def mala_init(position, logdensity_fn):
    """State of ``n`` MALA chains; ``logdensity_fn(x) -> [n]`` (per-chain, unnormalised)."""
    position = jnp.asarray(position)
    return MALAState(position, *_value_and_score(logdensity_fn, position))


def mala_step(key, state, logdensity_fn, step_size):
    """Metropolis-adjusted Langevin algorithm (Roberts & Tweedie 1996), per chain.

    Proposal ``y = x + h grad log p(x) + sqrt(2h) z``, accepted with probability

    .. math:: \\min\\Big(1, \\frac{p(y)\\, q(x \\mid y)}{p(x)\\, q(y \\mid x)}\\Big), \\qquad
        \\log q(y \\mid x) = -\\frac{\\|y - x - h \\nabla \\log p(x)\\|^2}{4h} + \\text{const},

    so the target is exactly invariant. Returns ``(state, MALAInfo)``.
    """
    key_prop, key_acc = jax.random.split(key)
    x = state.position
    h = jnp.asarray(C.check_positive("step_size", step_size), x.dtype)
    y, _ = langevin_update(key_prop, x, state.score, h)
    lp_y, score_y = _value_and_score(logdensity_fn, y)

    def log_q(to, frm, score_frm):
        return -_sum_rest((to - frm - h * score_frm) ** 2) / (4.0 * h)

    log_ratio = lp_y + log_q(x, y, score_y) - state.logdensity - log_q(y, x, state.score)
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    accepted = jnp.log(jax.random.uniform(key_acc, accept_prob.shape, x.dtype)) < log_ratio

    def pick(new, old):
        return jnp.where(batch_broadcast(accepted, new), new, old)

    new_state = MALAState(pick(y, x), jnp.where(accepted, lp_y, state.logdensity), pick(score_y, state.score))
    return new_state, MALAInfo(accept_prob, accepted)


def run_chain(key, step_fn, state, num_steps, *, trajectory_every=0):
    """Run ``state, info = step_fn(key, state)`` for ``num_steps`` steps in a ``lax.scan``.

    Args:
      key: PRNG key; step ``k`` uses ``fold_in(key, k)``.
      step_fn: ``step_fn(key, state) -> (state, info)``, e.g.
        ``lambda k, s: mala_step(k, s, logdensity_fn, step_size)``.
      state: initial state.
      num_steps: number of steps (static).
      trajectory_every: if > 0, also return the positions every that many steps
        (``[num_steps // trajectory_every, n, ...]``); memory then grows with ``num_steps``.

    Returns:
      ``(state, infos)`` or ``(state, infos, trajectory)``; ``infos`` stacks the per-step infos.
      Wrap the call in ``jax.jit`` (with ``step_fn`` closed over or static) to compile it once.
    """
    num_steps = C.check_int("num_steps", num_steps)
    every = C.check_int("trajectory_every", trajectory_every, minimum=0)
    if every and num_steps % every:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of trajectory_every ({every}).")

    def one(state, k):
        return step_fn(jax.random.fold_in(key, k), state)

    if not every:
        return jax.lax.scan(one, state, jnp.arange(num_steps))

    def block(state, b):
        state, infos = jax.lax.scan(one, state, b * every + jnp.arange(every))
        return state, (infos, state.position)

    state, (infos, traj) = jax.lax.scan(block, state, jnp.arange(num_steps // every))
    infos = jax.tree.map(lambda v: v.reshape((num_steps,) + v.shape[2:]), infos)
    return state, infos, traj


def annealed_langevin(key, score_fn, x0, sigmas, *, step_size=2e-5, n_steps_each=100, denoise=False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For noise levels ``sigma_1 > ... > sigma_L`` and ``a_i = epsilon sigma_i^2 / sigma_L^2``, run
    ``n_steps_each`` updates ``x <- x + a_i/2 score(x, sigma_i) + sqrt(a_i) z`` at each level.

    Args:
      key: PRNG key.
      score_fn: noise-conditional score ``score_fn(x, sigma) -> [n, ...]`` with ``sigma: [n]``.
      x0: initial positions ``[n, ...]`` (e.g. uniform noise).
      sigmas: ``[L]`` noise levels, decreasing.
      step_size: ``epsilon`` (> 0).
      n_steps_each: updates per level ``T``.
      denoise: finish with ``x + sigma_L^2 score(x, sigma_L)`` (Tweedie's formula; Jolicoeur-Martineau et
        al. 2021), one more evaluation.

    Returns:
      ``(x, nfe)`` with ``nfe = L * n_steps_each (+1)`` (a Python int).
    """
    n_each = C.check_int("n_steps_each", n_steps_each)
    if jnp.ndim(sigmas) != 1 or jnp.shape(sigmas)[0] < 1:
        raise ValueError(f"sigmas must be a 1-D array of noise levels; got shape {jnp.shape(sigmas)}.")
    message = "sigmas must be positive, finite and strictly decreasing"
    if C.is_concrete(sigmas):
        s = np.asarray(sigmas)
        if not (np.all(s > 0) and np.all(np.isfinite(s)) and np.all(np.diff(s) < 0)):
            raise ValueError(f"{message}; got {s}.")
        sigmas = jnp.asarray(s)
    else:
        bad = ~(jnp.all(sigmas > 0) & jnp.all(jnp.isfinite(sigmas)) & jnp.all(jnp.diff(sigmas) < 0))
        sigmas = eqx.error_if(sigmas, bad, f"{message}.")
    step_size = C.check_positive("step_size", step_size)
    x0 = jnp.asarray(x0)
    x = _ald_loop(key, score_fn, x0, sigmas.astype(x0.dtype), jnp.asarray(step_size, x0.dtype), n_each,
                  bool(denoise))
    return x, sigmas.shape[0] * n_each + int(bool(denoise))


@eqx.filter_jit
def _ald_loop(key, score_fn, x, sigmas, step_size, n_each, denoise):
    batch = x.shape[0]

    def level(x, inputs):
        i, sigma = inputs
        a = step_size * (sigma / sigmas[-1]) ** 2
        sig = jnp.full((batch,), sigma)

        def update(x, k):
            score = check_score(score_fn(x, sig), x)
            return langevin_update(jax.random.fold_in(key, i * n_each + k), x, score, 0.5 * a)[0], None

        return jax.lax.scan(update, x, jnp.arange(n_each))[0], None

    x, _ = jax.lax.scan(level, x, (jnp.arange(sigmas.shape[0]), sigmas))
    if denoise:
        sig = jnp.full((batch,), sigmas[-1])
        x = x + sigmas[-1] ** 2 * check_score(score_fn(x, sig), x)
    return x
