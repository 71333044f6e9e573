"""From an ``ml_collections`` config to the pieces of a run, with validation before any training.

Registries (one place each) map config names to constructors; unknown names raise ``ValueError`` naming the
config field and listing the valid names. :func:`validate_config` checks a whole config (names, numbers,
batch divisibility over the devices, a writable workdir) before anything is compiled.

Config fields read here (see ``experiments/toy2d/configs/default.py`` for a full example)::

    seed
    sde.{name, beta_min, beta_max, sigma_min, sigma_max, N}
    model.{name, parameterization, <network fields>}
    training.{loss, batch_size, num_steps, steps_per_call, log_every, checkpoint_every, snapshot_every,
              num_devices, reduce_mean, likelihood_weighting, importance_sampling, eps, num_projections,
              projection}
    optim.{optimizer, lr, beta1, beta2, eps, weight_decay, warmup, decay, final_lr_ratio, grad_clip, ema_rate,
          ema_warmup}
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import os
import tempfile
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from sde_jax import losses
from sde_jax.models.mlp import ScoreMLP
from sde_jax.models.wrappers import PARAMETERIZATIONS, get_score_fn
from sde_jax.parallel import check_batch_divisible, make_data_mesh
from sde_jax.sdes import VESDE, VPSDE, SubVPSDE
from sde_jax.training.state import OPTIMIZERS, get_optimizer

__all__ = ["SDES", "MODELS", "DISCRETE_LOSSES", "register_model", "build_sde", "build_model", "build_loss",
           "build_score_fn_factory", "build_mesh", "is_continuous", "init_params", "validate_config", "check_workdir", "Components", "build"]

SDES = {
    "vesde": (VESDE, ("sigma_min", "sigma_max", "N")),
    "vpsde": (VPSDE, ("beta_min", "beta_max", "N")),
    "subvpsde": (SubVPSDE, ("beta_min", "beta_max", "N")),
}
"""``config.sde.name`` -> (class, the config fields it takes)."""

MODELS: dict[str, Callable] = {"mlp": ScoreMLP}
"""Low-dimensional networks: ``config.model.name`` -> Flax module class, whose dataclass fields are read
from ``config.model``. Other names go to the image-network registry :data:`sde_jax.models.registry.MODELS`
(builders of the whole config)."""

_MODEL_RESERVED = ("name", "parameterization")

DISCRETE_LOSSES = {"smld": VESDE, "ddpm": VPSDE}
"""Losses over an SDE's discrete levels (trained with a discrete-time score wrapper) and the SDE each needs."""


def register_model(name: str, module_class) -> None:
    """Add a network class to :data:`MODELS` (e.g. an image network from another module)."""
    MODELS[name] = module_class


def _lookup(registry, name, field):
    if name not in registry:
        raise ValueError(f"{field}: unknown name {name!r}; valid names: {sorted(registry)}.")
    return registry[name]


def build_sde(sde_config):
    """The SDE named by ``config.sde.name`` with its fields."""
    cls, fields = _lookup(SDES, sde_config.name, "sde.name")
    kwargs = {f: sde_config[f] for f in fields if f in sde_config}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"sde ({sde_config.name}): {e}") from None


def _model_fields(cls):
    return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}


def _image_models():
    from sde_jax.models import registry  # imported lazily: the image networks are not needed for toy data

    return registry.MODELS


def build_model(config):
    """The Flax module named by ``config.model.name``.

    For the networks in :data:`MODELS` every other field of ``config.model`` (bar ``parameterization``) must
    be one of the module's attributes; image networks are built by :func:`sde_jax.models.get_model`.
    """
    model_config = config.model
    if model_config.name not in MODELS and model_config.name in _image_models():
        from sde_jax.models import registry

        return registry.get_model(config)
    cls = _lookup({**MODELS, **_image_models()}, model_config.name, "model.name")
    allowed = _model_fields(cls)
    kwargs = {}
    for k, v in model_config.items():
        if k in _MODEL_RESERVED:
            continue
        if k not in allowed:
            raise ValueError(f"model.{k}: not a field of {cls.__name__}; valid fields: {sorted(allowed)}.")
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def is_continuous(config) -> bool:
    """Continuous-time training unless the loss is a discrete one (``smld``, ``ddpm``)."""
    return config.training.loss not in DISCRETE_LOSSES


def build_loss(config, sde, **extra) -> Callable:
    """``loss_fn(score_fn, key, batch)`` named by ``config.training.loss``; its options are the
    ``config.training`` fields that the loss factory accepts, plus ``extra`` (e.g. ``target_score_fn``)."""
    name = config.training.loss
    factory = _lookup(losses.LOSSES, name, "training.loss")
    if name in DISCRETE_LOSSES and not isinstance(sde, DISCRETE_LOSSES[name]):
        raise ValueError(f"training.loss: {name!r} needs sde.name={_sde_name(DISCRETE_LOSSES[name])!r}; "
                         f"got {config.sde.name!r}.")
    params = inspect.signature(factory).parameters
    options = {k: config.training[k] for k in params if k in config.training and k not in ("method",)}
    options.update(extra)
    return factory(sde, **options)


