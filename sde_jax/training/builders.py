"""``build(config)``: the one place where an ``ml_collections`` config becomes the pieces of a run.

:func:`build` validates the config (names, numbers, batch divisibility over the devices, a writable workdir)
while it constructs each piece exactly once, so a bad config fails before anything is compiled, with an error
naming the field. The experiments get their pieces from it and from nothing else.

Config fields read (the one config dialect; ``sde_jax.models.get_config`` and
``experiments/toy2d/configs/default.py`` are full examples)::

    seed
    sde.{name, beta_min, beta_max, sigma_min, sigma_max, N}
    data.{image_size, num_channels, centered} (images) or data.dim / the data_shape argument (vectors)
    model.{name, parameterization, sigma_data, <network fields>}   (sde_jax.models.registry; sigma_data: 'edm')
    training.{loss ('classifier': a noise-conditional classifier on (x, labels) batches), batch_size,
              num_steps, steps_per_call, log_every, checkpoint_every, snapshot_every,
              num_devices, reduce_mean, likelihood_weighting, importance_sampling, eps, num_projections,
              projection, p_mean, p_std (loss 'edm')}
    optim.{optimizer, lr, beta1, beta2, eps, weight_decay, warmup, decay, final_lr_ratio, grad_clip, ema_rate,
          ema_warmup}
"""
from __future__ import annotations

import functools
import inspect
import numbers
import os
import tempfile
from typing import Any, Callable, NamedTuple

from sde_jax import _checks as C
from sde_jax import losses
from sde_jax.models import registry
from sde_jax.models.wrappers import PARAMETERIZATIONS, get_logit_fn, get_score_fn, is_classifier
from sde_jax.parallel import check_batch_divisible, make_data_mesh
from sde_jax.sdes import VESDE, VPSDE, SubVPSDE
from sde_jax.training.state import OPTIMIZERS, get_optimizer
from sde_jax.training.step import make_train_step

__all__ = ["SDES", "DISCRETE_LOSSES", "PROJECTIONS", "CONDITIONAL_LOSSES", "Components", "build", "build_sde",
           "is_continuous", "check_workdir", "class_conditional_loss"]

SDES = {
    "vesde": (VESDE, ("sigma_min", "sigma_max", "N")),
    "vpsde": (VPSDE, ("beta_min", "beta_max", "N")),
    "subvpsde": (SubVPSDE, ("beta_min", "beta_max", "N")),
}
"""``config.sde.name`` -> (class, the config fields it takes)."""

DISCRETE_LOSSES = {"smld": VESDE, "ddpm": VPSDE}
"""Losses over an SDE's discrete levels (trained with a discrete-time score function) and the SDE each needs."""

PROJECTIONS = ("gaussian", "rademacher")

CONDITIONAL_LOSSES = ("dsm", "smld", "ddpm")
"""Losses that evaluate the score on the whole batch at once, so a batch of class labels can ride along."""


class Components(NamedTuple):
    """The pieces of a run built from a config.

    Attributes:
      sde: the SDE.
      model: the Flax module.
      loss_fn: ``loss_fn(score_fn, key, batch) -> (loss, aux)``; with ``model.num_classes > 0`` batches are
        ``{"image", "label"}`` dicts (:func:`class_conditional_loss`).
      make_score_fn: ``(params, rngs=None, class_labels=None) -> score_fn`` with the config's conventions (for a
        classifier, ``training.loss = 'classifier'``: ``params -> logit_fn``, :func:`sde_jax.models.get_logit_fn`).
      tx, schedule: the optax optimizer and its learning-rate schedule.
      mesh: the data-parallel device mesh.
      train_step: the pure step ``(state, batch, key) -> (state, metrics)`` (EMA, schedule, dropout rngs).
      init_params: ``key -> variables`` for the config's data shape.
      data_shape: the shape of one example.
    """

    sde: Any
    model: Any
    loss_fn: Callable
    make_score_fn: Callable
    tx: Any
    schedule: Callable
    mesh: Any
    train_step: Callable
    init_params: Callable
    data_shape: tuple


