"""The network registry: ``config.model.name`` -> Flax module, ``init`` from a config, parameter counting.

One dict (:data:`MODELS`) maps every network name -- the toy ``"mlp"``, the paper's ``"ncsnpp"``,
``"ddpm"``, ``"ncsnv2_64/128/256"`` and the noise-conditional classifiers ``"wideresnet"`` (the paper's) and
``"mlp_classifier"`` (toy) -- to a builder that reads a config; :func:`get_model` and
:func:`init_model` go through it, and unknown names raise an error listing the valid ones. Networks are
turned into scores by the one factory :func:`sde_jax.models.get_score_fn`.

Config fields read (the one config dialect, shared with :mod:`sde_jax.training` and the experiments)::

    model.name, model.<network fields>, model.dtype ('float32' | 'bfloat16' | 'float16'), model.remat
    sde.{sigma_min, sigma_max, N}    the VE sigma table of networks that scale by sigma (NCSN++, DDPM, NCSNv2)
    data.{image_size, num_channels, centered} or data.dim (low-dimensional data): the input shape

Usage::

    cfg = sde_jax.models.get_config("small/ncsnpp")
    model, variables = sde_jax.models.init_model(key, cfg)          # input shape from cfg.data
    score_fn = sde_jax.models.get_score_fn(sde, model, variables)   # the paper's conventions
    n = sde_jax.models.count_params(variables)
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sde_jax import _checks as C
from sde_jax.models.classifier import ClassifierMLP, WideResNet
from sde_jax.models.ddpm import DDPM
from sde_jax.models.mlp import ScoreMLP
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSNV2_VARIANTS, NCSNv2

__all__ = ["MODELS", "register_model", "get_model", "init_model", "count_params", "model_names", "DTYPES",
           "input_shape_of"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Fields of config.model that are not network constructor arguments.
_RESERVED = ("name", "parameterization", "sigma_data")


def _dtype(m) -> Any:
    return C.lookup(DTYPES, m.get("dtype", "float32"), "model.dtype")


def _sigma_table(config) -> dict:
    """The VE sigma table from ``config.sde`` (networks that divide by sigma look it up by level)."""
    s = config.get("sde", ml_collections.ConfigDict())
    return dict(sigma_min=float(s.get("sigma_min", 0.01)), sigma_max=float(s.get("sigma_max", 50.0)),
                num_scales=int(s.get("N", 1000)))


def _common(config) -> dict:
    m = config.model
    return dict(centered=bool(config.data.centered), dtype=_dtype(m), remat=bool(m.get("remat", False)),
                **_sigma_table(config))


def _build_from_fields(cls, config) -> nn.Module:
    """``cls`` from ``config.model``: every field but ``name``/``parameterization``/``sigma_data`` must be one
    of its attributes (the toy MLPs)."""
    allowed = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
    kwargs = {}
    for k, v in config.model.items():
        if k in _RESERVED:
            continue
        if k not in allowed:
            raise ValueError(f"model.{k}: not a field of {cls.__name__}; valid fields: {sorted(allowed)}.")
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def _build_wideresnet(config) -> nn.Module:
    m = config.model
    return WideResNet(num_classes=int(m.num_classes), blocks_per_group=int(m.blocks_per_group),
                      channel_multiplier=int(m.channel_multiplier), embedding_size=int(m.get("embedding_size", 128)),
                      fourier_scale=float(m.get("fourier_scale", 16.0)),
                      embedding_width=int(m.get("embedding_width", 512)), dtype=_dtype(m))


def _build_ncsnpp(config) -> nn.Module:
    m = config.model
    return NCSNpp(
        nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
        attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout, resamp_with_conv=m.resamp_with_conv,
        conditional=m.conditional, fir=m.fir, fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale,
        resblock_type=m.resblock_type.lower(), progressive=m.progressive.lower(),
        progressive_input=m.progressive_input.lower(), progressive_combine=m.progressive_combine.lower(),
        embedding_type=m.embedding_type.lower(), fourier_scale=float(m.fourier_scale),
        init_scale=float(m.init_scale), nonlinearity=m.nonlinearity, scale_by_sigma=m.scale_by_sigma,
        num_classes=int(m.get("num_classes", 0)), **_common(config))


def _build_ddpm(config) -> nn.Module:
    m = config.model
    return DDPM(nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                resamp_with_conv=m.resamp_with_conv, conditional=m.conditional, nonlinearity=m.nonlinearity,
                scale_by_sigma=m.scale_by_sigma, **_common(config))


def _build_ncsnv2(variant: str, config) -> nn.Module:
    m = config.model
    return NCSNv2(variant=variant, nf=m.nf, normalization=m.normalization, nonlinearity=m.nonlinearity,
                  interpolation=m.get("interpolation", "bilinear"), **_common(config),
                  # source-code conventions (issue 13; sde_jax.models.config_for_source sets them)
                  align_corners=bool(m.get("align_corners", False)),
                  unbiased_channel_var=bool(m.get("unbiased_channel_var", False)),
                  refine_mults=None if m.get("refine_mults") is None else tuple(m.refine_mults))


MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "mlp": functools.partial(_build_from_fields, ScoreMLP),
    "mlp_classifier": functools.partial(_build_from_fields, ClassifierMLP),
    "wideresnet": _build_wideresnet,
    "ncsnpp": _build_ncsnpp,
    "ddpm": _build_ddpm,
    **{name: functools.partial(_build_ncsnv2, name) for name in NCSNV2_VARIANTS},
}
"""``config.model.name`` -> ``builder(config) -> flax module``. The one place network names live."""


def register_model(name: str, builder: Callable[[ml_collections.ConfigDict], nn.Module]) -> None:
    """Add a network: ``builder(config)`` returns a Flax module ``(x [B, ...], labels [B]) -> [B, ...]``."""
    if not isinstance(name, str) or not callable(builder):
        raise TypeError("register_model(name: str, builder: config -> flax module).")
    MODELS[name] = builder


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module described by ``config.model`` (plus ``config.sde``'s sigma table, ``config.data``)."""
    return C.lookup(MODELS, config.model.name, "model.name")(config)


