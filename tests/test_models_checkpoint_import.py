"""Checkpoint layouts against written-down facts, the Flax (score_sde) importer, mismatch errors, and the NCSNv2
source conventions. No PyTorch needed here (tests/test_models_checkpoint_torch.py has the PyTorch format).

Facts (tests/checkpoint_facts.py) were read off the paper's model constructors by hand; the layouts are derived
from our module tree, so agreement between the two is evidence, not a tautology.
"""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from checkpoint_facts import FIRST_LAST, SKIP, TENSORS, modules, small_config
from checkpoint_helpers import flax_checkpoint, paper_flax_tree, write_flax_checkpoint
from sde_jax import models
from sde_jax.models import checkpoint_layout, config_for_source, import_checkpoint
from sde_jax.models.normalization import InstanceNorm2dPlus
from sde_jax.models.refinenet import MSFBlock, resize_bilinear_align_corners
from test_models_configs import PAPER_COUNTS

SMALL = ["small/ncsnpp", "small/ddpmpp", "small/ddpm", "small/ncsnv2"]


# --- layouts --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMALL)
def test_torch_layout_matches_written_facts(name):
    """score_sde_pytorch layout of each small config: tensor count, total = the paper code's parameter count,
    first/last names, the exact names, shapes and order of the listed modules' tensors, and every tensor of
    module ``all_modules.<k>`` (or ``res2.0``, ...) going to the Flax module the facts pair it with."""
    layout = checkpoint_layout(name, "score_sde_pytorch")
    n_tensors, n_scalars, blocks = TENSORS[name]
    assert len(layout) == n_tensors
    assert sum(math.prod(e.shape) for e in layout) == n_scalars
    assert (layout[0].name, layout[-1].name) == FIRST_LAST[name]
    for prefix, facts in blocks.items():
        assert [(e.name, e.shape) for e in layout if e.name == prefix or e.name.startswith(prefix + ".")] == facts
    for prefix, _, ours, _ in modules(name):
        targets = {e.path[0] for e in layout if e.name.startswith(prefix + ".")}
        assert targets <= {ours}, (prefix, targets, ours)
    assert len({e.path for e in layout}) == len(layout)
    assert [e.name for e in layout if not e.trainable] == (["all_modules.0.W"] if name == "small/ncsnpp" else [])


@pytest.mark.parametrize("name", SMALL + [SKIP])
def test_flax_layout_top_level_names_match_facts(name):
    """score_sde (Flax) layout: the paper's auto-name of each top-level module (class name + per-class count in
    call order, from the facts) holds exactly the tensors of the module of ours the facts pair it with."""
    cfg = small_config(name)
    layout = checkpoint_layout(cfg, "score_sde_flax")
    pairs = {theirs: ours for _, _, ours, theirs in modules(name)}
    for e in layout:
        assert pairs[e.name.split("/")[0]] == e.path[0], e
    assert len({e.path for e in layout}) == len(layout)


# One paper config per distinct code path of the layouts (depth and width only repeat blocks): NCSN++ with
# Fourier/positional embeddings and the residual input pyramid (32 and 64 px), the 256 and 1024 px NCSN++ with
# output_skip/input_skip pyramids, DDPM++, DDPM (32 and 256 px, with and without scale_by_sigma), NCSNv2 64/128.
PAPER_SIZE = ["ve/cifar10_ncsnpp_continuous", "vp/cifar10_ncsnpp_continuous", "ve/celeba_ncsnpp",
              "ve/bedroom_ncsnpp_continuous", "ve/ffhq_ncsnpp_continuous", "subvp/cifar10_ddpmpp_continuous",
              "ve/cifar10_ddpm", "vp/ddpm/church", "ve/ncsnv2/cifar10", "ve/ncsnv2/bedroom"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_SIZE)
def test_paper_size_layouts_cover_every_parameter_once(name):
    """Paper-size configs, both sources, abstractly (tracing only): one entry per parameter, unique names, sizes
    summing to the paper code's parameter count (Flax ncsnv2_64 excepted: the JAX code's refine widths differ,
    sde_jax/models/ncsnv2.py); the PyTorch layout's first and last tensors are the embedding and the output conv."""
    for source in models.SOURCES:
        cfg = config_for_source(name, source)
        layout = checkpoint_layout(cfg, source)
        assert len({e.name for e in layout}) == len({e.path for e in layout}) == len(layout)
        if not (source == "score_sde_flax" and cfg.model.name == "ncsnv2_64"):
            assert sum(math.prod(e.shape) for e in layout) == PAPER_COUNTS[name], source
    torch_layout = checkpoint_layout(name, "score_sde_pytorch")
    assert torch_layout[0].name in ("all_modules.0.W", "all_modules.0.weight", "begin_conv.weight")
    assert torch_layout[-1].name.endswith((".bias", "crp.convs.1.weight"))


