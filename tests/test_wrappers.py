"""The score-function factory: the paper's label and scaling conventions per SDE (the SDE classes'
``time_label``/``label_std``), the conventions chosen from the network, and no recompilation."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.losses import discrete_times
from sde_jax.models import ScoreMLP, get_score_fn


def time_labels(sde, t, continuous=True):
    return sde.time_label(t, continuous=continuous)


def noise_std(sde, t, continuous=True):
    return sde.label_std(t, continuous=continuous)


def _echo(params, x, labels, **kwargs):
    """A fake network: out = params * x + labels (so labels and scaling are visible)."""
    return params * x + labels[:, None]


VE = sj.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
VP = sj.VPSDE(N=1000)
SUBVP = sj.SubVPSDE()


def test_continuous_labels_and_stds():
    t = jnp.array([1e-3, 0.3, 1.0])
    np.testing.assert_allclose(time_labels(VE, t), 0.01 * (50 / 0.01) ** t, rtol=1e-5)      # sigma(t)
    np.testing.assert_allclose(noise_std(VE, t), 0.01 * (50 / 0.01) ** t, rtol=1e-5)
    for sde in (VP, SUBVP):
        np.testing.assert_allclose(time_labels(sde, t), 999 * t, rtol=1e-6)                   # 999 t
        np.testing.assert_allclose(noise_std(sde, t), sde.marginal_std(t), rtol=1e-6)


def test_discrete_labels_round_trip_every_level():
    i = jnp.arange(1000)
    t = discrete_times(VP, i).astype(jnp.float32)
    np.testing.assert_array_equal(time_labels(VP, t, continuous=False), i)                   # level i
    np.testing.assert_allclose(noise_std(VP, t, continuous=False), jnp.sqrt(1 - VP.alphas_cumprod), rtol=1e-6)
    np.testing.assert_array_equal(time_labels(VE, t, continuous=False), 999 - i)            # NCSN: 0 = sigma_max
    np.testing.assert_allclose(noise_std(VE, t, continuous=False), VE.discrete_sigmas, rtol=1e-6)


@pytest.mark.parametrize("parameterization,expected", [
    ("score", lambda out, std: out), ("noise", lambda out, std: -out / std), ("scaled", lambda out, std: out / std)])
@pytest.mark.parametrize("sde", [VE, VP, SUBVP], ids=["ve", "vp", "subvp"])
def test_parameterizations(sde, parameterization, expected):
    x = jnp.arange(8.0).reshape(4, 2)
    t = jnp.array([0.1, 0.4, 0.7, 1.0])
    score = get_score_fn(sde, _echo, 2.0, parameterization=parameterization)(x, t)
    out = 2.0 * x + time_labels(sde, t)[:, None]
    np.testing.assert_allclose(score, expected(out, noise_std(sde, t)[:, None]), rtol=1e-6)


def test_defaults_and_errors():
    assert VE.paper_parameterization == "scaled"
    assert VP.paper_parameterization == SUBVP.paper_parameterization == "noise"
    assert get_score_fn(VP, _echo, 1.0).parameterization == "noise"
    assert get_score_fn(VE, _echo, 1.0).parameterization == "scaled"
    with pytest.raises(ValueError, match="not defined for SubVPSDE"):
        get_score_fn(SUBVP, _echo, 1.0, continuous=False)
    with pytest.raises(ValueError, match=r"unknown parameterization 'eps'; valid names: \['edm', 'noise', 'scaled', 'score'\]"):
        get_score_fn(VP, _echo, 1.0, parameterization="eps")
    with pytest.raises(ValueError, match="t must have shape"):
        get_score_fn(VP, _echo, 1.0)(jnp.ones((4, 2)), jnp.ones((3,)))


def test_apply_kwargs_are_forwarded():
    seen = {}

    def apply_fn(params, x, labels, *, train):
        seen["train"] = train
        return x

    get_score_fn(VP, apply_fn, None, parameterization="score", train=False)(jnp.ones((2, 2)), jnp.ones(2))
    assert seen == {"train": False}


@pytest.mark.slow
@pytest.mark.compile_bound
def test_fresh_wrapper_does_not_recompile():
    model = ScoreMLP(hidden=16, num_layers=1, embed_dim=8)
    x, t = jnp.ones((4, 2)), jnp.full((4,), 0.5)
    p1 = model.init(jax.random.key(0), x, t)
    p2 = jax.tree.map(lambda a: a + 1.0, p1)
    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply(score_fn, x, t):
        return score_fn(x, t)

    s1 = apply(get_score_fn(VP, model, p1), x, t)
    s2 = apply(get_score_fn(VP, model.apply, p2), x, t)   # the module or its bound apply: the same program
    assert not np.allclose(s1, s2)
    np.testing.assert_allclose(s1, get_score_fn(VP, model, p1)(x, t), rtol=1e-5)


def test_rngs_are_forwarded_and_traced():
    def apply_fn(params, x, labels, *, rngs):
        return x + jax.random.normal(rngs["dropout"], x.shape)

    x, t = jnp.zeros((3, 2)), jnp.full((3,), 0.5)
    traces = []

    @jax.jit
    def apply(score_fn):
        traces.append(1)
        return score_fn(x, t)

    a = apply(get_score_fn(VP, apply_fn, None, parameterization="score", rngs={"dropout": jax.random.key(0)}))
    b = apply(get_score_fn(VP, apply_fn, None, parameterization="score", rngs={"dropout": jax.random.key(1)}))
    assert len(traces) == 1 and not np.allclose(a, b)
