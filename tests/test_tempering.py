"""Replica exchange: each replica samples its tempered target exactly, swaps are bookkept correctly, and the
cold replica recovers the weights of a separated mixture where MALA does not."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.metrics import mode_weights
from sde_jax.samplers import (geometric_betas, mala_init, mala_step, replica_exchange_init, replica_exchange_step,
                              run_chain)

# 1-D bimodal target: 0.3 N(-3, 0.7^2) + 0.7 N(2, 1), as [n, 1] data.
W1D = jnp.array([0.3, 0.7])
MU1D = jnp.array([-3.0, 2.0])
SD1D = jnp.array([0.7, 1.0])


def _logp_1d(x):
    comp = -0.5 * ((x - MU1D) / SD1D) ** 2 - jnp.log(SD1D) + jnp.log(W1D)     # [n, 2]
    return jax.scipy.special.logsumexp(comp, axis=-1)


def _run(logp, x0, betas, h, steps, key):
    state = replica_exchange_init(jnp.broadcast_to(x0, (betas.shape[0],) + x0.shape), logp)
    return jax.jit(lambda k, s, b, hh: run_chain(
        k, lambda kk, ss: replica_exchange_step(kk, ss, logp, b, hh), s, steps))(key, state, betas, h)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_every_replica_samples_its_tempered_target(x64):
    """R = 4, betas (1, 0.5, 0.25, 0.1), 4000 systems started at 0, 600 steps, h_r = 0.4 / beta_r: each
    replica's E[x] and E[x^2] match p^beta (normalised by quadrature on a 20001-point grid) within 5 standard
    errors; the cold replica's weight of the left mode matches 0.3 within 0.03 (SE 0.007)."""
    betas = jnp.array([1.0, 0.5, 0.25, 0.1])
    x0 = jnp.zeros((4000, 1))
    state, info = _run(_logp_1d, x0, betas, 0.4 / betas, 600, jax.random.key(0))
    grid = jnp.linspace(-40.0, 40.0, 20001)[:, None]
    lp = _logp_1d(grid)
    for r, beta in enumerate(np.asarray(betas)):
        p = jnp.exp(beta * lp - jnp.max(beta * lp))
        p = p / jnp.sum(p)
        m1, m2 = float(jnp.sum(p * grid[:, 0])), float(jnp.sum(p * grid[:, 0] ** 2))
        x = np.asarray(state.position[r, :, 0])
        se1 = np.sqrt((m2 - m1**2) / x.size)
        se2 = np.std(x**2) / np.sqrt(x.size)
        assert abs(x.mean() - m1) < 5 * se1, (r, x.mean(), m1, se1)
        assert abs((x**2).mean() - m2) < 5 * se2, (r, (x**2).mean(), m2, se2)
    left = float(jnp.mean(state.position[0, :, 0] < -0.5))
    assert abs(left - 0.3) < 0.03
    assert info.acceptance_rate.shape == (600, 4, 4000) and info.swap_rate.shape == (600, 3, 4000)
    assert 0.2 < float(jnp.mean(info.swap_rate)) < 1.0


@pytest.mark.slow
@pytest.mark.compile_bound
def test_recovers_separated_mixture_weights_where_mala_does_not():
    """0.2 N((-5,-5), I) + 0.8 N((5,5), I) from uniform [-8, 8]^2 (the mode weights start near 0.5/0.5):
    replica exchange (R = 8, geometric betas down to 0.01, h_r = 0.5/beta_r, 300 steps, 1000 systems) gives
    the cold replica's weights within 0.05 of 0.2/0.8 (SE 0.013); MALA (h = 0.5, 2400 steps: the same number
    of evaluations) keeps the initial split, error > 0.2."""
    gmm = sj.toy.GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])
    x0 = jax.random.uniform(jax.random.key(1), (1000, 2), minval=-8.0, maxval=8.0)
    betas = geometric_betas(8, 0.01)
    state, _ = _run(gmm.log_prob, x0, betas, 0.5 / betas, 300, jax.random.key(2))
    w_pt = np.asarray(mode_weights(state.position[0], gmm.means))
    assert np.max(np.abs(w_pt - np.array([0.2, 0.8]))) < 0.05, w_pt
    mala, _ = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: mala_step(kk, ss, gmm.log_prob, 0.5), s, 2400))(
        jax.random.key(3), mala_init(x0, gmm.log_prob))
    w_mala = np.asarray(mode_weights(mala.position, gmm.means))
    assert np.max(np.abs(w_mala - np.array([0.2, 0.8]))) > 0.2, w_mala


