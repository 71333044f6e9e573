"""Paper configs: parameter counts equal the paper code's, output shapes, registry and config errors.

Paper-size models are never run here: counts and shapes come from ``jax.eval_shape`` (tracing only).
"""
import json

import jax
import jax.numpy as jnp
import pytest

from sde_jax.models import config_names, count_params, get_config, get_model, init_model, model_names

# Parameters of the paper's model for each config, counted by instantiating yang-song/score_sde_pytorch's
# model classes with the same config and summing ``p.numel()`` over ``model.parameters()`` (torch 2.13,
# CPU). The JAX and PyTorch versions of the paper code agree (e.g. small/ncsnpp: 1,284,067 in both).
PAPER_COUNTS = {
    "small/ddpm": 1_097_187,
    "small/ddpmpp": 1_260_547,
    "small/ncsnpp": 1_284_067,
    "small/ncsnv2": 466_451,
    "subvp/cifar10_ddpm_continuous": 35_218_947,
    "subvp/cifar10_ddpmpp_continuous": 61_804_419,
    "subvp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "subvp/cifar10_ncsnpp_continuous": 62_693_251,
    "subvp/cifar10_ncsnpp_deep_continuous": 107_521_411,
    "ve/bedroom_ncsnpp_continuous": 65_574_549,
    "ve/celeba_ncsnpp": 62_693_251,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_549,
    "ve/celebahq_ncsnpp_continuous": 105_785_896,
    "ve/church_ncsnpp_continuous": 65_574_549,
    "ve/cifar10_ddpm": 35_218_947,
    "ve/cifar10_ncsnpp": 62_693_251,
    "ve/cifar10_ncsnpp_continuous": 62_758_915,
    "ve/cifar10_ncsnpp_deep_continuous": 107_587_075,
    "ve/ffhq_256_ncsnpp_continuous": 65_574_549,
    "ve/ffhq_ncsnpp_continuous": 105_785_896,
    "ve/ncsnv2/bedroom": 83_445_379,
    "ve/ncsnv2/celeba": 29_694_083,
    "ve/ncsnv2/cifar10": 29_694_083,
    "vp/cifar10_ddpmpp": 61_804_419,
    "vp/cifar10_ddpmpp_continuous": 61_804_419,
    "vp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "vp/cifar10_ncsnpp_continuous": 62_693_251,
    "vp/cifar10_ncsnpp_deep_continuous": 107_521_411,
    "vp/ddpm/celebahq": 111_569_923,
    "vp/ddpm/church": 111_569_923,
    "vp/ddpm/cifar10": 35_218_947,
    "vp/ddpm/cifar10_continuous": 35_218_947,
}

_NOT_ARCHITECTURE = {"dropout", "parameterization"}
_CACHE = {}


def _abstract(name):
    """(parameter count, output shape) of a config's model, via jax.eval_shape; cached per architecture."""
    cfg = get_config(name)
    arch = json.dumps([{k: v for k, v in cfg.model.to_dict().items() if k not in _NOT_ARCHITECTURE},
                       cfg.data.image_size, cfg.data.num_channels], sort_keys=True, default=str)
    if arch not in _CACHE:
        model = get_model(cfg)
        s = cfg.data.image_size
        x = jax.ShapeDtypeStruct((2, s, s, cfg.data.num_channels), jnp.float32)
        labels = jax.ShapeDtypeStruct((2,), jnp.float32)
        out, variables = jax.eval_shape(lambda k, x, l: model.init_with_output(k, x, l), jax.random.key(0), x, labels)
        _CACHE[arch] = (count_params(variables), out.shape, out.dtype)
    return _CACHE[arch]


def test_every_shipped_config_has_a_paper_count():
    assert sorted(PAPER_COUNTS) == config_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_count_equals_paper_code_and_output_shape(name):
    n, shape, dtype = _abstract(name)
    assert n == PAPER_COUNTS[name]
    cfg = get_config(name)
    assert shape == (2, cfg.data.image_size, cfg.data.image_size, cfg.data.num_channels)
    assert dtype == jnp.float32


