"""Score-matching losses against closed forms.

* Gaussian target, affine score model ``s(x) = A x + b``: every loss is quadratic in ``(A, b)``, so one
  Newton step from zero gives its exact minimiser on the sample; we compare it with the closed forms
  (``A = -Sigma^-1``, ``b = Sigma^-1 mu``; DSM: ``-(Sigma + sigma^2 I)^-1``).
* SSM averaged over many projections equals ISM within Monte-Carlo error.
* Continuous DSM at the *exact* perturbed score of a Gaussian mixture equals its irreducible value
  ``c (D - s(t)^2 J(p_t))`` (times the weighting), ``J`` the Fisher information of ``p_t`` by Gauss-Hermite
  quadrature; the identity is ``E[z | x_t] = -s(t) grad log p_t(x_t)`` (Vincent 2011).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import losses as L

D = 2
MU = np.array([0.5, -1.0])
SIGMA = np.array([[1.0, 0.6], [0.6, 2.0]])


def _mixture():
    return sj.toy.GaussianMixture([[-1.5, 0.5], [1.0, 1.0], [0.5, -1.5]], [[0.5, 0.3], [0.4, 0.4], [0.3, 0.6]],
                                  [0.5, 0.3, 0.2])


SDES = {
    "vp": lambda: sj.VPSDE(),
    "subvp": lambda: sj.SubVPSDE(),
    "ve": lambda: sj.VESDE(sigma_min=0.01, sigma_max=5.0),
}


def _gauss_hermite_2d(n):
    nodes, w = np.polynomial.hermite_e.hermegauss(n)  # weight exp(-x^2 / 2)
    w = w / w.sum()
    X, Y = np.meshgrid(nodes, nodes, indexing="ij")
    return np.stack([X.ravel(), Y.ravel()], -1), (w[:, None] * w[None]).ravel()


@functools.partial(jax.jit, static_argnames="n")
def _fisher(gmm, a, s, n=80):
    """``J = E ||grad log q||^2`` for the mixture ``q`` of ``a x_0 + s z`` (``a, s: [T]``), by Gauss-Hermite
    quadrature on each component. Converged to ~1e-4 relative at n=80 for the test mixture (checked against
    n=90 and 4e5-sample Monte Carlo). Returns ``[T]``."""
    z, w = _gauss_hermite_2d(n)

    def one(a, s):
        means, stds = a * gmm.means, jnp.sqrt((a * gmm.stds) ** 2 + s**2)
        x = (means[:, None, :] + stds[:, None, :] * z[None]).reshape(-1, D)           # [K n^2, D]
        sc = _score_of(gmm, x, jnp.full(x.shape[:1], a), jnp.full(x.shape[:1], s))
        sq = jnp.sum(sc**2, -1).reshape(gmm.num_components, -1)
        return jnp.sum(gmm.weights * jnp.sum(w * sq, -1))

    return jax.vmap(one)(a, s)


def fisher_information(gmm, sde, t):
    """``J(p_t)`` at times ``t: [T]`` for the SDE's marginals."""
    t = jnp.atleast_1d(jnp.asarray(t, jnp.float64))
    return np.asarray(_fisher(gmm, sde.marginal_mean_coeff(t), sde.marginal_std(t)))


def irreducible(gmm, sde, t, *, reduce_mean, likelihood_weighting):
    """Expected per-example DSM loss at the exact score at times ``t: [T]``: ``w c (D - s^2 J)``."""
    t = jnp.atleast_1d(jnp.asarray(t, jnp.float64))
    s2 = np.asarray(sde.marginal_std(t)) ** 2
    c = 1.0 / D if reduce_mean else 0.5
    w = np.asarray(sde.sde(jnp.zeros((t.shape[0], D)), t)[1]) ** 2 / s2 if likelihood_weighting else 1.0
    return w * c * (D - s2 * fisher_information(gmm, sde, t))


def _score_of(gmm, x, a, s):
    """Exact score of the mixture of ``a x_0 + s z`` with per-example ``a, s: [B]``."""
    means = a[:, None, None] * gmm.means[None]
    var = (a[:, None, None] * gmm.stds[None]) ** 2 + s[:, None, None] ** 2
    diff = x[:, None, :] - means
    logits = jnp.log(gmm.weights) - 0.5 * jnp.sum(jnp.log(var) + diff**2 / var, -1)
    r = jax.nn.softmax(logits, -1)
    return jnp.sum(r[..., None] * (-diff / var), 1)


