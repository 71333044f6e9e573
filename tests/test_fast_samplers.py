"""The fast samplers (DDIM, EDM Heun/stochastic, DPM-Solver/DPM-Solver++) and ``sj.sample``, against exact
answers: the SDE -> EDM mapping against the forward kernel, convergence orders against a tight adaptive solve of
the probability-flow ODE (exact mixture score, float64), DDIM(eta=1) step for step against DDPM's ancestral
posterior, EDM's stochastic sampler with S_churn = 0 against Heun, true NFE, no recompilation, 8 devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import sde_jax as sj
from sde_jax.parallel import make_data_mesh
from sde_jax.samplers import fixed_grid
from sampler_targets import MIXTURE, N_SAMPLES, WEIGHT_TOL, quality

SDES = {"ve": (sj.VESDE(sigma_max=50.0), 1e-5), "vp": (sj.VPSDE(), 1e-3), "subvp": (sj.SubVPSDE(), 1e-3)}
FAST = ["ddim", "edm_heun", "edm_stochastic", "dpm_solver", "dpm_solver++"]


@pytest.mark.parametrize("name", SDES)
@pytest.mark.compile_bound
def test_edm_mapping_matches_the_forward_kernel(x64, name):
    """``sigma(t) = s(t)/a(t)`` and ``scale(t) = a(t)`` reproduce ``marginal_prob`` (``x_t = a (x_0 + sigma z)``)
    to 1e-12 relative; ``edm_time`` inverts ``edm_sigma`` to 1e-12 over t in [1e-5, 1] (sigma over 5-8 decades);
    sigma is increasing."""
    sde, _ = SDES[name]
    t = jnp.geomspace(1e-5, 1.0, 41)
    x0 = jax.random.normal(jax.random.key(0), (41, 3))
    z = jax.random.normal(jax.random.key(1), (41, 3))
    mean, std = sde.marginal_prob(x0, t)
    a, sigma = sde.edm_scale(t), sde.edm_sigma(t)
    np.testing.assert_allclose(a[:, None] * (x0 + sigma[:, None] * z), mean + std[:, None] * z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, std / sde.marginal_mean_coeff(t), rtol=1e-12)
    np.testing.assert_allclose(sde.edm_time(sigma), t, rtol=1e-12)
    assert bool(jnp.all(jnp.diff(sigma) > 0))


def test_grids(x64):
    """Named grids run from T to eps exactly; Karras is EDM's Eq. 5 in sigma (rho = 7), logsnr is uniform in
    log sigma, uniform is uniform in t (all to 1e-12)."""
    sde = sj.VPSDE()
    n, eps = 8, 1e-3
    lo, hi = float(sde.edm_sigma(eps)), float(sde.edm_sigma(1.0))
    k = np.asarray(sde.edm_sigma(fixed_grid.sampling_times(sde, n, eps, "karras", 7.0)))
    ramp = np.linspace(0, 1, n + 1)
    np.testing.assert_allclose(k, (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7, rtol=1e-12)
    lg = np.log(np.asarray(sde.edm_sigma(fixed_grid.sampling_times(sde, n, eps, "logsnr"))))
    np.testing.assert_allclose(np.diff(lg), np.full(n, (np.log(lo) - np.log(hi)) / n), rtol=1e-10)
    np.testing.assert_allclose(fixed_grid.sampling_times(sde, n, eps, "uniform"), np.linspace(1, eps, n + 1),
                               rtol=1e-12)


# Convergence orders: the error at eps = 0.05 (denoise=False) against the exact flow map from the same prior
# points (Tsit5 at rtol = atol = 1e-11, error ~1e-10), on each method's default grid, at step counts in the
# asymptotic range (measured: below them the slopes are still rising, e.g. DPM-Solver++(2M) 1.42 at 20 -> 40).
# The default suite measures each slope between two step counts (fewer compiles); the slow test regresses three.
ORDER_CASES = [
    ("ddim", {}, 1, [200, 400]),
    ("edm_heun", {}, 2, [100, 200]),
    ("dpm_solver++", dict(order=2), 2, [200, 400]),
    ("dpm_solver++", dict(order=3), 3, [100, 200]),
]
SLOW_ORDER_CASES = [
    ("dpm_solver++", dict(order=2, multistep=False), 2, [50, 100, 200]),
    ("dpm_solver++", dict(order=3, multistep=False), 3, [25, 50, 100]),
    ("dpm_solver", dict(order=2), 2, [50, 100, 200]),
    ("dpm_solver", dict(order=3), 3, [25, 50, 100]),
    ("dpm_solver", dict(order=2, multistep=True), 2, [100, 200, 400]),
    ("dpm_solver", dict(order=3, multistep=True), 3, [50, 100, 200]),
]
_ORDER_SHAPE, _ORDER_EPS = (16, 2), 0.05


def _reference_flow(sde):
    score = MIXTURE.perturbed_score(sde)
    x0 = sde.prior_sampling(jax.random.key(1), _ORDER_SHAPE)
    ref, _ = sj.ode_sample(jax.random.key(1), sde, score, _ORDER_SHAPE, rtol=1e-11, atol=1e-11, eps=_ORDER_EPS,
                           x_init=x0)
    return score, x0, ref


def _slopes(cases):
    sde = sj.VPSDE()
    score, x0, ref = _reference_flow(sde)
    out = []
    for method, kw, order, steps in cases:
        errs = [float(jnp.max(jnp.abs(sj.sample(jax.random.key(0), sde, score, _ORDER_SHAPE, method=method,
                                                num_steps=n, eps=_ORDER_EPS, denoise=False, x_init=x0, **kw)[0]
                                      - ref))) for n in steps]
        out.append((method, kw, order, np.polyfit(np.log(1.0 / np.array(steps)), np.log(errs), 1)[0], errs))
    return out


@pytest.mark.slow
@pytest.mark.compile_bound
def test_deterministic_solvers_converge_at_their_order(x64):
    """Slope of log max-error vs log(1/num_steps) within 0.3 of the order (measured: DDIM 1.02, EDM Heun 2.03,
    DPM-Solver++(2M) 1.97, DPM-Solver++(3M) 3.24), VP SDE, 16 prior points of the 0.2/0.8 mixture."""
    for method, kw, order, slope, errs in _slopes(ORDER_CASES):
        assert abs(slope - order) < 0.3, (method, kw, slope, errs)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_single_step_and_noise_prediction_solvers_converge_at_their_order(x64):
    """As above for DPM-Solver++(2S, 3S) and DPM-Solver (noise prediction) 2S, 3S, 2M, 3M (within 0.3)."""
    for method, kw, order, slope, errs in _slopes(SLOW_ORDER_CASES):
        assert abs(slope - order) < 0.3, (method, kw, slope, errs)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_ddim_eta_one_is_ddpm_ancestral_step_for_step(x64):
    """DDIM with eta = 1 on any grid is DDPM's ancestral sampler with the posterior variance beta~ (Ho et al. 2020,
    Eq. 6-7, written here with alpha_bar_i = a(t_i)^2 and eps_theta = -s(t) score), step for step with the same
    noise, to 1e-10."""
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    shape, n, key = (6, 2), 6, jax.random.key(3)
    x, _ = sj.sample(key, sde, score, shape, method="ddim", num_steps=n, eta=1.0, denoise=False)
    ts = np.asarray(fixed_grid.sampling_times(sde, n, 1e-3, "uniform"))
    key_prior, key_loop = fixed_grid.prior_and_loop_keys(key)
    y = sde.prior_sampling(key_prior, shape)
    abar = np.asarray(sde.marginal_mean_coeff(jnp.asarray(ts))) ** 2
    for i in range(n):
        t = jnp.full((shape[0],), ts[i])
        eps_hat = -np.sqrt(1 - abar[i]) * score(y, t)
        x0 = (y - np.sqrt(1 - abar[i]) * eps_hat) / np.sqrt(abar[i])
        alpha = abar[i] / abar[i + 1]
        beta = 1 - alpha
        mean = (np.sqrt(abar[i + 1]) * beta / (1 - abar[i])) * x0 + (np.sqrt(alpha) * (1 - abar[i + 1]) / (1 - abar[i])) * y
        var = (1 - abar[i + 1]) / (1 - abar[i]) * beta
        y = mean + np.sqrt(var) * fixed_grid.step_noise(jax.random.fold_in(key_loop, i), y)
    np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10)


@pytest.mark.compile_bound
def test_edm_stochastic_without_churn_is_heun(x64):
    """S_churn = 0 (any S_noise): EDM's Algorithm 2 is Algorithm 1 exactly (equal to 1e-13), NFE equal."""
    sde = sj.VESDE(sigma_max=50.0)
    score = MIXTURE.perturbed_score(sde)
    a, na = sj.sample(jax.random.key(0), sde, score, (8, 2), method="edm_heun", num_steps=9)
    b, nb = sj.sample(jax.random.key(0), sde, score, (8, 2), method="edm_stochastic", num_steps=9, S_churn=0.0,
                      S_noise=1.007)
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    assert na == nb == 19
    c, _ = sj.sample(jax.random.key(0), sde, score, (8, 2), method="edm_stochastic", num_steps=9, S_churn=5.0)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("method, kwargs, expected", [
    ("ddim", dict(num_steps=3, denoise=False), 3), ("edm_stochastic", dict(num_steps=3, S_churn=1.0), 7),
    ("dpm_solver", dict(num_steps=3, order=3), 10), ("dpm_solver++", dict(num_steps=3, order=3), 4),
])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_nfe_counts_actual_score_calls(method, kwargs, expected):
    """Every evaluation of the score (a host callback counts them) is reported, and nothing more."""
    calls = []
    sde = sj.VPSDE()
    exact = MIXTURE.perturbed_score(sde)

    def bump(_):
        calls.append(1)
        return np.int32(0)

    def counted(x, t):
        return exact(x, t) + 0 * io_callback(bump, jax.ShapeDtypeStruct((), jnp.int32), x, ordered=False)

    x, nfe = sj.sample(jax.random.key(0), sde, counted, (4, 2), method=method, **kwargs)
    jax.block_until_ready(x)
    assert len(calls) == nfe == expected


