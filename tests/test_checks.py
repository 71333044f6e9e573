"""Argument checks from one home (sde_jax._checks): every public entry point works inside a user's jax.jit
with traced hyper-parameters, a bad concrete value fails at call time with the same message everywhere, and
a bad traced value fails at run time with that message (equinox.error_if) instead of a silent wrong answer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import losses
from sde_jax.samplers import mala_init, mala_step, run_chain, ula_init, ula_step
from sampler_targets import MIXTURE

SDE = sj.VPSDE(N=25)
SCORE = MIXTURE.perturbed_score(SDE)
X = MIXTURE.sample(jax.random.key(0), 4)
KEY = jax.random.key(1)


def _pc(eps, snr, beta_max):
    sde = sj.VPSDE(beta_max=beta_max, N=25)
    return sj.pc_sample(KEY, sde, MIXTURE.perturbed_score(sde), (4, 2), eps=eps, snr=snr)[0]


def _ode(eps, rtol, beta_max):
    sde = sj.VPSDE(beta_max=beta_max)
    return sj.ode_sample(KEY, sde, MIXTURE.perturbed_score(sde), (4, 2), eps=eps, rtol=rtol, atol=rtol)[0]


def _loglik(eps, rtol, beta_max):
    sde = sj.VPSDE(beta_max=beta_max)
    return sj.log_likelihood(None, sde, MIXTURE.perturbed_score(sde), X, eps=eps, rtol=rtol, atol=rtol)[0]


def _decode(eps, rtol, beta_max):
    sde = sj.VPSDE(beta_max=beta_max)
    return sj.decode_latent(sde, MIXTURE.perturbed_score(sde), X, eps=eps, rtol=rtol, atol=rtol)[0]


def _loss(eps, unused, beta_max):
    sde = sj.VPSDE(beta_max=beta_max)
    return losses.get_sde_loss_fn(sde, eps=eps)(MIXTURE.perturbed_score(sde), KEY, X)[0]


def _ald(eps, step_size, sigma_max):
    sigmas = jnp.stack([sigma_max, 1.0, 0.5])
    return sj.annealed_langevin(KEY, MIXTURE.noise_conditional_score(), X, sigmas, step_size=step_size,
                                n_steps_each=3)[0]


def _ula(eps, step_size, unused):
    score = MIXTURE.score
    return run_chain(KEY, lambda k, s: ula_step(k, s, score, step_size), ula_init(X, score), 3)[0].position


def _mala(eps, step_size, unused):
    lp = MIXTURE.log_prob
    return run_chain(KEY, lambda k, s: mala_step(k, s, lp, step_size), mala_init(X, lp), 3)[0].position


# entry point, good (eps, second hyper-parameter, third), and what the bad value of each is called.
ENTRY_POINTS = {
    "pc_sample": (_pc, (1e-3, 0.16, 20.0), ("eps", "snr", "beta_max")),
    "ode_sample": (_ode, (1e-3, 1e-4, 20.0), ("eps", "rtol", "beta_max")),
    "log_likelihood": (_loglik, (1e-5, 1e-4, 20.0), ("eps", "rtol", "beta_max")),
    "decode_latent": (_decode, (1e-5, 1e-4, 20.0), ("eps", "rtol", "beta_max")),
    "dsm_loss": (_loss, (1e-5, 0.0, 20.0), ("eps", None, "beta_max")),
    "annealed_langevin": (_ald, (0.0, 0.01, 2.0), (None, "step_size", "sigmas")),
    "ula_step": (_ula, (0.0, 0.01, 0.0), (None, "step_size", None)),
    "mala_step": (_mala, (0.0, 0.01, 0.0), (None, "step_size", None)),
}
BAD = {"eps": 2.0, "snr": -0.1, "rtol": 0.0, "beta_max": float("inf"), "step_size": -1.0, "sigmas": 0.1}
MESSAGES = {"eps": r"eps must be in \(0, T=1.0\)", "snr": "snr must be > 0 and finite",
            "rtol": "rtol must be > 0 and finite", "beta_max": "beta_max must be > 0 and finite",
            "step_size": "step_size must be > 0 and finite",
            "sigmas": "sigmas must be positive, finite and strictly decreasing"}


_HEAVY = {"log_likelihood", "decode_latent", "ode_sample", "mala_step"}   # 11-22 s of compiles each


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY else n
                                  for n in ENTRY_POINTS])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_traced_hyperparameters_inside_a_users_jit(name):
    """All three hyper-parameters traced (arguments of the caller's jit): no Python error from a value check,
    and the result equals the eager call's."""
    fn, good, _ = ENTRY_POINTS[name]
    args = tuple(jnp.asarray(v, jnp.float32) for v in good)
    traced = jax.jit(fn)(*args)
    eager = fn(*good)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(eager), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name, position", [(n, i) for n, (_, _, names) in ENTRY_POINTS.items()
                                            for i, a in enumerate(names) if a is not None])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_bad_values_fail_with_one_message_concrete_and_traced(name, position):
    """The same rule and message whether the bad value is concrete (ValueError at call time) or traced (a
    run-time error from the compiled program, before any wrong number is returned)."""
    fn, good, names = ENTRY_POINTS[name]
    what = names[position]
    args = list(good)
    args[position] = BAD[what]
    with pytest.raises(ValueError, match=MESSAGES[what]):
        fn(*args)
    with pytest.raises(Exception, match=MESSAGES[what]):
        jax.block_until_ready(jax.jit(fn)(*(jnp.asarray(v, jnp.float32) for v in args)))


def test_messages_name_the_value_and_the_rule():
    with pytest.raises(ValueError, match=r"^eps must be in \(0, T=1.0\); got 2.0.$"):
        sj.pc_sample(KEY, SDE, SCORE, (4, 2), eps=2.0)
    with pytest.raises(ValueError, match=r"^sigma_min must be < sigma_max; got sigma_min=2.0, sigma_max=1.0.$"):
        sj.VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match=r"^unknown solver 'rk45'; valid names: \['dopri5', 'euler', 'heun', 'tsit5'\].$"):
        sj.log_likelihood(None, SDE, SCORE, X, solver="rk45")