def _mc(loss_fn, score_fn, gmm, seed=4, reps=32, n=4096):
    """Mean and standard error of ``reps`` independent loss estimates on batches of ``n`` (one jit call)."""
    def one(k):
        return loss_fn(score_fn, k, gmm.sample(jax.random.fold_in(k, 1), n))[0]

    vals = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(seed), reps)))
    return vals.mean(), vals.std(ddof=1) / np.sqrt(reps)


# --------------------------------------------------------------------------------------------------
# Continuous DSM at the exact score
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_dsm_at_exact_score_equals_irreducible_value_per_time(x64, sde_name):
    gmm, sde = _mixture(), SDES[sde_name]()
    n, ts = 2**15, np.array([1e-3, 0.1, 0.5, 1.0])
    kx, kz = jax.random.split(jax.random.key(1))
    x0 = gmm.sample(kx, n)
    z = jax.random.normal(kz, x0.shape)
    variants = [(lw, rm) for lw in (False, True) for rm in (False, True)]

    @jax.jit
    def stats(t):  # [variants, 2]: MC mean and standard error at time t
        out = []
        for lw, rm in variants:
            losses = L.dsm_per_example(gmm.perturbed_score(sde), sde, x0, jnp.full((n,), t), z,
                                       reduce_mean=rm, likelihood_weighting=lw)
            out.append(jnp.stack([jnp.mean(losses), jnp.std(losses) / np.sqrt(n)]))
        return jnp.stack(out)

    mc = np.asarray(jax.vmap(stats)(jnp.asarray(ts)))                      # [T, variants, 2]
    for j, (lw, rm) in enumerate(variants):
        exact = irreducible(gmm, sde, ts, reduce_mean=rm, likelihood_weighting=lw)
        # 4.5 standard errors of the MC mean + 1e-3 relative for the quadrature.
        np.testing.assert_array_less(np.abs(mc[:, j, 0] - exact), 4.5 * mc[:, j, 1] + 1e-3 * np.abs(exact))


def _time_average(f, eps, T, n=48):
    """``1/(T - eps) int_eps^T f(t) dt`` by Gauss-Legendre in ``u = log t`` (resolves the 1/t of g^2/s^2);
    ``f`` is vectorised over ``t``."""
    u, w = np.polynomial.legendre.leggauss(n)
    lo, hi = np.log(eps), np.log(T)
    tt = np.exp(0.5 * (hi - lo) * u + 0.5 * (hi + lo))
    return float(np.sum(0.5 * (hi - lo) * w * tt * np.asarray(f(tt)))) / (T - eps)


# Each weighting / t-sampling once (the per-time test above covers every SDE x weighting x reduction).
@pytest.mark.slow
@pytest.mark.parametrize("sde_name,weighting", [("vp", "sigma2"), ("subvp", "likelihood"), ("ve", "likelihood_is")])
@pytest.mark.compile_bound
def test_sde_loss_at_exact_score_equals_time_averaged_irreducible_value(x64, sde_name, weighting):
    gmm, sde = _mixture(), SDES[sde_name]()
    lw, is_ = weighting != "sigma2", weighting == "likelihood_is"
    # Uniform t with g^2 weighting has a 1/t tail; eps = 1e-3 keeps its variance finite for the test.
    eps = 1e-3 if weighting == "likelihood" else 1e-5
    loss_fn = L.get_sde_loss_fn(sde, likelihood_weighting=lw, importance_sampling=is_, eps=eps)
    mc, se = _mc(loss_fn, gmm.perturbed_score(sde), gmm, seed=2, reps=32, n=4096)
    exact = _time_average(lambda t: irreducible(gmm, sde, t, reduce_mean=False, likelihood_weighting=lw),
                          eps, sde.T)
    assert abs(mc - exact) < 4.5 * se + 2e-3 * abs(exact), (mc, exact, se)


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_importance_sampling_density_and_normaliser(x64, sde_name):
    sde, eps = SDES[sde_name](), 1e-5

    def density(t):  # g^2 / s^2
        t = jnp.asarray(t)
        return sde.sde(jnp.zeros((t.shape[0], 1)), t)[1] ** 2 / sde.marginal_std(t) ** 2

    z = float(L.importance_weight_normalizer(sde, eps))
    assert z == pytest.approx(_time_average(density, eps, sde.T, n=64) * (sde.T - eps), rel=1e-8)
    # Kolmogorov-Smirnov distance of 20000 samples to the CDF F(t)/Z, below its 1% critical value.
    t = np.sort(np.asarray(L.sample_importance_time(jax.random.key(3), sde, 20000, eps)))
    assert t.min() >= eps and t.max() <= sde.T
    # CDF(t) = 1 - Z(t) / Z(eps), with Z(a) = int_a^T g^2 / s^2 dt.
    cdf = 1.0 - np.asarray(L.importance_weight_normalizer(sde, jnp.asarray(t))) / z
    ecdf = np.arange(1, len(t) + 1) / len(t)
    assert np.max(np.abs(cdf - ecdf)) < 1.63 / np.sqrt(len(t))


