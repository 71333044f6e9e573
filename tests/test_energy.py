"""Energy-based score models: the score is the gradient of the log-density, per example; the two views work
with the score losses, the FD energy losses, MALA and training."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sde_jax as sj
from sde_jax import losses, training
from sde_jax.models import EnergyFn, EnergyMLP, get_energy_fn
from sde_jax.samplers import mala_init, mala_step, run_chain

M = jnp.array([1.0, -2.0])
P = jnp.array([[2.0, 0.5], [0.5, 1.0]])   # precision of the Gaussian energy


def _gaussian_apply(params, x, labels):
    """``log p~ = -1/2 (x - m)^T P (x - m)`` scaled by ``params``; records nothing, ignores labels."""
    r = x - M
    return -0.5 * params * jnp.einsum("bi,ij,bj->b", r, P, r)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_score_is_the_gradient_of_the_log_density(x64):
    """Quadratic energy: score(x) = -P (x - m) exactly (1e-12); an EnergyMLP's score equals the central
    difference of its log_prob to 1e-6 (h = 1e-5, float64) and value_and_score returns both."""
    x = jax.random.normal(jax.random.key(0), (16, 2))
    e = get_energy_fn(_gaussian_apply, 1.0)
    np.testing.assert_allclose(e.score(x), -(x - M) @ P.T, atol=1e-12)
    np.testing.assert_allclose(e(x), e.score(x), atol=0)
    model = EnergyMLP(hidden=16, num_layers=2, act="tanh", confinement=0.1)
    em = get_energy_fn(model.apply, model.init(jax.random.key(1), x))
    lp, score = jax.jit(em.value_and_score)(x)
    assert lp.shape == (16,) and score.shape == (16, 2)
    h = 1e-5
    lp_fn = jax.jit(em.log_prob)
    fd = jnp.stack([(lp_fn(x + h * ei) - lp_fn(x - h * ei)) / (2 * h) for ei in jnp.eye(2)], -1)
    np.testing.assert_allclose(score, fd, atol=1e-6)


def test_time_labels_follow_the_sde():
    """With an SDE the network sees time_labels(sde, t) (999 t for VP); without one it sees t; without t, None."""
    seen = []

    def apply(params, x, labels):
        seen.append(labels)
        return jnp.sum(x, -1) * (1.0 if labels is None else labels)

    x, t = jnp.ones((3, 2)), jnp.array([0.1, 0.5, 0.9])
    get_energy_fn(apply, None, sde=sj.VPSDE()).log_prob(x, t)
    get_energy_fn(apply, None).log_prob(x, t)
    get_energy_fn(apply, None).log_prob(x)
    np.testing.assert_allclose(seen[0], 999.0 * t, rtol=1e-6)
    np.testing.assert_allclose(seen[1], t)
    assert seen[2] is None
    e = get_energy_fn(apply, None, sde=sj.VPSDE())
    np.testing.assert_allclose(e.log_prob_at(0.5)(x), e.log_prob(x, jnp.full((3,), 0.5)))


def test_mala_samples_an_energy_model(x64):
    """MALA on the quadratic energy's log_prob (4000 chains, 300 steps, h = 0.3, started at 0): mean and
    covariance match N(m, P^-1) within 5 standard errors (moments SE ~ 0.01-0.02)."""
    e = get_energy_fn(_gaussian_apply, 1.0)
    state = mala_init(jnp.zeros((4000, 2)), e.log_prob)
    state, info = jax.jit(lambda k, s: run_chain(k, lambda kk, ss: mala_step(kk, ss, e.log_prob, 0.3), s, 300))(
        jax.random.key(2), state)
    x = np.asarray(state.position)
    cov = np.linalg.inv(np.asarray(P))
    se_mean = np.sqrt(np.diag(cov) / x.shape[0])
    np.testing.assert_allclose(x.mean(0), M, atol=5 * se_mean.max())
    np.testing.assert_allclose(np.cov(x.T), cov, atol=5 * np.sqrt(2.0 / x.shape[0]) * cov.max())
    assert 0.5 < float(jnp.mean(info.acceptance_rate)) <= 1.0


@pytest.mark.slow
@pytest.mark.compile_bound
def test_energy_model_works_with_every_loss():
    """An EnergyMLP (time-conditioned, VP labels) is a score_fn(x, t) for the registered SDE losses (one of
    each family: DSM, autodiff SSM-VR, FD-SSM-VR) and its log_prob feeds the FD energy losses: all values
    finite; parameter gradients finite for DSM and FD-SSM-VR."""
    sde = sj.VPSDE()
    x = jax.random.normal(jax.random.key(0), (8, 2))
    model = EnergyMLP(hidden=16, num_layers=1)
    params = model.init(jax.random.key(1), x, jnp.ones((8,)))
    names = ["dsm", "ssm_vr", "fd_ssm_vr"]         # one of each family: DSM, autodiff SSM, FD

    @jax.jit
    def all_losses(params):
        out = {}
        for name in names:
            loss_fn = losses.get_loss_fn(name, sde)
            f = lambda p: loss_fn(get_energy_fn(model.apply, p, sde=sde), jax.random.key(2), x)[0]  # noqa: E731
            out[name] = jax.value_and_grad(f)(params) if name in ("dsm", "fd_ssm_vr") else (f(params), {})
        return out

    for name, (val, grads) in all_losses(params).items():
        assert np.isfinite(float(val)) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), name
    p0 = model.init(jax.random.key(1), x)
    e0 = get_energy_fn(model.apply, p0)
    fd = jax.jit(lambda y: [fn(e0.log_prob, jax.random.key(3), y)[0] for fn in (
        losses.fd_energy_ssm_loss, losses.fd_energy_ism_loss, functools.partial(losses.fd_energy_dsm_loss, sigma=0.1),
        functools.partial(losses.regularized_ism_loss, curvature_weight=0.1))])(x)
    assert all(np.isfinite(float(v)) for v in fd)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_fd_ssm_trains_an_energy_model():
    """300 Adam steps of FD-SSM (central, fd_eps = 0.1, float32) on N(m, P^-1) samples with the library's
    train step: the relative score error E||s - s*||^2 / E||s*||^2 on fresh samples falls below 0.1 (from ~1)."""
    model = EnergyMLP(hidden=32, num_layers=2)
    target = get_energy_fn(_gaussian_apply, 1.0)
    cov_chol = jnp.linalg.cholesky(jnp.linalg.inv(P))
    sample = lambda key, n: M + jax.random.normal(key, (n, 2)) @ cov_chol.T  # noqa: E731
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)))
    make = lambda p: get_energy_fn(model.apply, p).log_prob  # noqa: E731
    tx = optax.adam(3e-3)
    step = training.make_train_step(functools.partial(losses.fd_energy_ssm_loss, num_projections=2), make, tx,
                                    ema_rate=0.0)
    fn = training.make_train_fn(step, training.sampler_batch_fn(sample, 256), 300)
    state, _ = fn(training.init_train_state(params, tx), jax.random.key(1), jax.random.key(2))
    x = sample(jax.random.key(3), 2000)
    learned = get_energy_fn(model.apply, state.params).score(x)
    err = float(jnp.mean(jnp.sum((learned - target.score(x)) ** 2, -1)) / jnp.mean(jnp.sum(target.score(x) ** 2, -1)))
    assert err < 0.1, err


@pytest.mark.compile_bound
def test_new_params_do_not_recompile():
    model = EnergyMLP(hidden=8, num_layers=1)
    x = jnp.ones((4, 2))
    traces = []

    @jax.jit
    def score(e, x):
        traces.append(1)
        return e.score(x)

    for seed in (0, 1):
        score(get_energy_fn(model.apply, model.init(jax.random.key(seed), x)), x)
    assert len(traces) == 1 and isinstance(get_energy_fn(model.apply, None), EnergyFn)


def test_errors():
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="act must be one of"):
        EnergyMLP(act="relu").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="labels must have shape"):
        EnergyMLP().init(jax.random.key(0), x, jnp.ones((3,)))
    with pytest.raises(ValueError, match="expects x of shape"):
        EnergyMLP().init(jax.random.key(0), jnp.ones((4, 2, 2)))
    with pytest.raises(ValueError, match="confinement must be >= 0"):
        EnergyMLP(confinement=-1.0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="one value per example"):
        get_energy_fn(lambda p, y, c: y, None).log_prob(x)
    with pytest.raises(ValueError, match="t must have shape"):
        get_energy_fn(_gaussian_apply, 1.0).log_prob(x, jnp.ones((3,)))
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        get_energy_fn("not a function", None)
