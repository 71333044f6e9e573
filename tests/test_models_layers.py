"""Embeddings, attention, residual blocks and NCSNv2 normalisations against closed forms and invariances."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.models.attention import AttnBlock
from sde_jax.models.embeddings import GaussianFourierProjection, sinusoidal_embedding
from sde_jax.models.layers import get_act, group_norm
from sde_jax.models.normalization import GroupNorm, InstanceNorm2dPlus, get_normalization
from sde_jax.models.resnet import ResnetBlockBigGAN, ResnetBlockDDPM


# XLA's CPU backend at optimisation level 0 compiles 2-3x faster; these tests check numbers, not speed.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture
def key():
    """Parameter-init key. The 'rbg' implementation compiles ~10x faster than threefry for Flax init on
    CPU (seconds per module); the tests only need a fixed seed, not threefry's stream."""
    return jax.random.key(0, impl="rbg")


@pytest.mark.parametrize("dim", [8, 9, 128])
def test_sinusoidal_embedding_closed_form(x64, dim):
    t = jnp.array([0.0, 1.0, 17.5, 999.0])
    e = np.asarray(sinusoidal_embedding(t, dim))
    half = dim // 2
    ref = np.zeros((4, dim))
    for b, tb in enumerate(np.asarray(t)):
        for i in range(half):
            w = math.exp(-i * math.log(10000.0) / (half - 1))
            ref[b, i] = math.sin(tb * w)
            ref[b, half + i] = math.cos(tb * w)
    np.testing.assert_allclose(e, ref, atol=2e-4)   # float32 arguments up to 999
    assert e.shape == (4, dim) and (dim % 2 == 0 or np.all(e[:, -1] == 0))


def test_gaussian_fourier_projection_closed_form(key):
    m = GaussianFourierProjection(embedding_size=16, scale=16.0)
    x = jnp.log(jnp.array([0.01, 1.0, 50.0]))
    variables = jit(m.init)(key, x)
    w = np.asarray(variables["params"]["W"])
    ref = np.concatenate([np.sin(2 * np.pi * np.asarray(x)[:, None] * w), np.cos(2 * np.pi * np.asarray(x)[:, None] * w)], 1)
    # float32 arguments 2 pi W log(sigma) reach ~1e3, so ~1e-4 absolute rounding in the phase.
    np.testing.assert_allclose(m.apply(variables, x), ref, atol=1e-3)
    assert 8.0 < np.std(w) < 24.0                                          # W ~ N(0, 16^2)
    grads = jax.grad(lambda v: m.apply(v, x).sum())(variables)            # W is not trained
    assert np.all(np.asarray(grads["params"]["W"]) == 0)


def _batch_permutation_check(module, variables, x, *args):
    """``f(x)[perm] == f(x[perm])``: no statistic or mixing across the batch. One jitted call."""
    perm = jnp.array([2, 0, 3, 1])

    @jit
    def both(v, x, *args):
        return module.apply(v, x, *args), module.apply(v, x[perm], *[a[perm] for a in args])

    y, y_perm = both(variables, x, *args)
    np.testing.assert_allclose(y[perm], y_perm, rtol=1e-5, atol=1e-5)
    return y


@pytest.mark.compile_bound
def test_attention_block_shape_and_batch_permutation(key):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (4, 8, 8, 8))
    m = AttnBlock(skip_rescale=True, init_scale=1.0)
    v = jit(m.init)(k2, x)
    y = _batch_permutation_check(m, v, x)
    assert y.shape == x.shape
    # init_scale = 0 (the paper's default): the block starts as the identity up to 1e-10-scale weights.
    m0 = AttnBlock()
    np.testing.assert_allclose(jit(lambda k, x: m0.apply(m0.init(k, x), x))(k2, x), x, atol=1e-4)


@pytest.mark.parametrize("block,kwargs,out_hw,out_c", [
    (ResnetBlockDDPM, dict(out_ch=16), 8, 16),
    (ResnetBlockDDPM, dict(out_ch=16, conv_shortcut=True, skip_rescale=True), 8, 16),
    (ResnetBlockBigGAN, dict(down=True, fir=True), 4, 8),
    (ResnetBlockBigGAN, dict(up=True, fir=True, out_ch=4), 16, 4),
    (ResnetBlockBigGAN, dict(down=True, fir=False), 4, 8),
])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_resnet_blocks_shapes_and_batch_permutation(key, block, kwargs, out_hw, out_c):
    k1, k2, k3 = jax.random.split(key, 3)
    x = jax.random.normal(k1, (4, 8, 8, 8))
    temb = jax.random.normal(k2, (4, 16))
    m = block(init_scale=1.0, **kwargs)
    v = jit(m.init)(k3, x, temb)
    y = _batch_permutation_check(m, v, x, temb)
    assert y.shape == (4, out_hw, out_hw, out_c)


@pytest.mark.compile_bound
def test_dropout_only_in_training(key):
    x = jax.random.normal(key, (2, 4, 4, 8))
    m = ResnetBlockDDPM(dropout=0.5, init_scale=1.0)

    @jit
    def run(k):
        v = m.init(k, x)
        return [m.apply(v, x), m.apply(v, x, None, False)] + [
            m.apply(v, x, None, True, rngs={"dropout": jax.random.fold_in(k, i)}) for i in (1, 2)]

    y, y_eval, a, b = run(key)
    np.testing.assert_array_equal(y, y_eval)
    assert not np.allclose(a, b)


