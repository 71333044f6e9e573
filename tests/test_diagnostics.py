"""MCMC diagnostics against closed forms on AR(1) chains and constructed samples.

A stationary AR(1) chain ``x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t`` has autocorrelation ``phi^t`` and
integrated autocorrelation time ``tau = (1 + phi) / (1 - phi)``, so ``ESS = M N / tau``. For ``M`` chains of
``L`` draws, ``E[var+] = sigma^2`` and ``E[W] = sigma^2 (L - V_L) / (L - 1)`` with
``V_L = 1 + 2 sum_{k<L} (1 - k/L) phi^k`` (``L`` times the variance of a chain mean), so R-hat tends to
``sqrt((L - 1) / (L - V_L))`` as ``M`` grows: R-hat > 1 for short correlated chains even at stationarity.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.samplers import autocorrelation, burn_in, effective_sample_size, rhat_trace, split_rhat


def _ar1(key, phi, shape):
    """Stationary AR(1) chains ``[..., n]`` (last axis = draws), started from the stationary N(0, 1)."""
    *lead, n = shape
    e = jax.random.normal(key, (n, *lead))
    x0 = jax.random.normal(jax.random.fold_in(key, 1), tuple(lead))

    def step(x, ei):
        x = phi * x + jnp.sqrt(1.0 - phi**2) * ei
        return x, x

    return jnp.moveaxis(jax.lax.scan(step, x0, e)[1], 0, -1)


@pytest.mark.parametrize("phi", [pytest.param(0.9, marks=pytest.mark.slow), 0.5, 0.0,
                                 pytest.param(-0.5, marks=pytest.mark.slow)])
@pytest.mark.compile_bound
def test_ess_matches_ar1_reference(x64, phi):
    """8 seeds x 8 chains x 20000 draws: mean ESS / (M N (1 - phi)/(1 + phi)) within 5% of 1 and every
    seed within 15% (measured: phi=0.9 0.977 +- 0.04, the Geyer estimator's finite-N bias; phi=0.5 1.00)."""
    m, n = 8, 20000
    x = _ar1(jax.random.key(int(10 * phi) + 100), phi, (8, m, n))
    ess = np.asarray(jax.jit(jax.vmap(effective_sample_size))(x))
    ratio = ess / (m * n * (1 - phi) / (1 + phi))
    assert abs(ratio.mean() - 1.0) < 0.05, ratio
    assert np.all(np.abs(ratio - 1.0) < 0.15), ratio


@pytest.mark.compile_bound
def test_autocorrelation_of_ar1(x64):
    """Lags 0..10 of 8 x 20000 AR(1) draws with phi = 0.8 equal phi^t within 0.03 (rho_0 = 1 exactly)."""
    x = _ar1(jax.random.key(3), 0.8, (8, 20000))
    rho = np.asarray(autocorrelation(x))
    assert rho.shape == (20000,) and rho[0] == 1.0
    np.testing.assert_allclose(rho[:11], 0.8 ** np.arange(11), atol=0.03)


@pytest.mark.compile_bound
def test_split_rhat_of_stationary_ar1_chains(x64):
    """4000 stationary chains, phi = 0.9, 200 draws (half-chains of L = 100): split R-hat equals the closed
    form sqrt((L - 1)/(L - V_L)) = 1.0935 within 0.006 (about 4 standard errors); with 20000 draws it is
    below 1.01."""
    phi, half = 0.9, 100
    k = np.arange(1, half)
    v_l = 1 + 2 * np.sum((1 - k / half) * phi**k)
    expected = np.sqrt((half - 1) / (half - v_l))
    x = _ar1(jax.random.key(4), phi, (4000, 2 * half))
    assert float(split_rhat(x)) == pytest.approx(expected, abs=0.006)
    assert float(split_rhat(_ar1(jax.random.key(5), phi, (8, 20000)))) < 1.01


def test_split_rhat_equals_the_textbook_formula(x64):
    """Random chains with different means (5 chains x 101 draws, 3 quantities): split_rhat equals a direct
    NumPy transcription of BDA3's split R-hat (last draw dropped, halves as chains) to 1e-12; chains whose
    means differ by a few standard deviations give R-hat > 1.5."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 101, 3)) + rng.normal(scale=3.0, size=(5, 1, 3))
    halves = np.concatenate([x[:, :50], x[:, 50:100]], 0)
    n = halves.shape[1]
    w = halves.var(axis=1, ddof=1).mean(0)
    b_over_n = halves.mean(axis=1).var(axis=0, ddof=1)
    ref = np.sqrt(((n - 1) / n * w + b_over_n) / w)
    np.testing.assert_allclose(split_rhat(x), ref, rtol=1e-12)
    assert np.all(ref > 1.5)


@pytest.mark.compile_bound
def test_rank_normalized_rhat_is_invariant_to_monotone_maps(x64):
    """Rank-normalised split R-hat depends on ranks only: exp(x) gives the same value (1e-12); it agrees with
    the classical one on Gaussian stationary chains within 0.01 and flags a scale mismatch that the classical
    one (bulk only) misses: chains with equal means and variances 1 vs 9 -> rank R-hat > 1.05."""
    x = _ar1(jax.random.key(6), 0.5, (16, 400))
    r = split_rhat(x, rank_normalize=True)
    assert float(split_rhat(jnp.exp(x), rank_normalize=True)) == pytest.approx(float(r), abs=1e-12)
    assert float(r) == pytest.approx(float(split_rhat(x)), abs=0.01)
    scales = jnp.where(jnp.arange(16) < 8, 1.0, 3.0)[:, None]
    y = jax.random.normal(jax.random.key(7), (16, 400)) * scales
    assert float(split_rhat(y)) < 1.02 < 1.05 < float(split_rhat(y, rank_normalize=True))


@pytest.mark.compile_bound
def test_burn_in_finds_the_end_of_the_transient(x64):
    """64 chains of iid N(0,1) draws whose first 120 draws are offset by +-5 (alternating chains): the first
    checkpoint (every 50 of 1000 draws) whose last half [n/2, n) is clean is n = 250 (R-hat < 1.01 there and
    1.22 > 1.1 at n = 200, where 20 of the window's 100 draws are offset); stationary chains pass at the first
    checkpoint (50); never-mixing chains give None."""
    z = jax.random.normal(jax.random.key(8), (64, 1000))
    offset = jnp.where(jnp.arange(64) % 2 == 0, 5.0, -5.0)[:, None] * (jnp.arange(1000) < 120)[None]
    ns, rh = rhat_trace(z + offset, 20)
    assert list(ns[:6]) == [50, 100, 150, 200, 250, 300]
    assert float(rh[3]) > 1.1 and float(rh[4]) < 1.01
    assert burn_in(z + offset, num_checkpoints=20) == 250
    assert burn_in(z, num_checkpoints=20) == 50
    stuck = z + jnp.where(jnp.arange(64) % 2 == 0, 5.0, -5.0)[:, None]
    assert burn_in(stuck, num_checkpoints=20) is None


@pytest.mark.slow
@pytest.mark.compile_bound
def test_layouts_trailing_axes_and_jit(x64):
    """A run_chain trajectory [draws, chains, d] with chain_axis=1, sample_axis=0 gives the same numbers as
    the transposed [chains, draws, d]; trailing axes are separate quantities (the functions are jitted)."""
    x = _ar1(jax.random.key(9), 0.7, (2, 6, 500))                     # [d, chains, draws]
    chains_first = jnp.transpose(x, (1, 2, 0))                          # [chains, draws, d]
    draws_first = jnp.transpose(x, (2, 1, 0))                           # [draws, chains, d]
    for fn in (effective_sample_size, split_rhat):
        a = fn(chains_first)
        np.testing.assert_allclose(fn(draws_first, chain_axis=1, sample_axis=0), a, rtol=1e-12)
        np.testing.assert_allclose(a[1], fn(x[1]), rtol=1e-12)
        assert a.shape == (2,)
    assert float(effective_sample_size(jnp.ones((4, 10)))) == 0.0       # no variance: no information


def test_errors():
    with pytest.raises(ValueError, match=r"shape \[num_chains, num_draws, ...\]"):
        split_rhat(jnp.ones(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        effective_sample_size(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="chain_axis and sample_axis must differ"):
        split_rhat(jnp.ones((3, 10)), chain_axis=1, sample_axis=1)
    with pytest.raises(ValueError, match="threshold must be > 1"):
        burn_in(jnp.ones((3, 100)), threshold=1.0)
    with pytest.raises(ValueError, match="num_checkpoints must be an integer >= 1"):
        rhat_trace(jnp.ones((3, 100)), 0)
