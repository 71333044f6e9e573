"""``training.build``: the one place a config becomes a run's pieces, for the toy MLP and every paper network.

Every shipped paper config builds (real ``build``, abstract parameters: see test_models_configs.py, which
counts their parameters through ``build``); one abstract training step per network family; the small configs'
real training steps are in test_models_nets.py; a VE paper config trains and samples end to end here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax import models, training
from experiments.toy2d import get_config as toy_config


@pytest.mark.parametrize("name", models.config_names())
def test_every_paper_config_builds_with_the_papers_conventions(name):
    """``build`` accepts every shipped config as is (the paper's training/optim defaults are in it) and picks
    the paper's conventions: the paper's VE networks all divide by sigma themselves (NCSN++ and DDPM with
    scale_by_sigma, NCSNv2), so their output is the score; VP/sub-VP networks predict the noise; discrete
    losses get level labels."""
    cfg = models.get_config(name)
    cfg.training.num_devices = 1
    parts = training.build(cfg)
    score_fn = parts.make_score_fn(None)
    assert parts.data_shape == (cfg.data.image_size,) * 2 + (3,)
    assert score_fn.parameterization == ("score" if cfg.sde.name == "vesde" else "noise")
    assert score_fn.continuous == (cfg.training.loss == "dsm")
    assert parts.sde.N == cfg.sde.N and type(parts.sde).__name__.lower() == cfg.sde.name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ve/cifar10_ncsnpp_continuous", "vp/ddpm/cifar10", "ve/ncsnv2/cifar10"])
def test_abstract_training_step_of_each_paper_network_family(name):
    """One training step of a paper-size network traced abstractly (``jax.eval_shape``: shapes and dtypes,
    no compute): the state keeps its structure, dtypes and shapes, the loss is a float32 scalar."""
    cfg = models.get_config(name)
    cfg.training.update(dict(batch_size=8, num_devices=1))
    parts = training.build(cfg)
    params = jax.eval_shape(parts.init_params, jax.random.key(0))
    state = jax.eval_shape(lambda p: training.init_train_state(p, parts.tx), params)
    batch = jax.ShapeDtypeStruct((8,) + parts.data_shape, jnp.float32)
    new, metrics = jax.eval_shape(parts.train_step, state, batch, jax.random.key(0))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert all(a.shape == b.shape and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)))
    assert metrics["loss"].shape == () and metrics["loss"].dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.compile_bound
def test_toy_mlp_training_step_through_build():
    """The toy MLP from the same registry and factory: one real step equals the loss at the initial
    parameters, and the parameters move."""
    cfg = toy_config()
    cfg.model.update(dict(hidden=16, num_layers=1, embed_dim=8))
    cfg.training.update(dict(batch_size=16, num_devices=1))
    parts = training.build(cfg, data_shape=(2,))
    params = parts.init_params(jax.random.key(0))
    state = training.init_train_state(params, parts.tx)
    x0 = jax.random.normal(jax.random.key(1), (16, 2))
    key = jax.random.key(2)
    expected = parts.loss_fn(parts.make_score_fn(params), jax.random.fold_in(key, 0), x0)[0]
    new, metrics = jax.jit(parts.train_step)(jax.tree.map(jnp.copy, state), x0, key)
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    assert int(new.step) == 1 and not np.allclose(new.params["params"]["Dense_0"]["kernel"],
                                                   params["params"]["Dense_0"]["kernel"])


@pytest.mark.slow
@pytest.mark.compile_bound
def test_ve_paper_config_trains_and_samples_through_the_factory(tmp_path):
    """``small/ncsnpp`` (the paper's VE NCSN++ continuous config at CPU size): ``build`` -> ``fit`` (2 steps on a
    fixed batch, checkpointed) -> the EMA score function -> ``pc_sample`` (reverse diffusion + Langevin at
    N = 3) and ``ode_sample`` (Euler, 3 steps). The score function is the network's output itself
    (``scale_by_sigma``) conditioned on ``sigma(t)``, the samples are finite with the data's shape, and the
    honest NFE is 2 N (PC) and N (ODE)."""
    cfg = models.get_config("small/ncsnpp")
    cfg.data.image_size = 16
    cfg.model.update(dict(nf=16, ch_mult=(1, 2), attn_resolutions=(8,)))
    cfg.training.update(dict(batch_size=2, num_devices=1))
    parts = training.build(cfg, str(tmp_path))
    state = training.init_train_state(parts.init_params(jax.random.key(0, impl="rbg")), parts.tx)
    data = jax.random.uniform(jax.random.key(1), (4,) + parts.data_shape)
    state, history = training.fit(state, parts.train_step, training.array_batch_fn(data, 2), jax.random.key(2),
                                  num_steps=2, workdir=str(tmp_path), steps_per_call=2, progress=False)
    assert int(state.step) == 2 and np.all(np.isfinite(history["loss"]))
    score_fn = parts.make_score_fn(state.ema_params)
    assert (score_fn.parameterization, score_fn.continuous) == ("score", True)
    t = jnp.full((2,), 0.5)
    x = jax.random.normal(jax.random.key(3), (2,) + parts.data_shape)
    got, want = jax.jit(lambda p: (parts.make_score_fn(p)(x, t), parts.model.apply(p, x, parts.sde.sigma(t))))(
        state.ema_params)                                  # one program, not the network op by op
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sde = parts.sde.replace(N=3)
    samples, nfe = sj.pc_sample(jax.random.key(4), sde, parts.make_score_fn(state.ema_params), (2,) + parts.data_shape)
    assert samples.shape == (2,) + parts.data_shape and np.all(np.isfinite(samples)) and nfe == 6
    ode, nfe = sj.ode_sample(jax.random.key(5), parts.sde, score_fn, (2,) + parts.data_shape, solver="euler",
                             num_steps=3, eps=1e-5)
    assert np.all(np.isfinite(ode)) and int(nfe) == 3
