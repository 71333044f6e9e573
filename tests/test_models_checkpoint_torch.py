"""score_sde_pytorch checkpoints: every tensor imported exactly once, EMA vs raw weights, the imported networks
block by block against independent ``torch.nn.functional`` computations on the original tensors, a swapped
mapping caught, mismatch errors, and safe loading (``weights_only``). Needs PyTorch (``sde_jax[torch]``).

Synthetic checkpoints: the paper's names, order and shapes (tests/checkpoint_facts.py pins them for the small
configs) with random values (fixed seeds), saved as score_sde_pytorch's ``save_checkpoint`` does.
"""
import collections
import functools
import json
import os
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

import torch_reference as ref  # noqa: E402
from checkpoint_facts import SKIP, modules, small_config  # noqa: E402
from checkpoint_helpers import write_torch_checkpoint  # noqa: E402
from sde_jax import models  # noqa: E402
from sde_jax.models import checkpoint_layout, config_for_source, import_checkpoint  # noqa: E402

SOURCE = "score_sde_pytorch"
TOL = 1e-5   # relative L2 error of each block's output, float32


def _expected(name, a):
    """Our array for a checkpoint tensor, from the tensor's kind alone: 4-D convs OIHW -> HWIO, Linear weights
    (out, in) -> (in, out), NCSNv2 per-channel norm parameters (C,) -> (1, 1, 1, C), everything else as is."""
    leaf = name.rsplit(".", 1)[-1]
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if a.ndim == 2 and leaf == "weight":
        return a.T
    if a.ndim == 1 and ("normalize" in name) and leaf in ("alpha", "gamma", "beta"):
        return a.reshape(1, 1, 1, -1)
    return a


def _leaf(tree, path):
    for p in path:
        tree = tree[p]
    return np.asarray(tree)


def _checkpoint(tmp_path, name, seed=0, state_dict=None):
    cfg = config_for_source(small_config(name), SOURCE)
    layout = checkpoint_layout(cfg, SOURCE)
    path = str(tmp_path / f"{name.replace('/', '_')}_{seed}.pth")
    sd, ema = write_torch_checkpoint(path, layout, seed, state_dict=state_dict)
    return cfg, layout, path, sd, ema


@pytest.mark.parametrize("name", ["small/ncsnpp", "small/ddpm", "small/ncsnv2",
                                  pytest.param("small/ddpmpp", marks=pytest.mark.slow)])
def test_every_tensor_imported_exactly_once_and_ema_told_apart(tmp_path, name):
    """``weights='model'``: each parameter of ours is exactly (bitwise) its tensor of ``model`` after the layout
    conversion, one tensor per parameter, none left. ``weights='ema'``: the trainable ones come from
    ``ema.shadow_params`` in order and the Fourier ``W`` (not trained, not in the EMA) from ``model``."""
    cfg, layout, path, sd, ema = _checkpoint(tmp_path, name)
    got = import_checkpoint(path, cfg, source=SOURCE, weights="model")["params"]
    got_ema = import_checkpoint(path, cfg, source=SOURCE, weights="ema")["params"]
    assert len(jax.tree.leaves(got)) == len(sd) == len(layout)
    for e in layout:
        np.testing.assert_array_equal(_leaf(got, e.path), _expected(e.name, sd[e.name]))
    shadow = iter(ema)
    for e in layout:
        want = sd[e.name] if e.name.endswith(".W") and sd[e.name].ndim == 1 else next(shadow)
        np.testing.assert_array_equal(_leaf(got_ema, e.path), _expected(e.name, want))
    assert next(shadow, None) is None
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(got_ema)))


# --- block by block against torch.nn.functional ---------------------------------------------------------------
@functools.cache
def _forward(cfg_json):
    """Jitted ``apply`` that also returns each top-level module's array inputs and output."""
    model = models.get_model(ml_collections.ConfigDict(json.loads(cfg_json)))

    def run(variables, x, labels):
        store = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            mod = context.module
            if context.method_name == "__call__" and mod.scope is not None and len(mod.scope.path) == 1:
                store[mod.scope.path[0]] = ([a for a in args if not isinstance(a, (bool, type(None)))], out)
            return out

        with nn.intercept_methods(interceptor):
            out = model.apply(variables, x, labels)
        return out, store

    return jax.jit(run, compiler_options={"xla_backend_optimization_level": 0})


