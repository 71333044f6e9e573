"""Where every tensor of the paper's released checkpoints goes in our networks (the checkpoint *layouts*).

The paper's authors released their trained networks twice: as PyTorch state dicts (yang-song/score_sde_pytorch,
``torch.save`` of ``{'model', 'ema', 'optimizer', 'step'}``) and as Flax msgpack files (yang-song/score_sde,
``flax.training.checkpoints``). Our networks are the same networks, with our own parameter names; a *layout*
is the list, in the checkpoint's own order, of ``Entry(name, shape, path, transform, trainable)``: the tensor
``name`` of that ``shape`` in the checkpoint becomes ``variables['params'][path]`` after ``transform``.

How the layout is derived (facts about the paper's code, not its code):

* Module order. Both of the paper's NCSN++/DDPM implementations create their sub-modules in the order the
  forward pass calls them (PyTorch: the ``all_modules`` list, named ``all_modules.<k>``; Flax: auto-names
  ``<Class>_<k>`` counted per class). Ours are Flax modules called in the same order, so the ``k``-th
  top-level module our network calls is ``all_modules.<k>`` there; we record that order by tracing
  ``init`` abstractly (:func:`jax.eval_shape`) with a method interceptor, never by sorting names.
  NCSNv2 (PyTorch) names its modules (``begin_conv``, ``res1.0``, ..., ``refine1``, ``normalizer``,
  ``end_conv``); its state dict lists them in declaration order, which differs from call order.
* Inside a block, PyTorch lists a module's own parameters in the order its constructor created them
  (e.g. the DDPM model's residual block: ``GroupNorm_0, GroupNorm_1, Conv_0, Conv_1, Dense_0, NIN_0``; the
  NCSN++ blocks: ``GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2 | NIN_0``; NCSNv2's residual
  block: ``conv1, normalize2, conv2, shortcut, normalize1``; its refine block: ``adapt_convs, output_convs,
  msf, crp``). The EMA's ``shadow_params`` is a list in that same order, without the parameters that do
  not train (the Fourier features' ``W``, ``requires_grad=False``).
* Tensor conventions (PyTorch -> ours): conv kernels ``OIHW -> HWIO`` (``'conv'``), dense weights
  ``(out, in) -> (in, out)`` (``'dense'``), GroupNorm ``weight -> scale``, NIN ``W (in, out)`` kept,
  NCSNv2 per-channel norm parameters ``(C,) -> (1, 1, 1, C)`` (``'channel'``). The paper's Flax files
  already use our conventions; only names differ (its ``conv3x3`` helper creates a bare ``Conv_<k>`` where
  we have ``DDPMConv_<k>/Conv_0``; its FIR conv stores ``weight`` where ours stores ``kernel``; its blocks are
  ``ResnetBlockBigGANpp``, ``ResnetBlockDDPMpp``, ``AttnBlockpp`` in NCSN++).

:func:`checkpoint_layout` returns the layout of a config for a source; its sizes sum to the paper code's
parameter count for every shipped config (tested). :func:`config_for_source` sets the model options under
which a checkpoint computes what it computed when trained (NCSNv2 conventions, see
:mod:`sde_jax.models.ncsnv2`).
"""
from __future__ import annotations

import copy
import functools
import json
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
from flax import traverse_util
import ml_collections

from sde_jax.models import configs as configs_lib
from sde_jax.models.attention import AttnBlock
from sde_jax.models.ddpm import DDPM
from sde_jax.models.embeddings import GaussianFourierProjection
from sde_jax.models.layers import DDPMConv, NCSNConv
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.normalization import GroupNorm, InstanceNorm2d, InstanceNorm2dPlus, VarianceNorm2d
from sde_jax.models.refinenet import RefineBlock, ResidualBlock
from sde_jax.models.registry import init_model
from sde_jax.models.resample import Combine, Downsample, Upsample
from sde_jax.models.resnet import ResnetBlockBigGAN, ResnetBlockDDPM

__all__ = ["SOURCES", "TRANSFORMS", "Entry", "checkpoint_layout", "config_for_source", "resolve_config"]

SOURCES = ("score_sde_pytorch", "score_sde_flax")
"""Checkpoint formats: yang-song/score_sde_pytorch ``.pth`` files, yang-song/score_sde Flax ``checkpoint_<N>``."""