def test_init_model_abstract_and_default_input_shape():
    model, variables = init_model(jax.random.key(0), get_config("ve/cifar10_ncsnpp_continuous"), abstract=True)
    assert count_params(variables) == PAPER_COUNTS["ve/cifar10_ncsnpp_continuous"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_init_model_under_a_callers_trace():
    """``init_model`` inside a caller's ``jax.jit`` (a traced key) becomes part of that program (its own
    compile-option path applies only to concrete keys) and gives the abstract init's shapes."""
    cfg = get_config("small/ncsnpp")
    traced = jax.eval_shape(jax.jit(lambda k: init_model(k, cfg)[1]), jax.random.key(0))
    _, abstract = init_model(jax.random.key(0), cfg, abstract=True)
    assert jax.tree.structure(traced) == jax.tree.structure(abstract)
    assert [v.shape for v in jax.tree.leaves(traced)] == [v.shape for v in jax.tree.leaves(abstract)]


def test_bfloat16_config_keeps_float32_parameters():
    cfg = get_config("small/ncsnpp")
    cfg.model.dtype = "bfloat16"
    _, variables = init_model(jax.random.key(0), cfg, abstract=True)
    assert count_params(variables) == PAPER_COUNTS["small/ncsnpp"]
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_config_twins_have_the_paper_values():
    c = get_config("ve/cifar10_ncsnpp_continuous")
    m = c.model
    assert (m.name, m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions) == ("ncsnpp", 128, (1, 2, 2, 2), 4, (16,))
    assert (m.fir, m.fir_kernel, m.resblock_type, m.progressive, m.progressive_input) == (
        True, (1, 3, 3, 1), "biggan", "none", "residual")
    assert (m.embedding_type, m.fourier_scale, m.scale_by_sigma, c.optim.ema_rate) == ("fourier", 16.0, True, 0.999)
    assert (c.sde.name, c.sde.sigma_min, c.sde.sigma_max, c.sde.N) == ("vesde", 0.01, 50.0, 1000)
    assert (c.training.loss, c.data.centered) == ("dsm", False)
    assert get_config("ve/cifar10_ncsnpp").training.loss == "smld"
    assert get_config("vp/ddpm/cifar10").training.loss == "ddpm"
    b = get_config("ve/ncsnv2/bedroom")
    assert (b.sde.sigma_max, b.sde.N, b.optim.ema_rate, b.model.name) == (190.0, 1086, 0.9999, "ncsnv2_128")
    v = get_config("vp/cifar10_ddpmpp_continuous")
    assert (v.model.fir, v.model.progressive_input, v.model.embedding_type, v.model.scale_by_sigma) == (
        False, "none", "positional", False)
    assert v.data.centered


def test_unknown_names_raise_with_the_valid_list():
    with pytest.raises(ValueError, match="ve/cifar10_ncsnpp_continuous"):
        get_config("ve/cifar10_ncsnpp_continous")
    cfg = get_config("small/ncsnpp")
    cfg.model.name = "ncsnpp3"
    with pytest.raises(ValueError, match="ncsnv2_64"):
        get_model(cfg)
    assert set(model_names()) == {"mlp", "ncsnpp", "ddpm", "ncsnv2_64", "ncsnv2_128", "ncsnv2_256", "mlp_classifier",
                                  "wideresnet"}


@pytest.mark.parametrize("field,value,match", [
    ("progressive", "skip", "progressive"),
    ("resblock_type", "wide", "resblock_type"),
    ("embedding_type", "learned", "embedding_type"),
    ("progressive_combine", "mul", "progressive_combine"),
    ("nonlinearity", "gelu", "nonlinearity"),
])
def test_bad_model_values_raise(field, value, match):
    cfg = get_config("small/ncsnpp")
    cfg.model[field] = value
    model = get_model(cfg)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(model.init, jax.random.key(0), x, jax.ShapeDtypeStruct((1,), jnp.float32))


def test_resolution_not_divisible_and_bad_labels_raise():
    model = get_model(get_config("small/ncsnpp"))
    labels = jax.ShapeDtypeStruct((1,), jnp.float32)
    with pytest.raises(ValueError, match="not divisible"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 30, 30, 3), jnp.float32), labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32), labels)


def test_fourier_embedding_needs_continuous_training():
    """A sigma-conditioned (Fourier) NCSN++ cannot take the discrete SMLD loss's level labels: ``build``
    refuses the config before compiling anything."""
    from sde_jax import training

    cfg = get_config("ve/cifar10_ncsnpp_continuous")
    cfg.training.loss = "smld"
    cfg.training.batch_size = 8
    cfg.training.num_steps = 10
    cfg.optim.update(dict(optimizer="adam", lr=2e-4, beta1=0.9, eps=1e-8, warmup=0, grad_clip=1.0))
    with pytest.raises(ValueError, match="needs continuous=True"):
        training.build(cfg)
