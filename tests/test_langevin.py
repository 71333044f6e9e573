"""Langevin MCMC: ULA vs MALA on the banana, plain vs annealed Langevin on a mixture (Song & Ermon 2019)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.metrics import mode_weights
from sde_jax.samplers import annealed_langevin, mala_init, mala_step, run_chain, ula_init, ula_step

FAR_MIXTURE = sj.toy.GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])


def _uniform_init(n):
    return jax.random.uniform(jax.random.key(1), (n, 2), minval=-8.0, maxval=8.0)


@pytest.mark.slow
def test_plain_langevin_gets_weights_wrong_annealed_recovers_them():
    """Song & Ermon 2019, Fig. 3: exact scores, uniform initialisation on [-8, 8]^2, 5000 chains.

    ULA (h = 0.1, 1000 steps) keeps each chain in the basin it starts in: weights ~0.5/0.5.
    ALD (sigmas geometric 20 -> 1, L = 10, T = 300, epsilon = 0.1) recovers 0.2/0.8. MC s.e. of a weight: 0.0057.
    (Song & Ermon's T = 100 leaves a measured bias of ~+0.015 on the small mode's weight; T = 300: ~+0.008.)
    """
    n = 5000
    x0 = _uniform_init(n)
    state = ula_init(x0, FAR_MIXTURE.score)
    state, _ = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: ula_step(kk, ss, FAR_MIXTURE.score, 0.1), s, 1000))(
        jax.random.key(0), state)
    ula_err = float(jnp.max(jnp.abs(mode_weights(state.position, FAR_MIXTURE.means) - FAR_MIXTURE.weights)))
    sigmas = jnp.exp(jnp.linspace(jnp.log(20.0), jnp.log(1.0), 10))
    x, nfe = annealed_langevin(jax.random.key(0), FAR_MIXTURE.noise_conditional_score(), x0, sigmas,
                               step_size=0.1, n_steps_each=300)
    ald_err = float(jnp.max(jnp.abs(mode_weights(x, FAR_MIXTURE.means) - FAR_MIXTURE.weights)))
    assert ula_err > 0.1, ula_err
    assert ald_err < 0.03, ald_err
    assert nfe == 3000


@pytest.mark.slow
def test_mala_is_exact_where_ula_is_biased_on_the_banana():
    """4000 chains started from exact banana samples, 1000 steps of h = 0.2.

    MALA leaves the target invariant, so its final states are exact samples: each of E[x1], E[x2], E[x1^2],
    E[x2^2] within 4 standard errors of the exact value. ULA at this step size is biased by O(h): at least
    one moment off by more than 6 standard errors (measured: E[x2^2] at -8 s.e.).
    """
    banana = sj.toy.Banana()
    n, h = 4000, 0.2
    x0 = banana.sample(jax.random.key(1), n)

    @jax.jit
    def run(key):
        su, _ = run_chain(key, lambda k, s: ula_step(k, s, banana.score, h), ula_init(x0, banana.score), 1000)
        sm, info = run_chain(key, lambda k, s: mala_step(k, s, banana.log_prob, h), mala_init(x0, banana.log_prob),
                             1000)
        return su.position, sm.position, info

    xu, xm, info = run(jax.random.key(2))
    exact = np.array([0.0, 0.0, float(banana.moment(2, 0)), float(banana.moment(0, 2))])

    def zscores(x):
        x = np.asarray(x, np.float64)
        f = np.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2], 1)
        return (f.mean(0) - exact) / (f.std(0) / np.sqrt(n))

    assert np.all(np.abs(zscores(xm)) < 4), zscores(xm)
    assert np.max(np.abs(zscores(xu))) > 6, zscores(xu)
    acc = np.asarray(info.acceptance_rate)
    assert np.all((acc >= 0) & (acc <= 1)) and 0.5 < acc.mean() < 1.0


@pytest.mark.slow
@pytest.mark.compile_bound
def test_mala_accepts_everything_on_a_gaussian_as_h_to_zero_and_keeps_gaussian(x64):
    """On N(0, I), MALA's acceptance -> 1 as h -> 0 and the chain keeps the exact variance."""
    def logp(x):
        return -0.5 * jnp.sum(x**2, -1)

    x0 = jax.random.normal(jax.random.key(0), (20000, 3))
    state = mala_init(x0, logp)
    st, info = run_chain(jax.random.key(1), lambda k, s: mala_step(k, s, logp, 1e-4), state, 5)
    assert float(info.acceptance_rate.mean()) > 0.999
    st, info = run_chain(jax.random.key(1), lambda k, s: mala_step(k, s, logp, 1.5), state, 50)
    assert 0.0 < float(info.acceptance_rate.mean()) < 0.9
    assert abs(float(jnp.var(st.position)) - 1.0) < 4 * np.sqrt(2.0 / 60000) * 3  # chains correlated: 3x slack


@pytest.mark.compile_bound
def test_trajectory_and_no_recompile_for_new_step_size():
    traces = []

    def score(x):
        traces.append(1)
        return -x

    run = jax.jit(lambda k, s, h: run_chain(k, lambda kk, ss: ula_step(kk, ss, score, h), s, 20, trajectory_every=5))
    state = ula_init(jnp.ones((3, 2)), score)
    n_init = len(traces)
    st, _, traj = run(jax.random.key(0), state, 0.1)
    n_first = len(traces)
    st2, _, _ = run(jax.random.key(1), state, 0.3)
    assert len(traces) == n_first > n_init
    assert traj.shape == (4, 3, 2)
    np.testing.assert_allclose(traj[-1], st.position)
    # ALD: new step size / key do not retrace
    ald_traces = []

    def ncs(x, sigma):
        ald_traces.append(1)
        return -x / (1 + sigma[:, None] ** 2)

    for h in (1e-3, 2e-3):
        annealed_langevin(jax.random.key(0), ncs, jnp.ones((4, 2)), jnp.array([2.0, 1.0]), step_size=h, n_steps_each=3)
    assert len(ald_traces) == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigmas must be positive, finite and strictly decreasing"):
        annealed_langevin(jax.random.key(0), lambda x, s: -x, jnp.ones((4, 2)), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="step_size must be > 0"):
        annealed_langevin(jax.random.key(0), lambda x, s: -x, jnp.ones((4, 2)), jnp.array([2.0, 1.0]), step_size=0.0)
    with pytest.raises(ValueError, match="must return shape \\[n\\]"):
        mala_init(jnp.ones((4, 2)), lambda x: jnp.sum(x))
    with pytest.raises(ValueError, match="same shape as x"):
        ula_init(jnp.ones((4, 2)), lambda x: x[:, 0])
    with pytest.raises(ValueError, match="multiple of trajectory_every"):
        run_chain(jax.random.key(0), lambda k, s: (s, None), ula_init(jnp.ones((4, 2)), lambda x: -x), 10,
                  trajectory_every=3)