def _conv_to_ours(w):      # OIHW -> HWIO
    return w.transpose(2, 3, 1, 0)


def _conv_to_source(shape):
    h, w, i, o = shape
    return (o, i, h, w)


TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "none": (lambda a: a, lambda s: tuple(s)),
    "conv": (_conv_to_ours, _conv_to_source),
    "dense": (lambda a: a.T, lambda s: tuple(reversed(s))),
    "channel": (lambda a: a.reshape(1, 1, 1, -1), lambda s: (s[-1],)),
}
"""``transform -> (source array -> our array, our shape -> source shape)``."""


class Entry(NamedTuple):
    """One tensor of a checkpoint and where it goes.

    Attributes:
      name: its name in the checkpoint: ``'all_modules.4.Conv_0.weight'`` (PyTorch, without DataParallel's
        ``'module.'`` prefix) or ``'ResnetBlockBigGANpp_0/Conv_0/kernel'`` (Flax, ``/``-joined).
      shape: its shape in the checkpoint.
      path: its place in our ``variables['params']``.
      transform: a key of :data:`TRANSFORMS`.
      trainable: listed in the PyTorch EMA's ``shadow_params`` (False only for the Fourier features' ``W``).
    """

    name: str
    shape: tuple[int, ...]
    path: tuple[str, ...]
    transform: str
    trainable: bool = True


def _check_source(source):
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}; got {source!r}.")


def resolve_config(config) -> ml_collections.ConfigDict:
    """A private copy of ``config``: a name from :func:`~sde_jax.models.config_names` or a ConfigDict."""
    if isinstance(config, str):
        return configs_lib.get_config(config)
    if isinstance(config, ml_collections.ConfigDict):
        return copy.deepcopy(config)
    raise TypeError(f"config must be a config name (see sde_jax.models.config_names()) or an "
                    f"ml_collections.ConfigDict; got {type(config).__name__}.")