def _inputs(cfg, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    if cfg.model.name == "ncsnpp" and cfg.model.embedding_type == "fourier":
        labels = np.array([0.05, 20.0], np.float32)                   # sigma
    elif cfg.model.name.startswith("ncsnv2"):
        labels = np.array([3, 200], np.float32)                        # levels
    else:
        labels = np.array([10.0, 900.0], np.float32)                   # 999 t
    return jnp.asarray(x), jnp.asarray(labels)


def _t(a):
    a = torch.from_numpy(np.array(a))
    return a.permute(0, 3, 1, 2) if a.ndim == 4 else a


def _reference(kind, sd, p, args, cfg):
    """The torch computation of module ``p`` (a kind from the facts) on our module's own inputs."""
    x = [[_t(a) for a in args[0]]] if isinstance(args[0], list) else [_t(a) for a in args]
    ddpm = cfg.model.name == "ddpm"
    if kind == "fourier":
        return ref.fourier(sd, p, x[0])
    if kind == "linear":
        return ref.linear(sd, p, x[0])
    if kind in ("conv", "ncsn_conv"):
        return ref.conv(sd, p, x[0])
    if kind == "gn":
        return ref.group_norm(sd, p, x[0], 32 if ddpm else min(x[0].shape[1] // 4, 32))
    if kind.startswith("rb"):
        return ref.biggan_block(sd, p, x[0], x[1], up=kind == "rb_up", down=kind == "rb_down", fir=cfg.model.fir)
    if kind == "ddpm_rb":
        return ref.ddpm_block(sd, p, x[0], x[1])
    if kind in ("attn", "ddpm_attn"):
        return ref.attention(sd, p, x[0], groups=32 if ddpm else min(x[0].shape[1] // 4, 32),
                             skip_rescale=not ddpm)
    if kind == "pyr_down_conv":
        return ref.fir_conv_down(sd, f"{p}.Conv2d_0", x[0])
    if kind == "pyr_down":
        return ref.fir_down(x[0])
    if kind == "pyr_up":
        return ref.fir_up(x[0])
    if kind == "combine":
        return ref.conv(sd, f"{p}.Conv", x[0], padding=0) + x[1]
    if kind == "down":
        return ref.ddpm_downsample(sd, f"{p}.Conv_0", x[0])
    if kind == "up":
        return ref.ddpm_upsample(sd, f"{p}.Conv_0", x[0])
    if kind.startswith("res"):
        dil = 4 if kind.endswith("dil4") else 2 if kind.endswith("dil2") else 1
        return ref.ncsnv2_residual(sd, p, x[0], down="down" in kind, dilation=dil)
    if kind.startswith("refine"):
        xs = x[0]
        return ref.refine_block(sd, p, xs, tuple(xs[0].shape[2:]), end=kind == "refine_end")
    if kind == "inorm_plus":
        return ref.instance_norm_plus(sd, p, x[0])
    raise AssertionError(kind)


def _block_errors(name, cfg, variables, sd):
    """Relative L2 error of every top-level module of ours against the torch reference on the same inputs."""
    out, store = _forward(cfg.to_json())(variables, *_inputs(cfg))
    jax.block_until_ready(out)
    tsd = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
    errors = {}
    with torch.no_grad():
        for prefix, kind, ours, _ in modules(name):
            args, got = store[ours]
            want = _reference(kind, tsd, prefix, args, cfg).numpy()
            got = np.asarray(_t(got))
            errors[prefix] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    return errors


@pytest.mark.parametrize("name", ["small/ncsnpp", "small/ncsnv2",
                                  pytest.param("small/ddpm", marks=pytest.mark.slow),
                                  pytest.param("small/ddpmpp", marks=pytest.mark.slow),
                                  pytest.param(SKIP, marks=pytest.mark.slow)])
@pytest.mark.slow
@pytest.mark.compile_bound
def test_imported_network_agrees_block_by_block_with_torch(tmp_path, name):
    """Import a checkpoint, run our network on a batch (sigma / 999 t / level labels as the config trains), and
    recompute every top-level module -- embedding, first conv, each residual block (plain, up, down; BigGAN with
    and without FIR, the DDPM block, NCSNv2's with mean-pool and dilated convs), attention, input/output
    pyramids, refine blocks, the output norm and conv -- with torch.nn.functional on the checkpoint's own
    tensors and on our module's inputs: relative L2 error < 1e-5 in float32 for every one. Module pairing
    from the written-down facts; NCSNv2 with the PyTorch conventions (corner-aligned bilinear, unbiased channel
    variance) that ``config_for_source`` sets."""
    cfg, _, path, sd, _ = _checkpoint(tmp_path, name)
    variables = import_checkpoint(path, cfg, source=SOURCE, weights="model")
    errors = _block_errors(name, cfg, variables, sd)
    assert max(errors.values()) < TOL, {k: v for k, v in errors.items() if v >= TOL}


def test_a_swapped_mapping_of_equal_shape_blocks_is_caught(tmp_path):
    """Positive control: swapping the two middle residual blocks (``all_modules.12`` and ``.14`` of small/ncsnpp,
    equal shapes) still imports (shapes fit), but the block check against the true tensors then fails by far
    (relative error > 0.05 for both blocks) while every other block still passes."""
    cfg, _, path, sd, _ = _checkpoint(tmp_path, "small/ncsnpp")
    swapped = collections.OrderedDict(sd)
    for k in sd:
        if k.startswith("all_modules.12."):
            other = k.replace("all_modules.12.", "all_modules.14.")
            swapped[k], swapped[other] = sd[other], sd[k]
    _, _, bad_path, _, _ = _checkpoint(tmp_path, "small/ncsnpp", seed=1, state_dict=swapped)
    variables = import_checkpoint(bad_path, cfg, source=SOURCE, weights="model")
    errors = _block_errors("small/ncsnpp", cfg, variables, sd)
    assert errors["all_modules.12"] > 0.05 and errors["all_modules.14"] > 0.05
    assert max(v for k, v in errors.items() if k not in ("all_modules.12", "all_modules.14")) < TOL


# --- errors and safety ------------------------------------------------------------------------------------------
def test_mismatches_name_the_first_parameter_and_both_shapes(tmp_path):
    """Wrong architecture (DDPM checkpoint, DDPM++ config), wrong size (nf 32 checkpoint, nf 64 config), a short
    EMA list, and a bare state dict asked for its (absent) EMA: ValueErrors that say what does not fit."""
    cfg, layout, path, sd, ema = _checkpoint(tmp_path, "small/ddpm")
    # all_modules.0-3 fit by chance (same names and shapes); module 4 is a Downsample there, a BigGAN block here
    with pytest.raises(ValueError, match=r"does not fit config 'small/ddpmpp'. First parameter that does not fit: "
                                         r"'all_modules.4.GroupNorm_0.weight': checkpoint shape absent, the "
                                         r"config's model expects \(32,\). 54 missing.*leftovers.*"
                                         r"'all_modules.5.NIN_0.W'"):
        import_checkpoint(path, "small/ddpmpp", source=SOURCE)
    wide = models.get_config("small/ddpm")
    wide.model.nf = 64
    with pytest.raises(ValueError, match=r"First parameter that does not fit: 'all_modules.0.weight': checkpoint "
                                         r"shape \(128, 32\), the config's model expects \(256, 64\)"):
        import_checkpoint(path, wide, source=SOURCE)
    short = str(tmp_path / "short.pth")
    blob = torch.load(path, weights_only=False)
    blob["ema"]["shadow_params"] = blob["ema"]["shadow_params"][:-1]
    torch.save(blob, short)
    with pytest.raises(ValueError, match=f"ema.shadow_params has {len(layout) - 1} tensors; the model of config "
                                         f"'small/ddpm' has {len(layout)} trainable parameters"):
        import_checkpoint(short, "small/ddpm", source=SOURCE, weights="ema")
    bare = str(tmp_path / "bare.pth")
    torch.save(collections.OrderedDict((k, torch.from_numpy(v)) for k, v in sd.items()), bare)
    got = import_checkpoint(bare, "small/ddpm", source=SOURCE, weights="model")
    np.testing.assert_array_equal(np.asarray(got["params"]["Dense_0"]["kernel"]), sd["all_modules.0.weight"].T)
    with pytest.raises(ValueError, match="has no EMA weights; use weights='model'"):
        import_checkpoint(bare, "small/ddpm", source=SOURCE, weights="ema")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles_code_but_reads_numpy_scalars(tmp_path):
    """A file whose pickle would call a function (here: create a file) is refused with a ValueError naming
    weights_only, and the function never runs. The NumPy scalar in the optimizer state loads, under NumPy 2
    (``numpy._core``) and NumPy 1.x (``numpy.core``, what the released files hold) names."""
    marker = tmp_path / "pwned"
    evil = str(tmp_path / "evil.pth")
    torch.save({"model": {}, "optimizer": _Evil(str(marker))}, evil)
    with pytest.raises(ValueError, match="weights_only=True"):
        import_checkpoint(evil, "small/ddpm", source=SOURCE)
    assert not marker.exists()
    cfg, _, path, sd, _ = _checkpoint(tmp_path, "small/ddpm")
    old = str(tmp_path / "numpy1.pth")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            zout.writestr(item, data)
    got = import_checkpoint(old, cfg, source=SOURCE, weights="model")
    np.testing.assert_array_equal(np.asarray(got["params"]["DDPMConv_1"]["Conv_0"]["bias"]), sd["all_modules.22.bias"])


def test_missing_torch_is_a_clear_import_error(tmp_path, monkeypatch):
    cfg, _, path, _, _ = _checkpoint(tmp_path, "small/ddpm")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch: pip install 'sde_jax\[torch\]'"):
        import_checkpoint(path, cfg, source=SOURCE)


@pytest.mark.slow
def test_convert_cli_records_the_pytorch_conventions(tmp_path):
    """``python -m sde_jax.models.convert`` on a PyTorch NCSNv2 checkpoint writes config.json with the PyTorch
    conventions (a model rebuilt from it computes what the checkpoint computed) and the EMA weights restore
    exactly (restoring in full: tests/test_models_convert.py)."""
    from sde_jax.models import convert

    _, _, path, _, _ = _checkpoint(tmp_path, "small/ncsnv2")
    out = str(tmp_path / "converted")
    assert convert.main(["--source", SOURCE, "--config", "small/ncsnv2", "--checkpoint", path, "--out", out]) == 0
    stored = convert._read_json(os.path.join(out, convert.CONFIG_FILE))
    assert stored["model"]["align_corners"] and stored["model"]["unbiased_channel_var"]
    want = import_checkpoint(path, "small/ncsnv2", source=SOURCE, weights="ema")
    for a, b in zip(jax.tree.leaves(models.load_variables(out)), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
