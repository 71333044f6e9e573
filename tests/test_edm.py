"""EDM training pieces: the preconditioning as the ``"edm"`` parameterisation of ``get_score_fn``, the EDM loss
against its closed-form value at the exact denoiser, the config path through ``training.build``, and the
EDM-trained toy2d model against the toy2d targets."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import losses, training
from sde_jax.models import ScoreMLP, get_score_fn
from sde_jax.models.edm import edm_preconditioning

SDES = {"ve": sj.VESDE(sigma_min=0.01, sigma_max=20.0), "vp": sj.VPSDE(), "subvp": sj.SubVPSDE()}


def test_preconditioning_is_edm_table_1(x64):
    """c_skip, c_out, c_in, c_noise as in Karras et al. 2022, Table 1; the loss weight is 1 / c_out^2; at
    sigma_d the effective target has unit variance: c_skip^2 + ... (c_in^2 (sigma^2 + sigma_d^2) = 1)."""
    sigma, sd = jnp.geomspace(1e-3, 100.0, 11), 0.5
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sd)
    np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-14)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sd**2 + sigma**2), rtol=1e-14)
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-14)
    np.testing.assert_allclose(losses.edm_loss_weight(sigma, sd), 1 / c_out**2, rtol=1e-13)


def _echo(params, x, labels, **kwargs):
    """A fake network ``F(x, c) = params * x + c`` (input and label visible in the output)."""
    return params * x + labels[:, None]


@pytest.mark.parametrize("name", SDES)
@pytest.mark.compile_bound
def test_edm_parameterisation_is_the_preconditioned_denoiser(x64, name):
    """score(x, t) = (D - x^) / (a sigma^2) with D = c_skip x^ + c_out F(c_in x^, c_noise), x^ = x / a(t),
    sigma = sigma(t) (to 1e-12); the labels are c_noise."""
    sde, sd = SDES[name], 0.7
    x = jax.random.normal(jax.random.key(0), (5, 2)) * 3
    t = jnp.array([1e-3, 0.1, 0.4, 0.7, 1.0])
    a, sigma = sde.edm_scale(t)[:, None], sde.edm_sigma(t)[:, None]
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sd)
    x_hat = x / a
    denoised = c_skip * x_hat + c_out * (2.0 * c_in * x_hat + c_noise)
    score_fn = get_score_fn(sde, _echo, 2.0, parameterization="edm", sigma_data=sd)
    np.testing.assert_allclose(score_fn(x, t), (denoised - x_hat) / (a * sigma**2), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(score_fn.labels(t), c_noise[:, 0], rtol=1e-14)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_networks_that_take_the_log_get_sigma_to_the_quarter(x64):
    """ScoreMLP(log_labels=True) (as NCSN++ with Fourier features) is given sigma^{1/4}, whose log is c_noise."""
    sde, t = sj.VPSDE(), jnp.array([0.01, 0.5])
    model = ScoreMLP(hidden=8, num_layers=1, embed_dim=8, embedding="fourier", log_labels=True)
    params = model.init(jax.random.key(0), jnp.ones((2, 2)), jnp.ones(2))
    score_fn = get_score_fn(sde, model, params, parameterization="edm", sigma_data=0.5)
    np.testing.assert_allclose(jnp.log(score_fn.labels(t)), jnp.log(sde.edm_sigma(t)) / 4, rtol=1e-12)
    assert score_fn(jnp.ones((2, 2)), t).shape == (2, 2)


def test_edm_parameterisation_errors():
    with pytest.raises(ValueError, match="needs sigma_data"):
        get_score_fn(sj.VPSDE(), _echo, 1.0, parameterization="edm")
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        get_score_fn(sj.VPSDE(), _echo, 1.0, parameterization="edm", sigma_data=-1.0)
    with pytest.raises(ValueError, match="sigma_data is used by parameterization='edm' only"):
        get_score_fn(sj.VPSDE(), _echo, 1.0, parameterization="noise", sigma_data=0.5)
    with pytest.raises(ValueError, match="use continuous=True"):
        get_score_fn(sj.VPSDE(), _echo, 1.0, parameterization="edm", sigma_data=0.5, continuous=False)


def _lognormal_expectation(f, p_mean, p_std, n=200):
    """``E f(sigma)`` for ``log sigma ~ N(p_mean, p_std^2)`` by Gauss-Hermite quadrature (exact to ~1e-12 for the
    smooth bounded integrands used here)."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return float(np.sum(w * f(np.exp(p_mean + p_std * z))) / np.sum(w))