# --------------------------------------------------------------------------------------------------
# Discrete losses at the exact score
# --------------------------------------------------------------------------------------------------
def _levels_value(gmm, a_levels, s_levels, c):
    """Mean over levels of ``c (D - s_i^2 J_i)`` for the mixtures of ``a_i x + s_i z``."""
    J = np.asarray(_fisher(gmm, jnp.asarray(a_levels), jnp.asarray(s_levels)))
    return float(np.mean(c * (D - np.asarray(s_levels) ** 2 * J)))


@pytest.mark.compile_bound
def test_smld_loss_at_exact_score(x64):
    gmm, sde = _mixture(), sj.VESDE(sigma_min=0.05, sigma_max=5.0, N=8)
    sigmas = np.asarray(sde.discrete_sigmas)

    def score_fn(x, t):  # exact score of the data convolved with sigma_i, level i = round(t (N-1))
        return gmm.noise_conditional_score()(x, sde.discrete_sigmas[sde.time_index(t)])

    mc, se = _mc(L.get_smld_loss_fn(sde), score_fn, gmm)
    exact = _levels_value(gmm, np.ones_like(sigmas), sigmas, 0.5)
    assert abs(mc - exact) < 4.5 * se + 1e-3 * abs(exact), (mc, exact, se)


@pytest.mark.compile_bound
def test_ddpm_loss_at_exact_score(x64):
    gmm, sde = _mixture(), sj.VPSDE(N=32)  # beta_max / N < 1: a valid DDPM chain
    abar = np.asarray(sde.alphas_cumprod)

    def score_fn(x, t):
        i = sde.time_index(t)
        a, s = jnp.sqrt(sde.alphas_cumprod[i]), jnp.sqrt(1.0 - sde.alphas_cumprod[i])
        return _score_of(gmm, x, a, s)

    mc, se = _mc(L.get_ddpm_loss_fn(sde), score_fn, gmm)
    exact = _levels_value(gmm, np.sqrt(abar), np.sqrt(1 - abar), 1.0 / D)
    assert abs(mc - exact) < 4.5 * se + 1e-3 * abs(exact), (mc, exact, se)


@pytest.mark.compile_bound
def test_ncsn_multilevel_loss_at_exact_score(x64):
    gmm = _mixture()
    sigmas = np.geomspace(3.0, 0.05, 6)
    mc, se = _mc(L.get_ncsn_loss_fn(sigmas), gmm.noise_conditional_score(), gmm)
    # lambda(sigma) = sigma^2 times red||s + z/sigma||^2 = red||sigma s + z||^2: same value as SMLD.
    exact = _levels_value(gmm, np.ones_like(sigmas), sigmas, 0.5)
    assert abs(mc - exact) < 4.5 * se + 1e-3 * abs(exact), (mc, exact, se)


# --------------------------------------------------------------------------------------------------
# Classical losses: Gaussian target, affine model, closed-form minimisers
# --------------------------------------------------------------------------------------------------
def _gaussian_sample(key, n):
    return jnp.asarray(MU) + jax.random.normal(key, (n, D)) @ jnp.linalg.cholesky(jnp.asarray(SIGMA)).T


def _affine(theta):
    A, b = theta[:4].reshape(2, 2), theta[4:]
    return lambda x: x @ A.T + b


def _minimiser(loss_fn, key, x):
    """Exact minimiser of a loss quadratic in theta = (A, b): one Newton step from 0."""
    @jax.jit
    def newton(key, x):
        f = lambda th: loss_fn(_affine(th), key, x)[0]  # noqa: E731
        th0 = jnp.zeros(6, x.dtype)
        return -jnp.linalg.solve(jax.hessian(f)(th0), jax.grad(f)(th0))

    th = newton(key, x)
    return th[:4].reshape(2, 2), th[4:]


