"""Gaussian mixtures: exact densities and scores, and the exact perturbed score/density under each SDE."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj

SDES = [sj.VESDE(sigma_max=50.0), sj.VPSDE(), sj.SubVPSDE()]


def _mixture(dim=3):
    means = jnp.stack([jnp.linspace(-2.0, 1.0, dim), jnp.linspace(1.5, 0.5, dim), jnp.zeros(dim)])
    stds = jnp.stack([jnp.full(dim, 0.5), jnp.linspace(0.3, 0.9, dim), jnp.full(dim, 1.2)])
    return sj.toy.GaussianMixture(means, stds, [0.2, 0.5, 0.3])


@pytest.mark.compile_bound
def test_log_prob_normalised_in_2d(x64):
    gmm = sj.toy.GaussianMixture([[-1.0, 0.0], [1.5, 1.0]], [[0.5, 0.8], [0.4, 0.3]], [0.3, 0.7])
    g = jnp.linspace(-6, 6, 801)
    xx, yy = jnp.meshgrid(g, g)
    p = jnp.exp(gmm.log_prob(jnp.stack([xx.ravel(), yy.ravel()], -1)))
    h = g[1] - g[0]
    assert abs(float(jnp.sum(p) * h * h) - 1.0) < 1e-8  # Riemann sum of a smooth density with negligible tails


@pytest.mark.slow
@pytest.mark.compile_bound
def test_score_is_gradient_of_log_prob(x64, key):
    gmm = _mixture()
    x = 2.0 * jax.random.normal(key, (64, 3))
    grad = jax.vmap(jax.grad(lambda y: gmm.log_prob(y[None])[0]))(x)
    np.testing.assert_allclose(gmm.score(x), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.compile_bound
def test_perturbed_score_is_gradient_of_perturbed_log_prob(sde, x64, key):
    gmm = _mixture()
    kx, kt = jax.random.split(key)
    x = 3.0 * jax.random.normal(kx, (64, 3))
    t = jax.random.uniform(kt, (64,), minval=1e-3, maxval=1.0)
    logp = gmm.perturbed_log_prob(sde)
    grad = jax.vmap(jax.grad(lambda y, s: logp(y[None], s[None])[0]))(x, t)
    np.testing.assert_allclose(gmm.perturbed_score(sde)(x, t), grad, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.compile_bound
def test_perturbed_density_matches_monte_carlo_of_kernel(sde, x64, key):
    """p_t is the law of a(t) x0 + s(t) z: its mean and covariance agree with the sampled kernel."""
    gmm = _mixture(2)
    n, t = 100000, 0.4
    k0, kz = jax.random.split(key)
    x0 = gmm.sample(k0, n)
    mean, std = sde.marginal_prob(x0, jnp.full((n,), t))
    xt = mean + std[:, None] * jax.random.normal(kz, x0.shape)
    # exact moments of the perturbed mixture by quadrature over a grid
    g = jnp.linspace(-12, 12, 481)
    xx, yy = jnp.meshgrid(g, g)
    pts = jnp.stack([xx.ravel(), yy.ravel()], -1)
    w = jnp.exp(gmm.perturbed_log_prob(sde)(pts, jnp.full((pts.shape[0],), t))) * (g[1] - g[0]) ** 2
    assert abs(float(jnp.sum(w)) - 1) < 1e-6
    exact_mean = jnp.sum(w[:, None] * pts, 0)
    exact_var = jnp.sum(w[:, None] * (pts - exact_mean) ** 2, 0)
    se = jnp.sqrt(exact_var / n)
    assert np.all(np.abs(np.asarray(jnp.mean(xt, 0) - exact_mean)) < 4 * se)
    assert np.all(np.abs(np.asarray(jnp.var(xt, 0) / exact_var - 1)) < 4 * np.sqrt(2.0 / n) * 2)


@pytest.mark.compile_bound
def test_t_zero_limit_and_noise_conditional_score(x64, key):
    gmm = _mixture()
    x = jax.random.normal(key, (16, 3))
    np.testing.assert_allclose(gmm.perturbed_score(sj.VPSDE())(x, jnp.zeros(16)), gmm.score(x), rtol=1e-12)
    sig = jnp.full((16,), 0.7)
    np.testing.assert_allclose(gmm.noise_conditional_score()(x, sig), gmm.convolve(0.7).score(x), rtol=1e-12)
    np.testing.assert_allclose(gmm.noise_conditional_score()(x, jnp.zeros(16)), gmm.score(x), rtol=1e-12)


@pytest.mark.compile_bound
def test_sample_weights_and_moments(key):
    gmm = sj.toy.GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], 1.0, [1.0, 4.0])
    x, comp = gmm.sample(key, 40000, return_component=True)
    assert abs(float(jnp.mean(comp)) - 0.8) < 4 * np.sqrt(0.16 / 40000)
    np.testing.assert_allclose(gmm.weights, [0.2, 0.8], rtol=1e-6)


def test_fresh_score_pytree_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(score_fn, x, t):
        return score_fn(x, t)

    x, t = jnp.ones((2, 3)), jnp.full((2,), 0.5)
    a = f(_mixture().perturbed_score(sj.VPSDE()), x, t)
    b = f(sj.toy.GaussianMixture(_mixture().means + 1, _mixture().stds, [1.0, 1.0, 1.0]).perturbed_score(sj.VPSDE()),
          x, t)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("args, match", [
    (([1.0, 2.0], 1.0, [1.0]), "means must have shape"),
    (([[1.0, 2.0]], [[1.0, 2.0, 3.0]], [1.0]), "stds must broadcast"),
    (([[1.0, 2.0]], 1.0, [1.0, 2.0]), "weights must have shape"),
    (([[1.0, 2.0]], -1.0, [1.0]), "stds must be > 0"),
    (([[1.0, 2.0], [0.0, 0.0]], 1.0, [1.0, -1.0]), "weights must be >= 0"),
])
def test_bad_mixture_raises(args, match):
    with pytest.raises(ValueError, match=match):
        sj.toy.GaussianMixture(*args)


def test_bad_x_raises():
    gmm = _mixture()
    with pytest.raises(ValueError, match=r"x must have shape \[B, 3\]"):
        gmm.log_prob(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="t must have shape"):
        gmm.perturbed_score(sj.VPSDE())(jnp.ones((4, 3)), jnp.ones(3))