@pytest.mark.compile_bound
def test_new_values_do_not_recompile():
    """New eta, S_churn/S_noise/S_tmin/S_tmax, rho, eps, key and SDE hyper-parameters reuse the compiled program
    (the score function is traced once per method; the other samplers share the same driver)."""
    traces = []
    exact = MIXTURE.perturbed_score(sj.VESDE())

    def score(x, t):
        traces.append(1)
        return exact(x, t)

    cases = [("ddim", lambda i: dict(eta=0.1 * i, grid="karras", rho=5.0 + i)),
             ("edm_stochastic", lambda i: dict(S_churn=1.0 + i, S_noise=1.0 + 0.01 * i, S_tmin=0.01 * i,
                                               S_tmax=40.0 + i, eps=1e-5 * (1 + i)))]
    for method, kw in cases:
        for i in range(3):
            sde = sj.VESDE(sigma_max=50.0 + i)
            sj.sample(jax.random.key(i), sde, score, (8, 2), method=method, num_steps=4, **kw(i))
            if i == 0:
                n_traced = len(traces)
        assert len(traces) == n_traced, method


@pytest.mark.compile_bound
def test_eight_devices_equal_one_device():
    """A stochastic sampler (DDIM, eta = 0.5) sharded over 8 devices gives the one-device samples (1e-5)."""
    sde = sj.VPSDE()
    score = MIXTURE.perturbed_score(sde)
    kw = dict(method="ddim", num_steps=4, eta=0.5)
    one, _ = sj.sample(jax.random.key(4), sde, score, (64, 2), **kw)
    many, _ = sj.sample(jax.random.key(4), sde, score, (64, 2), mesh=make_data_mesh(8), **kw)
    assert len(many.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(many), np.asarray(one), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method, kwargs", [
    ("ddim", dict(num_steps=100)), ("ddim", dict(num_steps=200, eta=1.0)), ("edm_heun", {}),
    ("edm_stochastic", dict(num_steps=40, S_churn=20.0)), ("dpm_solver", dict(num_steps=12)), ("dpm_solver++", {}),
    ("dpm_solver++", dict(order=3, num_steps=29)),
])
@pytest.mark.parametrize("name", SDES)
@pytest.mark.compile_bound
def test_fast_samplers_reach_the_exact_target(name, method, kwargs):
    """3000 samples of the 0.2/0.8 mixture with its exact score: mode weights within 0.03 (4 s.e.) and energy
    distance within the two-sample level (mean + 4 std of 20 exact pairs), for VE, VP and sub-VP."""
    sde, eps = SDES[name]
    x, nfe = sj.sample(jax.random.key(7), sde, MIXTURE.perturbed_score(sde), (N_SAMPLES, 2), method=method, eps=eps,
                       **kwargs)
    werr, ed, threshold = quality(x)
    assert werr < WEIGHT_TOL and ed < threshold, (werr, ed, threshold, nfe)


