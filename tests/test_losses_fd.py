"""Finite-difference score matching and regularised ISM against autodiff and closed forms.

* Convergence: every FD objective minus its autodiff counterpart (``scheme="exact"``, the same directions)
  shrinks like ``fd_eps^p``; the order ``p`` is the slope of log error on log ``fd_eps`` over
  ``fd_eps = 1e-3 .. 1e-1`` (float64): 2 for the central scheme, 1 for the forward scheme.
* The ``"exact"`` scheme reproduces the autodiff losses of :mod:`sde_jax.losses` draw for draw.
* Minimisers: for an affine score model (central and forward differences are exact for it) and a quadratic
  energy (central differences are exact for it) every FD loss is quadratic in the parameters, so one Newton
  step gives its minimiser on the sample; it equals the autodiff loss's minimiser and the Gaussian's score
  parameters ``(-Sigma^-1, Sigma^-1 mu)`` within Monte-Carlo error.
* Regularised ISM (Kingma & LeCun 2010) on a Gaussian energy equals ISM plus ``lambda sum_i P_ii^2`` exactly,
  and its minimiser shrinks the precision to ``1 / (s_i + 2 lambda)``.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import losses as L
from sde_jax import losses_fd as F

D = 2
MU = np.array([0.5, -1.0])
SIGMA = np.array([[1.0, 0.6], [0.6, 2.0]])
P_TRUE = np.linalg.inv(SIGMA)
B_TRUE = P_TRUE @ MU
TOL_MC = 0.05  # as tests/test_losses.py: 4-5 Monte-Carlo standard errors at n = 2^15


def _gaussian_sample(key, n):
    return jnp.asarray(MU) + jax.random.normal(key, (n, D)) @ jnp.linalg.cholesky(jnp.asarray(SIGMA)).T


def _nonlinear(dim=3):
    k1, k2, k3 = jax.random.split(jax.random.key(8), 3)
    W1, c, W2 = jax.random.normal(k1, (dim, 16)), jax.random.normal(k2, (16,)), jax.random.normal(k3, (16, dim)) / 4
    score = lambda x: jnp.tanh(x @ W1 + c) @ W2 - 0.3 * x  # noqa: E731
    energy = lambda x: 0.3 * jnp.sum(jnp.tanh(x @ W1 + c), -1) - 0.5 * jnp.sum(x**2, -1)  # noqa: E731
    return score, energy


def _timed_score(dim=2):
    score, _ = _nonlinear(dim)
    return lambda x, t: score(x) * (1.0 + t[:, None])


def _dirs(key, x, m=2, projection="sphere"):
    return F.sample_directions(key, (m,) + x.shape, projection, x.dtype)


# name -> (per-example objective (model, key, x, fd_eps, scheme) -> [B], model kind). Per example, so that
# errors of opposite sign at different points cannot cancel in the batch mean.
CASES = {
    "fd_ism": (lambda m, k, x, e, s: (lambda d, n: jnp.sum(d, -1) + n)(
        *F.fd_ism_per_example(m, x, fd_eps=e, scheme=s)), "score"),
    "fd_ssm": (lambda m, k, x, e, s: (lambda vjv, p, n: jnp.mean(vjv + p, 0))(
        *F.fd_ssm_per_example(m, x, _dirs(k, x), fd_eps=e, scheme=s)), "score"),
    "fd_ssm_vr": (lambda m, k, x, e, s: (lambda vjv, p, n: jnp.mean(vjv, 0) + n)(
        *F.fd_ssm_per_example(m, x, _dirs(k, x), fd_eps=e, scheme=s)), "score"),
    "fd_energy_ism": (lambda m, k, x, e, s: (lambda d, g: jnp.sum(d + 0.5 * g**2 + 0.1 * d**2, -1))(
        *F.fd_energy_ism_per_example(m, x, fd_eps=e, scheme=s)), "energy"),
    "fd_energy_ssm": (lambda m, k, x, e, s: (lambda d1, d2: jnp.mean(d2 + 0.5 * d1**2, 0))(
        *F.fd_energy_ssm_per_example(m, x, _dirs(k, x, 2, "rademacher"), fd_eps=e, scheme=s)), "energy"),
    "fd_energy_dsm": (lambda m, k, x, e, s: (lambda z, v: jnp.mean(
        (F.fd_energy_ssm_per_example(m, x + 0.3 * z, v, fd_eps=e, scheme=s)[0]
         + jnp.sum(v * z, -1) / 0.3) ** 2, 0))(jax.random.normal(k, x.shape), _dirs(k, x, 2, "gaussian")),
        "energy"),
    "sde_fd_ism": (lambda m, k, x, e, s: (lambda d, n: jnp.sum(d, -1) + n)(
        *F.fd_ism_per_example(m, x, fd_eps=e, scheme=s, t=jnp.linspace(0.1, 0.9, x.shape[0]))), "timed"),
    "sde_fd_ssm": (lambda m, k, x, e, s: (lambda vjv, p, n: jnp.mean(vjv + p, 0))(
        *F.fd_ssm_per_example(m, x, _dirs(k, x), fd_eps=e, scheme=s, t=jnp.linspace(0.1, 0.9, x.shape[0]))),
        "timed"),
}


EPS = np.geomspace(1e-3, 1e-1, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.compile_bound
def test_fd_converges_to_autodiff_at_its_order(x64, name):
    """RMS over 64 points (3-D, nonlinear model, fixed directions) of the per-example FD objective minus its
    autodiff value ~ C fd_eps^p: fitted slope of log error on log fd_eps over 5 steps in [1e-3, 1e-1] within
    0.15 of p (central 2, forward 1); at fd_eps = 1e-3 the error is below 1e-5 (central) / 1e-2 (forward)
    times the RMS of the objective. (One compiled program per case: the steps are vmapped.)"""
    objective, kind = CASES[name]
    score, energy = _nonlinear(3)
    model = {"score": score, "energy": energy, "timed": _timed_score(3)}[kind]
    x = jax.random.normal(jax.random.key(1), (64, 3))
    key = jax.random.key(3)

    @jax.jit
    def errors(eps):
        exact = objective(model, key, x, 0.1, "exact")
        def rms(s):
            return jax.vmap(lambda e: jnp.sqrt(jnp.mean((objective(model, key, x, e, s) - exact) ** 2)))(eps)

        return rms("central"), rms("forward"), jnp.sqrt(jnp.mean(exact**2))

    central, forward, scale = (np.asarray(v) for v in errors(jnp.asarray(EPS)))
    for err, order, tol in ((central, 2.0, 1e-5), (forward, 1.0, 1e-2)):
        slope = np.polyfit(np.log(EPS), np.log(err), 1)[0]
        assert abs(slope - order) < 0.15, (order, slope, err)
        assert err[0] < tol * scale, (order, err, scale)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_exact_scheme_reproduces_autodiff_losses(x64):
    """scheme='exact' with the same keys equals sde_jax.losses' ISM, SSM (Gaussian), SSM-VR (Rademacher) for a
    score and an energy model, and the SDE objectives ISM / SSM / SSM-VR, to 1e-12 relative."""
    score, energy = _nonlinear(3)
    x = jax.random.normal(jax.random.key(1), (32, 3))
    key = jax.random.key(4)
    grad_score = lambda y: jax.vmap(jax.grad(lambda yi: energy(yi[None])[0]))(y)  # noqa: E731

    @jax.jit
    def pairs(x):
        out = [
            (F.fd_ism_loss(score, key, x, scheme="exact"), L.implicit_score_matching_loss(score, key, x)),
            (F.fd_energy_ism_loss(energy, key, x, scheme="exact"),
             L.implicit_score_matching_loss(grad_score, key, x)),
        ]
        for proj, vr in (("gaussian", False), ("rademacher", True)):
            kw = dict(num_projections=3, projection=proj, variance_reduction=vr)
            out.append((F.fd_ssm_loss(score, key, x, scheme="exact", **kw),
                        L.sliced_score_matching_loss(score, key, x, **kw)))
            out.append((F.fd_energy_ssm_loss(energy, key, x, scheme="exact", **kw),
                        L.sliced_score_matching_loss(grad_score, key, x, **kw)))
        sde, timed = sj.VPSDE(), _timed_score()
        for method in ("ism", "ssm", "ssm_vr"):
            kw = dict(num_projections=2, projection="gaussian", eps=1e-3)
            out.append((F.get_sde_fd_loss_fn(sde, method="fd_" + method, scheme="exact", **kw)(timed, key, x[:, :2]),
                        L.get_sde_score_matching_loss_fn(sde, method=method, **kw)(timed, key, x[:, :2])))
        return jnp.stack([a[0] for a, _ in out]), jnp.stack([b[0] for _, b in out])

    a, b = pairs(x)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.compile_bound
def test_registry_names_build_fd_losses():
    """'fd_ism', 'fd_ssm', 'fd_ssm_vr' are config names of sde_jax.losses.LOSSES (time-dependent score_fn)."""
    sde = sj.VPSDE()
    score = _timed_score()
    x = jax.random.normal(jax.random.key(0), (16, 2))
    names = ("fd_ism", "fd_ssm", "fd_ssm_vr")
    out = jax.jit(lambda y: [L.get_loss_fn(n, sde, fd_eps=0.05, scheme="central")(score, jax.random.key(1), y)
                             for n in names])(x)
    for loss, aux in out:
        assert np.isfinite(float(loss)) and set(aux) == {"loss", "t_mean", "jacobian_term", "norm_term"}
        assert float(loss) == pytest.approx(float(aux["jacobian_term"] + aux["norm_term"]), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Minimisers on a Gaussian target
# --------------------------------------------------------------------------------------------------
def _affine(theta):
    A, b = theta[:4].reshape(2, 2), theta[4:]
    return lambda x: x @ A.T + b


def _quadratic_energy(theta):
    """``f(x) = -1/2 x^T A x + b^T x``, ``A`` symmetric from ``(a11, a12, a22)``; score ``-A x + b``."""
    A = jnp.array([[theta[0], theta[1]], [theta[1], theta[2]]])
    return lambda x: -0.5 * jnp.einsum("bi,ij,bj->b", x, A, x) + x @ theta[3:]


def _newton(loss_fns, n_params, key, x):
    """Exact minimisers of losses quadratic in theta: one Newton step from 0 each, in one compiled program."""
    @jax.jit
    def step(key, x):
        def one(loss_fn):
            f = lambda th: loss_fn(th, key, x)  # noqa: E731
            th0 = jnp.zeros(n_params, x.dtype)
            return -jnp.linalg.solve(jax.hessian(f)(th0), jax.grad(f)(th0))

        return [one(fn) for fn in loss_fns]

    return [np.asarray(v) for v in step(key, x)]


SCORE_LOSSES = {
    "fd_ism": lambda s, k, x, **kw: F.fd_ism_loss(s, k, x, **kw),
    "fd_ssm": lambda s, k, x, **kw: F.fd_ssm_loss(s, k, x, **kw),
    "fd_ssm_vr": lambda s, k, x, **kw: F.fd_ssm_loss(s, k, x, variance_reduction=True, num_projections=2, **kw),
}
ENERGY_LOSSES = {
    "fd_energy_ism": lambda f, k, x, **kw: F.fd_energy_ism_loss(f, k, x, **kw),
    "fd_energy_ssm": lambda f, k, x, **kw: F.fd_energy_ssm_loss(f, k, x, **kw),
    "fd_energy_ssm_vr": lambda f, k, x, **kw: F.fd_energy_ssm_loss(f, k, x, variance_reduction=True, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCORE_LOSSES))
@pytest.mark.compile_bound
def test_fd_score_minimiser_recovers_gaussian_score(x64, name):
    """Affine score A x + b on 2^15 samples of N(mu, Sigma): the central- and forward-FD minimisers equal the
    autodiff one (same draws) to 1e-8 (both differences are exact for a linear field) and
    (-Sigma^-1, Sigma^-1 mu) within 0.05."""
    kx, kl = jax.random.split(jax.random.key(5))
    x = _gaussian_sample(kx, 2**15)
    loss = SCORE_LOSSES[name]
    central, forward, ad = _newton([lambda th, k, y, s=s: loss(_affine(th), k, y, fd_eps=0.1, scheme=s)[0]
                                    for s in ("central", "forward", "exact")], 6, kl, x)
    for fd in (central, forward):
        np.testing.assert_allclose(fd, ad, atol=1e-8)
    np.testing.assert_allclose(central[:4].reshape(2, 2), -P_TRUE, atol=TOL_MC)
    np.testing.assert_allclose(central[4:], B_TRUE, atol=TOL_MC)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENERGY_LOSSES))
@pytest.mark.compile_bound
def test_fd_energy_minimiser_recovers_gaussian_precision(x64, name):
    """Quadratic energy on 2^15 samples: the central-FD minimiser equals the autodiff one to 1e-8 (central
    differences are exact for quadratics) and A = Sigma^-1, b = Sigma^-1 mu within 0.05."""
    kx, kl = jax.random.split(jax.random.key(6))
    x = _gaussian_sample(kx, 2**15)
    loss = ENERGY_LOSSES[name]
    fd, ad = _newton([lambda th, k, y: loss(_quadratic_energy(th), k, y, fd_eps=0.1, scheme="central")[0],
                      lambda th, k, y: loss(_quadratic_energy(th), k, y, scheme="exact")[0]], 5, kl, x)
    np.testing.assert_allclose(fd, ad, atol=1e-8)
    np.testing.assert_allclose(fd[:3], [P_TRUE[0, 0], P_TRUE[0, 1], P_TRUE[1, 1]], atol=TOL_MC)
    np.testing.assert_allclose(fd[3:], B_TRUE, atol=TOL_MC)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_fd_energy_dsm_minimiser_is_the_smoothed_score(x64):
    """FD-DSM of a quadratic energy (sigma = 0.5, 4 sphere directions, 2^16 samples): minimiser equals the
    exact-scheme one to 1e-8 and the score of N(mu, Sigma + sigma^2 I) within 0.05 (MC SE ~ 0.01 per entry)."""
    sigma = 0.5
    kx, kl = jax.random.split(jax.random.key(7))
    x = _gaussian_sample(kx, 2**16)

    def loss(scheme):
        return lambda th, k, y: F.fd_energy_dsm_loss(_quadratic_energy(th), k, y, sigma=sigma, scheme=scheme,
                                                     num_projections=4)[0]

    fd, ad = _newton([loss("central"), loss("exact")], 5, kl, x)
    np.testing.assert_allclose(fd, ad, atol=1e-8)
    P_sig = np.linalg.inv(SIGMA + sigma**2 * np.eye(D))
    np.testing.assert_allclose(fd[:3], [P_sig[0, 0], P_sig[0, 1], P_sig[1, 1]], atol=TOL_MC)
    np.testing.assert_allclose(fd[3:], P_sig @ MU, atol=TOL_MC)


@pytest.mark.compile_bound
def test_fd_energy_dsm_averages_to_dsm(x64):
    """Averaged over 4000 Gaussian directions, exact-scheme sliced DSM equals DSM of the model's score with
    the same noise draw (Monte-Carlo difference within 4.5 standard errors)."""
    _, energy = _nonlinear(3)
    x = jax.random.normal(jax.random.key(1), (128, 3))
    key = jax.random.key(9)
    m, sigma = 4000, 0.4
    grad_fn = jax.vmap(jax.grad(lambda yi: energy(yi[None])[0]))

    @jax.jit
    def compute(x):
        key_z, key_v = jax.random.split(key)
        z = jax.random.normal(key_z, x.shape)
        v = F.sample_directions(key_v, (m,) + x.shape, "gaussian", x.dtype)
        per_dir = 0.5 * jnp.mean(jnp.sum(v * (grad_fn(x + sigma * z) + z / sigma), -1) ** 2, axis=1)      # [M]
        dsm, _ = L.denoising_score_matching_loss(grad_fn, key_z, x, sigma=sigma)
        fd_exact, _ = F.fd_energy_dsm_loss(energy, key, x, sigma=sigma, scheme="exact", num_projections=m,
                                           projection="gaussian")
        return per_dir, dsm, fd_exact

    per_dir, dsm, fd_exact = compute(x)
    se = float(jnp.std(per_dir)) / np.sqrt(m)
    assert abs(float(jnp.mean(per_dir)) - float(dsm)) < 4.5 * se
    assert float(fd_exact) == pytest.approx(float(jnp.mean(per_dir)), rel=1e-10)


# --------------------------------------------------------------------------------------------------
# Regularised ISM (Kingma & LeCun 2010)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["exact", "central"])
@pytest.mark.compile_bound
def test_regularized_ism_is_ism_plus_curvature_penalty(x64, scheme):
    """Gaussian energy f = -1/2 (x - m)^T P (x - m): the loss equals the closed form
    -tr P + 1/2 mean (x - m)^T P^2 (x - m) + lambda sum_i P_ii^2 to 1e-10 (central differences are exact
    for quadratics), and loss - ISM = lambda sum_i P_ii^2."""
    x = _gaussian_sample(jax.random.key(10), 512)
    P = jnp.array([[2.0, -0.4], [-0.4, 0.7]])
    m = jnp.array([0.3, -0.2])
    f = lambda y: -0.5 * jnp.einsum("bi,ij,bj->b", y - m, P, y - m)  # noqa: E731
    lam = 0.37
    (loss, aux), (ism, _) = jax.jit(lambda y: (F.regularized_ism_loss(f, None, y, curvature_weight=lam, scheme=scheme),
                                               F.fd_energy_ism_loss(f, None, y, scheme=scheme)))(x)
    r = x - m
    ism_closed = -jnp.trace(P) + 0.5 * jnp.mean(jnp.einsum("bi,ij,bj->b", r, P @ P, r))
    penalty = lam * jnp.sum(jnp.diagonal(P) ** 2)
    assert float(loss) == pytest.approx(float(ism_closed + penalty), rel=1e-10)
    assert float(aux["curvature_term"]) == pytest.approx(float(penalty), rel=1e-10)
    assert float(loss - ism) == pytest.approx(float(penalty), rel=1e-9)


@pytest.mark.compile_bound
def test_regularized_ism_minimiser_shrinks_precision(x64):
    """Independent coordinates with variances s = (0.5, 2), mean 0, 2^15 samples, lambda = 0.25: the minimiser
    of regularised ISM over quadratic energies has A = diag(1 / (s + 2 lambda)) = diag(1, 0.4), A_12 = 0 and
    b = 0 within 0.03 (MC), against ISM's diag(2, 0.5)."""
    s = np.array([0.5, 2.0])
    x = jax.random.normal(jax.random.key(11), (2**15, 2)) * jnp.sqrt(jnp.asarray(s))
    lam = 0.25
    th, th0 = _newton([lambda th, k, y, c=c: F.regularized_ism_loss(_quadratic_energy(th), k, y,
                                                                    curvature_weight=c)[0] for c in (lam, 0.0)],
                      5, None, x)
    np.testing.assert_allclose(th[[0, 2]], 1.0 / (s + 2 * lam), atol=0.03)
    np.testing.assert_allclose(th[[1, 3, 4]], 0.0, atol=0.03)
    np.testing.assert_allclose(th0[[0, 2]], 1.0 / s, atol=0.06)


