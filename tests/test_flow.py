"""The one probability-flow ODE core (sde_jax.flow) under ode_sample, decode_latent and log_likelihood:
one code path, one solver table, one failure policy."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import flow
from conftest import ShapeRecorder
from sampler_targets import MIXTURE

SDE = sj.VPSDE()
SCORE = MIXTURE.perturbed_score(SDE)


@pytest.mark.parametrize("solver, num_steps, tol", [("tsit5", None, 1e-4), ("dopri5", None, 1e-6),
                                                    ("heun", None, 1e-3), ("euler", 40, None), ("heun", 20, None)])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_ode_sample_and_decode_latent_are_one_code_path(solver, num_steps, tol):
    """The same latents through ``ode_sample(x_init=z)`` and ``decode_latent(z)`` with the same settings give
    bitwise-equal results and the same NFE, for every solver of the one table, adaptive and fixed step; and a
    change of tolerance moves both NFEs identically."""
    z = jax.random.normal(jax.random.key(0), (6, 2))
    kw = dict(solver=solver, num_steps=num_steps, eps=1e-3) | ({} if tol is None else dict(rtol=tol, atol=tol))
    a, n_a = sj.ode_sample(None, SDE, SCORE, z.shape, x_init=z, **kw)
    b, n_b = sj.decode_latent(SDE, SCORE, z, **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(n_a) == int(n_b) > 0
    if tol is not None:
        loose = dict(kw, rtol=10 * tol, atol=10 * tol)
        n_a2 = sj.ode_sample(None, SDE, SCORE, z.shape, x_init=z, **loose)[1]
        n_b2 = sj.decode_latent(SDE, SCORE, z, **loose)[1]
        assert int(n_a2) == int(n_b2) < int(n_a)
    else:
        assert int(n_a) == flow.SOLVERS[solver].nfe(num_steps)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_likelihood_and_sampler_report_nfe_from_the_same_solver_facts():
    """``log_likelihood``'s NFE for a fixed-step solve is the table's count, as for ``ode_sample``; both read
    ``flow.SOLVERS``."""
    x = MIXTURE.sample(jax.random.key(1), 4)
    for solver, steps in (("euler", 30), ("heun", 15), ("dopri5", 5)):
        _, nfe = sj.log_likelihood(None, SDE, SCORE, x, solver=solver, num_steps=steps)
        assert int(nfe) == flow.SOLVERS[solver].nfe(steps)
        assert int(sj.ode_sample(None, SDE, SCORE, x.shape, x_init=x, solver=solver, num_steps=steps)[1]) == \
            flow.SOLVERS[solver].nfe(steps)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_budget_exhausted_is_flagged_the_same_way_everywhere():
    """``max_steps`` too small: every example is NaN with status STATUS_MAX_STEPS, a FlowWarning names the
    examples, for the sampler and the likelihood alike (one policy)."""
    x = MIXTURE.sample(jax.random.key(2), 3)
    with pytest.warns(flow.FlowWarning, match="3 of 3 examples failed.*ran out of max_steps"):
        out, _, info = sj.ode_sample(None, SDE, SCORE, x.shape, x_init=x, max_steps=2, return_info=True)
    assert np.all(np.isnan(out)) and np.all(np.asarray(info.status) == flow.STATUS_MAX_STEPS)
    with pytest.warns(flow.FlowWarning, match="3 of 3 examples failed.*ran out of max_steps"):
        logp, _, info = sj.log_likelihood(None, SDE, SCORE, x, max_steps=2, return_info=True)
    assert np.all(np.isnan(logp)) and np.all(np.asarray(info.status) == flow.STATUS_MAX_STEPS)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_nonfinite_score_stops_that_example_early_and_spares_the_others():
    """A score that turns NaN for one example (first coordinate > 50, which only that example reaches) stops
    that example's solve at once: the batch costs about what a healthy solve costs (not the 16,384-step
    budget), the example is NaN with STATUS_NONFINITE and a stop time inside the interval, and the other
    examples equal a run where that example is healthy, bitwise."""
    z = jnp.concatenate([jax.random.normal(jax.random.key(3), (3, 2)), jnp.array([[100.0, 0.0]])])

    def score(x, t):
        s = SCORE(x, t)
        return jnp.where(x[:, :1] > 50.0, jnp.nan, s)

    clean, _, clean_info = sj.ode_sample(None, SDE, score, z.shape, x_init=z.at[3].set(0.5), return_info=True)
    with pytest.warns(flow.FlowWarning, match=r"1 of 4 examples failed.*non-finite.*examples 3 \(t=0\.9"):
        out, nfe, info = sj.ode_sample(None, SDE, score, z.shape, x_init=z, return_info=True)
    np.testing.assert_array_equal(np.asarray(out[:3]), np.asarray(clean[:3]))
    assert np.all(np.isnan(out[3])) and list(np.asarray(info.status)) == [0, 0, 0, flow.STATUS_NONFINITE]
    assert int(info.nfe[3]) <= 13 and int(nfe) == int(np.max(clean_info.nfe[:3]))   # stopped after <= 2 steps
    with pytest.warns(flow.FlowWarning, match="1 of 4 examples failed"):
        logp, _ = sj.log_likelihood(None, SDE, score, z, eps=1e-3)
    assert np.all(np.isfinite(logp[:3])) and np.isnan(logp[3])


@pytest.mark.compile_bound
def test_nan_input_is_flagged_not_solved():
    z = jnp.array([[0.1, 0.2], [jnp.nan, 0.0]])
    with pytest.warns(flow.FlowWarning, match="1 of 2"):
        out, _, info = sj.ode_sample(None, SDE, SCORE, z.shape, x_init=z, return_info=True)
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
    assert list(np.asarray(info.status)) == [flow.STATUS_OK, flow.STATUS_NONFINITE]


@pytest.mark.slow
@pytest.mark.compile_bound
def test_no_warning_under_a_callers_jit():
    """Inside a user's jit the outcome is data (NaN + info), never a Python warning or error."""
    x = MIXTURE.sample(jax.random.key(2), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _, info = jax.jit(lambda x: sj.ode_sample(None, SDE, SCORE, x.shape, x_init=x, max_steps=2,
                                                       return_info=True))(x)
    assert np.all(np.isnan(out)) and np.all(np.asarray(info.status) == flow.STATUS_MAX_STEPS)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_a_solver_added_to_the_one_table_serves_sampler_and_likelihood(monkeypatch):
    """Both entry points read ``flow.SOLVERS``: adding Bogacki-Shampine 3(2) (FSAL, 3 new evaluations per
    step) makes it available to ``ode_sample`` and ``log_likelihood`` alike, with NFE ``1 + 3 n`` in both, and
    a looser tolerance lowers both."""
    import diffrax

    monkeypatch.setitem(flow.SOLVERS, "bosh3", flow.SolverSpec(diffrax.Bosh3, 1, 3, True, 3))
    x = MIXTURE.sample(jax.random.key(4), 3)
    nfes = {}
    for tol in (1e-3, 1e-5):
        _, n_s = sj.ode_sample(None, SDE, SCORE, x.shape, x_init=x, solver="bosh3", rtol=tol, atol=tol)
        logp, n_l = sj.log_likelihood(None, SDE, SCORE, x, solver="bosh3", rtol=tol, atol=tol)
        assert (int(n_s) - 1) % 3 == 0 and (int(n_l) - 1) % 3 == 0 and np.all(np.isfinite(logp))
        nfes[tol] = (int(n_s), int(n_l))
    assert nfes[1e-3][0] < nfes[1e-5][0] and nfes[1e-3][1] < nfes[1e-5][1]


# ----------------------------------------------------------------------------------------------------
# The batch-native vector field of adaptive solves (flow.batch_native).


@pytest.mark.slow
@pytest.mark.compile_bound
def test_adaptive_solves_call_the_score_on_the_whole_batch(x64, monkeypatch):
    """Adaptive ``ode_sample`` and ``adaptive_sde_sample`` evaluate the score once per evaluation on the whole
    batch (``flow.batch_native``); with ``batch_native`` replaced by its per-example function (the ``vmap`` of
    batches of one it replaces) the samples and NFE are the same in float64. A fixed-step solve keeps batches
    of one (it is reverse-differentiable)."""
    z = jax.random.normal(jax.random.key(0), (6, 2), jnp.float64)
    sde = sj.VPSDE()

    def run():
        score = ShapeRecorder(MIXTURE.perturbed_score(sde))
        kw = dict(x_init=z, eps=1e-3, denoise=False)
        a, n_a = sj.ode_sample(None, sde, score, z.shape, solver="dopri5", rtol=1e-6, atol=1e-6, **kw)
        b, n_b = sj.samplers.adaptive_sde_sample(jax.random.key(1), sde, score, z.shape, **kw)
        return (np.asarray(a), int(n_a), np.asarray(b), int(n_b)), score.shapes

    (a, n_a, b, n_b), shapes = run()
    fixed = ShapeRecorder(MIXTURE.perturbed_score(sde))
    sj.ode_sample(None, sde, fixed, z.shape, x_init=z, solver="heun", num_steps=3, eps=1e-3, denoise=False)
    monkeypatch.setattr(flow, "batch_native", lambda per_example, batched, example, batch: per_example)
    (a_ref, n_a_ref, b_ref, n_b_ref), shapes_ref = run()
    # Traced shapes: batch_native stages both functions, the batch's one runs; the others see batches of one.
    assert shapes == {(1, 2), (6, 2)} and shapes_ref == {(1, 2)} and fixed.shapes == {(1, 2)}
    assert n_a == n_a_ref > 0 and n_b == n_b_ref > 0
    np.testing.assert_allclose(a, a_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


def test_batch_native_checks_its_arguments():
    f = flow.batch_native(lambda x, t: x * t, lambda x, t: x * t[:, None], (jnp.zeros(2), jnp.zeros(())), 4)
    np.testing.assert_allclose(jax.vmap(f)(jnp.ones((4, 2)), jnp.arange(4.0)), jnp.arange(4.0)[:, None] * jnp.ones(2))
    with pytest.raises(TypeError, match="do not match the example"):
        f((jnp.ones(2),), jnp.ones(()))
