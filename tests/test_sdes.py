"""SDEs against closed forms and against Monte-Carlo simulation of the forward SDE."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.sdes import check_batch, reverse_discretize, reverse_sde

SDES = {
    "ve": lambda: sj.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
    "vp": lambda: sj.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": lambda: sj.SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", SDES)
def test_marginal_prob_matches_monte_carlo_forward_sde(name, x64, key):
    """Fine Euler--Maruyama (2000 steps on [0, 1]) of 10000 paths from x0 = 2.

    Tolerance: 4 Monte-Carlo standard errors (mean: s/sqrt(n); std: s/sqrt(2n)) plus 0.5% relative for the
    Euler--Maruyama bias (O(dt) with dt = 5e-4; g^2 grows like exp(17 t) for VE: ~0.2% in the std).
    """
    sde, n, steps = SDES[name](), 10000, 2000
    dt = 1.0 / steps
    x0 = jnp.full((n, 1), 2.0)
    check_at = {200: 0.1, 1000: 0.5, 2000: 1.0}

    def step(x, k):
        t = jnp.full((n,), k * dt)
        drift, g = sde.sde(x, t)
        x = x + drift * dt + g[:, None] * jnp.sqrt(dt) * jax.random.normal(jax.random.fold_in(key, k), x.shape)
        return x, x

    _, path = jax.lax.scan(step, x0, jnp.arange(steps))
    for k, t in check_at.items():
        xt = path[k - 1, :, 0]
        mean, std = sde.marginal_prob(x0, jnp.full((n,), t))
        mean, std = float(mean[0, 0]), float(std[0])
        se_mean, se_std = std / np.sqrt(n), std / np.sqrt(2 * n)
        assert abs(float(jnp.mean(xt)) - mean) < 4 * se_mean + 5e-3 * abs(mean), (t, float(jnp.mean(xt)), mean)
        assert abs(float(jnp.std(xt)) - std) < 4 * se_std + 5e-3 * std, (t, float(jnp.std(xt)), std)


@pytest.mark.compile_bound
def test_closed_forms_at_known_points(x64):
    t = jnp.array([0.0, 0.3, 1.0])
    vp, svp, ve = SDES["vp"](), SDES["subvp"](), SDES["ve"]()
    log_a = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    np.testing.assert_allclose(vp.marginal_mean_coeff(t), np.exp(log_a), rtol=1e-14)
    np.testing.assert_allclose(vp.marginal_std(t), np.sqrt(1 - np.exp(2 * log_a)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(svp.marginal_std(t), 1 - np.exp(2 * log_a), rtol=1e-12, atol=1e-15)
    sigma = 0.01 * 5000.0**t
    np.testing.assert_allclose(ve.sigma(t), sigma, rtol=1e-13)
    np.testing.assert_allclose(ve.marginal_std(t), np.sqrt(sigma**2 - 0.01**2), rtol=1e-10, atol=1e-15)
    # g^2 = d/dt s(t)^2 (the variance ODE of a driftless SDE) for VE; for VP d/dt s^2 = beta (1 - s^2).
    t = jnp.array([0.05, 0.3, 1.0])  # s(t) is not differentiable at 0 for VE
    x = jnp.zeros((3, 1))
    dvar = jax.vmap(jax.grad(lambda s: ve.marginal_std(s) ** 2))(t)
    np.testing.assert_allclose(ve.sde(x, t)[1] ** 2, dvar, rtol=1e-10)
    dvar_vp = jax.vmap(jax.grad(lambda s: vp.marginal_std(s) ** 2))(t)
    np.testing.assert_allclose(dvar_vp, vp.beta(t) * (1 - vp.marginal_std(t) ** 2), rtol=1e-10)
    # sub-VP: d/dt s^2 = -beta s^2 + g^2 (linear SDE variance ODE with drift -beta/2 x)
    dvar_svp = jax.vmap(jax.grad(lambda s: svp.marginal_std(s) ** 2))(t)
    np.testing.assert_allclose(dvar_svp, -svp.beta(t) * svp.marginal_std(t) ** 2 + svp.sde(x, t)[1] ** 2,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.compile_bound
def test_discretize_reproduces_ddpm_betas_and_smld_sigmas(x64):
    n = 1000
    vp, ve = SDES["vp"](), SDES["ve"]()
    betas = np.linspace(0.1 / n, 20.0 / n, n)
    x = jnp.ones((n, 2))
    idx = jnp.arange(n)
    f, G = vp.discretize(x, idx / (n - 1.0))  # level from t (nearest level)
    np.testing.assert_allclose(G**2, betas, rtol=1e-12)
    np.testing.assert_allclose(f, (np.sqrt(1 - betas) - 1)[:, None] * np.ones((n, 2)), rtol=1e-12)
    np.testing.assert_allclose(vp.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-12)
    sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), n))
    np.testing.assert_allclose(ve.discrete_sigmas, sigmas, rtol=1e-12)
    _, G = ve.discretize(x, jnp.zeros(n), index=idx)  # explicit level overrides t
    np.testing.assert_allclose(np.cumsum(G**2), sigmas**2, rtol=1e-10)  # variances telescope to sigma_i^2
    # DDPM chain marginal ~ continuous VP kernel at t_i = i/(N-1) (the SDE is its N -> inf limit). They differ
    # at second order, -log(1 - beta) - beta ~ beta^2/2, summing to ~0.067 in log(alphabar) at i = N-1: 3.4%.
    t = idx / (n - 1.0)
    np.testing.assert_allclose(np.sqrt(vp.alphas_cumprod), vp.marginal_mean_coeff(t), rtol=3.5e-2)


@pytest.mark.compile_bound
def test_prior_logp_and_sampling(x64, key):
    for sde, s in [(SDES["ve"](), 50.0), (SDES["vp"](), 1.0)]:
        z = sde.prior_sampling(key, (5, 3, 4, 2))
        assert z.shape == (5, 3, 4, 2) and z.dtype == jnp.float64
        flat = np.asarray(z).reshape(5, -1)
        expect = -0.5 * 24 * np.log(2 * np.pi * s**2) - 0.5 * np.sum(flat**2, -1) / s**2
        np.testing.assert_allclose(sde.prior_logp(z), expect, rtol=1e-12)


@pytest.mark.compile_bound
def test_image_shaped_data_and_reverse_drifts(x64, key):
    sde = SDES["vp"]()
    x = jax.random.normal(key, (4, 8, 8, 3))
    t = jnp.linspace(0.1, 0.9, 4)
    drift, g = sde.sde(x, t)
    assert drift.shape == x.shape and g.shape == (4,)
    mean, std = sde.marginal_prob(x, t)
    assert mean.shape == x.shape and std.shape == (4,)

    def score(x, t):
        return -x  # any score: check the formulas
    rd, rg = reverse_sde(sde, score, x, t)
    np.testing.assert_allclose(rd, drift - (g**2)[:, None, None, None] * (-x), rtol=1e-12)
    pd, pg = reverse_sde(sde, score, x, t, probability_flow=True)
    np.testing.assert_allclose(pd, drift - 0.5 * (g**2)[:, None, None, None] * (-x), rtol=1e-12)
    assert np.all(np.asarray(pg) == 0) and np.allclose(rg, g)
    np.testing.assert_allclose(sj.probability_flow_drift(sde, score, x, t), pd)
    f, G = sde.discretize(x, t)
    rf, rG = reverse_discretize(sde, score, x, t)
    np.testing.assert_allclose(rf, f - (G**2)[:, None, None, None] * (-x), rtol=1e-12)


def test_hyperparameters_are_traced_not_static():
    @jax.jit
    @chex.assert_max_traces(n=2)
    def std(sde, t):
        return sde.marginal_std(t)

    t = jnp.array([0.5])
    a = std(sj.VPSDE(beta_max=20.0), t)
    b = std(sj.VPSDE(beta_max=10.0), t)        # same class, new values: no new trace
    assert not np.allclose(a, b)
    # Different classes with the same fields must not share a trace (the second and last allowed trace).
    c = std(sj.SubVPSDE(beta_max=10.0), t)
    assert not np.allclose(b, c)
    with pytest.raises(AssertionError, match="traced > 2 times"):
        std(sj.VESDE(), t)
    assert jax.tree.structure(sj.VPSDE()) != jax.tree.structure(sj.SubVPSDE())


@pytest.mark.parametrize("make, match", [
    (lambda: sj.VESDE(sigma_min=0.0), "sigma_min must be > 0"),
    (lambda: sj.VESDE(sigma_min=1.0, sigma_max=1.0), "sigma_min must be < sigma_max"),
    (lambda: sj.VESDE(sigma_max=-5.0), "sigma_max must be > 0"),
    (lambda: sj.VPSDE(beta_min=-0.1), "beta_min must be > 0"),
    (lambda: sj.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min must be < beta_max"),
    (lambda: sj.SubVPSDE(beta_max=0.0), "beta_max must be > 0"),
    (lambda: sj.VPSDE(N=0), "N .* integer >= 1"),
    (lambda: sj.VESDE(N=2.5), "N .* integer >= 1"),
])
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_t_of_wrong_shape_raises():
    sde = sj.VPSDE()
    x = jnp.ones((4, 2))
    for t in (jnp.ones(()), jnp.ones((3,)), jnp.ones((4, 1))):
        with pytest.raises(ValueError, match="t must have shape"):
            sde.sde(x, t)
    with pytest.raises(ValueError, match="t must have shape"):
        sde.marginal_prob(x, jnp.ones((2,)))
    check_batch(x, jnp.ones(4))