# --------------------------------------------------------------------------------------------------
# float32, compilation, errors
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.compile_bound
def test_float32_central_fd_close_to_autodiff():
    """float32, an MLP score network and an MLP energy at fd_eps = 0.1 (the paper's step): FD-SSM within 2% of
    autodiff SSM (same directions) for both; dtypes stay float32."""
    from sde_jax.models import EnergyMLP, ScoreMLP, get_energy_fn

    x = jax.random.normal(jax.random.key(0), (256, 2), jnp.float32)
    em = EnergyMLP(hidden=16, num_layers=1)
    energy = get_energy_fn(em.apply, em.init(jax.random.key(1), x))
    sm = ScoreMLP(hidden=16, num_layers=1, embed_dim=8)
    sp = sm.init(jax.random.key(2), x, jnp.zeros((256,)))
    score = lambda y: sm.apply(sp, y, jnp.zeros(y.shape[:1], y.dtype))  # noqa: E731
    key = jax.random.key(3)

    @functools.partial(jax.jit, static_argnums=0)
    def both(scheme):
        return (F.fd_ssm_loss(score, key, x, scheme=scheme)[0],
                F.fd_energy_ssm_loss(energy.log_prob, key, x, scheme=scheme)[0])

    for fd, ad in zip(both("central"), both("exact")):
        assert fd.dtype == jnp.float32
        assert abs(float(fd) - float(ad)) < 0.02 * max(1.0, abs(float(ad))), (float(fd), float(ad))


