"""The score-function factory: from any network of ours (or an apply function) to ``score_fn(x, t)``.

:func:`get_score_fn` is the one place where a network's raw output becomes a score. It decides the paper's
conventions (yang-song/score_sde ``models/utils.py::get_score_fn``) from the SDE and the network:

* the **label** the network is conditioned on: ``sde.time_label(t, continuous=...)`` (VE: ``sigma(t)`` or the
  level ``N - 1 - i``; VP/sub-VP: ``999 t`` or the level ``i``; see :mod:`sde_jax.sdes`);
* the **output parameterisation**: ``"score"`` (the output is the score), ``"noise"`` (noise prediction,
  ``s = -out / std``; the paper's VP/sub-VP convention) or ``"scaled"`` (``s = out / std``; the paper's VE
  convention), with ``std = sde.label_std(t, continuous=...)``. By default (``parameterization=None``) a
  network that divides its output by sigma itself (the module's ``scale_by_sigma``: NCSN++/DDPM, NCSNv2) is
  taken as ``"score"``, and any other as the SDE's ``paper_parameterization``.
* ``"edm"``: EDM's preconditioning (:mod:`sde_jax.models.edm`): the network sees ``c_in x / a(t)`` and the
  label ``c_noise(sigma(t))`` and its output is mixed with the input by ``c_skip``/``c_out`` into a denoiser
  (``sigma_data`` is a leaf of the :class:`ScoreFn`).

Conventions that cannot work are refused here, with the reason: rescaling a network that already divides by
sigma; a ``scale_by_sigma`` network under a VP/sub-VP SDE; a continuous VE network that looks sigma up by
integer level; a sigma-conditioned (Fourier) network with discrete labels; a discrete VE network whose sigma
table differs from the SDE's.

:class:`ScoreFn` is a pytree callable: the parameters, the SDE's floats, optional class labels and dropout
keys are leaves, the apply function and the conventions are static, so a freshly built wrapper with new
parameters given to a jitted sampler or loss does not recompile.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from typing import NamedTuple

from sde_jax import _checks as C
from sde_jax._checks import check_batch, check_score
from sde_jax._pytree import pytree_dataclass, static_field
from sde_jax.models import edm
from sde_jax.sdes import SDE, VESDE, batch_broadcast

__all__ = ["ScoreFn", "get_score_fn", "PARAMETERIZATIONS", "Parameterization", "scales_by_sigma", "is_classifier",
           "LogitFn", "get_logit_fn", "ClassifierLogProb", "classifier_log_prob"]


class Parameterization(NamedTuple):
    """How a network's label, input and output relate to the score, for a :class:`ScoreFn` ``sf``.

    Attributes:
      labels: ``labels(sf, t) -> [B]``.
      inputs: ``inputs(sf, x, t) -> network input`` (shape of ``x``).
      output: ``output(sf, out, x, t) -> score``.
    """

    labels: Callable
    inputs: Callable
    output: Callable


def _time_labels(sf, t):
    return sf.sde.time_label(t, continuous=sf.continuous)


def _identity_inputs(sf, x, t):
    return x


def _divided(sign):
    """``sign * out / std`` with the SDE's ``label_std`` (0: the output is the score)."""
    def output(sf, out, x, t):
        if sign == 0:
            return out
        std = sf.sde.label_std(t, continuous=sf.continuous).astype(out.dtype)
        return sign * out / batch_broadcast(std, out)
    return output


PARAMETERIZATIONS = {
    "score": Parameterization(_time_labels, _identity_inputs, _divided(0)),
    "noise": Parameterization(_time_labels, _identity_inputs, _divided(-1)),
    "scaled": Parameterization(_time_labels, _identity_inputs, _divided(1)),
    "edm": Parameterization(edm.edm_labels, edm.edm_inputs, edm.edm_output),
}
"""Parameterisation name -> :class:`Parameterization` (see the module docstring)."""


def scales_by_sigma(model) -> bool:
    """Whether a network divides its output by the noise level itself (its ``scale_by_sigma``: a field of
    NCSN++ and DDPM, always true for NCSNv2)."""
    return bool(getattr(model, "scale_by_sigma", False))


