"""Synthetic checkpoints in the paper's two formats (random values, fixed seeds) for the import tests."""
from __future__ import annotations

import collections
import math
import os
import re

import jax
import numpy as np
from flax import serialization

from checkpoint_facts import modules, small_config
from sde_jax.models import checkpoint_layout, config_for_source

STEP = 7


def random_array(rng, shape, name, fan_in_axes):
    """Plausible magnitudes: norm scales ~ 1 + 0.1 N, biases ~ 0.1 N, weights ~ N / sqrt(fan-in), Fourier
    frequencies ~ N(0, 1) (not the paper's scale 16: sin of arguments ~ 10^3 in float32 would differ by
    rounding between two correct implementations)."""
    leaf = name.replace("/", ".").rsplit(".", 1)[-1]
    if len(shape) == 1 or (len(shape) == 4 and shape[:3] == (1, 1, 1)):
        if leaf in ("weight", "scale", "alpha", "gamma"):
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if leaf == "W":
            return rng.standard_normal(shape).astype(np.float32)
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    fan_in = math.prod(shape[a] for a in fan_in_axes(len(shape)))
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _torch_fan_in(ndim):        # OIHW / (out, in): all axes but the first
    return range(1, ndim)


def _flax_fan_in(ndim):         # HWIO / (in, out): all axes but the last
    return range(ndim - 1)


def random_state_dict(layout, seed):
    rng = np.random.default_rng(seed)
    return collections.OrderedDict((e.name, random_array(rng, e.shape, e.name, _torch_fan_in)) for e in layout)


def write_torch_checkpoint(path, layout, seed=0, *, state_dict=None):
    """A file laid out as score_sde_pytorch's ``save_checkpoint`` writes it: ``model`` (DataParallel names),
    ``ema`` (``shadow_params`` of the trainable tensors, in order, with other values), ``optimizer`` (holding a
    NumPy scalar, as the released files do) and ``step``. Returns ``(model {name: array}, ema [arrays])``."""
    import torch

    sd = random_state_dict(layout, seed) if state_dict is None else state_dict
    rng = np.random.default_rng(seed + 1000)
    ema = [random_array(rng, e.shape, e.name, _torch_fan_in) for e in layout if e.trainable]
    optimizer = {"state": {0: {"step": torch.tensor(float(STEP)), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": np.float64(2e-4), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                                   "amsgrad": False, "params": [0]}]}
    torch.save({"optimizer": optimizer,
                "model": collections.OrderedDict(("module." + k, torch.from_numpy(v)) for k, v in sd.items()),
                "ema": {"decay": 0.9999, "num_updates": STEP, "shadow_params": [torch.from_numpy(a) for a in ema]},
                "step": STEP}, path)
    return dict(sd), ema


def random_variables(cfg, *seeds):
    """Our ``{'params': ...}`` for ``cfg`` (already through ``config_for_source(..., 'score_sde_flax')``) filled
    with random values, one tree per seed; our paths and shapes from the (cached) Flax layout."""
    layout = checkpoint_layout(cfg, "score_sde_flax")
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        tree = {}
        for e in layout:
            node = tree
            for p in e.path[:-1]:
                node = node.setdefault(p, {})
            node[e.path[-1]] = random_array(rng, e.shape, "/".join(e.path), _flax_fan_in)
        out.append({"params": tree})
    return out


def paper_flax_tree(params, name):
    """Our params tree renamed to the paper's Flax names: top-level modules by :func:`checkpoint_facts.modules`;
    inside, its conv helpers' bare ``Conv_<k>`` for our ``DDPMConv_<k>/Conv_0`` and ``NCSNConv_<k>/Conv_0``, and
    its FIR conv's ``Conv2d_0/weight`` for our ``FIRConv2d_0/kernel``."""
    top = {ours: theirs for _, _, ours, theirs in modules(name)}
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [k.key for k in path]
        inner = "/".join(keys[1:])
        inner = re.sub(r"(?:DDPMConv|NCSNConv)_(\d+)/Conv_0", r"Conv_\1", inner)
        inner = re.sub(r"FIRConv2d_(\d+)/kernel", r"Conv2d_\1/weight", inner).replace("FIRConv2d_", "Conv2d_")
        node = out.setdefault(top[keys[0]], {})
        *dirs, last = inner.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[last] = np.asarray(leaf)
    return out


def write_flax_checkpoint(directory, model_tree, ema_tree):
    """``checkpoint_<STEP>`` in the paper's ``State`` layout (flax.training.checkpoints writes the msgpack of its
    state dict): step, optimizer {target, state {step, param_states}}, lr, model_state, ema_rate, params_ema, rng."""
    zeros = jax.tree.map(np.zeros_like, model_tree)
    state = {"step": np.asarray(STEP),
             "optimizer": {"target": model_tree,
                           "state": {"step": np.asarray(STEP),
                                     "param_states": jax.tree.map(lambda z: {"grad_ema": z, "grad_sq_ema": z},
                                                                  zeros)}},
             "lr": np.asarray(2e-4, np.float32), "model_state": {}, "ema_rate": np.asarray(0.999, np.float32),
             "params_ema": ema_tree, "rng": np.asarray([0, 42], np.uint32)}
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"checkpoint_{STEP}")
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(state))
    return path


def flax_checkpoint(tmp_path, name, seed=0):
    """``(cfg, path, model variables, EMA variables)``: a Flax checkpoint of the small config ``name`` with the
    paper's names and random values (distinct for the two weights), in ``tmp_path/ckpt``."""
    cfg = config_for_source(small_config(name), "score_sde_flax")
    model_vars, ema_vars = random_variables(cfg, seed, seed + 1)
    path = write_flax_checkpoint(str(tmp_path / "ckpt"), paper_flax_tree(model_vars["params"], name),
                                 paper_flax_tree(ema_vars["params"], name))
    return cfg, path, model_vars, ema_vars
