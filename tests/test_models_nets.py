"""Whole networks on CPU: training steps of the small configs, jit + 8-device sharding, no cross-example
ops, mixed precision, rematerialisation, class conditioning and the score_fn wrapper conventions.

Only CPU-sized models run here: the ``small/*`` configs (32x32) for the training step and "tiny" variants
(nf=8, two levels, 8x8 images) for the property checks, to keep compile times low.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_jax as sj
from sde_jax.models import get_config, get_model, get_score_fn
from sde_jax.parallel import make_data_mesh, shard_batch


# XLA's CPU backend at optimisation level 0 compiles these conv nets 2-3x faster; the tests check numbers,
# not speed.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture
def key():
    # 'rbg' keys: Flax init compiles ~10x faster than with threefry on CPU; tests only need a fixed seed.
    return jax.random.key(0, impl="rbg")


def _tiny(name, **over):
    cfg = get_config(name)
    cfg.model.update(dict(nf=8, ch_mult=(1, 2), attn_resolutions=(8,)))
    if cfg.model.name == "ddpm":
        cfg.model.nf = 32          # DDPM's GroupNorm has 32 groups
    cfg.model.update(over)
    cfg.data.image_size = 8
    return cfg


def _labels(cfg, key, b):
    """Labels in the convention of the config's training: sigma (VE continuous), 999 t (VP continuous) or
    integer levels (discrete)."""
    s = cfg.sde
    if sj.training.is_continuous(cfg) and s.name == "vesde":
        return jnp.exp(jax.random.uniform(key, (b,), minval=math.log(s.sigma_min), maxval=math.log(s.sigma_max)))
    if sj.training.is_continuous(cfg):
        return 999.0 * jax.random.uniform(key, (b,), minval=1e-3)
    return jax.random.randint(key, (b,), 0, s.N).astype(jnp.float32)


def _random_params(key, model, x, labels, scale=0.2, **kw):
    """Parameters with the model's shapes filled by one random draw (no Flax-init compile): ones + noise for
    normalisation scales, noise elsewhere. Enough for shape / invariance / equality checks."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels, **kw))
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(s.shape) for _, s in leaves]
    flat = scale * jax.random.normal(key, (sum(sizes),))
    out, i = [], 0
    for (path, s), n in zip(leaves, sizes):
        v = flat[i:i + n].reshape(s.shape)
        i += n
        name = str(path[-1])
        out.append(v + 1.0 if any(k in name for k in ("scale", "gamma", "alpha")) else v)
    return jax.tree_util.tree_unflatten(tree, out)


# --- one training step of each small config, through training.build ----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["small/ncsnpp", "small/ddpmpp", "small/ddpm", "small/ncsnv2"])
@pytest.mark.compile_bound
def test_small_config_training_step_through_build(key, name):
    """The pieces come from ``training.build(config)`` alone (SDE, network, loss with the config's labels and
    output conventions, optimizer, EMA, dropout rngs): one jitted step on a batch of 2 is finite, changes the
    parameters, and its loss equals the loss function evaluated at the initial parameters with the step's
    key (the step computes what the factory says)."""
    cfg = get_config(name)
    cfg.training.update(dict(batch_size=2, num_steps=10, num_devices=1))
    cfg.optim.update(dict(optimizer="adam", lr=2e-4, beta1=0.9, beta2=0.999, eps=1e-8, warmup=0,
                          grad_clip=1.0, ema_warmup=False))
    parts = sj.training.build(cfg)
    params = parts.init_params(key)
    state = sj.training.init_train_state(params, parts.tx)
    x0 = jax.random.uniform(jax.random.key(1), (2,) + parts.data_shape) * 2.0 - 1.0
    loss_key = jax.random.key(2)
    expected, _ = jax.jit(lambda p: parts.loss_fn(parts.make_score_fn(p, rngs=_dropout_rngs(parts, loss_key)),
                                                  _loss_key(parts, loss_key), x0))(params)
    new, metrics = jax.jit(parts.train_step)(state, x0, loss_key)      # not donated: params stay valid
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-4)
    new_leaves, old_leaves = jax.device_get((jax.tree.leaves(new.params), jax.tree.leaves(params)))
    assert all(np.all(np.isfinite(p)) for p in new_leaves)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(new_leaves, old_leaves)) > 0


def _loss_key(parts, key):
    """The loss key the train step derives at step 0 (see ``training.make_train_step``)."""
    step_key = jax.random.fold_in(key, 0)
    return jax.random.split(step_key)[0] if float(getattr(parts.model, "dropout", 0.0)) > 0 else step_key