@pytest.mark.slow
@pytest.mark.compile_bound
def test_swap_bookkeeping_and_state_invariants(x64):
    """Equal betas make every swap certain: with a negligible MALA step (h = 1e-14) one step maps replicas
    (0, 1, 2) -> even swap (1, 0, 2) -> odd swap (1, 2, 0); stored log p and score always equal those of the
    stored positions (1e-12)."""
    x0 = jax.random.normal(jax.random.key(4), (3, 5, 1))
    logp = lambda x: -0.5 * jnp.sum(x**2, -1) - jnp.sum(x, -1)  # noqa: E731
    state = replica_exchange_init(x0, logp)
    new, info = jax.jit(lambda k, s: replica_exchange_step(k, s, logp, jnp.ones(3), 1e-14))(jax.random.key(5), state)
    np.testing.assert_allclose(new.position, x0[jnp.array([1, 2, 0])], atol=1e-6)
    assert bool(jnp.all(info.is_swapped)) and float(jnp.min(info.swap_rate)) == 1.0
    betas = jnp.array([1.0, 0.4, 0.1])
    state, _ = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: replica_exchange_step(kk, ss, logp, betas, 0.3), s,
                                              50))(jax.random.key(6), replica_exchange_init(x0, logp))
    flat = state.position.reshape(-1, 1)
    np.testing.assert_allclose(state.logdensity.reshape(-1), logp(flat), atol=1e-12)
    np.testing.assert_allclose(state.score.reshape(-1, 1), -flat - 1.0, atol=1e-12)


@pytest.mark.compile_bound
def test_new_betas_and_step_sizes_do_not_recompile():
    logp = lambda x: -0.5 * jnp.sum(x**2, -1)  # noqa: E731
    state = replica_exchange_init(jnp.zeros((3, 4, 2)), logp)
    traces = []

    @jax.jit
    def step(key, state, betas, h):
        traces.append(1)
        return replica_exchange_step(key, state, logp, betas, h)

    for b, h in ((jnp.array([1.0, 0.5, 0.2]), 0.1), (jnp.array([1.0, 0.3, 0.1]), jnp.array([0.1, 0.2, 0.3]))):
        new, info = step(jax.random.key(0), state, b, jnp.broadcast_to(jnp.asarray(h, jnp.float32), (3,)))
    assert len(traces) == 1 and new.position.dtype == jnp.float32 and info.is_swapped.shape == (2, 4)


def test_errors():
    logp = lambda x: -0.5 * jnp.sum(x**2, -1)  # noqa: E731
    state = replica_exchange_init(jnp.zeros((3, 4, 2)), logp)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"position must have shape \[R, n, ...\]"):
        replica_exchange_init(jnp.zeros((4, 2)), logp)
    with pytest.raises(ValueError, match=r"betas must have shape \[R\] = \(3,\)"):
        replica_exchange_step(key, state, logp, jnp.ones(2), 0.1)
    with pytest.raises(ValueError, match=r"betas must be in \(0, 1\]"):
        replica_exchange_step(key, state, logp, jnp.array([1.0, 0.5, 0.0]), 0.1)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        replica_exchange_step(key, state, logp, jnp.ones(3), -0.1)
    with pytest.raises(ValueError, match="at least 2 replicas"):
        replica_exchange_step(key, replica_exchange_init(jnp.zeros((1, 4, 2)), logp), logp, jnp.ones(1), 0.1)
    with pytest.raises(ValueError, match=r"beta_min must be in \(0, 1\)"):
        geometric_betas(4, 1.5)
    with pytest.raises(ValueError, match="num_replicas must be an integer >= 2"):
        geometric_betas(1, 0.1)