@pytest.mark.compile_bound
def test_instance_norm_plus_closed_form(x64, key):
    x = jax.random.normal(key, (3, 5, 5, 4), jnp.float64) * 2.0 + jnp.arange(4.0)
    m = InstanceNorm2dPlus()
    v = jit(m.init)(key, x)
    p = jax.tree.map(np.asarray, v["params"])
    xn = np.asarray(x)
    mu = xn.mean(axis=(1, 2))
    var = xn.var(axis=(1, 2))
    mplus = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(mu.var(-1, keepdims=True) + 1e-5)
    h = (xn - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) + mplus[:, None, None] * p["alpha"]
    ref = h * p["gamma"] + p["beta"]
    np.testing.assert_allclose(m.apply(v, x), ref, atol=1e-10)


@pytest.mark.parametrize("shape, groups", [((3, 5, 7, 12), 3), ((2, 9, 8), 4), ((4, 6), 2), ((2, 4, 4, 8), 8)])
def test_group_norm_closed_form_and_flax(x64, key, shape, groups):
    """Our GroupNorm is the closed form per example and group (mean and biased variance over the pixels and the
    group's channels), and is flax.linen.GroupNorm's computation with the same parameter tree (1e-12, float64)."""
    x = 2.0 * jax.random.normal(jax.random.key(1), shape, jnp.float64) + 0.5
    m = GroupNorm(num_groups=groups)
    v = jit(m.init)(key, x)
    v = {"params": {"scale": jax.random.normal(jax.random.key(2), (shape[-1],), jnp.float64),
                    "bias": jax.random.normal(jax.random.key(3), (shape[-1],), jnp.float64)}}
    y = np.asarray(m.apply(v, x))
    xn = np.asarray(x).reshape(shape[0], -1, groups, shape[-1] // groups)
    mu, var = xn.mean(axis=(1, 3), keepdims=True), xn.var(axis=(1, 3), keepdims=True)
    ref = ((xn - mu) / np.sqrt(var + 1e-6)).reshape(shape) * np.asarray(v["params"]["scale"]) \
        + np.asarray(v["params"]["bias"])
    np.testing.assert_allclose(y, ref, atol=1e-12, rtol=0)
    flax_gn = nn.GroupNorm(num_groups=groups, epsilon=1e-6)
    assert jax.tree.map(jnp.shape, flax_gn.init(key, x)) == jax.tree.map(jnp.shape, m.init(key, x))
    np.testing.assert_allclose(y, flax_gn.apply(v, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("x_dtype, dtype", [(jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.bfloat16),
                                            (jnp.float32, jnp.bfloat16)])
def test_group_norm_dtypes_and_float32_match_flax(key, x_dtype, dtype):
    """The float32 / bfloat16 paths users run: Flax's output dtype, statistics in float32 (so a bfloat16 input
    gives the float32 answer of its values to float32 rounding), a constant input gives the bias, not NaN."""
    x = (3.0 * jax.random.normal(jax.random.key(1), (4, 8, 8, 32)) + 1.0).astype(x_dtype)
    ours, theirs = GroupNorm(num_groups=8, dtype=dtype), nn.GroupNorm(num_groups=8, epsilon=1e-6, dtype=dtype)
    v = jit(ours.init)(key, x)
    v = {"params": {"scale": 1.0 + 0.1 * jax.random.normal(jax.random.key(2), (32,)),
                    "bias": 0.1 * jax.random.normal(jax.random.key(3), (32,))}}
    y, y_flax = ours.apply(v, x), theirs.apply(v, x)
    assert y.dtype == y_flax.dtype == (dtype or jnp.float32)
    tol = 1e-5 if y.dtype == jnp.float32 else 2 ** -7 * 4   # float32 rounding / a few bfloat16 ulps at |y| <~ 4
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y_flax, np.float32), atol=tol, rtol=0)
    const = ours.apply(v, jnp.full((2, 4, 4, 32), 7.0, x_dtype))
    np.testing.assert_allclose(np.asarray(const, np.float32),
                               np.broadcast_to(np.asarray(v["params"]["bias"], np.float32), (2, 4, 4, 32)),
                               atol=tol, rtol=0)


def test_group_norm_refuses_groups_that_do_not_divide_channels(key):
    with pytest.raises(ValueError, match="5 groups do not divide the 32 channels"):
        GroupNorm(num_groups=5).init(key, jnp.zeros((1, 4, 4, 32)))
    with pytest.raises(ValueError, match=r"needs an input \[B, ..., C\]"):
        GroupNorm(num_groups=2).init(key, jnp.zeros((8,)))
    with pytest.raises(ValueError, match="do not divide 30 channels"):
        group_norm(30)                                        # min(30 // 4, 32) = 7 groups
    assert isinstance(group_norm(64), GroupNorm) and group_norm(64).num_groups == 16


@pytest.mark.parametrize("name", ["InstanceNorm", "InstanceNorm++", "VarianceNorm", "GroupNorm"])
def test_normalizations_are_per_example(key, name):
    x = jax.random.normal(key, (4, 6, 6, 32))
    m = get_normalization(name)()
    _batch_permutation_check(m, jit(m.init)(key, x), x)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid"):
        get_normalization("BatchNorm")
    with pytest.raises(ValueError, match="swish"):
        get_act("gelu")