def _dropout_rngs(parts, key):
    if not float(getattr(parts.model, "dropout", 0.0)) > 0:
        return None
    return {"dropout": jax.random.fold_in(jax.random.split(jax.random.fold_in(key, 0))[1], 0)}


# --- jit, sharding and per-example independence -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["small/ncsnpp", "small/ddpm", "small/ncsnv2"])
@pytest.mark.compile_bound
def test_jit_sharded_and_independent_of_batch_composition(key, name):
    """A batch of 8 sharded over 8 devices; each example's output depends on that example only: permuting
    the batch permutes the outputs and replacing half of the batch leaves the other half unchanged."""
    cfg = _tiny(name)
    model = get_model(cfg)
    k_x, k_l, k_p, k_o = jax.random.split(key, 4)
    x = jax.random.uniform(k_x, (8, 8, 8, 3))
    labels = _labels(cfg, k_l, 8)
    params = _random_params(k_p, model, x, labels)
    mesh = make_data_mesh(8)
    fwd = jit(model.apply)
    perm = jnp.array([3, 7, 0, 5, 1, 6, 2, 4])
    other = jax.random.uniform(k_o, (4, 8, 8, 3))

    y = fwd(params, *shard_batch((x, labels), mesh))
    y_perm = fwd(params, *shard_batch((x[perm], labels[perm]), mesh))
    y_mixed = fwd(params, *shard_batch((jnp.concatenate([x[:4], other]), labels), mesh))
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert len(y.sharding.device_set) == 8 and np.all(np.isfinite(y))
    tol = 1e-5 * float(jnp.max(jnp.abs(y)))
    np.testing.assert_allclose(y_perm, y[perm], rtol=1e-5, atol=tol)
    np.testing.assert_allclose(y_mixed[:4], y[:4], rtol=1e-5, atol=tol)


# --- mixed precision and rematerialisation ------------------------------------------------------------------
@pytest.mark.compile_bound
def test_bfloat16_compute_matches_float32(key):
    cfg = _tiny("small/ncsnpp", ch_mult=(1,))
    m32 = get_model(cfg)
    cfg.model.dtype = "bfloat16"
    m16 = get_model(cfg)
    k_x, k_l, k_p = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (2, 8, 8, 3))
    labels = _labels(cfg, k_l, 2)
    params = _random_params(k_p, m32, x, labels)

    @jit
    def both(params):
        return m32.apply(params, x, labels), m16.apply(params, x, labels)

    y32, y16 = both(params)
    assert y16.dtype == jnp.float32                    # outputs are returned in float32
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert rel < 5e-2, rel                             # bfloat16 has an 8-bit mantissa (~4e-3 per op)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_remat_gives_the_same_outputs_and_gradients(key):
    cfg = _tiny("small/ncsnpp", ch_mult=(1,))
    plain = get_model(cfg)
    cfg.model.remat = True
    remat = get_model(cfg)
    k_x, k_l, k_p = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (2, 8, 8, 3))
    labels = _labels(cfg, k_l, 2)
    params = _random_params(k_p, plain, x, labels)

    @jit
    def both(params):
        return [jax.value_and_grad(lambda p: jnp.sum(m.apply(p, x, labels) ** 2))(params) for m in (plain, remat)]

    (l1, g1), (l2, g2) = both(params)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    # Recomputation may round differently in float32: compare against the largest gradient entry.
    gmax = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g1))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * gmax), g1, g2)


# --- class conditioning ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.compile_bound
def test_class_conditional_ncsnpp(key):
    cfg = _tiny("small/ncsnpp", num_classes=3)
    model = get_model(cfg)
    k_x, k_l, k_p = jax.random.split(key, 3)
    x = jax.random.uniform(k_x, (2, 8, 8, 3))
    labels = _labels(cfg, k_l, 2)
    params = _random_params(k_p, model, x, labels, class_labels=jnp.zeros(2, jnp.int32))
    assert params["params"]["class_embed"]["embedding"].shape == (3, 32)

    @jit
    def run(params):
        return [model.apply(params, x, labels, class_labels=jnp.full((2,), c, jnp.int32)) for c in (0, 2)]

    a, b = run(params)
    assert a.shape == x.shape and not np.allclose(a, b)
    with pytest.raises(ValueError, match="class_labels"):
        jax.eval_shape(model.apply, params, x, labels)