# --- the Flax (score_sde) format ------------------------------------------------------------------------------
def _assert_same(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == jnp.float32 and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ["small/ncsnpp", "small/ddpm", "small/ncsnv2",
                                  pytest.param("small/ddpmpp", marks=pytest.mark.slow),
                                  pytest.param(SKIP, marks=pytest.mark.slow)])
def test_flax_checkpoint_imports_to_the_same_parameters(tmp_path, name):
    """A ``checkpoint_<N>`` in the paper's State layout, written with the paper's Flax names (renamed by the
    test from the facts), imports to exactly our parameters: ``weights='model'`` from ``optimizer.target``,
    ``'ema'`` from ``params_ema`` (distinct random values); a directory means its latest checkpoint."""
    cfg, path, model_vars, ema_vars = flax_checkpoint(tmp_path, name)
    got_model = import_checkpoint(path, cfg, source="score_sde_flax", weights="model")
    got_ema, got_cfg = import_checkpoint(os.path.dirname(path), name if name != SKIP else cfg,
                                         source="score_sde_flax", return_config=True)
    _assert_same(got_model, model_vars)
    _assert_same(got_ema, ema_vars)
    assert got_cfg.model.to_dict() == cfg.model.to_dict()


def test_flax_ncsnv2_64_has_the_jax_code_refine_widths():
    """The paper's JAX ncsnv2_64 refines layer 2 at 2 nf (PyTorch port: nf): its third refine block's CRP conv
    is [3, 3, 2 nf, 2 nf] = [3, 3, 32, 32] for small/ncsnv2 (nf=16)."""
    shapes = {e.name: e.shape for e in checkpoint_layout("small/ncsnv2", "score_sde_flax")}
    assert shapes["RefineBlock_2/CRPBlock_0/Conv_0/kernel"] == (3, 3, 32, 32)
    torch_shapes = {e.name: e.shape for e in checkpoint_layout("small/ncsnv2", "score_sde_pytorch")}
    assert torch_shapes["refine3.crp.convs.0.weight"] == (16, 16, 3, 3)


def test_flax_names_that_do_not_map_fail_with_the_leftovers(tmp_path):
    """A tensor the model has no place for is listed as a leftover; a tensor the model needs is named missing."""
    cfg, path, model_vars, _ = flax_checkpoint(tmp_path, "small/ncsnpp")
    tree = paper_flax_tree(model_vars["params"], "small/ncsnpp")
    tree["Dense_7"] = {"kernel": np.zeros((4, 4), np.float32)}
    del tree["AttnBlockpp_1"]["NIN_2"]["b"]
    write_flax_checkpoint(str(tmp_path / "bad"), tree, tree)
    with pytest.raises(ValueError) as e:
        import_checkpoint(str(tmp_path / "bad"), cfg, source="score_sde_flax", weights="model")
    msg = str(e.value)
    assert "'AttnBlockpp_1/NIN_2/b': checkpoint shape absent" in msg
    assert "leftovers" in msg and "'Dense_7/kernel'" in msg and "1 missing" in msg


def test_config_checkpoint_mismatch_names_first_parameter_and_both_shapes(tmp_path):
    """Wrong size (nf 32 checkpoint, nf 64 config): the first tensor that does not fit, with both shapes. Wrong
    architecture (an NCSN++ checkpoint for the DDPM++ config): the first misfit (the Fourier embedding's 64
    features vs the positional embedding's 32 feed the first dense layer) and the leftovers."""
    _, path, _, _ = flax_checkpoint(tmp_path, "small/ncsnpp")
    bigger = models.get_config("small/ncsnpp")
    bigger.model.nf = 64
    with pytest.raises(ValueError, match=r"does not fit config 'ncsnpp'.*'AttnBlockpp_0/GroupNorm_0/bias': "
                                         r"checkpoint shape \(64,\), the config's model expects \(128,\)"):
        import_checkpoint(path, bigger, source="score_sde_flax")
    with pytest.raises(ValueError, match=r"config 'small/ddpmpp'. First parameter that does not fit: 'Dense_0/kernel': "
                                         r"checkpoint shape \(64, 128\), the config's model expects \(32, 128\).*"
                                         r"leftovers.*'GaussianFourierProjection_0/W'"):
        import_checkpoint(path, "small/ddpmpp", source="score_sde_flax")