@pytest.mark.slow
def test_ddim_eta_one_matches_pc_ancestral_in_distribution():
    """DDIM(eta = 1) on the 500-level uniform grid and the PC sampler's ancestral predictor (DDPM, beta_i noise)
    over the same 500 levels: their samples are as close to each other as two exact samples are (energy distance
    below the two-sample threshold), and each reaches the target."""
    from sde_jax.metrics import energy_distance
    sde = sj.VPSDE(N=500)
    score = MIXTURE.perturbed_score(sde)
    a, _ = sj.sample(jax.random.key(8), sde, score, (N_SAMPLES, 2), method="ddim", num_steps=500, eta=1.0)
    b, _ = sj.sample(jax.random.key(9), sde, score, (N_SAMPLES, 2), method="pc", predictor="ancestral",
                     corrector="none")
    *_, threshold = quality(a)
    assert float(energy_distance(a, b)) < threshold
    for x in (a, b):
        werr, ed, threshold = quality(x)
        assert werr < WEIGHT_TOL and ed < threshold, (werr, ed)


@pytest.mark.compile_bound
def test_sample_dispatches_and_validates():
    """One entry point: every registered method runs; unknown methods/options list the valid ones; misuse of
    num_steps, eta, order and grids raises ValueError naming the argument."""
    assert set(sj.samplers.SAMPLERS) == {"pc", "ode", "ddim", "edm_heun", "edm_stochastic", "dpm_solver",
                                         "dpm_solver++", "adaptive_sde"}
    sde = sj.VPSDE(N=25)
    score = MIXTURE.perturbed_score(sde)
    call = lambda **kw: sj.sample(jax.random.key(0), sde, score, (8, 2), **kw)   # noqa: E731
    with pytest.raises(ValueError, match=r"unknown method 'heun'; valid names: \['adaptive_sde', 'ddim'"):
        call(method="heun")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['S_churn'\] for method 'edm_heun'; valid options"):
        call(method="edm_heun", S_churn=1.0)
    with pytest.raises(ValueError, match="num_steps must be None"):
        call(method="adaptive_sde", num_steps=10)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        call(method="ddim", eta=1.5)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        call(method="ddim", eta=-0.1)
    with pytest.raises(ValueError, match=r"order must be one of \[1, 2, 3\]"):
        call(method="dpm_solver++", order=4)
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        call(method="ddim", grid="cosine")
    with pytest.raises(ValueError, match="grid times must decrease"):
        call(method="ddim", grid=np.array([1.0, 0.5, 0.7]))
    with pytest.raises(ValueError, match="does not match the grid's 2 steps"):
        call(method="ddim", grid=np.array([1.0, 0.5, 0.01]), num_steps=5)
    with pytest.raises(ValueError, match="rho must be > 0"):
        call(method="edm_heun", rho=0.0)
    with pytest.raises(ValueError, match="S_churn must be >= 0"):
        call(method="edm_stochastic", S_churn=-1.0)
    with pytest.raises(ValueError, match="not divisible"):
        sj.sample(jax.random.key(0), sde, score, (12, 2), method="ddim", mesh=make_data_mesh(8))
    x, nfe = call(method="ddim", grid=np.array([1.0, 0.5, 0.1, 1e-3]))   # any time grid
    assert x.shape == (8, 2) and nfe == 4
    x, nfe = call(method="pc", predictor="euler_maruyama", corrector="none", num_steps=5)
    assert nfe == 5