# --- score_fn wrapper conventions ---------------------------------------------------------------------------
@pytest.mark.compile_bound
def test_ve_continuous_score_fn_uses_sigma_labels_and_the_networks_own_scaling(key):
    """VE + NCSN++ (Fourier, scale_by_sigma): label sigma(t), score = network output (it divided by sigma)."""
    cfg = _tiny("small/ncsnpp")
    sde = sj.training.build_sde(cfg.sde)
    model = get_model(cfg)
    cfg.model.scale_by_sigma = False
    raw = get_model(cfg)
    k_x, k_t, k_p = jax.random.split(key, 3)
    x = jax.random.normal(k_x, (2, 8, 8, 3))
    t = jnp.array([0.1, 0.9])
    params = _random_params(k_p, model, x, sde.sigma(t))
    score_fn = get_score_fn(sde, model, params, continuous=True)
    assert score_fn.parameterization == "score"     # the network divides by sigma itself

    @jit
    def run(params):
        return score_fn.replace(params=params)(x, t), raw.apply(params, x, sde.sigma(t))

    s, out = run(params)
    np.testing.assert_allclose(s, out / sde.sigma(t)[:, None, None, None], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.compile_bound
def test_ve_discrete_score_fn_uses_level_labels(key):
    """VE + NCSN++ (positional, discrete): label N-1-i with i = round(t (N-1)), sigma from the table."""
    cfg = _tiny("ve/cifar10_ncsnpp")
    cfg.sde.update(dict(N=10, sigma_max=5.0))
    sde = sj.VESDE(sigma_min=0.01, sigma_max=5.0, N=10)
    model = get_model(cfg)
    cfg.model.scale_by_sigma = False
    raw = get_model(cfg)
    k_x, k_p = jax.random.split(key)
    x = jax.random.normal(k_x, (2, 8, 8, 3))
    t = jnp.array([0.0, 7.0 / 9.0])                   # levels i = 0 and 7
    params = _random_params(k_p, model, x, jnp.zeros(2))
    score_fn = get_score_fn(sde, model, params, continuous=False)
    s, out = jit(lambda p: (score_fn.replace(params=p)(x, t), raw.apply(p, x, jnp.array([9.0, 2.0]))))(params)
    sig = np.asarray(sde.discrete_sigmas)[[0, 7]]
    np.testing.assert_allclose(s, out / sig[:, None, None, None], rtol=1e-5)
    with pytest.raises(ValueError, match="sigma table"):
        get_score_fn(sj.VESDE(sigma_min=0.01, sigma_max=50.0, N=10), model, params, continuous=False)


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_vp_score_fn_is_minus_noise_prediction_over_std_with_999t_labels(key, sde_name):
    cfg = _tiny("small/ddpmpp")
    sde = sj.VPSDE() if sde_name == "vp" else sj.SubVPSDE()
    model = get_model(cfg)
    k_x, k_p = jax.random.split(key)
    x = jax.random.normal(k_x, (2, 8, 8, 3))
    t = jnp.array([0.05, 0.7])
    params = _random_params(k_p, model, x, 999.0 * t)
    score_fn = get_score_fn(sde, model, params, continuous=True)
    assert score_fn.parameterization == "noise"

    @jit
    def run(params):
        return score_fn.replace(params=params)(x, t), model.apply(params, x, 999.0 * t)

    s, out = run(params)
    std = sde.marginal_std(t)[:, None, None, None]
    np.testing.assert_allclose(s, -out / std, rtol=1e-5)
    with pytest.raises(ValueError, match="scale_by_sigma"):
        get_score_fn(sde, get_model(_tiny("small/ncsnpp")), params)


def test_factory_refuses_to_rescale_a_network_that_scales_by_sigma():
    """A scale_by_sigma network's output is the score: the default picks 'score' (given the module or its bound
    apply), and an explicit 'scaled' (the VE default for other networks) would divide twice, so it raises."""
    for name in ("ve/cifar10_ncsnpp_continuous", "ve/ncsnv2/cifar10"):
        cfg = _tiny(name)
        sde = sj.training.build_sde(cfg.sde)
        model = get_model(cfg)
        continuous = sj.training.is_continuous(cfg)
        for m in (model, model.apply):
            assert get_score_fn(sde, m, None, continuous=continuous).parameterization == "score"
            with pytest.raises(ValueError, match="would rescale it again"):
                get_score_fn(sde, m, None, continuous=continuous, parameterization="scaled")
    mlp = sj.models.ScoreMLP()
    assert get_score_fn(sj.VESDE(), mlp, None).parameterization == "scaled"