P_TRUE = np.linalg.inv(SIGMA)
B_TRUE = P_TRUE @ MU
# Tolerances from the Monte-Carlo error at n = 2^15 (worst entry SE ~ 0.01 for SSM; 4-5 SE).
TOL_MC = 0.05

CLASSICAL = {
    "ism": L.implicit_score_matching_loss,
    "ssm_gaussian": functools.partial(L.sliced_score_matching_loss, projection="gaussian"),
    "ssm_rademacher": functools.partial(L.sliced_score_matching_loss, projection="rademacher"),
    "ssm_vr_gaussian": functools.partial(L.sliced_score_matching_loss, variance_reduction=True),
    "ssm_vr_rademacher": functools.partial(L.sliced_score_matching_loss, variance_reduction=True,
                                           projection="rademacher", num_projections=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CLASSICAL))
@pytest.mark.compile_bound
def test_classical_minimiser_recovers_gaussian_score(x64, name):
    kx, kl = jax.random.split(jax.random.key(5))
    x = _gaussian_sample(kx, 2**15)
    A, b = _minimiser(CLASSICAL[name], kl, x)
    np.testing.assert_allclose(A, -P_TRUE, atol=TOL_MC)
    np.testing.assert_allclose(b, B_TRUE, atol=TOL_MC)
    if name == "ism":  # on the sample itself the minimiser is exactly -inverse(sample covariance)
        cov = jnp.cov(x.T, bias=True)
        np.testing.assert_allclose(A, -jnp.linalg.inv(cov), atol=1e-9)
        np.testing.assert_allclose(b, jnp.linalg.inv(cov) @ jnp.mean(x, 0), atol=1e-9)


@pytest.mark.compile_bound
def test_esm_minimiser_is_exact(x64):
    x = _gaussian_sample(jax.random.key(6), 512)
    target = lambda y: -(y - MU) @ P_TRUE.T  # noqa: E731
    A, b = _minimiser(functools.partial(L.explicit_score_matching_loss, target_score_fn=target), None, x)
    np.testing.assert_allclose(A, -P_TRUE, atol=1e-10)
    np.testing.assert_allclose(b, B_TRUE, atol=1e-10)


@pytest.mark.compile_bound
def test_small_sigma_dsm_minimiser(x64):
    sigma, n = 0.1, 2**18
    kx, kl = jax.random.split(jax.random.key(7))
    x = _gaussian_sample(kx, n)
    A, b = _minimiser(functools.partial(L.denoising_score_matching_loss, sigma=sigma), kl, x)
    # Exactly least squares of -z/sigma on x~ = x + sigma z (z is the loss's draw normal(key, x.shape)).
    z = jax.random.normal(kl, x.shape)
    xt, y = x + sigma * z, -z / sigma
    xc, yc = xt - xt.mean(0), y - y.mean(0)
    A_ols = jnp.linalg.solve(xc.T @ xc, xc.T @ yc).T
    np.testing.assert_allclose(A, A_ols, atol=1e-8)
    np.testing.assert_allclose(b, y.mean(0) - A_ols @ xt.mean(0), atol=1e-8)
    # Population minimiser: the score of N(mu, Sigma + sigma^2 I); MC SE ~ 0.02 per entry at this n.
    P_sig = np.linalg.inv(SIGMA + sigma**2 * np.eye(D))
    np.testing.assert_allclose(A, -P_sig, atol=0.1)
    np.testing.assert_allclose(b, P_sig @ MU, atol=0.1)
    # ... which is the true score's up to the O(sigma^2) bias (max entry 0.013 here).
    np.testing.assert_allclose(A, -P_TRUE, atol=0.1 + np.max(np.abs(P_sig - P_TRUE)))