@pytest.mark.compile_bound
def test_new_fd_eps_does_not_recompile():
    """fd_eps (and sigma) are values: one compiled program serves every step size."""
    _, energy = _nonlinear(2)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    traces = []

    @jax.jit
    def f(e, s):
        traces.append(1)
        return F.fd_energy_dsm_loss(energy, jax.random.key(1), x, sigma=s, fd_eps=e)[0]

    for e in (0.1, 0.05, 0.01):
        f(e, 0.3 + e)
    assert len(traces) == 1


@pytest.mark.compile_bound
def test_errors_name_the_argument():
    score, energy = _nonlinear(2)
    x = jnp.ones((4, 2))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown scheme"):
        F.fd_ssm_loss(score, key, x, scheme="backward")
    with pytest.raises(ValueError, match="unknown projection"):
        F.fd_ssm_loss(score, key, x, projection="cube")
    with pytest.raises(ValueError, match="fd_eps must be > 0"):
        F.fd_ism_loss(score, key, x, fd_eps=0.0)
    with pytest.raises(ValueError, match="num_projections must be an integer >= 1"):
        F.fd_energy_ssm_loss(energy, key, x, num_projections=0)
    with pytest.raises(ValueError, match="curvature_weight must be >= 0"):
        F.regularized_ism_loss(energy, key, x, curvature_weight=-1.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        F.fd_energy_dsm_loss(energy, key, x, sigma=0.0)
    with pytest.raises(ValueError, match="one value per example"):
        F.fd_energy_ssm_loss(lambda y: energy(y)[:, None], key, x)
    with pytest.raises(ValueError, match="one value per example"):
        F.fd_energy_ism_loss(lambda y: energy(y)[:, None], key, x, scheme="exact")
    with pytest.raises(ValueError, match="same shape as x"):
        F.fd_ssm_loss(lambda y: y[:, :1], key, x)
    with pytest.raises(ValueError, match="v must have shape"):
        F.fd_ssm_per_example(score, x, jnp.ones((2, 3, 2)))
    with pytest.raises(ValueError, match=r"batch must have shape \[B, ...\]"):
        F.fd_ism_loss(score, key, jnp.ones((4,)))
    with pytest.raises(ValueError, match="unknown method"):
        F.get_sde_fd_loss_fn(sj.VPSDE(), method="fd_dsm")
    with pytest.raises(ValueError, match="eps must be in"):
        F.get_sde_fd_loss_fn(sj.VPSDE(), eps=1.0)