@pytree_dataclass
class ScoreFn:
    """``score_fn(x, t) -> [B, ...]`` from a network: a pytree (params, SDE, class labels, rngs are leaves).

    Attributes:
      params: the network's variables, passed as the first argument of ``apply_fn``.
      sde: the SDE whose marginals the score is for.
      class_labels: optional ``[B]`` int class labels passed as ``class_labels=`` (class-conditional nets).
      rngs: optional PRNG keys passed as ``rngs=`` (e.g. ``{"dropout": key}`` when training with dropout).
      apply_fn: ``apply_fn(params, x, labels, **apply_kwargs) -> out`` (e.g. ``model.apply``); static.
      continuous: continuous-time labels (else discrete levels); static.
      parameterization: a key of :data:`PARAMETERIZATIONS`; static.
      apply_kwargs: static keyword arguments of ``apply_fn`` as ``(name, value)`` pairs (e.g. ``train``).
      sigma_data: the data std of the ``"edm"`` parameterisation (a leaf; ``None`` otherwise).
      log_labels: the network takes the log of its labels itself (static; used by ``"edm"``).
    """

    params: Any
    sde: SDE
    class_labels: Any = None
    rngs: Any = None
    sigma_data: Any = None
    apply_fn: Callable = static_field(default=None)
    continuous: bool = static_field(default=True)
    parameterization: str = static_field(default="score")
    apply_kwargs: tuple = static_field(default=())
    log_labels: bool = static_field(default=False)

    def labels(self, t):
        """The labels ``[B]`` the network is conditioned on at times ``t: [B]``."""
        return PARAMETERIZATIONS[self.parameterization].labels(self, t)

    def __call__(self, x, t):
        check_batch(x, t)
        kwargs = dict(self.apply_kwargs)
        if self.rngs is not None:
            kwargs["rngs"] = self.rngs
        if self.class_labels is not None:
            kwargs["class_labels"] = self.class_labels
        p = PARAMETERIZATIONS[self.parameterization]
        out = check_score(self.apply_fn(self.params, p.inputs(self, x, t), p.labels(self, t), **kwargs), x)
        return p.output(self, out, x, t)


def _module_and_apply(model):
    if isinstance(model, nn.Module):
        return model, model.apply
    if not callable(model):
        raise TypeError(f"model must be a Flax module or an apply function; got {model!r}.")
    return getattr(model, "__self__", None), model   # model.apply is bound to its module


def _takes(module, name) -> bool:
    try:
        return name in inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False


def _check_conventions(sde, module, continuous, parameterization):
    """Refuse the combinations of SDE, network and labels that cannot give a score (module docstring)."""
    if module is None:
        return
    scaled = scales_by_sigma(module)
    sigma_labels = bool(getattr(module, "uses_sigma_labels", False))
    name = type(module).__name__
    if scaled and parameterization != "score":
        raise ValueError(f"{name} divides its output by sigma itself (scale_by_sigma), so its output is already "
                         f"the score; parameterization {parameterization!r} would rescale it again. Use "
                         f"parameterization='score' or None (the paper's conventions).")
    if not isinstance(sde, VESDE):
        if scaled:
            raise ValueError(f"A network with scale_by_sigma ({name}) cannot be used with a "
                             f"{type(sde).__name__} (the paper's VP configs set scale_by_sigma=False).")
        return
    if continuous and scaled and not sigma_labels:
        raise ValueError(f"Continuous VE labels are sigma(t), but {name} looks sigma up in its table by integer "
                         f"level (scale_by_sigma without a Fourier embedding); use continuous=False or an NCSN++ "
                         f"with embedding_type='fourier'.")
    if not continuous and sigma_labels:
        raise ValueError(f"{name} is conditioned on sigma (Fourier embedding) and needs continuous=True.")
    if not continuous and scaled:
        table = (float(module.sigma_min), float(module.sigma_max), int(module.num_scales))
        if not (abs(table[0] - float(sde.sigma_min)) <= 1e-6 * table[0]
                and abs(table[1] - float(sde.sigma_max)) <= 1e-6 * table[1] and table[2] == sde.N):
            raise ValueError(f"The network's sigma table (sigma_min, sigma_max, num_scales) = {table} does not "
                             f"match the VESDE ({sde.sigma_min}, {sde.sigma_max}, N={sde.N}).")