def _sde_name(cls):
    return next(k for k, (c, _) in SDES.items() if c is cls)


def build_score_fn_factory(config, sde, model) -> Callable:
    """``params -> score_fn``: :func:`~sde_jax.models.get_score_fn` with the config's parameterisation and
    the continuity implied by the loss."""
    p = config.model.get("parameterization", "auto")
    p = None if p in (None, "auto") else p
    return functools.partial(get_score_fn, sde, model.apply, continuous=is_continuous(config), parameterization=p)


def build_mesh(config):
    """The ``data`` mesh over ``config.training.num_devices`` devices (0 or absent: all)."""
    n = config.training.get("num_devices", 0) or None
    try:
        return make_data_mesh(n)
    except ValueError as e:
        raise ValueError(f"training.num_devices: {e}") from None


def check_workdir(workdir: str) -> None:
    """Create ``workdir`` if needed and check that files can be written there."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
            pass
    except OSError as e:
        raise ValueError(f"workdir: {workdir!r} is not writable ({e.strerror or e}).") from None


def _int(config, path, minimum):
    section, field = path.split(".")
    v = config[section].get(field)
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{path} must be an integer >= {minimum}; got {v!r}.")


def _float(config, path, lo, hi=None, *, lo_open=False):
    section, field = path.split(".")
    v = config[section].get(field)
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and (v > lo if lo_open else v >= lo)
    ok = ok and (hi is None or v <= hi)
    if not ok:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"{path} must be a number {rng}; got {v!r}.")


def validate_config(config, workdir: str | None = None) -> None:
    """Check a training config before anything runs; raise ``ValueError`` naming the offending field."""
    sde = build_sde(config.sde)
    build_model(config)
    p = config.model.get("parameterization", "auto")
    if p not in ("auto", None) and p not in PARAMETERIZATIONS:
        raise ValueError(f"model.parameterization: unknown name {p!r}; valid names: "
                         f"{sorted(PARAMETERIZATIONS) + ['auto']}.")
    _lookup(losses.LOSSES, config.training.loss, "training.loss")
    if config.training.loss in DISCRETE_LOSSES and not isinstance(sde, DISCRETE_LOSSES[config.training.loss]):
        raise ValueError(f"training.loss: {config.training.loss!r} needs "
                         f"sde.name={_sde_name(DISCRETE_LOSSES[config.training.loss])!r}; got {config.sde.name!r}.")
    if config.training.get("projection", "gaussian") not in ("gaussian", "rademacher"):
        raise ValueError(f"training.projection: unknown name {config.training.projection!r}; valid names: "
                         f"['gaussian', 'rademacher'].")
    for path, minimum in (("training.batch_size", 1), ("training.num_steps", 1), ("training.steps_per_call", 1),
                          ("training.log_every", 1), ("training.num_projections", 1)):
        if path.split(".")[1] in config.training:
            _int(config, path, minimum)
    if config.training.get("checkpoint_every") is not None:
        _int(config, "training.checkpoint_every", 1)
    if config.training.get("snapshot_every") is not None:
        _int(config, "training.snapshot_every", 0)  # 0: no snapshots
    if "eps" in config.training:
        _float(config, "training.eps", 0.0, sde.T)
    _lookup(OPTIMIZERS, config.optim.optimizer, "optim.optimizer")
    _float(config, "optim.lr", 0.0)
    _int(config, "optim.warmup", 0)
    try:
        get_optimizer(config.optim, config.training.num_steps)
    except ValueError as e:
        raise ValueError(f"optim: {e}") from None
    _float(config, "optim.ema_rate", 0.0, 1.0)
    if config.optim.get("grad_clip") is not None:
        _float(config, "optim.grad_clip", 0.0)
    mesh = build_mesh(config)
    check_batch_divisible(config.training.batch_size, mesh, name="training.batch_size")
    if workdir is not None:
        check_workdir(workdir)


class Components(NamedTuple):
    """The pieces of a run built from a config."""

    sde: Any
    model: Any
    loss_fn: Callable
    make_score_fn: Callable
    tx: Any
    schedule: Callable
    mesh: Any


def build(config, workdir: str | None = None, **loss_extra) -> Components:
    """Validate ``config`` (and ``workdir``) and build every piece of the run."""
    validate_config(config, workdir)
    sde = build_sde(config.sde)
    model = build_model(config)
    tx, schedule = get_optimizer(config.optim, config.training.num_steps)
    return Components(sde=sde, model=model, loss_fn=build_loss(config, sde, **loss_extra),
                      make_score_fn=build_score_fn_factory(config, sde, model), tx=tx, schedule=schedule,
                      mesh=build_mesh(config))


def init_params(model, key, data_shape, dtype=jnp.float32):
    """``model.init`` on a dummy batch ``[2, *data_shape]`` with labels ``[2]`` of ones."""
    x = jnp.zeros((2,) + tuple(data_shape), dtype)
    return model.init(key, x, jnp.ones((2,), dtype))