@pytest.mark.slow
@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("v", [0.25, 2.0])
@pytest.mark.compile_bound
def test_edm_loss_at_the_exact_denoiser_equals_its_closed_form(x64, name, v):
    """Gaussian data N(mu, v I) in 2-D: at the exact score (so the exact denoiser) the EDM loss (sigma_d = 0.5,
    EDM's p_mean, p_std, mean over dimensions) has expectation E_sigma[lambda(sigma) v sigma^2 / (v + sigma^2)]
    (= 1 when v = sigma_d^2). A Monte-Carlo estimate over 2^16 examples is within 4 standard errors of it (the
    standard error estimated from the per-example losses), through each SDE's t(sigma), a(t)."""
    sde, sd = SDES[name], 0.5
    gauss = sj.toy.GaussianMixture([[0.3, -0.2]], np.sqrt(v), [1.0])
    loss_fn = losses.get_loss_fn("edm", sde, sigma_data=sd)
    key_b, key_s, key_n = jax.random.split(jax.random.key(1), 3)
    y = gauss.sample(key_b, 2**16)
    sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(key_s, (2**16,)))
    per = losses.edm_per_example(gauss.perturbed_score(sde), sde, y, sigma, jax.random.normal(key_n, y.shape),
                                 sigma_data=sd)
    exact = _lognormal_expectation(lambda s: (s**2 + sd**2) / (s * sd) ** 2 * v * s**2 / (v + s**2), -1.2, 1.2)
    if v == sd**2:
        assert exact == pytest.approx(1.0, rel=1e-12)
    mc, se = float(jnp.mean(per)), float(jnp.std(per) / np.sqrt(per.shape[0]))
    assert abs(mc - exact) < 4 * se, (mc, exact, se)
    loss, aux = loss_fn(gauss.perturbed_score(sde), jax.random.key(2), y[:1024])   # the registered loss runs
    assert np.isfinite(float(loss)) and set(aux) == {"loss", "sigma_mean"}


@pytest.mark.slow
@pytest.mark.compile_bound
def test_build_wires_the_edm_option_from_the_config():
    """``training.loss = "edm"`` and ``model.parameterization = "edm"`` through ``training.build``: one
    ``model.sigma_data`` reaches both the loss and the score function; a missing sigma_data fails at build."""
    from experiments.toy2d import configs
    config = configs.load("edm")
    parts = training.build(config, data_shape=(2,))
    params = parts.init_params(jax.random.key(0))
    score_fn = parts.make_score_fn(params)
    assert score_fn.parameterization == "edm" and float(score_fn.sigma_data) == pytest.approx(1.81)
    loss, _ = parts.loss_fn(score_fn, jax.random.key(1), jax.random.normal(jax.random.key(2), (16, 2)))
    assert np.isfinite(float(loss))
    del config.model.sigma_data
    with pytest.raises(ValueError, match="needs sigma_data"):
        training.build(config, data_shape=(2,))


@pytest.mark.skipif(os.environ.get("SDE_JAX_FULL_TOY2D") != "1",
                    reason="a full toy2d run takes minutes; set SDE_JAX_FULL_TOY2D=1 to run it")
def test_edm_trained_toy2d_meets_the_toy2d_targets(tmp_path):
    """``experiments/toy2d/configs/edm.py`` (EDM preconditioning + loss, 6000 steps): every sampler (PC, ODE, EDM
    Heun at 35 NFE, DPM-Solver++(2M) at 20) within the toy2d targets (mode-weight error <= 0.05, energy distance
    <= 3x the two-sample level)."""
    from experiments.toy2d import configs, experiment
    m = experiment.run(configs.load("edm"), str(tmp_path), progress=False)
    for name, s in m["samplers"].items():
        assert s["mode_weight_error"] <= 0.05, (name, s)
        assert s["energy_distance"] <= 3.0 * m["energy_distance_reference"]["level"], (name, s)