def build_sde(sde_config):
    """The SDE named by ``config.sde.name`` with its fields."""
    cls, fields = C.lookup(SDES, sde_config.get("name"), "sde.name")
    kwargs = {f: sde_config[f] for f in fields if f in sde_config}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"sde ({sde_config.name}): {e}") from None


def is_continuous(config) -> bool:
    """Continuous-time training (labels ``sigma(t)`` / ``999 t``) unless the loss is a discrete one."""
    return config.training.loss not in DISCRETE_LOSSES


def check_workdir(workdir: str) -> None:
    """Create ``workdir`` if needed and check that files can be written there."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
            pass
    except OSError as e:
        raise ValueError(f"workdir: {workdir!r} is not writable ({e.strerror or e}).") from None


def _int(config, path, minimum, *, optional=False):
    section, field = path.split(".")
    if optional and config[section].get(field) is None:
        return None
    return C.check_int(path, config[section].get(field), minimum)


def _float(config, path, lo, hi=None, *, lo_open=False):
    section, field = path.split(".")
    v = config[section].get(field)
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and (v > lo if lo_open else v >= lo)
    ok = ok and v < float("inf") and (hi is None or v <= hi)
    if not ok:
        rng = f"{'>' if lo_open else '>='} {lo}" + (f" and <= {hi}" if hi is not None else "")
        raise ValueError(f"{path} must be a number {rng}; got {v!r}.")
    return float(v)


def _check_training(config, sde):
    t = config.training
    C.lookup(losses.LOSSES, t.loss, "training.loss")
    if t.loss in DISCRETE_LOSSES and not isinstance(sde, DISCRETE_LOSSES[t.loss]):
        needs = next(k for k, (c, _) in SDES.items() if c is DISCRETE_LOSSES[t.loss])
        raise ValueError(f"training.loss: {t.loss!r} needs sde.name={needs!r}; got {config.sde.name!r}.")
    if "projection" in t:
        C.lookup(dict.fromkeys(PROJECTIONS), t.projection, "training.projection")
    for field, minimum in (("batch_size", 1), ("num_steps", 1), ("steps_per_call", 1), ("log_every", 1),
                           ("num_projections", 1)):
        if field in t:
            _int(config, f"training.{field}", minimum)
    _int(config, "training.checkpoint_every", 1, optional=True)
    _int(config, "training.snapshot_every", 0, optional=True)   # 0: no snapshots
    if "eps" in t:
        _float(config, "training.eps", 0.0, sde.T, lo_open=True)


def class_conditional_loss(loss_fn: Callable) -> Callable:
    """A loss over batches ``{"image": x [B, ...], "label": y [B]}`` for a class-conditional network: the score
    function (a :class:`~sde_jax.models.ScoreFn`) is given the labels ``y`` and ``loss_fn`` sees ``x``."""

    def loss(score_fn, key, batch):
        return loss_fn(score_fn.replace(class_labels=batch["label"]), key, batch["image"])

    return loss


def _check_optim(config):
    o = config.optim
    C.lookup(OPTIMIZERS, o.optimizer, "optim.optimizer")
    _float(config, "optim.lr", 0.0)
    _int(config, "optim.warmup", 0)
    _float(config, "optim.ema_rate", 0.0, 1.0)
    if o.get("grad_clip") is not None:
        _float(config, "optim.grad_clip", 0.0)


def _build_loss(config, sde, extra):
    factory = losses.LOSSES[config.training.loss]
    params = inspect.signature(factory).parameters
    options = {k: config.training[k] for k in params if k in config.training and k != "method"}
    if "sigma_data" in params and config.model.get("sigma_data") is not None:
        options["sigma_data"] = config.model.sigma_data   # one field, shared with the 'edm' parameterisation
    options.update(extra)
    return factory(sde, **options)


def _make_score_fn_factory(config, sde, model):
    classifier_loss = config.training.loss in losses.CLASSIFIER_LOSSES
    if classifier_loss != is_classifier(model):
        if classifier_loss:
            raise ValueError(f"training.loss: {config.training.loss!r} trains a classifier, but model.name "
                             f"{config.model.name!r} is a score network; use a classifier ('wideresnet', "
                             f"'mlp_classifier').")
        raise ValueError(f"training.loss: {config.training.loss!r} trains a score network, but model.name "
                         f"{config.model.name!r} is a classifier; use training.loss='classifier'.")
    if classifier_loss:
        return functools.partial(get_logit_fn, sde, model)
    p = config.model.get("parameterization", "auto")
    if p not in ("auto", None) and p not in PARAMETERIZATIONS:
        raise ValueError(f"unknown model.parameterization {p!r}; valid names: "
                         f"{sorted(PARAMETERIZATIONS) + ['auto']}.")
    kwargs = {"sigma_data": config.model.get("sigma_data")} if p == "edm" else {}
    factory = functools.partial(get_score_fn, sde, model, continuous=is_continuous(config),
                                parameterization=None if p in ("auto", None) else p, **kwargs)
    factory(None)   # refuses SDE/network/label combinations that cannot give a score, before any compile
    return factory


def _data_shape(config, data_shape):
    if data_shape is not None:
        return tuple(int(s) for s in data_shape)
    return registry.input_shape_of(config)[1:]


def build(config, workdir: str | None = None, *, data_shape=None, loss_extra=None) -> Components:
    """Validate ``config`` (and ``workdir``) while building every piece of the run, each once.

    Args:
      config: a run config (module docstring).
      workdir: checked to be writable (created) when given.
      data_shape: the shape of one example, e.g. ``(2,)`` for a 2-D toy target; default from ``config.data``.
      loss_extra: extra loss options, or ``sde -> dict`` (e.g. ESM's ``target_score_fn``, which needs the SDE).

    Returns:
      :class:`Components`.

    Raises:
      ValueError: naming the first bad field (unknown names list the valid ones).
    """
    sde = build_sde(config.sde)
    model = registry.get_model(config)
    shape = _data_shape(config, data_shape)
    _check_training(config, sde)
    _check_optim(config)
    make_score_fn = _make_score_fn_factory(config, sde, model)
    extra = loss_extra(sde) if callable(loss_extra) else dict(loss_extra or {})
    loss_fn = _build_loss(config, sde, extra)
    if int(config.model.get("num_classes", 0) or 0) > 0 and not is_classifier(model):
        if config.training.loss not in CONDITIONAL_LOSSES:
            raise ValueError(f"training.loss: a class-conditional network (model.num_classes > 0) trains with "
                             f"{list(CONDITIONAL_LOSSES)}; got {config.training.loss!r}.")
        loss_fn = class_conditional_loss(loss_fn)
    try:
        tx, schedule = get_optimizer(config.optim, config.training.num_steps)
    except ValueError as e:
        raise ValueError(f"optim: {e}") from None
    try:
        mesh = make_data_mesh(config.training.get("num_devices", 0) or None)
    except ValueError as e:
        raise ValueError(f"training.num_devices: {e}") from None
    check_batch_divisible(config.training.batch_size, mesh, name="training.batch_size")
    if workdir is not None:
        check_workdir(workdir)
    dropout = float(getattr(model, "dropout", 0.0) or 0.0)
    train_step = make_train_step(loss_fn, make_score_fn, tx, ema_rate=config.optim.ema_rate,
                                 ema_warmup=bool(config.optim.get("ema_warmup", False)), schedule=schedule,
                                 model_rngs=("dropout",) if dropout > 0 else ())

    def init_params(key):
        return registry.init_model(key, config, (1,) + shape)[1]

    return Components(sde=sde, model=model, loss_fn=loss_fn, make_score_fn=make_score_fn, tx=tx,
                      schedule=schedule, mesh=mesh, train_step=train_step, init_params=init_params,
                      data_shape=shape)