def test_bad_arguments_and_files_raise_clear_errors(tmp_path):
    _, path, _, _ = flax_checkpoint(tmp_path, "small/ddpm")
    with pytest.raises(ValueError, match=r"source must be one of \['score_sde_pytorch', 'score_sde_flax'\]; "
                                         r"got 'jax'"):
        import_checkpoint(path, "small/ddpm", source="jax")
    with pytest.raises(ValueError, match=r"weights must be one of \['ema', 'model'\]; got 'best'"):
        import_checkpoint(path, "small/ddpm", source="score_sde_flax", weights="best")
    with pytest.raises(TypeError, match="config must be a config name"):
        import_checkpoint(path, {"model": {}}, source="score_sde_flax")
    with pytest.raises(ValueError, match="unknown model config 'small/unet'"):
        import_checkpoint(path, "small/unet", source="score_sde_flax")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        import_checkpoint(str(tmp_path / "nope"), "small/ddpm", source="score_sde_flax")
    with pytest.raises(FileNotFoundError, match="no checkpoint_<N> file"):
        import_checkpoint(str(tmp_path), "small/ddpm", source="score_sde_flax")
    junk = tmp_path / "checkpoint_3"
    junk.write_bytes(b"\x00not msgpack")
    with pytest.raises(ValueError, match="not a Flax msgpack checkpoint|expected the paper's State"):
        import_checkpoint(str(junk), "small/ddpm", source="score_sde_flax")


def test_models_without_a_paper_counterpart_are_refused():
    cfg = models.get_config("small/ddpmpp")
    cfg.model.num_classes = 10
    with pytest.raises(ValueError, match="no counterpart in the paper's networks"):
        checkpoint_layout(cfg, "score_sde_flax")
    cfg = models.get_config("small/ddpm")
    cfg.model.conditional = False
    with pytest.raises(ValueError, match="conditional=False"):
        checkpoint_layout(cfg, "score_sde_pytorch")
    cfg = models.get_config("small/ncsnv2")
    cfg.model.update(dict(normalization="InstanceNorm", unbiased_channel_var=False))
    with pytest.raises(ValueError, match="InstanceNorm2d has no parameters that match ours"):
        checkpoint_layout(cfg, "score_sde_pytorch")


def test_ncsnv2_variance_norm_layout():
    """NCSNv2 with VarianceNorm (PyTorch: one per-channel ``alpha``): ``normalizer.alpha`` (C,) -> our ``scale``
    (1, 1, 1, C); config_for_source leaves unbiased_channel_var off for norms other than InstanceNorm++."""
    cfg = models.get_config("small/ncsnv2")
    cfg.model.normalization = "VarianceNorm"
    cfg = config_for_source(cfg, "score_sde_pytorch")
    entries = {e.name: e for e in checkpoint_layout(cfg, "score_sde_pytorch")}
    e = entries["normalizer.alpha"]
    assert (e.shape, e.path, e.transform) == ((16,), ("VarianceNorm2d_0", "scale"), "channel")
    assert "normalizer.gamma" not in entries and entries["res2.0.normalize1.alpha"].shape == (16,)


# --- NCSNv2 source conventions --------------------------------------------------------------------------------
def test_config_for_source_sets_the_ncsnv2_conventions():
    """PyTorch: corner-aligned bilinear + unbiased channel-mean variance; Flax: the JAX code's (defaults) and, for
    ncsnv2_64, refine widths (2, 2, 2, 1). Other networks unchanged; the argument is not modified."""
    cfg = models.get_config("ve/ncsnv2/cifar10")
    t, f = config_for_source(cfg, "score_sde_pytorch"), config_for_source(cfg, "score_sde_flax")
    assert (t.model.align_corners, t.model.unbiased_channel_var, t.model.refine_mults) == (True, True, None)
    assert (f.model.align_corners, f.model.unbiased_channel_var, tuple(f.model.refine_mults)) == \
        (False, False, (2, 2, 2, 1))
    assert config_for_source("ve/ncsnv2/bedroom", "score_sde_flax").model.refine_mults is None
    assert "align_corners" not in cfg.model
    assert config_for_source("small/ncsnpp", "score_sde_pytorch").to_dict() == \
        models.get_config("small/ncsnpp").to_dict()
    with pytest.raises(ValueError, match="source must be one of"):
        config_for_source(cfg, "torch")