def get_score_fn(sde: SDE, model, params, *, continuous: bool = True, parameterization: str | None = None,
                 class_labels=None, rngs=None, sigma_data=None, **apply_kwargs) -> ScoreFn:
    """``score_fn(x, t)`` for a network, with the paper's label and scaling conventions decided here.

    Args:
      sde: a ``VESDE``, ``VPSDE`` or ``SubVPSDE``.
      model: a Flax module of ours (``ScoreMLP``, ``NCSNpp``, ``DDPM``, ``NCSNv2``, from
        :func:`sde_jax.models.get_model`), its bound ``model.apply``, or any ``apply_fn(params, x, labels)``
        (then no convention checks are possible).
      params: its variables (e.g. ``{"params": ...}``).
      continuous: continuous-time labels (``sigma(t)`` / ``999 t``) or discrete levels (the discrete losses).
      parameterization: ``"score"``, ``"noise"``, ``"scaled"``, ``"edm"`` or ``None`` (the paper's choice, see the
        module docstring).
      class_labels: ``[B]`` class labels for a class-conditional network (a leaf: new labels do not recompile).
      rngs: PRNG keys forwarded as ``rngs=`` (e.g. ``{"dropout": key}``). Passing ``rngs`` means training:
        networks whose ``__call__`` takes ``train`` get ``train=True`` (dropout on) unless given otherwise.
      sigma_data: the data std for ``parameterization="edm"`` (> 0; required there, refused elsewhere).
      **apply_kwargs: static keyword arguments for ``apply_fn`` (hashable).

    Returns:
      a :class:`ScoreFn`.

    Raises:
      ValueError: unknown parameterization; a combination of SDE, network and labels that cannot give a score
        (module docstring); discrete labels for a sub-VP SDE.

    Example:
      >>> model = ScoreMLP()
      >>> params = model.init(key, x, jnp.ones(x.shape[0]))
      >>> score_fn = get_score_fn(sde, model, params, parameterization="noise")
      >>> score_fn(x, t)   # [B, D]
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an SDE (VESDE, VPSDE, SubVPSDE); got {type(sde).__name__}.")
    if not continuous:
        sde.time_label(jnp.zeros((1,)), continuous=False)   # raises for SDEs without discrete labels
    module, apply_fn = _module_and_apply(model)
    if parameterization is None:
        parameterization = "score" if scales_by_sigma(module) else sde.paper_parameterization
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {parameterization!r}; valid names: {sorted(PARAMETERIZATIONS)}.")
    _check_conventions(sde, module, bool(continuous), parameterization)
    log_labels = False
    if parameterization == "edm":
        if sigma_data is None:
            raise ValueError("parameterization='edm' needs sigma_data, the data's standard deviation (EDM: 0.5 for "
                             "images in [-1, 1]).")
        sigma_data = C.check_positive("sigma_data", sigma_data)
        if not continuous:
            raise ValueError("parameterization='edm' conditions the network on sigma(t): use continuous=True.")
        log_labels = bool(getattr(module, "uses_sigma_labels", False) or getattr(module, "log_labels", False))
    elif sigma_data is not None:
        raise ValueError(f"sigma_data is used by parameterization='edm' only; got parameterization "
                         f"{parameterization!r}.")
    if rngs is not None and module is not None and "train" not in apply_kwargs and _takes(module, "train"):
        apply_kwargs["train"] = True
    return ScoreFn(params=params, sde=sde, class_labels=class_labels, rngs=rngs, sigma_data=sigma_data,
                   apply_fn=apply_fn, continuous=bool(continuous), parameterization=parameterization,
                   apply_kwargs=tuple(sorted(apply_kwargs.items())), log_labels=log_labels)


# --------------------------------------------------------------------------------------------------
# Noise-conditional classifiers (classifier guidance): the twin of get_score_fn for logits
# --------------------------------------------------------------------------------------------------
def is_classifier(model) -> bool:
    """Whether a network (module or bound ``apply``) outputs class logits (``WideResNet``, ``ClassifierMLP``)."""
    module, _ = _module_and_apply(model)
    return bool(getattr(module, "is_classifier", False))


@pytree_dataclass
class LogitFn:
    """``logit_fn(x, t) -> [B, num_classes]`` of a noise-conditional classifier: a pytree (params and SDE are
    leaves), conditioned on ``sde.label_std(t)`` (``sigma(t)`` for VE, the kernel std for VP/sub-VP)."""

    params: Any
    sde: SDE
    apply_fn: Callable = static_field(default=None)

    def __call__(self, x, t):
        check_batch(x, t)
        logits = self.apply_fn(self.params, x, self.sde.label_std(t, continuous=True).astype(x.dtype))
        if jnp.ndim(logits) != 2 or jnp.shape(logits)[0] != jnp.shape(x)[0]:
            raise ValueError(f"a classifier must return logits [B, num_classes]; got shape {jnp.shape(logits)}.")
        return logits


def get_logit_fn(sde: SDE, model, params) -> LogitFn:
    """``logit_fn(x, t)`` for a noise-conditional classifier (the paper's ``get_logit_fn``; its noise label is
    ``sde.marginal_prob(x, t)[1]``, here ``sde.label_std(t)``, the same value).

    Args:
      sde: the SDE whose noised data the classifier was trained on.
      model: a classifier module (``WideResNet``, ``ClassifierMLP``), its ``apply``, or any
        ``apply_fn(params, x, sigma) -> logits``.
      params: its variables.

    Raises:
      ValueError: ``model`` is one of our score networks (not a classifier).
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be an SDE (VESDE, VPSDE, SubVPSDE); got {type(sde).__name__}.")
    module, apply_fn = _module_and_apply(model)
    if module is not None and not is_classifier(module):
        raise ValueError(f"{type(module).__name__} is not a classifier (it outputs a score); use get_score_fn, or "
                         f"a classifier network (model.name 'wideresnet' or 'mlp_classifier').")
    return LogitFn(params=params, sde=sde, apply_fn=apply_fn)


@pytree_dataclass
class ClassifierLogProb:
    """``log_prob_y_fn(x, t, y) = log_softmax(logit_fn(x, t))[y]``: ``[B]`` (``y: [B]`` int)."""

    logit_fn: Any

    def __call__(self, x, t, y):
        logits = self.logit_fn(x, t)
        y = jnp.asarray(y)
        if y.shape != jnp.shape(x)[:1]:
            raise ValueError(f"y must have shape [B] = {jnp.shape(x)[:1]}; got shape {y.shape}.")
        log_p = jax.nn.log_softmax(logits.astype(x.dtype), axis=-1)
        return jnp.take_along_axis(log_p, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def classifier_log_prob(logit_fn) -> ClassifierLogProb:
    """``log p_t(y | x)`` from ``logit_fn(x, t)``: the ``log_prob_y_fn`` of :func:`sde_jax.conditional_sample`."""
    return ClassifierLogProb(logit_fn)
