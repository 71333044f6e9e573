"""The model registry: ``config.model.name`` -> Flax module, ``init`` from a config, parameter counting.

One dict (:data:`MODELS`) maps the paper's model names to a builder that reads a config; everything else
(``get_model``, ``init_model``) goes through it, and unknown names raise an error listing the valid ones.

Usage::

    cfg = sde_jax.models.get_config("small/ncsnpp")
    model, variables = sde_jax.models.init_model(key, cfg)          # input shape from cfg.data
    out = model.apply(variables, x, labels, train=False)             # x [B, H, W, C], labels [B]
    n = sde_jax.models.count_params(variables)

The network's raw output becomes a score ``score_fn(x, t)`` through the wrapper in
:mod:`sde_jax.models.wrappers` (``get_score_fn(sde, model.apply, variables, continuous=...)``), which
applies the paper's label and scaling conventions (see the models README).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSNV2_VARIANTS, NCSNv2
from sde_jax.models.wrappers import get_score_fn
from sde_jax.sdes import VESDE

__all__ = ["MODELS", "get_model", "init_model", "count_params", "model_names", "DTYPES", "scales_by_sigma",
           "get_model_score_fn"]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _dtype(m) -> Any:
    name = m.get("dtype", "float32")
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"Unknown model.dtype {name!r}; valid: {sorted(DTYPES)}.") from None


def _common(config) -> dict:
    m = config.model
    return dict(centered=bool(config.data.centered), sigma_min=float(m.sigma_min), sigma_max=float(m.sigma_max),
                num_scales=int(m.num_scales), dtype=_dtype(m), remat=bool(m.get("remat", False)))


def _build_ncsnpp(config) -> nn.Module:
    m = config.model
    if m.embedding_type == "fourier" and not config.training.get("continuous", True):
        raise ValueError("Fourier embeddings condition on sigma and are only for continuous training "
                         "(config.training.continuous=True); use embedding_type='positional'.")
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


# config.model.name -> builder(config) -> flax module. The one place model names live.
MODELS: dict[str, Callable[[ml_collections.ConfigDict], nn.Module]] = {
    "ncsnpp": _build_ncsnpp,
    "ddpm": _build_ddpm,
    **{name: functools.partial(_build_ncsnv2, name) for name in NCSNV2_VARIANTS},
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The Flax module described by ``config.model`` (and ``config.data.centered``)."""
    name = config.model.name
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"Unknown model name {name!r}; valid: {model_names()}.") from None
    return builder(config)


def _dummy_labels(config, batch: int):
    if config.model.name == "ncsnpp" and config.model.embedding_type == "fourier":
        return jnp.full((batch,), float(config.model.sigma_max), jnp.float32)   # a valid sigma (log taken)
    return jnp.zeros((batch,), jnp.float32)


def init_model(key, config: ml_collections.ConfigDict, input_shape: tuple[int, ...] | None = None,
               *, abstract: bool = False):
    """Build the model and initialise its variables.

    Args:
      key: typed PRNG key.
      config: a config with ``model`` and ``data`` sections (see :mod:`sde_jax.models.configs`).
      input_shape: ``(B, H, W, C)``; default ``(1, image_size, image_size, num_channels)`` from ``config.data``.
      abstract: return ``jax.ShapeDtypeStruct`` leaves via ``jax.eval_shape`` (no compute, no memory):
        the way to inspect paper-size models on a CPU.

    Returns:
      ``(model, variables)`` where ``variables = {'params': ...}``.
    """
    if input_shape is None:
        s = config.data.image_size
        input_shape = (1, s, s, config.data.num_channels)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (B, H, W, C); got {input_shape}.")
    model = get_model(config)
    x = jnp.zeros(input_shape, jnp.float32)
    labels = _dummy_labels(config, input_shape[0])
    kwargs = {}
    if getattr(model, "num_classes", 0):
        kwargs["class_labels"] = jnp.zeros((input_shape[0],), jnp.int32)

    def init(k):
        return model.init({"params": k, "dropout": k}, x, labels, train=False, **kwargs)

    variables = jax.eval_shape(init, key) if abstract else jax.jit(init)(key)
    return model, variables


def count_params(variables) -> int:
    """Number of scalars in ``variables['params']`` (or in the whole tree if it has no ``'params'``).

    Works on arrays and on ``jax.ShapeDtypeStruct`` leaves from ``init_model(..., abstract=True)``.
    """
    tree = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree)))


def scales_by_sigma(model: nn.Module) -> bool:
    """Whether the network divides its output by the noise level itself (NCSNv2 always; NCSN++/DDPM when
    ``scale_by_sigma``)."""
    return isinstance(model, NCSNv2) or bool(getattr(model, "scale_by_sigma", False))


def get_model_score_fn(sde, model: nn.Module, variables, *, continuous: bool = True, train: bool = False):
    """``score_fn(x, t)`` for one of these networks with the paper's conventions (``models/utils.py``).

    The labels and output scaling, by SDE (``wrappers.get_score_fn`` does the work):

    * VE, continuous: label ``sigma(t)`` (NCSN++ embeds ``log sigma`` with Fourier features); the network
      output is the score when the network scales by sigma (the paper's configs: ``parameterization
      'score'``), else it is divided by ``sigma(t)`` here (``'scaled'``).
    * VE, discrete: label ``N - 1 - i`` (0 = sigma_max, the network's sigma table), same scaling rule.
    * VP / sub-VP: label ``999 t`` (continuous) or the level ``i`` (discrete VP); the network predicts the
      noise and ``s = -out / std`` (``'noise'``).

    Args:
      sde: a ``VESDE``, ``VPSDE`` or ``SubVPSDE``.
      model: the module from :func:`get_model`; ``variables`` its variables.
      continuous: ``config.training.continuous``.
      train: forwarded to ``model.apply`` (dropout needs an rng; keep ``False`` for sampling).

    Raises:
      ValueError: for a VE SDE whose discrete sigmas differ from the network's sigma table, or a
        network that scales by sigma under a VP/sub-VP SDE.
    """
    if isinstance(sde, VESDE):
        if continuous and scales_by_sigma(model) and not _uses_sigma_labels(model):
            raise ValueError("Continuous VE labels are sigma(t), but this network looks sigma up in its table "
                             "by integer level (scale_by_sigma without Fourier embedding); use continuous=False "
                             "or an NCSN++ with embedding_type='fourier'.")
        if not continuous and _uses_sigma_labels(model):
            raise ValueError("A Fourier-embedding NCSN++ is conditioned on sigma and needs continuous=True.")
        if not continuous and scales_by_sigma(model):
            table = (float(model.sigma_min), float(model.sigma_max), int(model.num_scales))
            if not (abs(table[0] - float(sde.sigma_min)) <= 1e-6 * table[0]
                    and abs(table[1] - float(sde.sigma_max)) <= 1e-6 * table[1] and table[2] == sde.N):
                raise ValueError(f"The network's sigma table (sigma_min, sigma_max, num_scales) = {table} does "
                                 f"not match the VESDE ({sde.sigma_min}, {sde.sigma_max}, N={sde.N}).")
        parameterization = "score" if scales_by_sigma(model) else "scaled"
    else:
        if scales_by_sigma(model):
            raise ValueError("A network with scale_by_sigma cannot be used with a VP/sub-VP SDE "
                             "(the paper's VP configs set scale_by_sigma=False).")
        parameterization = "noise"
    return get_score_fn(sde, model.apply, variables, continuous=continuous, parameterization=parameterization,
                        train=train)


def _uses_sigma_labels(model) -> bool:
    return isinstance(model, NCSNpp) and model.embedding_type == "fourier"