def _align_corners_reference(x, shape):
    """Closed form: y[i, j] = bilinear interpolation of x at (i (H-1)/(H'-1), j (W-1)/(W'-1)), float64 loops."""
    b, h, w, c = x.shape
    out = np.zeros((b, *shape, c))
    for i in range(shape[0]):
        u = i * (h - 1) / (shape[0] - 1) if shape[0] > 1 else 0.0
        i0, i1, fu = int(np.floor(u)), min(int(np.floor(u)) + 1, h - 1), u - np.floor(u)
        for j in range(shape[1]):
            v = j * (w - 1) / (shape[1] - 1) if shape[1] > 1 else 0.0
            j0, j1, fv = int(np.floor(v)), min(int(np.floor(v)) + 1, w - 1), v - np.floor(v)
            out[:, i, j] = ((1 - fu) * (1 - fv) * x[:, i0, j0] + (1 - fu) * fv * x[:, i0, j1]
                            + fu * (1 - fv) * x[:, i1, j0] + fu * fv * x[:, i1, j1])
    return out


@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (4, 4), (1, 1), (7, 3)])
def test_align_corners_resize_closed_form(x64, shape):
    """``resize_bilinear_align_corners`` equals the closed form to 1e-12 (float64), for up-, down- and
    same-size resizing, odd sizes and a single output pixel."""
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3))
    got = resize_bilinear_align_corners(jnp.asarray(x), shape)
    np.testing.assert_allclose(np.asarray(got), _align_corners_reference(x, shape), atol=1e-12)


@pytest.mark.compile_bound
def test_instance_norm_plus_unbiased_channel_variance(x64):
    """InstanceNorm++ with ``unbiased_channel_var`` uses var_c'(mu_c') with divisor C - 1 (torch.var), to 1e-12;
    the default (the JAX code's) divides by C, and the two differ."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, 5, 6)) * 3 + 1)
    outs = {}
    for unbiased in (False, True):
        m = InstanceNorm2dPlus(unbiased_channel_var=unbiased)
        params = m.init(jax.random.key(0, impl="rbg"), x)
        outs[unbiased] = m.apply(params, x)
        p = jax.tree.map(np.asarray, params["params"])
        xn = np.asarray(x)
        mu, var = xn.mean(axis=(1, 2)), xn.var(axis=(1, 2))
        v = mu.var(axis=-1, ddof=1 if unbiased else 0, keepdims=True)
        plus = (mu - mu.mean(-1, keepdims=True)) / np.sqrt(v + 1e-5)
        h = (xn - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) + plus[:, None, None] * p["alpha"]
        np.testing.assert_allclose(np.asarray(outs[unbiased]), h * p["gamma"] + p["beta"], atol=1e-12)
    assert float(jnp.max(jnp.abs(outs[True] - outs[False]))) > 1e-3


@pytest.mark.compile_bound
def test_ncsnv2_conventions_reach_the_blocks_and_change_their_output():
    """The config options reach the model (registry) and its blocks; the default model is the JAX code's (both
    conventions off); turning corner alignment on changes a refine block's multi-resolution fusion (so the
    conventions matter for imported weights). Bad option values raise ValueError."""
    default = models.get_model(models.get_config("small/ncsnv2"))
    torch_port = models.get_model(config_for_source("small/ncsnv2", "score_sde_pytorch"))
    assert (default.align_corners, default.unbiased_channel_var, default.refine_mults) == (False, False, None)
    assert (torch_port.align_corners, torch_port.unbiased_channel_var) == (True, True)
    key = jax.random.key(0, impl="rbg")   # rbg: Flax init compiles much faster than with threefry on CPU
    rng = np.random.default_rng(0)
    xs = [jnp.asarray(rng.standard_normal((1, 8, 8, 4)), jnp.float32),
          jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)]
    block = MSFBlock((8, 8), 4)
    params = block.init(key, xs)
    plain = block.apply(params, xs)
    aligned = MSFBlock((8, 8), 4, align_corners=True).apply(params, xs)
    assert float(jnp.max(jnp.abs(aligned - plain))) > 1e-2
    c = models.get_config("small/ncsnv2")
    c.model.update(dict(normalization="GroupNorm", unbiased_channel_var=True))
    with pytest.raises(ValueError, match="unbiased_channel_var applies to normalization='InstanceNorm\\+\\+'"):
        models.init_model(key, c, abstract=True)
    c = models.get_config("small/ncsnv2")
    c.model.refine_mults = (2, 2)
    with pytest.raises(ValueError, match="refine_mults must be 4 positive integers for ncsnv2_64"):
        models.init_model(key, c, abstract=True)
    with pytest.raises(ValueError, match="align_corners=True needs interpolation='bilinear'"):
        MSFBlock((8, 8), 4, interpolation="nearest_neighbor", align_corners=True).init(key, xs)