def _nonlinear_score():
    k1, k2, k3 = jax.random.split(jax.random.key(8), 3)
    W1, c, W2 = jax.random.normal(k1, (D, 16)), jax.random.normal(k2, (16,)), jax.random.normal(k3, (16, D)) / 4
    return lambda x: jnp.tanh(x @ W1 + c) @ W2 - 0.3 * x


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.compile_bound
def test_ssm_averaged_over_projections_equals_ism(x64, projection):
    s = _nonlinear_score()
    x = _gaussian_sample(jax.random.key(9), 128)
    ism, _ = L.implicit_score_matching_loss(s, None, x)
    m = 4000
    v = L._PROJECTIONS[projection](jax.random.key(10), (m,) + x.shape, x.dtype)
    vjv, proj, norm = jax.jit(functools.partial(L.ssm_per_example, s))(x, v)
    for variance_reduction in (False, True):
        per_proj = jnp.mean(vjv + (norm[None] if variance_reduction else proj), axis=1)  # [M]
        se = float(jnp.std(per_proj)) / np.sqrt(m)
        assert abs(float(jnp.mean(per_proj)) - float(ism)) < 4.5 * se, (float(jnp.mean(per_proj)), float(ism), se)
    loss, aux = jax.jit(functools.partial(L.sliced_score_matching_loss, s, num_projections=m, projection=projection,
                                          variance_reduction=True))(jax.random.key(10), x)
    assert float(loss) == pytest.approx(float(jnp.mean(vjv + norm[None])), rel=1e-10)  # same draws, same estimate
    assert set(aux) == {"loss", "jacobian_term", "norm_term"}


def test_ism_trace_matches_divergence_of_known_field(x64):
    x = _gaussian_sample(jax.random.key(11), 64)
    tr, norm = L.ism_per_example(lambda y: -y**3, x)  # div(-x^3) = -3 sum x^2
    np.testing.assert_allclose(tr, -3 * jnp.sum(x**2, -1), rtol=1e-12)
    np.testing.assert_allclose(norm, 0.5 * jnp.sum(x**6, -1), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# Classical objectives on the SDE's marginals
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.compile_bound
def test_sde_score_matching_equals_dsm_minus_constant(x64):
    """For any score model, E[DSM] = E[ISM] + D/2 with the same weighting s(t)^2 (Stein's lemma). (SSM and
    SSM-VR estimate ISM: tested above at one distribution; on the SDE they share ISM's code path.)"""
    gmm, sde = _mixture(), sj.VPSDE()
    other = sj.toy.GaussianMixture(gmm.means * 0.8, gmm.stds * 1.5, gmm.weights[::-1])
    score_fn = other.perturbed_score(sde)  # a wrong but smooth time-dependent score
    dsm_mc, dsm_se = _mc(L.get_sde_loss_fn(sde, eps=1e-3), score_fn, gmm, seed=12, reps=32, n=2048)
    for method in ("ism",):
        sm_mc, sm_se = _mc(L.get_sde_score_matching_loss_fn(sde, method=method, eps=1e-3), score_fn, gmm, seed=13,
                           reps=32, n=2048)
        assert abs((dsm_mc - D / 2) - sm_mc) < 4.5 * np.hypot(dsm_se, sm_se), (method, dsm_mc, sm_mc)
    # ESM against the exact score of p_t is zero at the exact score.
    exact = gmm.perturbed_score(sde)
    esm, _ = L.get_sde_score_matching_loss_fn(sde, method="esm", target_score_fn=exact)(
        exact, jax.random.key(14), gmm.sample(jax.random.key(15), 256))
    assert float(esm) == 0.0


# --------------------------------------------------------------------------------------------------
# Interface and errors
# --------------------------------------------------------------------------------------------------
def test_registry_and_errors():
    sde = sj.VPSDE()
    with pytest.raises(ValueError, match=r"unknown loss 'nope'; valid names: \[.*'ddpm', 'dsm'"):
        L.get_loss_fn("nope", sde)
    with pytest.raises(ValueError, match="requires likelihood_weighting"):
        L.get_sde_loss_fn(sde, importance_sampling=True)
    with pytest.raises(ValueError, match="needs a VESDE"):
        L.get_smld_loss_fn(sde)
    with pytest.raises(ValueError, match="needs a VPSDE"):
        L.get_ddpm_loss_fn(sj.VESDE())
    with pytest.raises(ValueError, match=r"unknown projection 'sphere'; valid names: \['gaussian', 'rademacher'\]"):
        L.sliced_score_matching_loss(lambda x: x, jax.random.key(0), jnp.ones((2, 2)), projection="sphere")
    with pytest.raises(ValueError, match="eps must be in"):
        L.get_sde_loss_fn(sde, eps=1.5)
    with pytest.raises(ValueError, match="target_score_fn"):
        L.get_loss_fn("esm", sde)
    with pytest.raises(ValueError, match="same shape as x"):
        L.get_sde_loss_fn(sde)(lambda x, t: x[:, :1], jax.random.key(0), jnp.ones((4, 2)))
