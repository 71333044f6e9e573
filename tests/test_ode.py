"""Probability-flow ODE sampling on the device: exact target, true NFE, convergence order, devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import sde_jax as sj
from sde_jax.parallel import make_data_mesh
from sde_jax.samplers import ode_sample
from sde_jax.samplers.ode import adaptive_nfe
from hlo_utils import collectives_in_loops
from sampler_targets import MIXTURE, N_SAMPLES, WEIGHT_TOL, quality

SDES = {"ve": (sj.VESDE(sigma_max=50.0), 1e-5), "vp": (sj.VPSDE(), 1e-3), "subvp": (sj.SubVPSDE(), 1e-3)}


@pytest.mark.slow
@pytest.mark.parametrize("solver, num_steps", [("tsit5", None), ("heun", 100)])
@pytest.mark.parametrize("name", SDES)
def test_ode_sampler_reaches_the_exact_target(name, solver, num_steps):
    sde, eps = SDES[name]
    x, nfe = ode_sample(jax.random.key(7), sde, MIXTURE.perturbed_score(sde), (N_SAMPLES, 2), solver=solver,
                        num_steps=num_steps, eps=eps)
    werr, ed, threshold = quality(x)
    assert werr < WEIGHT_TOL and ed < threshold, (werr, ed, threshold)
    assert int(nfe) == (200 if solver == "heun" else int(nfe)) and int(nfe) > 0


@pytest.mark.parametrize("solver,tol,target", [("tsit5", 1e-5, "mixture"), ("dopri5", 1e-5, "mixture"),
                                               ("tsit5", 1e-9, "narrow"), ("dopri5", 1e-9, "narrow")])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_adaptive_nfe_counts_actual_score_calls(x64, solver, tol, target):
    """Count real evaluations with a host callback (test only) for one example: equals the reported NFE.
    The narrow mixture at rtol = atol = 1e-9 rejects the very first step; diffrax then re-evaluated the first
    stage, and the count was 1 + 6 n + 1 before the sampler seeded that stage itself."""
    calls = []
    sde = sj.VESDE(sigma_max=50.0)
    gmm = MIXTURE if target == "mixture" else sj.toy.GaussianMixture(
        [[-3.0, 0.0], [3.0, 0.5]], [[0.05, 0.05], [0.02, 0.3]], [0.5, 0.5])
    exact = gmm.perturbed_score(sde)

    def bump(_):
        calls.append(1)
        return np.int32(0)

    def counted(x, t):
        return exact(x, t) + 0 * io_callback(bump, jax.ShapeDtypeStruct((), jnp.int32), x, ordered=False)

    x, nfe = ode_sample(jax.random.key(0), sde, counted, (1, 2), solver=solver, rtol=tol, atol=tol, eps=1e-5,
                        denoise=True)
    jax.block_until_ready(x)
    assert len(calls) == int(nfe) and int(nfe) > 20
    assert (int(nfe) - 2) % 6 == 0  # 1 + 6 * steps, + 1 for the denoising step
    assert adaptive_nfe(10) == 61


@pytest.mark.slow
@pytest.mark.compile_bound
def test_fixed_step_solvers_have_their_order(x64):
    """Error at eps vs a tight adaptive solve, regressed on log dt: Euler slope ~1, Heun slope ~2."""
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    shape = (16, 2)
    ref, _ = ode_sample(jax.random.key(1), sde, score, shape, solver="tsit5", rtol=1e-11, atol=1e-11, eps=0.05)
    for solver, order, steps in [("euler", 1, [100, 200, 400]), ("heun", 2, [50, 100, 200])]:
        errs = [float(jnp.max(jnp.abs(ode_sample(jax.random.key(1), sde, score, shape, solver=solver,
                                                  num_steps=n, eps=0.05)[0] - ref))) for n in steps]
        slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errs), 1)[0]
        assert abs(slope - order) < 0.2, (solver, slope, errs)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_adaptive_tolerance_controls_error(x64):
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    ref, _ = ode_sample(jax.random.key(1), sde, score, (8, 2), rtol=1e-11, atol=1e-11, eps=0.05)
    loose, n_loose = ode_sample(jax.random.key(1), sde, score, (8, 2), rtol=1e-3, atol=1e-3, eps=0.05)
    tight, n_tight = ode_sample(jax.random.key(1), sde, score, (8, 2), rtol=1e-7, atol=1e-7, eps=0.05)
    assert float(jnp.max(jnp.abs(tight - ref))) < 1e-4 < float(jnp.max(jnp.abs(loose - ref)))
    assert int(n_tight) > int(n_loose)


@pytest.mark.compile_bound
def test_denoise_is_tweedie(x64):
    """On a Gaussian target, Tweedie's formula gives the exact posterior mean E[x0 | x_eps]."""
    gauss = sj.toy.GaussianMixture([[1.0, -1.0]], 0.7, [1.0])
    sde = sj.VPSDE()
    score = gauss.perturbed_score(sde)
    x = jax.random.normal(jax.random.key(0), (5, 2))
    t = jnp.full((5,), 0.3)
    a, s = sde.marginal_mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
    post_mean = jnp.array([1.0, -1.0]) + (a * 0.49 / (a**2 * 0.49 + s**2)) * (x - a * jnp.array([1.0, -1.0]))
    np.testing.assert_allclose(sj.samplers.tweedie_denoise(sde, score, x, t), post_mean, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_eight_devices_equal_one_device_without_communication():
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    one, n1 = ode_sample(jax.random.key(3), sde, score, (32, 2))
    many, n8 = ode_sample(jax.random.key(3), sde, score, (32, 2), mesh=make_data_mesh(8))
    np.testing.assert_allclose(np.asarray(many), np.asarray(one), rtol=1e-5, atol=1e-5)
    assert int(n1) == int(n8)
    # The compiled adaptive loop contains no cross-device collective; as a control, the PC sampler's batch-mean
    # Langevin step does all-reduce inside its loop, and the checker finds it.
    mesh = make_data_mesh(8)
    ode_hlo = jax.jit(lambda k: ode_sample(k, sde, score, (32, 2), mesh=mesh)[0]).lower(
        jax.random.key(3)).compile().as_text()
    pc_sde = sj.VPSDE(N=25)
    pc_hlo = jax.jit(lambda k: sj.samplers.pc_sample(k, pc_sde, MIXTURE.perturbed_score(pc_sde), (32, 2), mesh=mesh)[0]
                     ).lower(jax.random.key(3)).compile().as_text()
    assert " while(" in ode_hlo and collectives_in_loops(ode_hlo) == []
    assert "all-reduce" in collectives_in_loops(pc_hlo)


@pytest.mark.compile_bound
def test_sample_independent_of_batch_mates():
    """Per-example adaptive steps: moving one example's start does not change the others' solutions."""
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    x0 = jax.random.normal(jax.random.key(3), (8, 2))
    a, _ = ode_sample(jax.random.key(0), sde, score, (8, 2), x_init=x0)
    b, _ = ode_sample(jax.random.key(0), sde, score, (8, 2), x_init=x0.at[0].set(jnp.array([4.0, -4.0])))
    np.testing.assert_allclose(np.asarray(a[1:]), np.asarray(b[1:]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[0], b[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="rk4"), "unknown solver 'rk4'; valid names"),
    (dict(solver="euler"), "fixed-step: pass num_steps"),
    (dict(rtol=0.0), "rtol must be > 0"),
    (dict(atol=-1.0), "atol must be > 0"),
    (dict(eps=0.0), "eps must be in"),
    (dict(x_init=jnp.ones((4, 2))), "x_init must have shape"),
])
def test_bad_arguments_raise(kwargs, match):
    sde = sj.VPSDE()
    with pytest.raises(ValueError, match=match):
        ode_sample(jax.random.key(0), sde, MIXTURE.perturbed_score(sde), (8, 2), **kwargs)
    with pytest.raises(ValueError, match="not divisible"):
        ode_sample(jax.random.key(0), sde, MIXTURE.perturbed_score(sde), (12, 2), mesh=make_data_mesh(8))