def config_for_source(config, source: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the model options under which a ``source`` checkpoint computes what it
    computed when it was trained.

    Only NCSNv2 has such options (:mod:`sde_jax.models.ncsnv2`): PyTorch checkpoints get
    ``align_corners=True`` and, with InstanceNorm++, ``unbiased_channel_var=True`` (the PyTorch port's bilinear
    resize and ``torch.var``); Flax checkpoints the JAX code's conventions (both False) and, for ``ncsnv2_64``, the JAX
    code's refine widths ``refine_mults=(2, 2, 2, 1)``. Other networks are returned unchanged (copied).

    Args:
      config: a config name or ConfigDict.
      source: one of :data:`SOURCES`.
    """
    _check_source(source)
    cfg = resolve_config(config)
    m = cfg.model
    if m.name.startswith("ncsnv2"):
        torch_port = source == "score_sde_pytorch"
        m.align_corners = torch_port
        m.unbiased_channel_var = torch_port and m.normalization == "InstanceNorm++"
        m.refine_mults = (2, 2, 2, 1) if (not torch_port and m.name == "ncsnv2_64") else None
    return cfg


# --- tracing our network -------------------------------------------------------------------------------------
class _Call(NamedTuple):
    name: str              # our top-level module name, e.g. 'ResnetBlockBigGAN_3'
    module: nn.Module      # the module (its attributes: resample, dilation, ...)


@functools.lru_cache(maxsize=16)
def _trace(cfg_json: str):
    """``(root model, abstract params, top-level calls in call order)`` from an abstract ``init`` of the config
    (given as JSON: cached, tracing a paper-size model takes seconds)."""
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    cfg.model.remat = False            # same parameter tree; plain module classes for the mapping below
    cfg.model.dtype = "float32"
    calls: list[_Call] = []

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__" and mod.scope is not None and len(mod.scope.path) == 1:
            calls.append(_Call(mod.scope.path[0], mod))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model, variables = init_model(jax.random.key(0), cfg, abstract=True)
    seen, ordered = set(), []
    for c in calls:                    # a module is called once; keep the first call to be safe
        if c.name not in seen:
            seen.add(c.name)
            ordered.append(c)
    return model, variables["params"], ordered


def _sub(params, name) -> dict:
    return params.get(name, {})


# --- PyTorch (score_sde_pytorch) ----------------------------------------------------------------------------
def _t(name, path, transform="none", trainable=True):
    return (name, tuple(path), transform, trainable)


def _j(prefix, name):
    """PyTorch's dotted names: ``_j('conv2', 'weight') = 'conv2.weight'``, ``_j('', 'weight') = 'weight'``."""
    return f"{prefix}.{name}" if prefix else name


def _t_conv(tname, ours, sub_conv: dict):
    """A conv: ``<tname>.weight`` (OIHW) and, when the layer has one, ``<tname>.bias``."""
    out = [_t(_j(tname, "weight"), (*ours, "kernel"), "conv")]
    if "bias" in sub_conv:
        out.append(_t(_j(tname, "bias"), (*ours, "bias")))
    return out


def _t_ddpm_conv(tname, ours_name, sub):
    return _t_conv(tname, (ours_name, "Conv_0"), sub[ours_name]["Conv_0"])


def _t_dense(tname, ours):
    return [_t(_j(tname, "weight"), (*ours, "kernel"), "dense"), _t(_j(tname, "bias"), (*ours, "bias"))]


def _t_group_norm(tname, ours):
    return [_t(_j(tname, "weight"), (*ours, "scale")), _t(_j(tname, "bias"), (*ours, "bias"))]


def _t_nin(tname, ours):
    return [_t(_j(tname, "W"), (*ours, "W")), _t(_j(tname, "b"), (*ours, "b"))]


def _t_norm(tname, ours, sub_norm: dict, norm_cls):
    """NCSNv2 normalisations: InstanceNorm++ ``alpha, gamma, beta``; VarianceNorm ``alpha`` (our ``scale``)."""
    if norm_cls is InstanceNorm2dPlus:
        names = [n for n in ("alpha", "gamma", "beta") if n in sub_norm]
        return [_t(_j(tname, n), (*ours, n), "channel") for n in names]
    if norm_cls is VarianceNorm2d and "bias" not in sub_norm:
        return [_t(_j(tname, "alpha"), (*ours, "scale"), "channel")]
    raise ValueError(f"score_sde_pytorch's {norm_cls.__name__} has no parameters that match ours (its "
                     "InstanceNorm is not affine); importable NCSNv2 normalizations: InstanceNorm++, VarianceNorm.")


def _names_of(sub, cls_prefix):
    return sorted((k for k in sub if k.startswith(cls_prefix + "_")), key=lambda k: int(k.rsplit("_", 1)[1]))


def _torch_resnet(mod, sub, root):
    e = _t_group_norm("GroupNorm_0", ("GroupNorm_0",))
    conv0, conv1 = _t_ddpm_conv("Conv_0", "DDPMConv_0", sub), _t_ddpm_conv("Conv_1", "DDPMConv_1", sub)
    dense = _t_dense("Dense_0", ("Dense_0",)) if "Dense_0" in sub else []
    gn1 = _t_group_norm("GroupNorm_1", ("GroupNorm_1",))
    if "DDPMConv_2" in sub:
        shortcut = _t_ddpm_conv("Conv_2", "DDPMConv_2", sub)
    elif "NIN_0" in sub:
        shortcut = _t_nin("NIN_0", ("NIN_0",))
    else:
        shortcut = []
    if isinstance(mod, ResnetBlockDDPM) and isinstance(root, DDPM):
        return e + gn1 + conv0 + conv1 + dense + shortcut      # the DDPM model's block: norms, convs, dense, NIN
    return e + conv0 + dense + gn1 + conv1 + shortcut


def _torch_attn(mod, sub, root):
    nins = [x for i in range(4) for x in _t_nin(f"NIN_{i}", (f"NIN_{i}",))]
    return _t_group_norm("GroupNorm_0", ("GroupNorm_0",)) + nins


def _torch_resample(mod, sub, root):
    if "DDPMConv_0" in sub:
        return _t_ddpm_conv("Conv_0", "DDPMConv_0", sub)
    if "FIRConv2d_0" in sub:
        return _t_conv("Conv2d_0", ("FIRConv2d_0",), sub["FIRConv2d_0"])
    return []


_NORMS = {cls.__name__: cls for cls in (InstanceNorm2dPlus, InstanceNorm2d, VarianceNorm2d, GroupNorm)}


def _torch_residual(mod: ResidualBlock, sub, root):
    n0, n1 = sorted((k for k in sub if not k.startswith(("NCSNConv_", "ConvMeanPool_"))),
                    key=lambda k: int(k.rsplit("_", 1)[1]))          # normalize1, normalize2 (call order)
    norm_cls = _NORMS[n0.rsplit("_", 1)[0]]
    conv1 = _t_conv("conv1", ("NCSNConv_0", "Conv_0"), sub["NCSNConv_0"]["Conv_0"])
    if "ConvMeanPool_0" in sub:
        conv2 = _t_conv("conv2.conv", ("ConvMeanPool_0", "NCSNConv_0", "Conv_0"),
                        sub["ConvMeanPool_0"]["NCSNConv_0"]["Conv_0"])
        shortcut = _t_conv("shortcut.conv", ("ConvMeanPool_1", "NCSNConv_0", "Conv_0"),
                           sub["ConvMeanPool_1"]["NCSNConv_0"]["Conv_0"])
    else:
        conv2 = _t_conv("conv2", ("NCSNConv_1", "Conv_0"), sub["NCSNConv_1"]["Conv_0"])
        shortcut = (_t_conv("shortcut", ("NCSNConv_2", "Conv_0"), sub["NCSNConv_2"]["Conv_0"])
                    if "NCSNConv_2" in sub else [])
    return (conv1 + _t_norm("normalize2", (n1,), sub[n1], norm_cls) + conv2 + shortcut
            + _t_norm("normalize1", (n0,), sub[n0], norm_cls))


def _torch_rcu(tname, ours, sub_rcu):
    convs = _names_of(sub_rcu, "NCSNConv")          # n_blocks x 2 stages, in call order
    return [x for k, c in enumerate(convs)
            for x in _t_conv(f"{tname}.{k // 2 + 1}_{k % 2 + 1}_conv", (*ours, c, "Conv_0"), sub_rcu[c]["Conv_0"])]


def _torch_refine(mod, sub, root):
    rcus = _names_of(sub, "RCUBlock")               # adapt (one per input), then the output RCU
    adapt, output = rcus[:-1], rcus[-1]
    e = [x for i, r in enumerate(adapt) for x in _torch_rcu(f"adapt_convs.{i}", (r,), sub[r])]
    e += _torch_rcu("output_convs", (output,), sub[output])
    if "MSFBlock_0" in sub:
        msf = sub["MSFBlock_0"]
        e += [x for i, c in enumerate(_names_of(msf, "NCSNConv"))
              for x in _t_conv(f"msf.convs.{i}", ("MSFBlock_0", c, "Conv_0"), msf[c]["Conv_0"])]
    crp = sub["CRPBlock_0"]
    e += [x for i, c in enumerate(_names_of(crp, "NCSNConv"))
          for x in _t_conv(f"crp.convs.{i}", ("CRPBlock_0", c, "Conv_0"), crp[c]["Conv_0"])]
    return e


def _torch_entries(mod, sub, root):
    """``(name, path, transform, trainable)`` of one of our top-level modules, in PyTorch's order, relative."""
    if isinstance(mod, GaussianFourierProjection):
        return [_t("W", ("W",), trainable=False)]
    if isinstance(mod, nn.Dense):
        return _t_dense("", ())
    if isinstance(mod, (DDPMConv, NCSNConv)):
        return _t_conv("", ("Conv_0",), sub["Conv_0"])
    if isinstance(mod, GroupNorm):
        return _t_group_norm("", ())
    if isinstance(mod, (InstanceNorm2dPlus, VarianceNorm2d, InstanceNorm2d)):
        return _t_norm("", (), sub, type(mod))
    if isinstance(mod, (ResnetBlockBigGAN, ResnetBlockDDPM)):
        return _torch_resnet(mod, sub, root)
    if isinstance(mod, AttnBlock):
        return _torch_attn(mod, sub, root)
    if isinstance(mod, (Upsample, Downsample)):
        return _torch_resample(mod, sub, root)
    if isinstance(mod, Combine):
        return _t_ddpm_conv("Conv", "DDPMConv_0", sub)
    if isinstance(mod, ResidualBlock):
        return _torch_residual(mod, sub, root)
    if isinstance(mod, RefineBlock):
        return _torch_refine(mod, sub, root)
    raise ValueError(f"{type(mod).__name__} ({mod.name}) has no counterpart in the paper's networks "
                     "(e.g. class conditioning, num_classes > 0), so no paper checkpoint can fill it.")


# NCSNv2 (PyTorch): stage / refine-block attribute names in call order, and the state dict's (declaration) order.
_NCSNV2_TORCH = {
    "ncsnv2_64": (("res1", "res2", "res3", "res4"), ("refine1", "refine2", "refine3", "refine4"),
                  ("refine1", "refine2", "refine3", "refine4")),
    "ncsnv2_128": (("res1", "res2", "res3", "res4", "res5"), ("refine1", "refine2", "refine3", "refine4", "refine5"),
                   ("refine1", "refine2", "refine3", "refine4", "refine5")),
    "ncsnv2_256": (("res1", "res2", "res3", "res31", "res4", "res5"),
                   ("refine1", "refine2", "refine31", "refine3", "refine4", "refine5"),
                   ("refine1", "refine2", "refine3", "refine31", "refine4", "refine5")),
}


def _torch_prefixes(root, calls):
    """``[(torch prefix, call)]`` in the state dict's order."""
    if isinstance(root, (NCSNpp, DDPM)):
        return [(f"all_modules.{k}", c) for k, c in enumerate(calls)]
    stages, refine_calls, refine_decl = _NCSNV2_TORCH[root.variant]
    res = [c for c in calls if isinstance(c.module, ResidualBlock)]
    refines = [c for c in calls if isinstance(c.module, RefineBlock)]
    convs = [c for c in calls if isinstance(c.module, NCSNConv)]
    norms = [c for c in calls if c not in res and c not in refines and c not in convs]
    if len(res) != 2 * len(stages) or len(refines) != len(refine_calls) or len(convs) != 2 or len(norms) != 1:
        raise RuntimeError(f"unexpected NCSNv2 module structure: {[c.name for c in calls]}")
    named = {"begin_conv": convs[0], "end_conv": convs[1], "normalizer": norms[0]}
    named.update({f"{stages[i // 2]}.{i % 2}": c for i, c in enumerate(res)})
    named.update(dict(zip(refine_calls, refines)))
    order = (["begin_conv", "normalizer", "end_conv"] + [f"{s}.{j}" for s in stages for j in (0, 1)]
             + list(refine_decl))
    return [(n, named[n]) for n in order]


# --- Flax (score_sde) ---------------------------------------------------------------------------------------
def _flax_class(mod, root) -> str:
    """The paper's Flax class name for one of our top-level modules (its auto-name prefix)."""
    pp = isinstance(root, NCSNpp)
    for cls, name in ((GaussianFourierProjection, "GaussianFourierProjection"), (nn.Dense, "Dense"),
                      (DDPMConv, "Conv"), (NCSNConv, "Conv"), (GroupNorm, "GroupNorm"),
                      (ResnetBlockBigGAN, "ResnetBlockBigGANpp"),
                      (ResnetBlockDDPM, "ResnetBlockDDPMpp" if pp else "ResnetBlockDDPM"),
                      (AttnBlock, "AttnBlockpp" if pp else "AttnBlock"), (Upsample, "Upsample"),
                      (Downsample, "Downsample"), (Combine, "Combine"), (ResidualBlock, "ResidualBlock"),
                      (RefineBlock, "RefineBlock"), (InstanceNorm2dPlus, "InstanceNorm2dPlus"),
                      (InstanceNorm2d, "InstanceNorm2d"), (VarianceNorm2d, "VarianceNorm2d")):
        if isinstance(mod, cls):
            return name
    raise ValueError(f"{type(mod).__name__} ({mod.name}) has no counterpart in the paper's networks "
                     "(e.g. class conditioning, num_classes > 0), so no paper checkpoint can fill it.")


def _flax_rename(path: tuple[str, ...]) -> tuple[str, ...]:
    """Our path inside a block -> the paper's: ``DDPMConv_k/Conv_0`` and ``NCSNConv_k/Conv_0`` -> ``Conv_k``
    (its conv helpers create a bare ``nn.Conv``), ``FIRConv2d_0/kernel`` -> ``Conv2d_0/weight``."""
    out, i = [], 0
    while i < len(path):
        p = path[i]
        if p.startswith(("DDPMConv_", "NCSNConv_")) and i + 1 < len(path) and path[i + 1] == "Conv_0":
            out.append("Conv_" + p.rsplit("_", 1)[1])
            i += 2
            continue
        if p.startswith("FIRConv2d_"):
            out.append("Conv2d_" + p.rsplit("_", 1)[1])
            if path[i + 1:] == ("kernel",):
                out.append("weight")
                break
        else:
            out.append(p)
        i += 1
    return tuple(out)


def _flax_residual_reindex(mod, sub, path):
    """The paper's NCSNv2 residual block without resampling calls its shortcut conv first when channels change
    (``Conv_0`` = shortcut); ours calls it last. Other blocks keep the order."""
    if mod.resample is None and "NCSNConv_2" in sub and path and path[0] in ("Conv_0", "Conv_1", "Conv_2"):
        return ({"Conv_0": "Conv_1", "Conv_1": "Conv_2", "Conv_2": "Conv_0"}[path[0]],) + path[1:]
    return path


# --- the layout -----------------------------------------------------------------------------------------------
def checkpoint_layout(config, source: str) -> list[Entry]:
    """Every tensor of a ``source`` checkpoint for ``config``, in the checkpoint's order, and where it goes.

    Args:
      config: a config name (:func:`~sde_jax.models.config_names`) or a ConfigDict; the source's conventions
        are applied first (:func:`config_for_source`).
      source: ``'score_sde_pytorch'`` (``model`` state dict order, which is also the order of the EMA's
        ``shadow_params`` after dropping ``trainable=False`` entries) or ``'score_sde_flax'`` (sorted paths).

    Returns:
      a list of :class:`Entry`; each parameter of our model appears in exactly one entry.

    Raises:
      ValueError: for a model with parts no paper checkpoint has (class conditioning; an unconditional
        NCSN++/DDPM, which the PyTorch port builds with unused dense layers; NCSNv2 InstanceNorm/GroupNorm
        from PyTorch).
    """
    cfg = config_for_source(config, source)
    return list(_layout(cfg.to_json_best_effort(sort_keys=True), source))


@functools.lru_cache(maxsize=64)
def _layout(cfg_json: str, source: str) -> tuple[Entry, ...]:
    """The layout of a config (as JSON, so that it can key the cache: tracing a paper-size model takes seconds)."""
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    if cfg.model.name in ("ncsnpp", "ddpm") and not cfg.model.get("conditional", True) and \
            source == "score_sde_pytorch":
        raise ValueError("model.conditional=False: the PyTorch port still creates (unused) time-embedding "
                         "layers in every residual block, which our networks do not have; no paper config is "
                         "unconditional.")
    root, params, calls = _trace(cfg_json)
    flat = traverse_util.flatten_dict(params)
    out: list[Entry] = []
    if source == "score_sde_pytorch":
        for prefix, call in _torch_prefixes(root, calls):
            sub = _sub(params, call.name)
            for name, path, transform, trainable in _torch_entries(call.module, sub, root):
                full = (call.name, *path)
                ours = flat[full]
                out.append(Entry(_j(prefix, name), TRANSFORMS[transform][1](ours.shape), full, transform,
                                 trainable))
    else:
        counts: dict[str, int] = {}
        for call in calls:
            cls = _flax_class(call.module, root)
            top = f"{cls}_{counts.get(cls, 0)}"
            counts[cls] = counts.get(cls, 0) + 1
            sub = _sub(params, call.name)
            for path, leaf in traverse_util.flatten_dict(sub).items():
                theirs = _flax_rename(path)
                if isinstance(call.module, ResidualBlock):
                    theirs = _flax_residual_reindex(call.module, sub, theirs)
                trainable = not isinstance(call.module, GaussianFourierProjection)
                out.append(Entry("/".join((top, *theirs)), tuple(leaf.shape), (call.name, *path), "none", trainable))
        out.sort(key=lambda e: e.name)
    _check_covers(out, params)
    return tuple(out)


def _check_covers(entries, params):
    """Every parameter of ours in exactly one entry; names unique (an internal consistency check)."""
    ours = set(traverse_util.flatten_dict(params))
    paths = [e.path for e in entries]
    names = [e.name for e in entries]
    if len(set(paths)) != len(paths) or set(paths) != ours or len(set(names)) != len(names):
        missing = sorted(ours - set(paths))[:5]
        raise RuntimeError(f"internal error: checkpoint layout does not cover the model exactly once "
                           f"(uncovered: {missing}).")