def input_shape_of(config, batch: int = 1) -> tuple[int, ...]:
    """``(batch, H, W, C)`` from ``config.data.{image_size, num_channels}`` or ``(batch, D)`` from
    ``config.data.dim``."""
    d = config.get("data", ml_collections.ConfigDict())
    if "image_size" in d:
        return (batch, int(d.image_size), int(d.image_size), int(d.num_channels))
    if "dim" in d:
        return (batch, int(d.dim))
    raise ValueError("config.data must give the input shape: image_size and num_channels (images) or dim "
                     "(vectors); or pass input_shape.")


def init_model(key, config: ml_collections.ConfigDict, input_shape: tuple[int, ...] | None = None,
               *, abstract: bool = False):
    """Build the model and initialise its variables.

    Args:
      key: typed PRNG key.
      config: a config with ``model``, ``data`` (and ``sde``) sections.
      input_shape: ``(B, H, W, C)`` or ``(B, D)``; default from ``config.data`` (:func:`input_shape_of`).
      abstract: return ``jax.ShapeDtypeStruct`` leaves via ``jax.eval_shape`` (no compute, no memory):
        the way to inspect paper-size models on a CPU.

    Returns:
      ``(model, variables)`` where ``variables = {'params': ...}``.
    """
    shape = input_shape_of(config) if input_shape is None else tuple(input_shape)
    if len(shape) < 2:
        raise ValueError(f"input_shape must be (B, ...) with a data axis; got {shape}.")
    model = get_model(config)
    x = jnp.zeros(shape, jnp.float32)
    labels = jnp.ones((shape[0],), jnp.float32)   # a valid time, level and sigma (log sigma is taken)
    kwargs = {}
    params = inspect.signature(type(model).__call__).parameters
    if getattr(model, "num_classes", 0) and "class_labels" in params:   # class-conditional score networks
        kwargs["class_labels"] = jnp.zeros((shape[0],), jnp.int32)
    if "train" in params:
        kwargs["train"] = False

    def init(k):
        return model.init({"params": k, "dropout": k}, x, labels, **kwargs)

    if abstract:
        return model, jax.eval_shape(init, key)
    if not C.is_concrete(key):   # under a caller's trace the init is part of the caller's program
        return model, init(key)
    return model, jax.jit(init).lower(key).compile(compiler_options=_init_compiler_options())(key)


def _init_compiler_options():
    """XLA options of the one-off init program: on the CPU, LLVM optimisation level 1 instead of 2.

    The init program runs once, so its compile time is what counts: for ``small/ncsnpp`` level 1 compiles in
    10.5 s instead of 24 s and gives bitwise the same variables (measured on jaxlib 0.10.2; level 0 compiles
    in 8 s but changes last bits, so it is not used). Other backends keep their defaults.
    """
    return {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None


def count_params(variables) -> int:
    """Number of scalars in ``variables['params']`` (or in the whole tree if it has no ``'params'``).

    Works on arrays and on ``jax.ShapeDtypeStruct`` leaves from ``init_model(..., abstract=True)``.
    """
    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree)))
