"""The exact targets of controllable generation, checked against Bayes' rule directly (no sampling).

``GaussianMixture.condition`` (observed coordinates, exact or noisy), ``GaussianMixture.rotate`` (orthogonal
change of basis, what a linear measurement's SVD needs) and ``perturbed_class_log_prob`` (the exact noisy-data
class posterior of classifier guidance) are compared with densities computed from the joint mixture in float64
(tolerance 1e-10), on random points and observations with fixed seeds.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.samplers import COLOUR_BASIS, colour_measurement, linear_measurement, mask_measurement

MEANS = [[-1.5, 0.0, 2.0, 2.0], [1.5, 0.0, -2.0, -2.0], [0.0, 3.0, 2.0, -2.0]]


def _gmm(stds=0.5):
    return sj.toy.GaussianMixture(MEANS, stds, [0.3, 0.5, 0.2])


def _log_normal(x, mean, var):
    return -0.5 * jnp.sum(jnp.log(2 * jnp.pi * var) + (x - mean) ** 2 / var, axis=-1)


@pytest.mark.compile_bound
def test_condition_on_exact_coordinates_is_bayes_rule(x64):
    """Noise-free: ``log p(x_free | x_obs = y) = log p(x) - log p_obs(y)`` at 50 random ``x_free`` for two
    observations (one between modes); ``p_obs`` is the mixture's marginal on the observed coordinates.
    Anisotropic stds, so the free/observed split is a real test of the diagonal algebra. Tolerance 1e-10."""
    stds = jnp.array([[0.5, 0.7, 0.3, 0.9], [0.4, 0.5, 0.6, 0.5], [0.8, 0.3, 0.5, 0.4]])
    gmm = _gmm(stds)
    marginal = sj.toy.GaussianMixture(gmm.means[:, [0, 2]], gmm.stds[:, [0, 2]], gmm.weights)
    for y in (jnp.array([0.0, 0.5]), jnp.array([1.0, -1.0])):
        cond = gmm.condition([0, 2], y)
        free = jax.random.normal(jax.random.key(0), (50, 2)) * 2.0
        x = jnp.stack([jnp.full(50, y[0]), free[:, 0], jnp.full(50, y[1]), free[:, 1]], axis=1)
        expected = gmm.log_prob(x) - marginal.log_prob(y[None])[0]
        np.testing.assert_allclose(cond.log_prob(free), expected, atol=1e-10)


@pytest.mark.compile_bound
def test_condition_on_noisy_coordinates_is_bayes_rule(x64):
    """``y = x[index] + sigma z``: ``log p(x | y) - log p(x) - log N(y; x[index], sigma^2)`` is the constant
    ``-log p(y)`` over 50 random ``x`` (spread 1e-10), and equals it: ``p(y)`` is the mixture with the noise
    variance added on the observed coordinates."""
    gmm = _gmm(jnp.array([[0.5, 0.7, 0.3, 0.9], [0.4, 0.5, 0.6, 0.5], [0.8, 0.3, 0.5, 0.4]]))
    index, y, sigma = np.array([1, 3]), jnp.array([0.4, -1.2]), jnp.array([0.3, 0.6])
    cond = gmm.condition(index, y, noise_std=sigma)
    x = jax.random.normal(jax.random.key(1), (50, 4)) * 2.0
    diff = cond.log_prob(x) - gmm.log_prob(x) - _log_normal(y, x[:, index], sigma**2)
    evidence = sj.toy.GaussianMixture(gmm.means[:, index], jnp.sqrt(gmm.stds[:, index] ** 2 + sigma**2),
                                      gmm.weights).log_prob(y[None])[0]
    np.testing.assert_allclose(diff, -evidence, atol=1e-10)


def test_rotate_is_the_law_of_an_orthogonal_map(x64):
    """Isotropic components: ``log p_{xq}(x q) = log p(x)`` (``|det q| = 1``) at 50 random points for a random
    orthogonal ``q``; anisotropic components and non-orthogonal ``q`` are refused."""
    gmm = _gmm()
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (4, 4)))
    x = jax.random.normal(jax.random.key(3), (50, 4)) * 2.0
    np.testing.assert_allclose(gmm.rotate(q).log_prob(x @ q), gmm.log_prob(x), atol=1e-10)
    with pytest.raises(ValueError, match="orthogonal"):
        gmm.rotate(2.0 * q)
    with pytest.raises(ValueError, match="isotropic"):
        _gmm(jnp.array([[0.5, 0.6, 0.5, 0.5]])).rotate(q)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_perturbed_class_log_prob_is_the_noisy_posterior(x64):
    """``log p_t(k | x)`` = ``log w_k N(x; a mu_k, (a^2 sd^2 + s^2) I) - log p_t(x)`` for every class at 20
    random ``(x, t)``, VP and VE; the class probabilities sum to 1."""
    gmm = _gmm()
    x = jax.random.normal(jax.random.key(4), (20, 4)) * 2.0
    t = jax.random.uniform(jax.random.key(5), (20,), minval=0.01, maxval=1.0)
    for sde in (sj.VPSDE(), sj.VESDE()):
        f = gmm.perturbed_class_log_prob(sde)
        a, s = sde.marginal_mean_coeff(t)[:, None, None], sde.marginal_std(t)[:, None, None]
        var = (a * gmm.stds[None]) ** 2 + s**2
        joint = jnp.log(gmm.weights) + _log_normal(x[:, None], a * gmm.means[None], var)
        lp = jnp.stack([f(x, t, jnp.full(20, k)) for k in range(3)], axis=1)
        np.testing.assert_allclose(lp, joint - gmm.perturbed_log_prob(sde)(x, t)[:, None], atol=1e-10)
        np.testing.assert_allclose(jnp.sum(jnp.exp(lp), axis=1), 1.0, atol=1e-12)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_measurements_are_their_matrices(x64):
    """Every :class:`LinearMeasurement` maps back to its ``A``: in its basis the observed coordinates of
    ``V^T x`` equal ``U^T A x / s`` (SVD), the grey channel of :data:`COLOUR_BASIS` is ``sqrt 3`` times the mean
    of r, g, b, a mask observes the data where it is 1; ``V`` is orthogonal (1e-12)."""
    a = jax.random.normal(jax.random.key(6), (2, 4))
    x = jax.random.normal(jax.random.key(7), (5, 4))
    meas = linear_measurement(x @ a.T, a)
    xb = meas.to_spectral(x)
    np.testing.assert_allclose(jnp.where(meas.observed, xb, 0.0), meas.y_bar, atol=1e-12)
    np.testing.assert_allclose(meas.from_spectral(xb), x, atol=1e-12)
    np.testing.assert_allclose(COLOUR_BASIS.T @ COLOUR_BASIS, np.eye(3), atol=1e-12)
    rgb = jax.random.uniform(jax.random.key(8), (2, 3, 3, 3))
    gray = jnp.mean(rgb, axis=-1, keepdims=True)
    cm = colour_measurement(gray)
    np.testing.assert_allclose(cm.to_spectral(rgb)[..., 0], cm.y_bar[..., 0], atol=1e-12)
    assert cm.observed[..., 0].all() and not cm.observed[..., 1:].any()
    mm = mask_measurement(x, jnp.array([[1, 0, 1, 0]]), noise_std=0.1)
    np.testing.assert_allclose(mm.y_bar, x * jnp.array([1, 0, 1, 0]), atol=0)
    np.testing.assert_allclose(mm.noise_var, 0.01 * jnp.array([[1, 0, 1, 0]] * 5), atol=1e-15)


@pytest.mark.parametrize("call, match", [
    (lambda g: g.condition([0, 0], [0.0, 0.0]), "distinct"),
    (lambda g: g.condition([0, 4], [0.0, 0.0]), r"\[0, 4\)"),
    (lambda g: g.condition([0, 1], [0.0]), "shape"),
    (lambda g: g.condition([0, 1], [0.0, 0.0], noise_std=-1.0), "noise_std"),
    (lambda g: g.condition([0, 1, 2, 3], [0.0] * 4), "nothing is left"),
    (lambda g: g.perturbed_class_log_prob(sj.VPSDE())(jnp.zeros((3, 4)), jnp.ones(3), jnp.zeros(2)), "y must"),
    (lambda g: mask_measurement(jnp.zeros((2, 4)), jnp.array([[1, 0, 2, 0]])), "0 .unknown. and 1"),
    (lambda g: mask_measurement(jnp.zeros((2, 4)), jnp.ones((3, 4))), "broadcast"),
    (lambda g: colour_measurement(jnp.zeros((2, 4, 4, 2))), "gray must"),
    (lambda g: linear_measurement(jnp.zeros((2, 2)), jnp.ones((2, 4))), "full row rank"),
    (lambda g: linear_measurement(jnp.zeros((2, 3)), jnp.ones((2, 4))), "a must be"),
])
def test_bad_conditioning_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call(_gmm())
